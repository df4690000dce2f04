import Synchronization

/// Where a bulk run's chunks arrive from the threads that end them (usually a worker's reader
/// thread), and where its consumer waits.
///
/// Its lock guards only this: delivering a chunk never waits for the run's own lock, which the
/// consumer holds while it pulls the caller's input sequence, and never runs the caller's code
/// (outputs are decoded by the consumer, when it takes the chunk).
final class BulkMailbox<Outcome: Sendable>: Sendable {
    typealias Arrival = (index: Int, result: Result<Outcome, any Error>)

    private struct State {
        var arrived: [Arrival] = []
        var waiter: CheckedContinuation<Void, Never>?
        /// Something the consumer must look at happened while it was not waiting.
        var signalled = false
    }
    private let state = Mutex(State())

    /// A chunk ended; wakes the consumer.
    func deliver(_ index: Int, _ result: Result<Outcome, any Error>) {
        let waiter = state.withLock { state in
            state.arrived.append((index, result))
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Wakes the consumer (or makes its next `wait` return at once): the run's state changed.
    func signal() {
        let waiter = state.withLock { state in
            if state.waiter == nil { state.signalled = true }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The chunks that arrived since the last call; clears the signal, since the caller is about
    /// to look at the run's state.
    func take() -> [Arrival] {
        state.withLock { state in
            state.signalled = false
            defer { state.arrived = [] }
            return state.arrived
        }
    }

    /// Returns once a chunk has arrived or `signal` was called since the last `take`.
    func wait() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if !state.arrived.isEmpty || state.signalled {
                    state.signalled = false
                    return true
                }
                state.waiter = waiter
                return false
            }
            if now { waiter.resume() }
        }
    }
}
