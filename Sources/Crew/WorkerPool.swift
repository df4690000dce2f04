#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// A pool of supervised workers that run ``Job``s.
///
/// ```swift
/// let jobs: JobCatalog = [Square.self]
/// try await Crew.serveIfWorker(jobs)          // worker processes serve here and never return
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
/// - A timeout counts from the moment a worker takes the job. On expiry the worker process is
///   killed (SIGKILL), the caller gets ``CrewError/Code/timedOut`` and a replacement starts.
/// - Cancelling the awaiting task removes a queued job, or asks a running one to cancel; if it has
///   not stopped after ``Configuration/cancellationGracePeriod``, its worker is killed.
/// - After ``shutdown(cancelPending:)`` every call fails with ``CrewError/Code/poolShutDown``.
public final class WorkerPool: Sendable {
    let core: PoolCore

    /// Starts a pool. Prefer ``withPool(_:jobs:configuration:isolation:_:)``, which always shuts it down.
    ///
    /// - Parameters:
    ///   - workers: which workers to start.
    ///   - jobs: the job types this pool runs; workers must have them all in their catalogs.
    ///   - configuration: timing, limits, the worker executable, logging.
    /// - Throws: ``CrewError`` with ``CrewError/Code/workerStartFailed`` if the worker executable
    ///   cannot be run.
    public init(_ workers: Workers, jobs: JobCatalog, configuration: Configuration = Configuration()) throws {
        let path = configuration.executable.path
        guard access(path, X_OK) == 0 else {
            throw CrewError(.workerStartFailed, "the worker executable \(path) cannot be run: \(String(cString: strerror(errno)))")
        }
        core = PoolCore(workers: workers, catalog: jobs, configuration: configuration)
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
    ///   - body: what to do with the pool.
    /// - Returns: what `body` returns.
    /// - Throws: what `body` throws, or a ``CrewError`` if the pool cannot start.
    public static func withPool<Result>(
        _ workers: Workers,
        jobs: JobCatalog,
        configuration: Configuration = Configuration(),
        isolation: isolated (any Actor)? = #isolation,
        _ body: (WorkerPool) async throws -> sending Result
    ) async throws -> sending Result {
        let pool = try WorkerPool(workers, jobs: jobs, configuration: configuration)
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

    /// Runs `job` on a worker and returns its output.
    ///
    /// - Parameters:
    ///   - job: the job; its type must be in the pool's catalog.
    ///   - priority: higher priorities start first. Default: ``JobPriority/normal``.
    ///   - timeout: the longest the job may run once a worker has taken it; nil for no limit.
    ///     A process worker that exceeds it is killed.
    /// - Returns: the job's output.
    /// - Throws: ``CrewError``: ``CrewError/Code/jobFailed`` if the job threw, and the codes listed
    ///   on ``WorkerPool`` for crashes, timeouts, cancellation and shutdown.
    public func run<J: Job>(_ job: J, priority: JobPriority = .normal, timeout: Duration? = nil) async throws -> J.Output {
        guard core.catalog.contains(J.jobName) else {
            throw CrewError(.unknownJobType, "\(J.jobName) is not in the pool's job catalog", jobName: J.jobName)
        }
        let arguments: [UInt8]
        do {
            arguments = try BinaryEncoder().encode(job)
        } catch {
            throw CrewError(.unencodableArguments, "cannot encode the job: \(error)", jobName: J.jobName, underlying: error)
        }
        guard arguments.count + J.jobName.utf8.count + 64 <= core.configuration.maxFrameSize else {
            throw CrewError(
                .unencodableArguments,
                "the encoded job (\(arguments.count) bytes) exceeds the maximum frame size of \(core.configuration.maxFrameSize) bytes",
                jobName: J.jobName)
        }
        let output = try await core.submit(name: J.jobName, arguments: arguments, priority: priority, timeout: timeout)
        do {
            return try BinaryDecoder().decode(J.Output.self, from: output)
        } catch {
            throw CrewError(.undecodableOutput, "cannot decode the job's output: \(error)", jobName: J.jobName, underlying: error)
        }
    }

    /// Stops the pool: takes no new jobs, lets queued and running jobs finish (for at most
    /// ``Configuration/Shutdown-swift.struct/drainTimeout``), then lets every worker exit,
    /// escalating to SIGTERM and SIGKILL for workers that linger. Returns when every worker has
    /// been reaped. Calling it again waits for the same shutdown.
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
