import Crew
import CrewTestJobs
import Glibc

await Crew.serveIfWorker(TestJobs.catalog)

// Not a worker: the tests also start this program as a pool owner, to kill it.
let arguments = CommandLine.arguments
if arguments.count >= 3 && arguments[1] == "own-pool", let count = Int(arguments[2]) {
    // Prints its workers' pids once they all answered, then waits to be killed.
    var configuration = WorkerPool.Configuration()
    configuration.forwardWorkerStderr = false
    let pool = try WorkerPool(.processes(count), jobs: TestJobs.catalog, configuration: configuration)
    // As many concurrent jobs as workers, each long enough to occupy its worker.
    let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
        for _ in 0..<count { group.addTask { try await pool.run(Sleep(milliseconds: 300)) } }
        var pids = Set<Int32>()
        for try await pid in group { pids.insert(pid) }
        return pids
    }
    print(pids.sorted().map(String.init).joined(separator: " "))
    fflush(nil)
    while true { try await Task.sleep(for: .seconds(60)) }
}
if arguments.count >= 2 && arguments[1] == "pool-with-low-fds" {
    // Started with descriptors 0 to 3 open, which it closes once the concurrency runtime has
    // made its own (above them): the pool's first descriptors are then numbered 0 to 3, as in a
    // daemon that closed its standard ones. A pool whose worker writes to its stderr must still
    // work. The exit status is the only answer (stdout is gone).
    try await Task.sleep(for: .milliseconds(10))
    for fd: Int32 in 0...3 { close(fd) }
    do {
        let pool = try WorkerPool(.processes(1), jobs: TestJobs.catalog)
        var right = true
        for round in 0..<3 {
            right = try await pool.run(WriteToStderr("round \(round)\n")) == 8 && right
            right = try await pool.run(Echo(round)) == round && right
        }
        await pool.shutdown()
        exit(right ? 0 : 1)
    } catch {
        exit(2)
    }
}
print("CrewTestWorker is a worker executable for Crew's tests; a WorkerPool starts it.")
