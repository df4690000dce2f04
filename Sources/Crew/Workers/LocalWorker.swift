#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import Synchronization

/// A thread or inline worker: runs jobs as tasks in this process, on its own thread (thread
/// workers, through a task executor) or on Swift's cooperative pool (inline workers). Jobs are
/// values; nothing is encoded. Timeouts and cancellation are cooperative.
final class LocalWorker: WorkerHandle {
    let id: Int
    var processID: Int32? { nil }
    private let executor: ThreadExecutor?
    private let events: LocalWorkerEvents
    private let logger: Logger
    private let pending = PendingDispatches()

    private struct State: ~Copyable {
        var tasks: [UInt64: Task<Void, Never>] = [:]
        /// Cancels for jobs not dispatched yet (a cancel can overtake its job's dispatch).
        var earlyCancels = EarlyCancels()
        var released = false
        var exited = false
    }
    private let state = Mutex(State())

    init(id: Int, kind: WorkerKind, logger: Logger, events: LocalWorkerEvents) {
        self.id = id
        self.events = events
        self.logger = logger
        executor = kind == .thread ? ThreadExecutor(name: PosixThread.name(.jobs, worker: id)) : nil
    }

    func enqueue(_ job: DispatchedJob) {
        pending.append(job)
    }

    /// Starts the jobs enqueued so far. Two threads may start theirs in either order; it matters
    /// less here than for a process worker: an in-process worker holds no jobs (no prefetch), so
    /// every job's timeout starts with its dispatch anyway.
    func sendEnqueued() {
        let jobs = pending.take()
        for job in jobs { start(job.jobID, name: job.name, payload: job.payload) }
        pending.recycle(consume jobs)
    }

    private func start(_ jobID: UInt64, name: String, payload: JobPayload) {
        guard let run = payload.local else {
            finish(jobID, .failure(CrewError(.unknownJobType, "the job has no in-process form", jobName: name, workerID: id)))
            return
        }
        // The answer is a value (no frame), so nothing in it needs cutting to a frame's size.
        let context = JobContext(workerID: id, jobID: jobID, processID: getpid(), workerLogger: logger, answerFrameSize: nil)
        let cancelledAlready = state.withLock { state -> Bool in
            // Killed before the dispatch arrived: the pool has failed the job with the worker
            // already, and no task may outlive the worker (a thread worker's thread is gone).
            if state.exited { return false }
            // Its cancel came first: the job does not run at all.
            if state.earlyCancels.take(jobID) { return true }
            // Detached: a task created here would inherit the task-local values (and priority)
            // of whichever task dispatches the job, often another caller's job that just ended.
            state.tasks[jobID] = Task.detached(executorPreference: executor) { [self] in
                let result: Result<JobOutput, CrewError>
                do {
                    result = .success(.value(try await run(context)))
                } catch {
                    // A CancellationError is a cancellation only if the job was cancelled; a job may
                    // also throw one of its own accord.
                    let code: CrewError.Code = error is CancellationError && Task.isCancelled ? .cancelled : .jobFailed
                    result = .failure(CrewError(
                        code, String(describing: error), jobName: name, workerID: id,
                        remoteErrorType: String(reflecting: type(of: error)), underlying: error))
                }
                finish(jobID, result)
            }
            return false
        }
        if cancelledAlready {
            finish(jobID, .failure(CrewError(.cancelled, "the job was cancelled before it started", jobName: name, workerID: id)))
        }
    }

    private func finish(_ jobID: UInt64, _ result: Result<JobOutput, CrewError>) {
        let (report, exitNow, stopExecutor) = state.withLock { state -> (Bool, Bool, Bool) in
            state.tasks[jobID] = nil
            let report = !state.exited
            let exitNow = state.released && state.tasks.isEmpty && !state.exited
            if exitNow { state.exited = true }
            return (report, exitNow, !exitNow && state.exited && state.tasks.isEmpty)
        }
        if report { events.jobEnded(jobID, result) }
        if exitNow { exit() }
        else if stopExecutor { executor?.stop() }
    }

    func cancel(jobID: UInt64) {
        state.withLock { state -> Task<Void, Never>? in
            if let task = state.tasks[jobID] { return task }
            state.earlyCancels.remember(jobID)
            return nil
        }?.cancel()
    }

    /// An in-process worker holds no jobs beyond those it runs (no prefetch): nothing to give back.
    func recall(jobIDs: [UInt64]) {}

    func kill() {
        let tasks = state.withLock { state -> [Task<Void, Never>]? in
            guard !state.exited else { return nil }
            state.exited = true
            return Array(state.tasks.values)
        }
        guard let tasks else { return }
        for task in tasks { task.cancel() }
        if tasks.isEmpty { executor?.stop() }
        events.exited()
    }

    func release() {
        let exitNow = state.withLock { state -> Bool in
            state.released = true
            guard state.tasks.isEmpty && !state.exited else { return false }
            state.exited = true
            return true
        }
        if exitNow { exit() }
    }

    /// The released worker lingers with jobs: asks them to stop (a process gets SIGTERM).
    func terminate() {
        let tasks = state.withLock { $0.exited ? [] : Array($0.tasks.values) }
        for task in tasks { task.cancel() }
    }

    private func exit() {
        executor?.stop()
        events.exited()
    }
}
