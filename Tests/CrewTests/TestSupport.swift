import Crew
import CrewTestJobs
import Glibc
import Testing

/// The worker executable built beside the test runner (the test target depends on it).
let testWorkerPath: String = {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    precondition(n > 0, "cannot read /proc/self/exe")
    let exe = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var dir = exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]
    // The runner may sit inside an .xctest bundle directory.
    while dir.hasSuffix(".xctest") || dir.contains(".xctest/") {
        dir = dir[..<(dir.lastIndex(of: "/") ?? dir.startIndex)]
    }
    return "\(dir)/CrewTestWorker"
}()

/// A configuration for test pools: the test worker, quiet stderr, short grace periods.
func testConfiguration(_ adjust: (inout WorkerPool.Configuration) -> Void = { _ in }) -> WorkerPool.Configuration {
    var configuration = WorkerPool.Configuration()
    configuration.executable = .path(testWorkerPath)
    configuration.forwardWorkerStderr = false
    configuration.cancellationGracePeriod = .milliseconds(300)
    configuration.shutdown.terminateGracePeriod = .milliseconds(500)
    adjust(&configuration)
    return configuration
}

/// The pids of this process's live (or zombie) children, from /proc/self/task/*/children.
func childProcessIDs() -> Set<Int32> {
    var result = Set<Int32>()
    guard let dir = opendir("/proc/self/task") else { return result }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        guard Int(name) != nil else { continue }
        for pid in readFile("/proc/self/task/\(name)/children").split(separator: " ") {
            if let pid = Int32(pid.trimmed()) { result.insert(pid) }
        }
    }
    return result
}

/// The number of open file descriptors, once the descriptors created once per process exist
/// (libdispatch opens its timer machinery on the first `Task.sleep`), so that a test run alone
/// counts the same as in the full suite.
func descriptorBaseline() async -> Int {
    try? await Task.sleep(for: .milliseconds(1))
    return openDescriptorCount()
}

/// The number of open file descriptors of this process.
func openDescriptorCount() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while readdir(dir) != nil { count += 1 }
    return count - 3  // ".", ".." and the directory's own descriptor
}

/// Whether `pid` is still a running process (a zombie or a missing pid counts as gone).
func isAlive(_ pid: Int32) -> Bool {
    let stat = readFile("/proc/\(pid)/stat")
    guard let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)...].prefix(1)
    return !stat.isEmpty && state != "Z" && state != "X"
}

func readFile(_ path: String) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        result += buffer[..<n]
    }
    return String(decoding: result, as: UTF8.self)
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns whether it held.
func eventually(within limit: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + limit
    while clock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

extension Substring {
    func trimmed() -> String {
        let blanks: Set<Character> = [" ", "\n", "\t", "\r"]
        return String(drop { blanks.contains($0) }.reversed().drop { blanks.contains($0) }.reversed())
    }
}

/// A fresh path under /tmp, unique to this process and call, that nothing has created yet.
func temporaryPath(_ label: String, extension suffix: String = "") -> String {
    "/tmp/crew-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))\(suffix)"
}

/// Starts a `WaitForFile(path: gate)` job on a pool of one worker and returns once that worker
/// runs it (not merely once nothing is free: that also holds before the worker is ready).
func startGateJob(
    _ pool: WorkerPool, gate: String, sourceLocation: SourceLocation = #_sourceLocation
) async -> Task<Int32, any Error> {
    let job = Task { try await pool.run(WaitForFile(path: gate)) }
    #expect(await eventually { pool.snapshot().workers.first?.currentJobs.map(\.name) == [WaitForFile.jobName] },
            sourceLocation: sourceLocation)
    return job
}

/// Lets every ``WaitForFile`` job waiting on `path` finish.
func openGate(_ path: String) {
    close(open(path, O_WRONLY | O_CREAT, 0o600))
}

/// After a failed or cancelled run: no worker holds a job, nothing is queued, and the pool
/// still answers.
func expectNothingLeftAndServing(_ pool: WorkerPool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    #expect(await eventually {
        let snapshot = pool.snapshot()
        return snapshot.workers.allSatisfy { $0.currentJobs.isEmpty } && snapshot.queueDepth.values.allSatisfy { $0 == 0 }
    }, sourceLocation: sourceLocation)
    let value = try await pool.run(Echo(6))
    #expect(value == 6, sourceLocation: sourceLocation)
}
