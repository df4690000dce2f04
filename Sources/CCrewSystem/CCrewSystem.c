#define _GNU_SOURCE
#include "CCrewSystem.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

int ccrew_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0, 0, 0);
}

int ccrew_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

/// `fd`, or a close-on-exec copy of it numbered 4 or above (stored in `*copy` for the caller to
/// close) when it is one of the numbers the child's file actions overwrite (0, 2, 3; 1 is moved
/// too, for simplicity).
static int ccrew_above_child_fds(int fd, int *copy) {
    if (fd > 3) return fd;
    *copy = fcntl(fd, F_DUPFD_CLOEXEC, 4);
    return *copy;
}

static int ccrew_spawn_with(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                            int channel_fd, int stderr_fd);

int ccrew_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                       int channel_fd, int stderr_fd) {
    // A process without its standard descriptors (a daemon) gets 0 to 3 for new ones, and the
    // file actions below would then overwrite one source with another (the channel copied onto
    // fd 3 where the stderr pipe was), or dup2(3, 3), which keeps close-on-exec. Copies above 3
    // avoid both.
    int channel_copy = -1, stderr_copy = -1;
    channel_fd = ccrew_above_child_fds(channel_fd, &channel_copy);
    stderr_fd = ccrew_above_child_fds(stderr_fd, &stderr_copy);
    int rc = (channel_fd < 0 || stderr_fd < 0) ? errno : ccrew_spawn_with(pid, path, argv, envp, channel_fd, stderr_fd);
    if (channel_copy >= 0) close(channel_copy);
    if (stderr_copy >= 0) close(stderr_copy);
    return rc;
}

static int ccrew_spawn_with(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                            int channel_fd, int stderr_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) { posix_spawn_file_actions_destroy(&actions); return rc; }

    // dup2 clears FD_CLOEXEC on the target, so fd 3 and fd 2 survive the exec while the
    // originals (close-on-exec, and above 3: see ccrew_spawn_worker) do not.
    if ((rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)) != 0) goto out;
    if ((rc = posix_spawn_file_actions_adddup2(&actions, channel_fd, 3)) != 0) goto out;
    if ((rc = posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2)) != 0) goto out;

    sigset_t empty, defaults;
    sigemptyset(&empty);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGCHLD);
    sigaddset(&defaults, SIGUSR1);
    sigaddset(&defaults, SIGUSR2);
    sigaddset(&defaults, SIGHUP);
    if ((rc = posix_spawnattr_setsigmask(&attr, &empty)) != 0) goto out;
    if ((rc = posix_spawnattr_setsigdefault(&attr, &defaults)) != 0) goto out;
    if ((rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) != 0) goto out;

    rc = posix_spawn(pid, path, &actions, &attr, argv, envp);
out:
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

int ccrew_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int ccrew_available_cores(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int count = CPU_COUNT(&set);
        if (count > 0) return count;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

int ccrew_wait_readable(int fd, unsigned long long nanoseconds) {
    struct pollfd request = { .fd = fd, .events = POLLIN, .revents = 0 };
    struct timespec limit = { .tv_sec = (time_t)(nanoseconds / 1000000000ULL), .tv_nsec = (long)(nanoseconds % 1000000000ULL) };
    return ppoll(&request, 1, &limit, NULL);
}

int ccrew_timer_create(void) {
    return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
}

int ccrew_timer_arm(int fd, unsigned long long nanoseconds) {
    struct itimerspec setting = { 0 };
    setting.it_value.tv_sec = (time_t)(nanoseconds / 1000000000ULL);
    setting.it_value.tv_nsec = (long)(nanoseconds % 1000000000ULL);
    return timerfd_settime(fd, 0, &setting, NULL);
}
