#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A waiter whose wake-up a thread may put off (see ``DeferredWakes``).
@usableFromInline
protocol DeferredWake: AnyObject, Sendable {
    /// Makes the wake-up that was put off, if it is still owed.
    func wakeIfOwed()
}

/// The wake-ups a process worker's reader thread has put off, and when it must make them.
///
/// Waking a task costs the thread that wakes it a few microseconds and, on another core, an
/// inter-processor interrupt, more than handing over one small output: a `map` whose outputs
/// come quickly spent as much of its caller's CPU on wake-ups as on everything else. So its
/// mailbox (``BulkMailbox``) lets outputs wait for company: a reader thread that delivers one
/// may leave the consumer asleep and note here that it owes it a wake-up. Before the reader
/// blocks on its channel, it waits for input only until ``maxDelay`` after the first wake-up
/// it put off, and makes the owed wake-ups if nothing came by then; it makes them too when its
/// channel ends. So an output waits at most about ``maxDelay`` for its consumer. A read that
/// brings several answers at once makes the owed wake-ups right away: the worker held those
/// answers back for company already, and waiting for more would mostly end in a timer wake-up
/// of the reader as well as the consumer's (in the demo's render this cut the parent's CPU and
/// the 2-worker render's time by a few percent in four alternating runs).
///
/// Only a thread inside ``withCurrent(_:)`` defers (``current`` is nil elsewhere: timers,
/// callers, and thread and inline workers wake at once). A thread worker's thread runs its jobs
/// too, and a job that blocks it would hold an owed wake-up for as long as it ran; a reader
/// thread runs no job. One instance belongs to one thread.
@usableFromInline
final class DeferredWakes {
    /// The longest a wake-up is put off.
    static let maxDelay: Duration = .milliseconds(2)

    private var owed: [any DeferredWake] = []
    private var due: MonotonicTime?

    private init() {}

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key, nil)
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return key
    }()

    /// The calling thread's deferred wake-ups, or nil if it must wake at once.
    @usableFromInline
    static var current: DeferredWakes? {
        pthread_getspecific(key).map { Unmanaged<DeferredWakes>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Runs `body` with deferred wake-ups on the calling thread, and makes those still owed when
    /// it returns.
    static func withCurrent<R>(_ body: (DeferredWakes) -> R) -> R {
        let wakes = DeferredWakes()
        pthread_setspecific(key, Unmanaged.passUnretained(wakes).toOpaque())
        defer {
            pthread_setspecific(key, nil)
            wakes.wakeOwed()
        }
        return body(wakes)
    }

    /// Notes that `waiter` is owed a wake-up, to be made within ``maxDelay`` of the first one
    /// this thread owes.
    @usableFromInline
    func owe(_ waiter: any DeferredWake) {
        if due == nil { due = .now() + Self.maxDelay }
        // Few waiters at once (one per `map` whose outputs this thread delivers): a scan is cheap.
        if !owed.contains(where: { $0 === waiter }) { owed.append(waiter) }
    }

    /// How long the thread may wait before it must wake its waiters: nil if it owes nothing.
    var timeUntilDue: Duration? {
        due.map { $0.since(.now()) }
    }

    /// Makes every wake-up still owed.
    func wakeOwed() {
        let waiters = owed
        owed.removeAll(keepingCapacity: true)
        due = nil
        for waiter in waiters { waiter.wakeIfOwed() }
    }
}
