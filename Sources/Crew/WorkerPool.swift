#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A pool of supervised workers that run ``Job``s.
///
/// ```swift
/// let jobs: JobCatalog = [Square.self]
/// await Crew.serveIfWorker(jobs)          // worker processes serve here and never return
/// let total = try await WorkerPool.withPool(.processes(4), jobs: jobs) { pool in
///     try await pool.run(Square(value: 7), priority: .high, timeout: .seconds(2))
/// }
/// ```
///
/// Semantics:
/// - Jobs start in priority order, first-in first-out within one priority.
/// - A worker that dies (a trap, `exit`, a signal) fails only the jobs it held, with
///   ``CrewError/Code/workerCrashed``, its exit status or signal and its stderr tail; the pool
///   starts a replacement and goes on serving.
/// - A timeout counts from the moment a worker starts the job (not while it waits in the queue,
///   or in a worker that holds it for later). On expiry a process worker is
///   killed (SIGKILL), the caller gets ``CrewError/Code/timedOut`` and a replacement starts.
///   Thread and inline workers can only be asked to stop (cooperative cancellation).
/// - Cancelling the awaiting task removes a queued job, or asks a running one to cancel; if it has
///   not stopped after ``Configuration/cancellationGracePeriod``, its process worker is killed.
/// - After ``shutdown(cancelPending:)`` every call fails with ``CrewError/Code/poolShutDown``.
public final class WorkerPool: Sendable {
    let core: PoolCore

    /// Starts a pool. Prefer ``withPool(_:jobs:configuration:setup:isolation:_:)``, which always shuts it down.
    ///
    /// - Parameters:
    ///   - workers: which workers to start.
    ///   - jobs: the job types this pool runs; process workers must have them all in their catalogs.
    ///     Pools of thread and inline workers only also run job types outside the catalog.
    ///   - configuration: timing, limits, the worker executable, logging.
    ///   - setup: a job every new worker runs before it takes work (an initializer: open a
    ///     connection, load a table). If it fails, the worker counts as one that failed to start.
    /// - Throws: ``CrewError`` with ``CrewError/Code/workerStartFailed`` if the worker executable
    ///   cannot be run.
    public init(_ workers: Workers, jobs: JobCatalog, configuration: Configuration = Configuration(), setup: (any Job)? = nil) throws {
        if workers.hasProcesses {
            // A frame's length travels in 32 bits, and the workers' hello lists the catalog.
            let hello = jobs.names.reduce(64) { $0 + 4 + $1.utf8.count + (jobs.entries[$1]?.layoutDigest.utf8.count ?? 0) }
            precondition(
                configuration.maxFrameSize >= hello && configuration.maxFrameSize < Int(UInt32.max),
                "maxFrameSize must be at least \(hello) bytes (the workers' hello for this catalog) and under 4 GiB")
            let path = configuration.executable.path
            guard access(path, X_OK) == 0 else {
                throw CrewError(.workerStartFailed, "the worker executable \(path) cannot be run: \(String(cString: strerror(errno)))")
            }
        }
        let initJob = try setup.map { job in
            PoolCore.Machine.InitJob(name: type(of: job).jobName, payload: try Self.payload(for: job, workers: workers, maxFrameSize: configuration.maxFrameSize))
        }
        core = PoolCore(workers: workers, catalog: jobs, configuration: configuration, setup: initJob)
        core.start()
    }

    /// A pool dropped without ``shutdown(cancelPending:)`` lets its workers go in the background:
    /// they exit, escalating to SIGTERM and SIGKILL, and are reaped. Prefer an explicit shutdown,
    /// which waits for that.
    deinit {
        core.abandon()
    }

    /// Runs `body` with a new pool and shuts the pool down afterwards, also when `body` throws.
    ///
    /// On return every worker process has exited and been reaped and every descriptor the pool
    /// opened is closed.
    ///
    /// - Parameters:
    ///   - workers: which workers to start.
    ///   - jobs: the job types the pool runs.
    ///   - configuration: timing, limits, the worker executable, logging.
    ///   - setup: a job every new worker runs before it takes work.
    ///   - isolation: the caller's actor, which `body` runs on.
    ///   - body: what to do with the pool.
    /// - Returns: what `body` returns.
    /// - Throws: what `body` throws, or a ``CrewError`` if the pool cannot start.
    public static func withPool<Result>(
        _ workers: Workers,
        jobs: JobCatalog,
        configuration: Configuration = Configuration(),
        setup: (any Job)? = nil,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (WorkerPool) async throws -> sending Result
    ) async throws -> sending Result {
        let pool = try WorkerPool(workers, jobs: jobs, configuration: configuration, setup: setup)
        let result: Result
        do {
            result = try await body(pool)
        } catch {
            await pool.shutdown()
            throw error
        }
        await pool.shutdown()
        return result
    }

    // MARK: Running jobs

    /// Runs `job` on a worker and returns its output.
    ///
    /// - Parameters:
    ///   - job: the job; its type must be in the pool's catalog if the pool has process workers.
    ///   - priority: higher priorities start first. Default: ``JobPriority/normal``.
    ///   - timeout: the longest the job may run once a worker has taken it; nil for no limit.
    ///     A process worker that exceeds it is killed.
    ///   - tag: run only on a worker carrying this tag. If no group has it, the call fails at once
    ///     with ``CrewError/Code/noEligibleWorker``.
    ///   - retry: how to retry a crash or timeout; by default the job type's ``Job/retryPolicy``.
    ///     Only jobs whose type is ``Job/isIdempotent`` may be retried.
    /// - Returns: the job's output.
    /// - Throws: ``CrewError``: ``CrewError/Code/jobFailed`` if the job threw, and the codes listed
    ///   on ``WorkerPool`` for crashes, timeouts, cancellation and shutdown. If the queue is full
    ///   (``Configuration/maxQueued``), the call waits for room first.
    public func run<J: Job>(
        _ job: J, priority: JobPriority = .normal, timeout: Duration? = nil, requiring tag: String? = nil,
        retry: RetryPolicy? = nil
    ) async throws -> J.Output {
        try await execute(job, priority: priority, timeout: timeout, requirement: tag.map { .tag($0) } ?? .any, retry: retry)
    }

    /// Runs `job` on one particular worker (Looppool's `worker_num`): for per-worker state.
    ///
    /// - Parameters:
    ///   - job: the job.
    ///   - workerID: a worker's ``PoolSnapshot/Worker/id`` or ``JobContext/workerID``. If that
    ///     worker is gone, or ends before the job runs, the call fails with ``CrewError/Code/noEligibleWorker``.
    ///   - priority: higher priorities start first.
    ///   - timeout: the longest the job may run once the worker has taken it; nil for no limit.
    public func run<J: Job>(_ job: J, on workerID: Int, priority: JobPriority = .normal, timeout: Duration? = nil) async throws -> J.Output {
        try await execute(job, priority: priority, timeout: timeout, requirement: .worker(workerID), retry: nil)
    }

    /// Like ``run(_:priority:timeout:requiring:retry:)``, but fails at once with
    /// ``CrewError/Code/queueFull`` instead of waiting when the queue is full.
    ///
    /// Only the first attempt can be refused: once accepted, a job that the type's
    /// ``Job/retryPolicy`` retries waits for room like any queued job.
    public func trySubmit<J: Job>(
        _ job: J, priority: JobPriority = .normal, timeout: Duration? = nil, requiring tag: String? = nil
    ) async throws -> J.Output {
        try await execute(
            job, priority: priority, timeout: timeout, requirement: tag.map { .tag($0) } ?? .any, retry: nil, waitsForRoom: false)
    }

    /// Runs `job` on every current worker, and makes every worker started later run it before
    /// it takes work (AsynQueue's `update`: push new state to all workers).
    ///
    /// If the job fails on a current worker (it throws, times out, cannot be coded, or the call
    /// is cancelled), workers started later do not run it: replaying a failing job would keep
    /// every replacement from starting. A worker that dies or goes away during the broadcast
    /// does not count as the job failing. A replay gets the same `timeout`; one that exceeds
    /// it is the new worker failing to start (``CrewError/Code/workerStartFailed`` once the
    /// group gives up).
    ///
    /// - Returns: each current worker's id and outcome, by worker id.
    /// - Throws: ``CrewError/Code/poolShutDown`` once the pool is shutting down; a job that cannot
    ///   be encoded or is not in the catalog, like ``run(_:priority:timeout:requiring:retry:)``.
    public func broadcast<J: Job>(_ job: J, priority: JobPriority = .high, timeout: Duration? = nil) async throws
        -> [(workerID: Int, result: Result<J.Output, CrewError>)]
    {
        let payload: JobPayload = try shutDownFirst { try self.payload(for: job) }
        let (targets, replay) = try core.prepareBroadcast(name: J.jobName, payload: payload, timeout: timeout)
        let results = await withTaskGroup(of: (Int, Result<J.Output, CrewError>).self) { group in
            for workerID in targets {
                group.addTask {
                    do {
                        return (workerID, .success(try await self.execute(
                            job, priority: priority, timeout: timeout, requirement: .worker(workerID), retry: nil, payload: payload)))
                    } catch let error as CrewError {
                        return (workerID, .failure(error))
                    } catch {
                        return (workerID, .failure(CrewError(.jobFailed, "\(error)", jobName: J.jobName, underlying: error)))
                    }
                }
            }
            var results: [(workerID: Int, result: Result<J.Output, CrewError>)] = []
            for await result in group { results.append(result) }
            return results.sorted { $0.workerID < $1.workerID }
        }
        let failed = results.contains { _, result in
            guard case .failure(let error) = result else { return false }
            return ![.workerCrashed, .noEligibleWorker, .poolShutDown].contains(error.code)
        }
        if failed { core.withdrawBroadcast(replay) }
        return results
    }

    func execute<J: Job>(
        _ job: J, priority: JobPriority, timeout: Duration?, requirement: PoolCore.Machine.Requirement,
        retry: RetryPolicy?, waitsForRoom: Bool = true, payload: JobPayload? = nil
    ) async throws -> J.Output {
        let payload: JobPayload = try shutDownFirst { try payload ?? self.payload(for: job) }
        // A job for one worker cannot be retried elsewhere: a retry would only report that the
        // worker is gone, in place of what happened to it.
        let policy: RetryPolicy? = if case .worker = requirement { nil } else { retry ?? J.retryPolicy }
        precondition(
            (policy?.maxAttempts ?? 1) <= 1 || J.isIdempotent, "\(J.jobName) is retried but not declared idempotent (Job.isIdempotent)")
        var attempt = 1
        while true {
            do {
                // A retry is the same accepted job, not a new call: it waits for room in a full
                // queue even under trySubmit (which would otherwise hide the crash or timeout
                // being retried behind queueFull).
                let output = try await core.submit(
                    name: J.jobName, payload: payload, priority: priority, timeout: timeout,
                    requirement: requirement, waitsForRoom: waitsForRoom || attempt > 1)
                return try Self.decode(output, as: J.self)
            } catch let failure as CrewError {
                // A pool that shuts down retries nothing: the caller gets what happened, not
                // poolShutDown from an attempt that cannot start.
                // trySubmit's refusal is its answer, whatever the policy lists.
                guard let policy, attempt < policy.maxAttempts, policy.retryableCodes.contains(failure.code),
                      waitsForRoom || failure.code != .queueFull, !core.isShuttingDown else { throw failure }
                attempt += 1
                do {
                    try await Task.sleep(for: policy.backoff(beforeAttempt: attempt, random: Double.random(in: 0...1)))
                } catch {
                    // Cancelled while waiting out the backoff: a CrewError like any other
                    // cancellation, with the failure that was to be retried.
                    throw CrewError(
                        .cancelled, "cancelled while waiting to retry, after attempt \(attempt - 1) failed: \(failure.message)",
                        jobName: J.jobName, underlying: failure)
                }
                if core.isShuttingDown { throw failure }
            }
        }
    }

    /// Runs `body`; if it throws (the job is not in the catalog, or cannot be encoded) while the
    /// pool shuts down, the caller gets ``CrewError/Code/poolShutDown``, like every call then.
    private func shutDownFirst<R>(_ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch {
            guard core.isShuttingDown else { throw error }
            throw CrewError.takesNoNewJobs(underlying: error)
        }
    }

    func payload<J: Job>(for job: J) throws -> JobPayload {
        try Self.payload(for: job, workers: core.workers, catalog: core.catalog, maxFrameSize: core.configuration.maxFrameSize)
    }

    /// The job in the forms this pool's workers need: encoded for processes, a closure for the rest.
    static func payload<J: Job>(
        for job: J, workers: Workers, catalog: JobCatalog? = nil, maxFrameSize: Int = WireProtocol.defaultMaxFrameSize
    ) throws -> JobPayload {
        var payload = JobPayload()
        if workers.hasProcesses {
            if let catalog, !catalog.contains(J.jobName) {
                throw CrewError(.unknownJobType, "\(J.jobName) is not in the pool's job catalog", jobName: J.jobName)
            }
            let encoded: [UInt8]
            do {
                encoded = try BinaryEncoder().encode(job)
            } catch {
                throw CrewError(.unencodableArguments, "cannot encode the job: \(error)", jobName: J.jobName, underlying: error)
            }
            guard encoded.count + J.jobName.utf8.count + 64 <= maxFrameSize else {
                throw CrewError(
                    .unencodableArguments,
                    "the encoded job (\(encoded.count) bytes) exceeds the maximum frame size of \(maxFrameSize) bytes",
                    jobName: J.jobName)
            }
            payload.encoded = encoded
        }
        if workers.hasInProcess {
            payload.local = { context in try await job.run(in: context) }
        }
        return payload
    }

    static func decode<J: Job>(_ output: JobOutput, as: J.Type) throws -> J.Output {
        switch output {
        case .value(let value):
            guard let value = value as? J.Output else {
                throw CrewError(.undecodableOutput, "the job returned \(type(of: value)), not \(J.Output.self)", jobName: J.jobName)
            }
            return value
        case .encoded(let bytes):
            do {
                return try BinaryDecoder().decode(J.Output.self, from: bytes)
            } catch {
                throw CrewError(.undecodableOutput, "cannot decode the job's output: \(error)", jobName: J.jobName, underlying: error)
            }
        }
    }

    // MARK: Managing the pool

    /// Changes a group's worker limits at runtime: workers start up to the new minimum; idle
    /// workers above the new maximum stop, busy ones when their jobs are done.
    ///
    /// - Parameters:
    ///   - group: the index of the group in ``Workers/groups`` (0 for a single-group pool).
    ///   - minimum: workers kept even when idle.
    ///   - maximum: the most workers the group runs.
    public func setLimits(group: Int = 0, minimum: Int, maximum: Int) {
        precondition(core.workers.groups.indices.contains(group), "no worker group \(group)")
        core.setLimits(group: group, minimum: minimum, maximum: maximum)
    }

    /// The pool's state now: workers, queue depth per priority, free slots.
    public func snapshot() -> PoolSnapshot { core.snapshot() }

    /// Stops the pool: takes no new jobs, lets queued and running jobs finish (for at most
    /// ``Configuration/Shutdown-swift.struct/drainTimeout``), then lets every worker exit,
    /// escalating to SIGTERM and SIGKILL for workers that linger. Returns when every worker has
    /// exited and been reaped. Calling it again waits for the same shutdown; a call with
    /// `cancelPending` during a drain cuts the drain short (a second Ctrl-C, say).
    ///
    /// - Parameter cancelPending: fail queued jobs at once and ask running ones to cancel, instead
    ///   of letting them finish.
    public func shutdown(cancelPending: Bool = false) async {
        await core.shutdown(cancelPending: cancelPending)
    }

    /// How many jobs wait for a worker.
    public var queuedJobCount: Int { core.queuedCount }

    /// The process ids of the pool's current worker processes.
    public var workerProcessIDs: [Int32] { core.workerProcessIDs }
}
