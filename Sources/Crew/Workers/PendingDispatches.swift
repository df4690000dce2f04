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
    private let jobs = Mutex<[DispatchedJob]>([])

    init() {}

    /// Called with the pool's lock held: only appends.
    func append(_ job: DispatchedJob) {
        jobs.withLock { $0.append(job) }
    }

    /// Every job appended so far, oldest first; none is left behind.
    func take() -> [DispatchedJob] {
        jobs.withLock { jobs in
            defer { jobs = [] }
            return jobs
        }
    }
}
