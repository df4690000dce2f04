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
/// only take a lock and send a signal, so they never delay a spawn noticeably. A job's timeout
/// timer is cancelled when the job ends.
final class Supervisor: @unchecked Sendable {
    /// The process-wide supervisor, started on first use.
    static let shared = Supervisor()

    /// A scheduled timer, for ``cancel(_:)``.
    struct TimerID: Hashable, Sendable {
        fileprivate var sequence: UInt64
    }

    private struct TimerKey: Comparable {
        var deadline: MonotonicTime
        var sequence: UInt64
        static func < (a: TimerKey, b: TimerKey) -> Bool {
            (a.deadline, a.sequence) < (b.deadline, b.sequence)
        }
    }

    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var work: [@Sendable () -> Void] = []
    /// Deadlines, including those of cancelled timers (dropped when they come up, or all at
    /// once when they outnumber the live ones).
    private var timers = Heap<TimerKey>()
    /// The actions of the live timers, by sequence number.
    private var actions: [UInt64: @Sendable () -> Void] = [:]
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

    /// Runs `action` on the supervisor thread at `deadline` (or soon after), unless cancelled first.
    @discardableResult
    func schedule(at deadline: MonotonicTime, _ action: @escaping @Sendable () -> Void) -> TimerID {
        pthread_mutex_lock(&mutex)
        sequence += 1
        let isEarliest = timers.min.map { deadline < $0.deadline } ?? true
        timers.insert(TimerKey(deadline: deadline, sequence: sequence))
        actions[sequence] = action
        if isEarliest { pthread_cond_signal(&condition) }
        let id = TimerID(sequence: sequence)
        pthread_mutex_unlock(&mutex)
        return id
    }

    /// Drops a timer that has not fired; does nothing if it has. Its action is released at once,
    /// and the heap is compacted once cancelled deadlines outnumber live ones, so a pool that runs
    /// many jobs with long timeouts holds memory for the jobs that run, not for those that ran.
    func cancel(_ id: TimerID) {
        pthread_mutex_lock(&mutex)
        if actions.removeValue(forKey: id.sequence) != nil && timers.count > 64 && timers.count > 2 * actions.count {
            timers = Heap(timers.unordered.filter { actions[$0.sequence] != nil })
        }
        pthread_mutex_unlock(&mutex)
    }

    /// Timers scheduled and not yet fired or cancelled.
    var pendingTimerCount: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return actions.count
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
                    timers.removeMin()
                    if let action = actions.removeValue(forKey: next.sequence) { due.append(action) }
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
