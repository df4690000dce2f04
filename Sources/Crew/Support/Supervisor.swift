#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import HeapModule

/// The one long-lived thread that spawns every worker process and fires every timer.
///
/// Linux delivers a child's parent-death signal when the *thread* that forked it exits, not the
/// process: a worker spawned from a Swift-concurrency pool thread is killed when that thread
/// retires. So all spawns happen here, on a thread that lives as long as the process.
/// Timers (job timeouts, cancellation grace periods, shutdown escalation) share the thread: they
/// only take a lock and send a signal, so they never delay a spawn noticeably.
final class Supervisor: @unchecked Sendable {
    /// The process-wide supervisor, started on first use.
    static let shared = Supervisor()

    private struct Timer: Comparable {
        var deadline: MonotonicTime
        var sequence: UInt64
        var action: @Sendable () -> Void
        static func < (a: Timer, b: Timer) -> Bool {
            (a.deadline, a.sequence) < (b.deadline, b.sequence)
        }
        static func == (a: Timer, b: Timer) -> Bool { a.sequence == b.sequence }
    }

    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var work: [@Sendable () -> Void] = []
    private var timers = Heap<Timer>()
    private var sequence: UInt64 = 0

    private init() {
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&condition, &attr)
        pthread_condattr_destroy(&attr)
        PosixThread.start(name: "crew-supervisor") { [unowned self] in self.loop() }.detach()
    }

    /// Runs `action` on the supervisor thread as soon as possible.
    func submit(_ action: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(&mutex)
        work.append(action)
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    /// Runs `action` on the supervisor thread at `deadline` (or soon after).
    ///
    /// Timers cannot be cancelled: the action checks whether it still applies (a timeout for
    /// a job that already finished does nothing). This keeps the per-job cost to one heap insert.
    func schedule(at deadline: MonotonicTime, _ action: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(&mutex)
        sequence += 1
        let isEarliest = timers.min.map { deadline < $0.deadline } ?? true
        timers.insert(Timer(deadline: deadline, sequence: sequence, action: action))
        if isEarliest { pthread_cond_signal(&condition) }
        pthread_mutex_unlock(&mutex)
    }

    private func loop() {
        while true {
            pthread_mutex_lock(&mutex)
            var due: [@Sendable () -> Void] = []
            while true {
                due.append(contentsOf: work)
                work.removeAll(keepingCapacity: true)
                let now = MonotonicTime.now()
                while let next = timers.min, next.deadline <= now {
                    due.append(timers.removeMin().action)
                }
                if !due.isEmpty { break }
                if let first = timers.min {
                    var ts = first.deadline.asTimespec
                    pthread_cond_timedwait(&condition, &mutex, &ts)
                } else {
                    pthread_cond_wait(&condition, &mutex)
                }
            }
            pthread_mutex_unlock(&mutex)
            for action in due { action() }
        }
    }
}
