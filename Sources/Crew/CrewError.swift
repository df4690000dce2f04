/// The one error type Crew throws.
///
/// Match on ``code``; the other properties say what happened in more detail. Two errors are
/// equal when their codes are equal.
///
/// ```swift
/// do {
///     _ = try await pool.run(job, timeout: .seconds(1))
/// } catch let error as CrewError where error.code == .timedOut {
///     // the worker was killed and replaced; the job did not finish
/// }
/// ```
public struct CrewError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong. New codes may be added: switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: String, Sendable {
            case jobFailed, workerCrashed, timedOut, cancelled, unknownJobType, undecodableArguments
            case unencodableOutput, undecodableOutput, unencodableArguments, poolShutDown
            case protocolViolation, workerStartFailed, queueFull, noEligibleWorker
        }
        let base: Base

        /// The job threw an error; ``CrewError/remoteErrorType`` and ``CrewError/message`` describe it.
        public static let jobFailed = Code(base: .jobFailed)
        /// The worker process died while it held the job (a trap, `exit`, a signal).
        /// ``CrewError/termination`` and ``CrewError/stderrTail`` say how.
        public static let workerCrashed = Code(base: .workerCrashed)
        /// The job ran longer than its timeout; its process worker was killed and replaced.
        public static let timedOut = Code(base: .timedOut)
        /// The awaiting task was cancelled.
        public static let cancelled = Code(base: .cancelled)
        /// The job's type is not in the pool's or the worker's catalog.
        public static let unknownJobType = Code(base: .unknownJobType)
        /// The worker could not decode the job's arguments.
        public static let undecodableArguments = Code(base: .undecodableArguments)
        /// The job's arguments could not be encoded in the caller's process.
        public static let unencodableArguments = Code(base: .unencodableArguments)
        /// The worker could not encode the job's output.
        public static let unencodableOutput = Code(base: .unencodableOutput)
        /// The caller could not decode the job's output.
        public static let undecodableOutput = Code(base: .undecodableOutput)
        /// The pool was shut down before or while the job ran.
        public static let poolShutDown = Code(base: .poolShutDown)
        /// The worker sent bytes that break the wire protocol; it was killed and replaced.
        public static let protocolViolation = Code(base: .protocolViolation)
        /// Workers could not be started (the executable is missing, every new worker died at once,
        /// or their handshake was refused: another protocol version, or a catalog without some of
        /// the pool's jobs).
        /// The group tries again after ``WorkerPool/Configuration/startFailureCooldown``.
        public static let workerStartFailed = Code(base: .workerStartFailed)

        /// The pool's queue held its `maxQueued` jobs and the job was submitted with ``WorkerPool/trySubmit(_:priority:timeout:requiring:)``.
        public static let queueFull = Code(base: .queueFull)
        /// No worker of the pool can ever take the job: no group has the required tag, or the
        /// targeted worker is gone.
        public static let noEligibleWorker = Code(base: .noEligibleWorker)

        public var description: String { base.rawValue }
    }

    /// How a worker process ended.
    public enum Termination: Hashable, Sendable, CustomStringConvertible {
        /// It called `exit` (or returned from `main`) with this status.
        case exited(Int32)
        /// A signal killed it: 4 (SIGILL) or 5 (SIGTRAP) for a Swift trap, 9 for SIGKILL, …
        case signaled(Int32)

        public var description: String {
            switch self {
            case .exited(let status): "exited with status \(status)"
            case .signaled(let signal): "killed by signal \(signal) (\(signalName(signal)))"
            }
        }
    }

    /// What went wrong.
    public var code: Code
    /// A human-readable explanation.
    public var message: String
    /// The wire name of the job concerned, if any.
    public var jobName: String?
    /// The worker concerned, if any.
    public var workerID: Int?
    /// The worker's process id, if it is a process worker.
    public var processID: Int32?
    /// For ``Code/workerCrashed``: how the worker process ended.
    public var termination: Termination?
    /// For ``Code/workerCrashed`` and ``Code/workerStartFailed``: the last lines the worker
    /// wrote to stderr, such as Swift's crash report and backtrace.
    public var stderrTail: String?
    /// For ``Code/jobFailed``: the type name of the error the job threw.
    public var remoteErrorType: String?
    /// The local error behind this one, if any (a decoding error, a system call failure).
    public var underlying: (any Error)?

    /// What every call gets once the pool shuts down.
    static func takesNoNewJobs(jobName: String? = nil, underlying: (any Error)? = nil) -> CrewError {
        CrewError(.poolShutDown, "the pool is shut down and takes no new jobs", jobName: jobName, underlying: underlying)
    }

    /// Creates an error.
    public init(
        _ code: Code,
        _ message: String,
        jobName: String? = nil,
        workerID: Int? = nil,
        processID: Int32? = nil,
        termination: Termination? = nil,
        stderrTail: String? = nil,
        remoteErrorType: String? = nil,
        underlying: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.jobName = jobName
        self.workerID = workerID
        self.processID = processID
        self.termination = termination
        self.stderrTail = stderrTail
        self.remoteErrorType = remoteErrorType
        self.underlying = underlying
    }

    public static func == (lhs: CrewError, rhs: CrewError) -> Bool { lhs.code == rhs.code }

    public var description: String {
        var text = "CrewError.\(code): \(message)"
        if let jobName { text += " [job \(jobName)]" }
        if let workerID { text += " [worker \(workerID)\(processID.map { ", pid \($0)" } ?? "")]" }
        if let stderrTail, !stderrTail.isEmpty {
            text += "\n--- worker stderr (tail) ---\n\(stderrTail)"
        }
        return text
    }
}

func signalName(_ signal: Int32) -> String {
    switch signal {
    case 1: "SIGHUP"
    case 2: "SIGINT"
    case 4: "SIGILL"
    case 5: "SIGTRAP"
    case 6: "SIGABRT"
    case 7: "SIGBUS"
    case 8: "SIGFPE"
    case 9: "SIGKILL"
    case 11: "SIGSEGV"
    case 13: "SIGPIPE"
    case 15: "SIGTERM"
    default: "signal \(signal)"
    }
}
