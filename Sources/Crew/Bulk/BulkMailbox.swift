public import Synchronization

/// Where a bulk run's chunks arrive from the threads that end them (usually a worker's reader
/// thread), and where its consumer waits.
///
/// Its lock guards only the arrivals: delivering a chunk never waits for the run's own lock,
/// which the consumer holds while it pulls the caller's input sequence, and never runs the
/// caller's code (outputs are decoded by the consumer, when it takes the chunk).
@usableFromInline
final class BulkMailbox<Outcome: Sendable>: Sendable {
    @usableFromInline init() {}

    /// A chunk that ended: its index, how many jobs it has (to decode its answer), and how it ended.
    @usableFromInline typealias Arrival = (index: Int, count: Int, result: Result<Outcome, any Error>)

    @usableFromInline let arrived = Mutex<[Arrival]>([])
    @usableFromInline let gate = WakeGate()

    /// A chunk ended; wakes the consumer.
    @inlinable
    func deliver(_ index: Int, count: Int, _ result: Result<Outcome, any Error>) {
        arrived.withLock { $0.append((index, count, result)) }
        gate.open()
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
            defer { arrived = [] }
            return arrived
        }
    }

    /// Returns once a chunk has arrived or `signal` was called since the last `wait` (or at once,
    /// if the task is cancelled); it may also return without either, so callers look again.
    @inlinable
    func wait() async {
        if arrived.withLock({ !$0.isEmpty }) { return }
        await gate.wait()
    }
}
