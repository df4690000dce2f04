#ifndef CCREW_SYSTEM_H
#define CCREW_SYSTEM_H

#include <sys/types.h>

/// Asks the kernel to send `signal` to the calling process when the thread that spawned it
/// exits. Returns 0 on success, -1 with errno set otherwise. (prctl is variadic: Swift cannot
/// call it directly.)
int ccrew_set_parent_death_signal(int signal);

/// Sets the calling thread's name as `ps -L` and `/proc/self/comm` show it (at most 15 bytes).
int ccrew_set_thread_name(const char *name);

/// Spawns `path` with `argv` and `envp`. The child gets `channel_fd` as fd 3 and `stderr_fd` as
/// fd 2, /dev/null as stdin, the parent's stdout, an empty signal mask and default dispositions
/// for the signals the parent may have changed (SIGPIPE, SIGTERM, SIGINT, SIGCHLD, SIGUSR1/2).
/// Every other descriptor must be close-on-exec in the parent. Both may have any numbers (a process
/// without its standard descriptors gets low ones). Returns 0 or an errno value.
int ccrew_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                       int channel_fd, int stderr_fd);

/// pipe2(fds, O_CLOEXEC). Returns 0 or -1 with errno set.
int ccrew_pipe_cloexec(int fds[2]);

/// The number of cores this process may run on (its affinity mask), at least 1.
int ccrew_available_cores(void);

/// Waits up to `nanoseconds` for `fd` to be readable (ppoll): > 0 if it is (or has ended or
/// failed), 0 if the time ran out, -1 with errno set (EINTR: a signal came).
int ccrew_wait_readable(int fd, unsigned long long nanoseconds);

/// A close-on-exec timerfd on CLOCK_MONOTONIC (reads block until it expires), or -1 with errno set.
int ccrew_timer_create(void);

/// Arms a timerfd to expire once, `nanoseconds` from now; 0 disarms it. 0, or -1 with errno set.
int ccrew_timer_arm(int fd, unsigned long long nanoseconds);

#endif
