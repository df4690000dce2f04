import Synchronization

/// Tracks jobs in flight and lets you wait for all of them, any of them, or until fewer than N
/// remain (AsynQueue's DeferredTracker), without touching their results.
///
/// Use it to dispatch work as fast as a limit allows while results flow elsewhere:
///
/// ```swift
/// let tracker = JobTracker()
/// for file in files {
///     try await tracker.waitUntilFewer(than: 8)      // at most 8 in flight
///     tracker.track { try await pool.run(Parse(file: file)) }
/// }
/// try await tracker.waitForAll()
/// ```
///
/// A wait ends with `CancellationError` when the waiting task is cancelled; the jobs it waited
/// for are not cancelled (they belong to whoever tracked them) and stay tracked.
///
/// Within one scope, Swift's `withThrowingTaskGroup` (`next()` for any, `waitForAll()` for all)
/// is the idiom; the tracker is for work started from many places or kept across scopes.
public final class JobTracker: Sendable {
    private struct State: ~Copyable {
        var inFlight = 0
        var completed = 0
        /// Each resumed with true once its condition holds, or false when its task is cancelled.
        var waiters: [(id: UInt64, condition: Condition, continuation: CheckedContinuation<Bool, Never>)] = []
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
    ///
    /// - Throws: `CancellationError` if the waiting task is cancelled first.
    public func waitForAll() async throws(CancellationError) {
        try await waitUntilFewer(than: 1)
    }

    /// Waits until at least one more tracked job finishes (at once if none is in flight).
    ///
    /// - Throws: `CancellationError` if the waiting task is cancelled first.
    public func waitForAny() async throws(CancellationError) {
        try await wait { state in
            state.inFlight == 0 ? nil : .completedMoreThan(state.completed)
        }
    }

    /// Waits until fewer than `count` tracked jobs are in flight; `count` must be at least 1.
    ///
    /// - Throws: `CancellationError` if the waiting task is cancelled first.
    public func waitUntilFewer(than count: Int) async throws(CancellationError) {
        precondition(count >= 1, "fewer than \(count) jobs can never be in flight")
        try await wait { state in
            state.inFlight < count ? nil : .fewerThan(count)
        }
    }

    private func wait(_ condition: (borrowing State) -> Condition?) async throws(CancellationError) {
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let met = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                // Under the lock, so that a cancellation either finds the waiter registered or is
                // seen here first.
                let now = state.withLock { state -> Bool? in
                    guard let pending = condition(state) else { return true }
                    if Task.isCancelled { return false }
                    state.waiters.append((id, pending, continuation))
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                state.waiters.firstIndex { $0.id == id }.map { state.waiters.remove(at: $0).continuation }
            }
            waiter?.resume(returning: false)
        }
        if !met { throw CancellationError() }
    }

    private func finished() {
        let ready = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.inFlight -= 1
            state.completed += 1
            var ready: [CheckedContinuation<Bool, Never>] = []
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
        for continuation in ready { continuation.resume(returning: true) }
    }
}
