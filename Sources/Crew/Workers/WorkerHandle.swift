/// What the pool needs from a worker of any kind. The state machine decides; handles act.
protocol WorkerHandle: AnyObject, Sendable {
    /// The pool-assigned worker number.
    var id: Int { get }
    /// The worker's process, for process workers.
    var processID: Int32? { get }
    /// Hands jobs to the worker, in order (a process worker sends them in one write); with
    /// `announceStart`, the worker reports when it starts a job (it may hold the job first).
    func dispatch(_ jobs: [DispatchedJob])
    /// Asks the worker to cancel a job (cooperatively).
    func cancel(jobID: UInt64)
    /// Ends the worker now: SIGKILL for a process; an in-process worker cancels its jobs and
    /// reports its exit at once (a job that ignores cancellation runs on, detached from the pool).
    func kill()
    /// Lets the worker finish what it holds and exit.
    func release()
    /// Escalation for a released worker that lingers: SIGTERM for a process; an in-process
    /// worker cancels its jobs.
    func terminate()
}

/// A job as the pool hands it to a worker.
struct DispatchedJob: Sendable {
    var jobID: UInt64
    var name: String
    var payload: JobPayload
    var announceStart: Bool
}

/// What an in-process worker reports to the pool.
struct LocalWorkerEvents: Sendable {
    var jobEnded: @Sendable (UInt64, Result<JobOutput, CrewError>) -> Void
    var exited: @Sendable () -> Void
}
