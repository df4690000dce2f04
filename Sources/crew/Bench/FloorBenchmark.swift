import ArgumentParser
import Glibc

/// The raw limit every process-worker figure is compared with: two processes ping-pong
/// 16 bytes over a Unix socketpair with plain blocking `read` and `write`, no framing, no codec,
/// no threads beyond one per side.
///
/// The peer is this binary re-executed as `crew bench echo-peer`, with its end of the socketpair
/// on fd 3, exactly where a pool worker finds its channel. Each repetition starts a new peer:
/// the scheduler keeps a pair of processes on one CPU or on two for their whole life (about
/// 5–10 µs against 50–80 µs per round trip on this VM), so one pair would report one placement.
/// The pinned variants measure both placements on purpose.
enum FloorBenchmark {
    /// The message size, in bytes.
    static let messageSize = 16

    /// Where the two processes run.
    enum Placement {
        /// Wherever the scheduler puts them, like a pool's processes.
        case unpinned
        /// Both pinned to the first allowed CPU.
        case sameCPU
        /// Pinned to the first two allowed CPUs, one each.
        case crossCPU
    }

    /// Unpinned round-trip times in µs: per repetition, the p50 and p99 of `settings.roundTrips`.
    static func roundTrip(_ settings: BenchSettings) async throws -> [String: [Double]] {
        let repetitions = try await measure(settings, .unpinned)
        return [
            "floor_rtt_us_p50": repetitions.map { $0.percentile(0.50) },
            "floor_rtt_us_p99": repetitions.map { $0.percentile(0.99) },
        ]
    }

    /// The p50 with both processes pinned to one CPU, and with them pinned to two.
    static func pinnedRoundTrip(_ settings: BenchSettings) async throws -> [String: [Double]] {
        guard CPUAffinity.allowedCPUs().count >= 2 else { throw BenchError("needs two CPUs", unavailable: true) }
        return [
            "floor_same_cpu_rtt_us_p50": try await measure(settings, .sameCPU).map { $0.percentile(0.50) },
            "floor_cross_cpu_rtt_us_p50": try await measure(settings, .crossCPU).map { $0.percentile(0.50) },
        ]
    }

    /// One sample set (µs per round trip) per repetition, each with a new peer.
    private static func measure(_ settings: BenchSettings, _ placement: Placement) async throws -> [[Double]] {
        var repetitions: [[Double]] = []
        for _ in 0..<settings.repetitions {
            let result = await onThreads(1) { _ in
                Result { try session(placement, warmUp: settings.warmUpRoundTrips, count: settings.roundTrips) }
            }
            repetitions.append(try result[0].get())
        }
        return repetitions
    }

    /// Starts a peer, pins both sides as asked, warms up, then times `count` round trips.
    /// Runs on its own thread (the pinning applies to the calling thread).
    private static func session(_ placement: Placement, warmUp: Int, count: Int) throws -> [Double] {
        let (mine, theirs) = try benchSocketPair()
        defer { close(mine) }
        let peer: BenchChild
        do {
            peer = try BenchChild.spawn(["bench", EchoPeerCommand.name], descriptors: [(theirs, 3)])
        } catch {
            close(theirs)
            throw error
        }
        close(theirs)
        defer {
            shutdown(mine, Int32(SHUT_RDWR))  // the peer reads end-of-file and exits
            peer.wait()
        }
        let cpus = CPUAffinity.allowedCPUs()
        guard cpus.count >= 2 || placement != .crossCPU else { throw BenchError("only \(cpus.count) CPU may be used") }
        // Unpinned before this thread hands its result to Swift code (see CPUAffinity.pin).
        defer { CPUAffinity.pin(0, to: cpus) }
        switch placement {
        case .unpinned:
            break
        case .sameCPU:
            guard CPUAffinity.pin(0, to: cpus[0]), CPUAffinity.pin(peer.pid, to: cpus[0]) else { throw BenchError("cannot pin") }
        case .crossCPU:
            guard CPUAffinity.pin(0, to: cpus[0]), CPUAffinity.pin(peer.pid, to: cpus[1]) else { throw BenchError("cannot pin") }
        }
        guard pingPong(mine, count: warmUp) != nil, let samples = pingPong(mine, count: count) else {
            throw BenchError("the echo peer stopped answering")
        }
        return samples
    }

    /// `count` round trips on `fd`; each one's time in µs, or nil if the peer went away.
    private static func pingPong(_ fd: Int32, count: Int) -> [Double]? {
        var samples = [Double]()
        samples.reserveCapacity(count)
        var message = [UInt8](repeating: 7, count: messageSize)
        return message.withUnsafeMutableBytes { buffer -> [Double]? in
            for _ in 0..<count {
                let start = monotonicNanoseconds()
                guard writeFully(fd, buffer.baseAddress!, messageSize),
                      readFully(fd, buffer.baseAddress!, messageSize) else { return nil }
                samples.append(microseconds(since: start))
            }
            return samples
        }
    }
}

/// CPU pinning. Glibc's `sched_setaffinity` is hidden from Swift (it needs `_GNU_SOURCE`), so it
/// is looked up with `dlsym`.
enum CPUAffinity {
    private typealias Call = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
    private static func function(_ name: String) -> Call? {
        dlsym(dlopen(nil, RTLD_NOW), name).map { unsafeBitCast($0, to: Call.self) }
    }

    /// The CPUs this process may run on, in order: the main thread's set, which is never pinned
    /// (the calling thread may have inherited a pin, see ``pin(_:to:)``).
    static func allowedCPUs() -> [Int] {
        var set = cpu_set_t()
        guard let get = function("sched_getaffinity"), get(getpid(), MemoryLayout<cpu_set_t>.size, &set) == 0 else { return [] }
        return withUnsafeBytes(of: &set) { bytes in
            (0..<(bytes.count * 8)).filter { bytes[$0 / 8] & (1 << ($0 % 8)) != 0 }
        }
    }

    /// Pins `pid` (0: the calling thread) to `cpu`.
    ///
    /// A pinned thread must be unpinned (``pin(_:to:)`` with every allowed CPU) before it
    /// resumes Swift code: threads created from it, such as a new thread of the cooperative pool
    /// that a continuation's resumption starts, inherit its pin.
    static func pin(_ pid: pid_t, to cpu: Int) -> Bool {
        pin(pid, to: [cpu])
    }

    /// Lets `pid` (0: the calling thread) run on any of `cpus`.
    @discardableResult
    static func pin(_ pid: pid_t, to cpus: [Int]) -> Bool {
        var set = cpu_set_t()
        withUnsafeMutableBytes(of: &set) { bytes in
            for cpu in cpus { bytes[cpu / 8] |= UInt8(1 << (cpu % 8)) }
        }
        guard let call = function("sched_setaffinity") else { return false }
        return call(pid, MemoryLayout<cpu_set_t>.size, &set) == 0
    }
}

/// `crew bench echo-peer` (hidden): the floor benchmark's other process. Echoes 16-byte
/// messages on fd 3 until end-of-file.
struct EchoPeerCommand: ParsableCommand {
    static let name = "echo-peer"
    static let configuration = CommandConfiguration(
        commandName: name,
        abstract: "Echo 16-byte messages on fd 3 (the floor benchmark's peer).",
        shouldDisplay: false
    )

    func run() throws {
        var message = [UInt8](repeating: 0, count: FloorBenchmark.messageSize)
        message.withUnsafeMutableBytes { buffer in
            while readFully(3, buffer.baseAddress!, buffer.count), writeFully(3, buffer.baseAddress!, buffer.count) {}
        }
    }
}
