import Synchronization

/// A one-permit gate between one waiting task and any number of wakers: `open` lets the next
/// (or current) `wait` through; a cancelled task passes at once. A bulk run's feeder waits at one
/// for room, and its consumer at another (in ``BulkMailbox``) for chunks.
@usableFromInline
final class WakeGate: Sendable {
    @usableFromInline init() {}

    private struct State {
        var permit = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    @usableFromInline
    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let passNow = state.withLock { state -> Bool in
                    if state.permit || Task.isCancelled {
                        state.permit = false
                        return true
                    }
                    state.waiter = waiter
                    return false
                }
                if passNow { waiter.resume() }
            }
        } onCancel: {
            open()
        }
    }

    @usableFromInline
    func open() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.permit = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }
}
