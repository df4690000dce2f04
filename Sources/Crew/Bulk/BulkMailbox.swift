public import Synchronization

/// Where a bulk run's chunks arrive from the threads that end them (usually a worker's reader
/// thread), and where its consumer waits.
///
/// Its lock guards only the arrivals: delivering a chunk never waits for the run's own lock,
/// which the consumer holds while it pulls the caller's input sequence, and never runs the
/// caller's code (outputs are decoded by the consumer, when it takes the chunk).
///
/// The consumer says how many arrivals are worth waking it for (``wait(wanting:)``). A one-job
/// chunk that ended well, delivered by a thread that can put the wake-up off (a process
/// worker's reader, see ``DeferredWakes``), leaves it asleep until that many have arrived or
/// ``DeferredWakes/maxDelay`` has passed. Anything else wakes it at once: a failure (so that
/// nothing more starts), a batch (already worth a wake-up), a delivery from any other thread.
@usableFromInline
final class BulkMailbox<Outcome: Sendable>: DeferredWake {
    @usableFromInline init() {}

    /// A chunk that ended: its index, how many jobs it has (to decode its answer), and how it ended.
    @usableFromInline typealias Arrival = (index: Int, count: Int, result: Result<Outcome, any Error>)

    @usableFromInline
    struct Arrivals: Sendable {
        @usableFromInline var list: [Arrival] = []
        /// How many arrivals the consumer wants before it is woken.
        @usableFromInline var wanted = 1
        /// Arrivals came that did not wake the consumer, and a reader thread owes it a wake-up.
        @usableFromInline var owed = false

        @usableFromInline init() {}
    }

    @usableFromInline let arrived = Mutex(Arrivals())
    @usableFromInline let gate = WakeGate()

    /// A chunk ended; wakes the consumer, now or (see above) a little later.
    @inlinable
    func deliver(_ index: Int, count: Int, _ result: Result<Outcome, any Error>) {
        let waker: DeferredWakes? = if count == 1, case .success = result { DeferredWakes.current } else { nil }
        let wakeNow = arrived.withLock { arrived -> Bool in
            arrived.list.append((index, count, result))
            guard waker != nil, arrived.list.count < arrived.wanted else {
                arrived.owed = false
                return true
            }
            arrived.owed = true
            return false
        }
        // Every thread that defers owes the wake-up (once per mailbox), not only the first: a
        // reader held up in a send to its worker must not hold up the outputs other readers
        // deliver.
        if wakeNow { gate.open() } else { waker?.owe(self) }
    }

    /// Wakes the consumer if a deferred arrival is still waiting for it.
    @usableFromInline
    func wakeIfOwed() {
        let owed = arrived.withLock { arrived in
            defer { arrived.owed = false }
            return arrived.owed
        }
        if owed { gate.open() }
    }

    /// Wakes the consumer (or makes its next `wait` return at once): the run's state changed.
    @inlinable
    func signal() {
        gate.open()
    }

    /// The chunks that arrived since the last call.
    @inlinable
    func take() -> [Arrival] {
        arrived.withLock { arrived in
            defer {
                arrived.list = []
                arrived.owed = false
            }
            return arrived.list
        }
    }

    /// Returns once `wanting` chunks have arrived since the last ``take()``, a deferred
    /// arrival's wait ran out, a chunk that wakes at once arrived, or `signal` was called (or at
    /// once, if the task is cancelled); it may also return without any of these, so callers look
    /// again. `wanting` must not exceed the chunks still to arrive.
    @inlinable
    func wait(wanting: Int = 1) async {
        let ready = arrived.withLock { arrived in
            arrived.wanted = wanting
            return arrived.list.count >= wanting
        }
        if !ready { await gate.wait() }
    }
}
