/// What the pool needs from a worker of any kind. The state machine decides; handles act.
protocol WorkerHandle: AnyObject, Sendable {
    /// The pool-assigned worker number.
    var id: Int { get }
    /// The worker's process, for process workers.
    var processID: Int32? { get }
    /// Records a job for the worker without handing it over. The pool calls it with its lock
    /// held, so that a worker's jobs line up in the order the pool assigned them; it must not
    /// block or call back into the pool. With `announceStart`, the worker reports when it starts
    /// the job (it may hold the job first).
    func enqueue(_ job: DispatchedJob)
    /// Hands over every job enqueued so far, by any thread, in the order they were enqueued (a
    /// process worker sends them in one write). The pool calls it after releasing its lock.
    func sendEnqueued()
    /// Asks the worker to cancel a job (cooperatively).
    func cancel(jobID: UInt64)
    /// Asks the worker to give back jobs it holds and has not started; it reports each one it
    /// gives back, after every job enqueued before the call. Only process workers hold jobs
    /// (prefetch), so only they are asked.
    func recall(jobIDs: [UInt64])
    /// Ends the worker now: SIGKILL for a process; an in-process worker cancels its jobs and
    /// reports its exit at once (a job that ignores cancellation runs on, detached from the pool).
    func kill()
    /// Lets the worker finish what it holds and exit.
    func release()
    /// Escalation for a released worker that lingers: SIGTERM for a process; an in-process
    /// worker cancels its jobs.
    func terminate()
}

extension WorkerHandle {
    /// Enqueues `jobs` and hands them over.
    func dispatch(_ jobs: [DispatchedJob]) {
        for job in jobs { enqueue(job) }
        sendEnqueued()
    }
}

/// A job as the pool hands it to a worker.
struct DispatchedJob: Sendable {
    var jobID: UInt64
    var name: String
    var payload: JobPayload
    var announceStart: Bool
    /// The job has a timeout: a process worker then sends its answer at once rather than hold
    /// it back for company, so that a job that ended in time is never taken for one that ran over.
    var timed = false
    /// ``JobPriority/rawValue``: a process worker runs the jobs it holds highest priority first.
    var priority = 0
}

/// What an in-process worker reports to the pool.
struct LocalWorkerEvents: Sendable {
    var jobEnded: @Sendable (UInt64, Result<JobOutput, CrewError>) -> Void
    var exited: @Sendable () -> Void
}
