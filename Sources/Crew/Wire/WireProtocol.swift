/// Crew's wire protocol between a pool and a worker, over any reliable byte stream.
///
/// Every message is one frame:
///
/// ```
/// +----------------+--------+----------------------+
/// | length: UInt32 | type   | body (length - 1)    |
/// | little endian  | UInt8  |                      |
/// +----------------+--------+----------------------+
/// ```
///
/// `length` counts the type byte and the body and may not exceed the receiver's maximum frame
/// size. Integers are little endian; `str16`/`str32` are UTF-8 prefixed by a UInt16/UInt32
/// length. Job arguments and outputs are encoded with ``BinaryEncoder``.
///
/// | type | direction | body |
/// |---|---|---|
/// | 1 hello | worker → pool | "CREW", version u16, pid i32, worker id u64, count u32, count × (str16 job name, str16 digest of its plain-data layouts or empty) |
/// | 2 run | pool → worker | job id u64, flags u8 (bit 0: announce the start; bit 1: the job has a timeout, so its answer is never held back; bit 2: a priority follows; other bits must be 0), priority i64 if flagged (held jobs run highest first; 0 if absent), job name str16, encoded arguments (rest) |
/// | 3 result | worker → pool | job id u64, encoded output (rest) |
/// | 4 failure | worker → pool | job id u64, kind u8, error type str16, message str32 |
/// | 5 cancel | pool → worker | job id u64 |
/// | 12 started | worker → pool | job id u64: a held job whose run frame asked for it has started |
/// | 13 recall | pool → worker | job id u64: give the job back if it has not started (another worker is idle) |
/// | 14 recalled | worker → pool | job id u64: the job was held and has been dropped unstarted, for the pool to run elsewhere |
/// | 6 stream element, 7 stream end, 8 credit, 9 log record, 10 heartbeat | | reserved for streaming jobs, log forwarding and liveness |
/// | 11 shutdown | pool → worker | empty: finish what runs, then exit |
///
/// The first frame on a new connection is the worker's hello; the pool checks the version and
/// that the worker's catalog holds every job type of the pool's, with the same layouts for its
/// ``PlainData`` types, and ends the worker otherwise.
enum WireProtocol {
    /// The protocol version this build speaks. Peers must match exactly.
    static let version: UInt16 = 5
    static let magic: [UInt8] = Array("CREW".utf8)
    /// Bytes before the body: the length and the type.
    static let headerSize = 5
    /// The default largest frame either side accepts.
    static let defaultMaxFrameSize = 64 << 20
}

/// Message types, the second field of every frame.
enum MessageType: UInt8 {
    case hello = 1
    case run = 2
    case result = 3
    case failure = 4
    case cancel = 5
    case streamElement = 6
    case streamEnd = 7
    case credit = 8
    case logRecord = 9
    case heartbeat = 10
    case shutdown = 11
    case started = 12
    case recall = 13
    case recalled = 14
}

/// Why a job's failure frame was sent.
enum FailureKind: UInt8, Sendable {
    case jobFailed = 0
    case unknownJobType = 1
    case undecodableArguments = 2
    case unencodableOutput = 3
    case cancelled = 4

    var code: CrewError.Code {
        switch self {
        case .jobFailed: .jobFailed
        case .unknownJobType: .unknownJobType
        case .undecodableArguments: .undecodableArguments
        case .unencodableOutput: .unencodableOutput
        case .cancelled: .cancelled
        }
    }
}

/// A worker's first frame.
struct Hello: Sendable, Equatable {
    var version: UInt16
    var processID: Int32
    var workerID: UInt64
    var jobNames: [String]
    /// Per job name, the digest of the layouts of its ``PlainData`` job and output types
    /// (`PlainDataLayout.digest`; empty for none).
    var jobLayouts: [String]
}

/// What a worker sends.
enum WorkerMessage: Sendable {
    case hello(Hello)
    case result(jobID: UInt64, output: [UInt8])
    case failure(jobID: UInt64, kind: FailureKind, errorType: String, message: String)
    case started(jobID: UInt64)
    case recalled(jobID: UInt64)
}

/// What a pool sends.
enum PoolMessage: Sendable {
    case run(jobID: UInt64, name: String, arguments: [UInt8], announceStart: Bool = false, timed: Bool = false, priority: Int = 0)
    case cancel(jobID: UInt64)
    case recall(jobID: UInt64)
    case shutdown
}

/// A frame that breaks the protocol. The connection cannot be trusted after one.
struct WireError: Error, CustomStringConvertible {
    var description: String
}
