/// Where a worker runs its jobs.
public struct WorkerKind: Hashable, Sendable, CustomStringConvertible {
    enum Base: String, Sendable {
        case process, thread, inline
    }
    let base: Base

    /// A supervised child process: crash, memory and hard-timeout isolation. Jobs and outputs
    /// are encoded; a timeout or a stuck cancellation kills the process.
    public static let process = WorkerKind(base: .process)
    /// A dedicated OS thread in this process: for blocking or synchronous jobs, which must not
    /// occupy Swift's cooperative pool. Jobs are passed as values. Timeouts and cancellation are
    /// cooperative: a job that ignores them keeps its thread until it returns (the pool replaces
    /// the worker meanwhile). All of a worker's jobs share its one thread, so with more than one
    /// job per worker they take turns only where they await, and a timeout, which replaces the
    /// worker, fails its other jobs with ``CrewError/Code/workerCrashed``.
    public static let thread = WorkerKind(base: .thread)
    /// A task in this process, on Swift's cooperative pool: for cheap async work and tests.
    /// Jobs are passed as values; timeouts and cancellation are cooperative: a job that ignores
    /// them runs on, detached from the pool, while a replacement takes its place (so more than
    /// `maxConcurrent` may run for a while).
    public static let inline = WorkerKind(base: .inline)

    public var description: String { base.rawValue }

    /// Whether jobs cross a process boundary (and so are encoded).
    var isOutOfProcess: Bool { base == .process }
}

/// What a worker returns for a job: bytes from another process, or the value itself.
@usableFromInline
enum JobOutput: Sendable {
    case encoded([UInt8])
    case value(any Sendable)
}

/// A job as the pool hands it to a worker.
struct JobPayload: Sendable {
    /// The job's arguments, encoded, for process workers.
    var encoded: [UInt8]?
    /// The job itself, for in-process workers.
    var local: (@Sendable (JobContext) async throws -> any Sendable)?
}
