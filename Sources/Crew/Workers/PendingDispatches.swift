import Synchronization

/// Jobs the pool dispatched to one worker that no thread has handed over yet, in the order the
/// pool assigned them.
///
/// The pool appends while it holds its own lock, so the order here is the order of its
/// decisions; it hands them over after unlocking, and whichever thread gets there first takes
/// them all. Without this, two threads that each dispatched a job could send them in reverse
/// order, and a worker holding jobs (prefetch) would run a later one first: the earlier job,
/// whose timeout counts from its dispatch, could then time out waiting behind it.
final class PendingDispatches: Sendable {
    private struct State {
        var jobs: [DispatchedJob] = []
        /// An emptied array with room, handed back by ``recycle(_:)``: appending under the pool's
        /// lock then rarely allocates.
        var spare: [DispatchedJob] = []
    }
    private let state = Mutex(State())

    init() {}

    /// Called with the pool's lock held: only appends.
    func append(_ job: DispatchedJob) {
        state.withLock { $0.jobs.append(job) }
    }

    /// Every job appended so far, oldest first; none is left behind. Hand the array back with
    /// ``recycle(_:)`` once done with it.
    func take() -> [DispatchedJob] {
        state.withLock { state in
            var taken = state.spare
            state.spare = []
            swap(&taken, &state.jobs)
            return taken
        }
    }

    /// Keeps `jobs`' storage, emptied, for the next appends. Pass the array with `consume`:
    /// a copy still held elsewhere would make emptying it allocate new storage.
    func recycle(_ jobs: consuming [DispatchedJob]) {
        var jobs = jobs
        jobs.removeAll(keepingCapacity: true)
        state.withLock { state in
            if state.spare.capacity < jobs.capacity { swap(&state.spare, &jobs) }
        }
    }
}
