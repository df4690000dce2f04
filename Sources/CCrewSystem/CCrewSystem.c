#define _GNU_SOURCE
#include "CCrewSystem.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sched.h>
#include <sys/prctl.h>
#include <unistd.h>

int ccrew_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0, 0, 0);
}

int ccrew_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

int ccrew_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                       int channel_fd, int stderr_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) { posix_spawn_file_actions_destroy(&actions); return rc; }

    // dup2 clears FD_CLOEXEC on the target, so fd 3 and fd 2 survive the exec while the
    // originals (close-on-exec) do not. dup2(fd, fd) would keep CLOEXEC, so the callers never
    // pass 2 or 3 here (they are freshly made descriptors, always > 3 in a running process).
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
