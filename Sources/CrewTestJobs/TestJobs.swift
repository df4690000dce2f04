public import Crew
import Glibc
import Logging
import Synchronization

/// Jobs the tests run in real worker processes, one per behaviour under test.
public enum TestJobs {
    /// Every test job type.
    public static let catalog: JobCatalog = [
        Echo.self, Add.self, Sleep.self, Fail.self, Crash.self, Spin.self, BlockingSleep.self,
        Picky.self, Garbage.self, WhoAmI.self, Blob.self, Nested.self, Stamp.self,
        SetState.self, GetState.self, Hoard.self, CrashOnce.self, ThreadName.self, WaitForFile.self, LoggerMetadata.self, ExitWhileFileExists.self,
        PlainPoint.self, WeightedTotal.self, RetriedCrashOnce.self, RetriedSleep.self, RefuseNegative.self,
        FailUntilTicket.self, SpawnSleeper.self, FailWithLongMessage.self, ListDepth.self, PrivateJobName.self,
        ThrowsCancellationError.self, FailWhileDescribed.self, RefuseNegativeAtLength.self, WriteToStderr.self,
        TouchOrFail.self, InProcessChunkFailure.self, GatedRefuse.self, EchoBytes.self,
    ]
}

/// Returns its input.
public struct Echo: Job {
    public var value: Int
    public init(_ value: Int) { self.value = value }
    public func run(in context: JobContext) async throws -> Int { value }
}

/// Adds two numbers.
public struct Add: Job {
    public var a: Int
    public var b: Int
    public init(_ a: Int, _ b: Int) { self.a = a; self.b = b }
    public func run(in context: JobContext) async throws -> Int { a + b }
}

/// Sleeps, cooperatively cancellable; returns its worker's pid.
public struct Sleep: Job {
    public var milliseconds: Int
    public init(milliseconds: Int) { self.milliseconds = milliseconds }
    public func run(in context: JobContext) async throws -> Int32 {
        try await Task.sleep(for: .milliseconds(milliseconds))
        return context.processID
    }
}

/// The error ``Fail`` throws.
public struct TestFailure: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "TestFailure: \(reason)" }
}

/// Throws a ``TestFailure``.
public struct Fail: Job {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public func run(in context: JobContext) async throws -> Int { throw TestFailure(reason: reason) }
}

/// Returns its input, or throws at run time if it is negative (unlike ``Picky``, whose
/// arguments cannot even be decoded then).
public struct RefuseNegative: Job {
    public var value: Int
    public init(_ value: Int) { self.value = value }
    public func run(in context: JobContext) async throws -> Int {
        guard value >= 0 else { throw TestFailure(reason: "refused \(value)") }
        return value
    }
}

/// Ends its worker process in one of the ways real jobs do.
public struct Crash: Job {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case fatalError, indexOutOfRange, forceUnwrapNil, overflow, exit, sigkill, abort
    }
    public var kind: Kind
    public init(_ kind: Kind) { self.kind = kind }
    public func run(in context: JobContext) async throws -> Int {
        // Opaque values, so the optimizer cannot see the trap coming.
        let values = [Int](repeating: 1, count: Int(getpid() % 2) + 1)
        let nothing: Int? = values.count > 100 ? 1 : nil
        switch kind {
        case .fatalError: fatalError("crash job asked for fatalError")
        case .indexOutOfRange: return values[values.count + 5]
        case .forceUnwrapNil: return nothing!
        case .overflow: return Int.max - 1 + values.count + 1
        case .exit: exit(42)
        case .sigkill: kill(getpid(), SIGKILL)
        case .abort: abort()
        }
        return 0
    }
}

/// Burns CPU forever, never checking for cancellation: only a kill stops it.
public struct Spin: Job {
    public init() {}
    public func run(in context: JobContext) async throws -> Int {
        var x: UInt64 = 1
        while true {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            if x == 0 { break }
        }
        return Int(truncatingIfNeeded: x)
    }
}

/// Sleeps in a blocking call that ignores cancellation.
public struct BlockingSleep: Job {
    public var milliseconds: Int
    public init(milliseconds: Int) { self.milliseconds = milliseconds }
    public func run(in context: JobContext) async throws -> Int32 {
        usleep(UInt32(milliseconds) * 1000)
        return context.processID
    }
}

/// Encodes any value, but refuses to decode a negative one: arguments a worker cannot decode.
public struct Picky: Job {
    public var value: Int
    public init(_ value: Int) { self.value = value }
    enum CodingKeys: String, CodingKey { case value }
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        value = try container.decode(Int.self, forKey: .value)
        if value < 0 {
            throw DecodingError.dataCorruptedError(forKey: .value, in: container, debugDescription: "negative values are refused")
        }
    }
    public func run(in context: JobContext) async throws -> Int { value }
}

/// Writes bytes that are no frame onto the worker's channel (fd 3), then waits.
public struct Garbage: Job {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public func run(in context: JobContext) async throws -> Int {
        _ = bytes.withUnsafeBytes { write(3, $0.baseAddress, $0.count) }
        try await Task.sleep(for: .seconds(30))
        return 0
    }
}

/// Says where it runs: pid, worker id, parent pid and the process's command line.
public struct WhoAmI: Job {
    public struct Answer: Codable, Sendable {
        public var pid: Int32
        public var parentPID: Int32
        public var workerID: Int
        public var commandLine: String
    }
    public init() {}
    public func run(in context: JobContext) async throws -> Answer {
        let fd = open("/proc/self/cmdline", O_RDONLY)
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = max(0, read(fd, &buffer, buffer.count))
        close(fd)
        let commandLine = String(decoding: buffer[..<n].map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
        return Answer(pid: getpid(), parentPID: getppid(), workerID: context.workerID, commandLine: commandLine)
    }
}

/// Returns `count` bytes.
public struct Blob: Job {
    public var count: Int
    public init(count: Int) { self.count = count }
    public func run(in context: JobContext) async throws -> [UInt8] {
        [UInt8](repeating: 7, count: count)
    }
}

/// Starts a pool of its own inside its worker, runs a job there, returns the inner workers' pids.
public struct Nested: Job {
    public var workers: Int
    public init(workers: Int) { self.workers = workers }
    public func run(in context: JobContext) async throws -> [Int32] {
        var configuration = WorkerPool.Configuration()
        configuration.forwardWorkerStderr = false
        return try await WorkerPool.withPool(.processes(workers), jobs: TestJobs.catalog, configuration: configuration) { pool in
            // One job per worker at the same time, each long enough to hold its worker.
            try await withThrowingTaskGroup(of: Int32.self) { group in
                for _ in 0..<workers { group.addTask { try await pool.run(Sleep(milliseconds: 200)) } }
                var pids = Set<Int32>()
                for try await pid in group { pids.insert(pid) }
                return pids.sorted()
            }
        }
    }
}

/// Returns the time it started, on the system-wide monotonic clock (comparable across processes).
public struct Stamp: Job {
    public var tag: Int
    public init(_ tag: Int) { self.tag = tag }
    public func run(in context: JobContext) async throws -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

/// Per-worker state for the setup, broadcast and targeting tests.
let workerState = Mutex<[String: Int]>([:])

/// Sets a value in its worker's memory; returns the worker's id.
public struct SetState: Job {
    public var key: String
    public var value: Int
    public init(_ key: String, _ value: Int) { self.key = key; self.value = value }
    public func run(in context: JobContext) async throws -> Int {
        workerState.withLock { $0[key] = value }
        return context.workerID
    }
}

/// Reads a value from its worker's memory (nil if never set there).
public struct GetState: Job {
    public var key: String
    public init(_ key: String) { self.key = key }
    public func run(in context: JobContext) async throws -> Int? {
        workerState.withLock { $0[key] }
    }
}

/// Keeps `megabytes` of touched memory alive in its worker; returns the worker's pid.
public struct Hoard: Job {
    public var megabytes: Int
    public init(megabytes: Int) { self.megabytes = megabytes }
    public func run(in context: JobContext) async throws -> Int32 {
        let block = [UInt8](repeating: 1, count: megabytes << 20)
        hoard.withLock { $0.append(block) }
        return context.processID
    }
}
let hoard = Mutex<[[UInt8]]>([])

/// `Sleep` whose type carries a retry policy: in `map`, its chunks run in tasks (the retry path).
public struct RetriedSleep: Job {
    public static var isIdempotent: Bool { true }
    public static var retryPolicy: RetryPolicy? { RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(1)) }
    public var milliseconds: Int
    public init(milliseconds: Int) { self.milliseconds = milliseconds }
    public func run(in context: JobContext) async throws -> Int32 {
        try await Sleep(milliseconds: milliseconds).run(in: context)
    }
}

/// `CrashOnce` whose type carries a retry policy (short backoff): retried without asking.
public struct RetriedCrashOnce: Job {
    public static var isIdempotent: Bool { true }
    public static var retryPolicy: RetryPolicy? { RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(1)) }
    public var marker: String
    public var value: Int
    public init(marker: String, value: Int) { self.marker = marker; self.value = value }
    public func run(in context: JobContext) async throws -> Int {
        _ = try await CrashOnce(marker: marker).run(in: context)
        return value
    }
}

/// Crashes its worker the first time it runs with a given marker path, succeeds afterwards.
public struct CrashOnce: Job {
    public static var isIdempotent: Bool { true }
    public var marker: String
    public init(marker: String) { self.marker = marker }
    public func run(in context: JobContext) async throws -> Int {
        let fd = open(marker, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        if fd >= 0 {
            close(fd)
            kill(getpid(), SIGKILL)
        }
        return 1
    }
}

/// Cannot be encoded: runs on in-process workers only, which take jobs as values.
public struct Unencodable: Job {
    public var value: Int
    public init(_ value: Int) { self.value = value }
    public func encode(to encoder: any Encoder) throws {
        throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "never encoded"))
    }
    public func run(in context: JobContext) async throws -> Int { value * 2 }
}

/// Returns the name of the thread it runs on.
public struct ThreadName: Job {
    public init() {}
    public func run(in context: JobContext) async throws -> String {
        let fd = open("/proc/thread-self/comm", O_RDONLY)
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = max(0, read(fd, &buffer, buffer.count))
        close(fd)
        return String(decoding: buffer[..<n].filter { $0 != 10 }, as: UTF8.self)
    }
}

/// Waits (cooperatively cancellable) until a file exists, then returns its worker's pid: a gate
/// a test opens when it is ready, so no test depends on how long a sleep lasts on a busy machine.
public struct WaitForFile: Job {
    public var path: String
    public init(path: String) { self.path = path }
    public func run(in context: JobContext) async throws -> Int32 {
        while access(path, F_OK) != 0 { try await Task.sleep(for: .milliseconds(5)) }
        return context.processID
    }
}

/// Returns the `crew.worker` and `crew.job` metadata of its context's logger.
public struct LoggerMetadata: Job {
    public init() {}
    public func run(in context: JobContext) async throws -> [String] {
        let logger = context.logger
        return [logger[metadataKey: "crew.worker"], logger[metadataKey: "crew.job"]].map { $0.map { "\($0)" } ?? "-" }
    }
}

/// Ends its worker with exit status 3 while a file exists, and returns 0 otherwise: as a setup
/// job, a fault that lasts as long as the test wants.
public struct ExitWhileFileExists: Job {
    public var path: String
    public init(path: String) { self.path = path }
    public func run(in context: JobContext) async throws -> Int {
        if access(path, F_OK) == 0 { exit(3) }
        return 0
    }
}

/// A `PlainData` job with a `PlainData` output: both travel as their bytes.
public struct PlainPoint: Job, PlainData, Equatable {
    public var x: Double
    public var y: Double
    public init(x: Double, y: Double) { self.x = x; self.y = y }
    public func run(in context: JobContext) async throws -> Moments { Moments(sum: x + y, product: x * y, count: 2) }
}

/// What `PlainPoint` answers.
public struct Moments: PlainData, Equatable {
    public var sum: Double
    public var product: Double
    public var count: Int32
    public init(sum: Double, product: Double, count: Int32) { self.sum = sum; self.product = product; self.count = count }
}

/// One value with a weight; 12 bytes with a stride of 16, so arrays of it are copied value by value.
public struct Sample: PlainData, Equatable {
    public var value: Int64
    public var weight: Int32
    public init(value: Int64, weight: Int32) { self.value = value; self.weight = weight }
}

/// An ordinary job holding an array of plain data.
public struct WeightedTotal: Job {
    public var label: String
    public var samples: [Sample]
    public init(label: String, samples: [Sample]) { self.label = label; self.samples = samples }
    public func run(in context: JobContext) async throws -> String {
        "\(label)=\(samples.reduce(0) { $0 + $1.value * Int64($1.weight) })"
    }
}

/// As a setup job: takes the next numbered ticket (a file `prefix-n` made with O_EXCL); the
/// first `failures` tickets end their worker with status 3, later ones wait for `gate` and succeed.
public struct FailUntilTicket: Job {
    public var prefix: String
    public var failures: Int
    public var gate: String
    public init(prefix: String, failures: Int, gate: String) { self.prefix = prefix; self.failures = failures; self.gate = gate }
    public func run(in context: JobContext) async throws -> Int {
        var ticket = 0
        while true {
            let fd = open("\(prefix)-\(ticket)", O_WRONLY | O_CREAT | O_EXCL, 0o600)
            if fd >= 0 { close(fd); break }
            ticket += 1
        }
        if ticket < failures { exit(3) }
        while access(gate, F_OK) != 0 { try await Task.sleep(for: .milliseconds(5)) }
        return ticket
    }
}

/// Starts `/bin/sleep seconds` in the background (it inherits the worker's stderr) and returns its pid.
public struct SpawnSleeper: Job {
    public var seconds: Int
    public init(seconds: Int) { self.seconds = seconds }
    public func run(in context: JobContext) async throws -> Int32 {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("sleep"), strdup("\(seconds)"), nil]
        defer { for p in argv { free(p) } }
        let rc = posix_spawn(&pid, "/bin/sleep", nil, nil, argv, environ)
        guard rc == 0 else { throw TestFailure(reason: "posix_spawn: \(rc)") }
        return pid
    }
}

/// Throws a ``TestFailure`` whose description is `length` bytes long, from small arguments.
public struct FailWithLongMessage: Job {
    public var length: Int
    public init(length: Int) { self.length = length }
    public func run(in context: JobContext) async throws -> Int {
        throw TestFailure(reason: String(repeating: "x", count: length))
    }
}

/// Lists nested `depth` deep (`[[[]]]` is 2), decoded by hand through nested unkeyed containers,
/// as a hand-written decoder of a tree does; returns the depth it read.
public struct ListDepth: Job {
    public var depth: Int
    public init(depth: Int) { self.depth = depth }

    public init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        depth = try Self.walk(&container)
    }

    static func walk(_ container: inout any UnkeyedDecodingContainer) throws -> Int {
        guard !container.isAtEnd else { return 0 }
        var nested = try container.nestedUnkeyedContainer()
        return 1 + (try walk(&nested))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try Self.nest(&container, depth)
    }

    static func nest(_ container: inout any UnkeyedEncodingContainer, _ levels: Int) throws {
        guard levels > 0 else { return }
        var nested = container.nestedUnkeyedContainer()
        try nest(&nested, levels - 1)
    }

    public func run(in context: JobContext) async throws -> Int { depth }
}

/// A job type with file-private access, as an app's `main.swift` might declare one.
fileprivate struct FilePrivateEcho: Job {
    var value: Int
    func run(in context: JobContext) async throws -> Int { value }
}

/// Returns the default wire name (``Job/jobName``) of a `fileprivate` job type, as the process it
/// runs in computes it.
public struct PrivateJobName: Job {
    public init() {}
    /// The same name, as this process computes it.
    public static var here: String { FilePrivateEcho.jobName }
    public func run(in context: JobContext) async throws -> String { FilePrivateEcho.jobName }
}

/// Throws `CancellationError` on its own, without anyone cancelling it (an inner task group
/// that was cancelled, say): for the caller an error of the job like any other.
public struct ThrowsCancellationError: Job {
    public init() {}
    public func run(in context: JobContext) async throws -> Bool {
        let cancelled = context.isCancelled
        if !cancelled { throw CancellationError() }
        return cancelled
    }
}

/// Throws a ``GatedFailure``: its worker, describing the error to answer, is held between the
/// job's end and the sending of its answer until the test opens the gate.
public struct FailWhileDescribed: Job {
    public var opens: String
    public var waitsFor: String
    public init(opens: String, waitsFor: String) { self.opens = opens; self.waitsFor = waitsFor }
    public func run(in context: JobContext) async throws -> Int { throw GatedFailure(opens: opens, waitsFor: waitsFor) }
}

/// An error whose description creates the file `opens`, then waits (blocking) until the file
/// `waitsFor` exists.
public struct GatedFailure: Error, CustomStringConvertible {
    public var opens: String
    public var waitsFor: String
    public var description: String {
        close(open(opens, O_WRONLY | O_CREAT, 0o600))
        while access(waitsFor, F_OK) != 0 { usleep(5_000) }
        return "GatedFailure"
    }
}

/// Returns its input, or throws a ``TestFailure`` whose description is `length` bytes long if
/// it is negative.
public struct RefuseNegativeAtLength: Job {
    public var value: Int
    public var length: Int
    public init(_ value: Int, length: Int) { self.value = value; self.length = length }
    public func run(in context: JobContext) async throws -> Int {
        guard value >= 0 else { throw TestFailure(reason: String(repeating: "x", count: length)) }
        return value
    }
}

/// Maps `RefuseNegativeAtLength` jobs in chunks on an in-process pool of its own, one of them
/// failing with a message of `length` bytes; returns how many bytes of that message the map's
/// error carries.
public struct InProcessChunkFailure: Job {
    public var length: Int
    public var threads: Bool
    public init(length: Int, threads: Bool) { self.length = length; self.threads = threads }
    public func run(in context: JobContext) async throws -> Int {
        let workers: Workers = threads ? .threads(1) : .inline(maxConcurrent: 1)
        return try await WorkerPool.withPool(workers, jobs: TestJobs.catalog) { pool in
            let jobs = [1, -2, 3].map { RefuseNegativeAtLength($0, length: length) }
            do {
                for try await _ in pool.map(jobs, chunkSize: 3) {}
                return -1
            } catch let error as CrewError {
                return error.message.utf8.count
            }
        }
    }
}

/// Writes `text` to the worker's stderr and returns how many bytes it wrote.
public struct WriteToStderr: Job {
    public var text: String
    public init(_ text: String) { self.text = text }
    public func run(in context: JobContext) async throws -> Int {
        var text = text
        return text.withUTF8 { write(2, $0.baseAddress, $0.count) }
    }
}

/// Creates the file at `path` and returns 1, or throws without touching anything if `fails`:
/// which jobs of a chunk ran shows on disk.
public struct TouchOrFail: Job {
    public var path: String
    public var fails: Bool
    public init(path: String, fails: Bool = false) { self.path = path; self.fails = fails }
    public func run(in context: JobContext) async throws -> Int {
        if fails { throw TestFailure(reason: "asked to fail") }
        close(open(path, O_CREAT | O_WRONLY, 0o600))
        return 1
    }
}

/// Waits (cooperatively cancellable) until the file at `gate` exists, if it has one, then blocks
/// for `blockMilliseconds` ignoring cancellation, then returns its value, or throws a
/// ``TestFailure`` if it is negative: a map's jobs that end in an order the test chooses.
public struct GatedRefuse: Job {
    public var value: Int
    public var gate: String?
    public var blockMilliseconds: Int
    public init(_ value: Int, gate: String? = nil, blockMilliseconds: Int = 0) {
        self.value = value
        self.gate = gate
        self.blockMilliseconds = blockMilliseconds
    }
    public func run(in context: JobContext) async throws -> Int {
        if let gate { while access(gate, F_OK) != 0 { try await Task.sleep(for: .milliseconds(5)) } }
        let clock = ContinuousClock()
        let end = clock.now + .milliseconds(blockMilliseconds)
        while clock.now < end {
            usleep(5_000)
            await Task.yield()
        }
        guard value >= 0 else { throw TestFailure(reason: "refused \(value)") }
        return value
    }
}

/// Returns its bytes after blocking its thread for `microseconds`: large frames both ways, at a
/// pace that lets answers pile up behind prefetched jobs.
public struct EchoBytes: Job {
    public var bytes: [UInt8]
    public var microseconds: UInt32
    public init(bytes: [UInt8], microseconds: UInt32) { self.bytes = bytes; self.microseconds = microseconds }
    public func run(in context: JobContext) async throws -> [UInt8] {
        usleep(microseconds)
        return bytes
    }
}
