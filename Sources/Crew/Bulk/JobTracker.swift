import Synchronization

/// Tracks jobs in flight and lets you wait for all of them, any of them, or until fewer than N
/// remain (AsynQueue's DeferredTracker), without touching their results.
///
/// Use it to dispatch work as fast as a limit allows while results flow elsewhere:
///
/// ```swift
/// let tracker = JobTracker()
/// for file in files {
///     await tracker.waitUntilFewer(than: 8)          // at most 8 in flight
///     tracker.track { try await pool.run(Parse(file: file)) }
/// }
/// await tracker.waitForAll()
/// ```
///
/// Within one scope, Swift's `withThrowingTaskGroup` (`next()` for any, `waitForAll()` for all)
/// is the idiom; the tracker is for work started from many places or kept across scopes.
public final class JobTracker: Sendable {
    private struct State: ~Copyable {
        var inFlight = 0
        var completed = 0
        var waiters: [(id: UInt64, condition: Condition, continuation: CheckedContinuation<Void, Never>)] = []
        var nextWaiter: UInt64 = 0
    }

    private enum Condition {
        case fewerThan(Int)
        case completedMoreThan(Int)
    }

    private let state = Mutex(State())

    /// An empty tracker.
    public init() {}

    /// Jobs tracked that have not finished.
    public var inFlight: Int { state.withLock { $0.inFlight } }

    /// Starts `operation` as a task and tracks it until it finishes (with a result or an error).
    ///
    /// - Returns: the task, for its result.
    @discardableResult
    public func track<Success: Sendable>(
        _ operation: sending @escaping @isolated(any) () async throws -> Success
    ) -> Task<Success, any Error> {
        state.withLock { $0.inFlight += 1 }
        return Task {
            defer { finished() }
            return try await operation()
        }
    }

    /// Waits until every tracked job has finished (at once if none is in flight).
    public func waitForAll() async {
        await waitUntilFewer(than: 1)
    }

    /// Waits until at least one more tracked job finishes (at once if none is in flight).
    public func waitForAny() async {
        await wait { state in
            state.inFlight == 0 ? nil : .completedMoreThan(state.completed)
        }
    }

    /// Waits until fewer than `count` tracked jobs are in flight.
    public func waitUntilFewer(than count: Int) async {
        await wait { state in
            state.inFlight < count ? nil : .fewerThan(count)
        }
    }

    private func wait(_ condition: (borrowing State) -> Condition?) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                guard let pending = condition(state) else { return true }
                state.nextWaiter += 1
                state.waiters.append((state.nextWaiter, pending, continuation))
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    private func finished() {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.inFlight -= 1
            state.completed += 1
            var ready: [CheckedContinuation<Void, Never>] = []
            state.waiters.removeAll { waiter in
                let met = switch waiter.condition {
                case .fewerThan(let count): state.inFlight < count
                case .completedMoreThan(let count): state.completed > count
                }
                if met { ready.append(waiter.continuation) }
                return met
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }
}
