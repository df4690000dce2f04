public import Logging

/// A unit of work that a ``WorkerPool`` runs on one of its workers.
///
/// A job is a value: its stored properties are its arguments, and its type's ``jobName`` is its
/// identity on the wire. The parent and its worker processes run the same code, so a job type
/// means the same thing on both sides.
///
/// ```swift
/// struct Square: Job {
///     var value: Int
///     func run(in context: JobContext) async throws -> Int { value * value }
/// }
/// ```
public protocol Job: Codable, Sendable {
    /// What the job returns to its caller.
    associatedtype Output: Codable & Sendable

    /// The job type's stable name on the wire. Defaults to the fully qualified type name
    /// (`MyModule.Square`; a private or function-local type's context reads `(private)`);
    /// override it to keep a name stable across renames, or to tell apart two private types of
    /// the same name in one module.
    static var jobName: String { get }

    /// Whether running the job twice is harmless. Only idempotent jobs are ever retried
    /// (see ``RetryPolicy``). Default: false.
    static var isIdempotent: Bool { get }

    /// The retry policy for every call of this job type that does not pass its own. Default: none.
    static var retryPolicy: RetryPolicy? { get }

    /// Does the work. Runs in a worker: another process, for a process worker.
    ///
    /// - Parameter context: the worker's identity, a logger and cancellation state.
    /// - Returns: the result, sent back to the caller of ``WorkerPool/run(_:priority:timeout:requiring:retry:)``.
    /// - Throws: any error; the caller receives a ``CrewError`` with code ``CrewError/Code/jobFailed``
    ///   that names the error's type and describes it.
    func run(in context: JobContext) async throws -> Output

    /// Crew's own, provided for every job type: the layouts of the job and output types that
    /// are ``PlainData``, which the worker's handshake carries. Do not implement it.
    ///
    /// A requirement, so that the answer is chosen when the type is compiled: asking each type
    /// at run time (`as? any PlainData.Type`) costs a search of every conformance in the
    /// process, which a worker would pay for every catalog entry before its first job.
    static var _plainDataLayouts: String { get }
}

extension Job {
    /// The fully qualified type name, for example `MyModule.Square`.
    public static var jobName: String { DefaultJobNames.name(of: Self.self) }

    /// Not idempotent unless the type says so.
    public static var isIdempotent: Bool { false }

    /// No retries unless the type says so.
    public static var retryPolicy: RetryPolicy? { nil }

    /// Neither the job nor its output is ``PlainData``.
    public static var _plainDataLayouts: String { "" }
}

extension Job where Self: PlainData {
    /// The job is ``PlainData``.
    public static var _plainDataLayouts: String { PlainDataLayout.describe(job: Self.self, output: nil) }
}

extension Job where Output: PlainData {
    /// The output is ``PlainData``.
    public static var _plainDataLayouts: String { PlainDataLayout.describe(job: nil, output: Output.self) }
}

extension Job where Self: PlainData, Output: PlainData {
    /// Both the job and its output are ``PlainData``.
    public static var _plainDataLayouts: String { PlainDataLayout.describe(job: Self.self, output: Output.self) }
}

/// What a running job knows about where it runs.
public struct JobContext: Sendable {
    /// The pool-assigned number of the worker running the job (1, 2, …; replacements get new numbers).
    public var workerID: Int
    /// The job's pool-assigned identifier, unique within its pool.
    public var jobID: UInt64
    /// The process the job runs in.
    public var processID: Int32

    /// The largest frame the job's answer goes back to its pool in: set by a worker process for
    /// the jobs it serves, nil where the answer is a value that no frame carries (thread and
    /// inline workers, and contexts made with the public initializer). A batch cuts the error
    /// text it answers with to fit it. Per job, not per process: a job in a worker may start a
    /// pool of its own, whose jobs answer differently.
    var answerFrameSize: Int?

    /// The logger as given, and whether it still needs the job's metadata.
    private var baseLogger: Logger
    private var addsJobMetadata: Bool

    /// A logger for the job, with `crew.worker` and `crew.job` metadata set.
    ///
    /// Workers add the metadata when a job first reads the logger, so a job that never logs
    /// never pays for it.
    public var logger: Logger {
        get {
            guard addsJobMetadata else { return baseLogger }
            var logger = baseLogger
            logger[metadataKey: "crew.worker"] = "\(workerID)"
            logger[metadataKey: "crew.job"] = "\(jobID)"
            return logger
        }
        set {
            baseLogger = newValue
            addsJobMetadata = false
        }
    }

    /// Creates a context; workers make these, tests of job types may too.
    public init(workerID: Int, jobID: UInt64, processID: Int32, logger: Logger) {
        self.workerID = workerID
        self.jobID = jobID
        self.processID = processID
        self.answerFrameSize = nil
        self.baseLogger = logger
        self.addsJobMetadata = false
    }

    /// A worker's context for one job: `logger` is the worker's, and the job's metadata is added
    /// when the job reads it; `answerFrameSize` is the largest frame its answer may take, nil if
    /// the answer goes back as a value.
    init(workerID: Int, jobID: UInt64, processID: Int32, workerLogger: Logger, answerFrameSize: Int?) {
        self.workerID = workerID
        self.jobID = jobID
        self.processID = processID
        self.answerFrameSize = answerFrameSize
        self.baseLogger = workerLogger
        self.addsJobMetadata = true
    }

    /// Whether the caller cancelled the job. Cancellation is cooperative first: a job that does
    /// not stop within the pool's grace period has its worker process killed.
    public var isCancelled: Bool { Task.isCancelled }

    /// Throws `CancellationError` if the caller cancelled the job.
    public func checkCancellation() throws {
        try Task.checkCancellation()
    }
}

/// The order in which queued jobs start: higher priorities first, first-in first-out within one.
public struct JobPriority: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The numeric priority; larger starts earlier.
    public var rawValue: Int

    /// A priority with the given numeric value.
    public init(_ rawValue: Int) { self.rawValue = rawValue }

    /// Background work: starts only when nothing of higher priority waits.
    public static let low = JobPriority(-10)
    /// The default.
    public static let normal = JobPriority(0)
    /// Starts before `normal` and `low` jobs.
    public static let high = JobPriority(10)
    /// The highest named priority: starts before `high`, `normal` and `low` jobs (a custom
    /// priority above 20 starts before it).
    public static let critical = JobPriority(20)

    public static func < (lhs: JobPriority, rhs: JobPriority) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch rawValue {
        case -10: "low"
        case 0: "normal"
        case 10: "high"
        case 20: "critical"
        default: "priority(\(rawValue))"
        }
    }
}

/// The default wire names, computed once per type: `String(reflecting:)` costs about a
/// microsecond, and a pool needs the name several times per job.
enum DefaultJobNames {
    /// Per thread: every `run` asks for its type's name, often several times, and one shared
    /// lock here was contended by every caller of every pool.
    private static let cache = BinaryThreadLocal<Cache>()

    /// A reflected type name without what differs between processes: a private, fileprivate or
    /// function-local type's context reads `(unknown context at $55d1c3a04c38)`, a load address.
    static func stableName(_ reflected: String) -> String {
        guard reflected.contains("(unknown context at $") else { return reflected }
        var result = ""
        var rest = Substring(reflected)
        while let start = rest.firstRange(of: "(unknown context at $") {
            result += rest[..<start.lowerBound]
            result += "(private)"
            rest = rest[start.upperBound...]
            rest = rest.drop { $0.isHexDigit }.dropFirst()  // the address and its ")"
        }
        return result + rest
    }

    static func name(of type: Any.Type) -> String {
        let key = ObjectIdentifier(type)
        return cache.get(orMake: Cache.init)._withUnsafeGuaranteedRef { cache in
            if cache.lastType == key { return cache.lastName }
            let name = cache.names[key] ?? cache.insert(stableName(String(reflecting: type)), for: key)
            cache.lastType = key
            cache.lastName = name
            return name
        }
    }

    private final class Cache {
        var names: [ObjectIdentifier: String] = [:]
        var lastType: ObjectIdentifier?
        var lastName = ""

        func insert(_ name: String, for key: ObjectIdentifier) -> String {
            names[key] = name
            return name
        }
    }
}
