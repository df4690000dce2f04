#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A task executor that runs every job on one dedicated thread, so that blocking code in a job
/// never occupies a thread of Swift's cooperative pool.
final class ThreadExecutor: TaskExecutor, @unchecked Sendable {
    // On the heap: a pthread mutex or condition must not move, and a Swift stored property
    // passed with `&` has no address that is guaranteed to last beyond the call.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t> = .allocate(capacity: 1)
    private let condition: UnsafeMutablePointer<pthread_cond_t> = .allocate(capacity: 1)
    /// Guarded by `mutex`.
    private var queue: [UnownedJob] = []
    private var stopped = false

    init(name: String) {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        PosixThread.start(name: name, stackSize: 8 << 20) { [self] in loop() }.detach()
    }

    deinit {
        // The thread holds `self` until it returns, so nothing waits on these any more.
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pthread_mutex_lock(mutex)
        queue.append(job)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Ends the thread once it has run what is queued.
    func stop() {
        pthread_mutex_lock(mutex)
        stopped = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    private func loop() {
        var batch: [UnownedJob] = []
        while true {
            pthread_mutex_lock(mutex)
            while queue.isEmpty && !stopped { pthread_cond_wait(condition, mutex) }
            if queue.isEmpty && stopped {
                pthread_mutex_unlock(mutex)
                return
            }
            swap(&batch, &queue)
            pthread_mutex_unlock(mutex)
            for job in batch { job.runSynchronously(on: asUnownedTaskExecutor()) }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
