import Crew
import CrewTestJobs
import Glibc

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
