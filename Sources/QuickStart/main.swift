import Crew

/// A job: its stored properties are its arguments, `run` does the work in a worker process.
struct Fibonacci: Job {
    var n: Int
    func run(in context: JobContext) async throws -> Int {
        var (a, b) = (0, 1)
        for _ in 0..<n { (a, b) = (b, a &+ b) }
        return a
    }
}

/// A job that crashes its worker: the caller gets an error, the pool replaces the worker.
struct Crash: Job {
    func run(in context: JobContext) async throws -> Int {
        let empty: [Int] = []
        return empty[0]  // index out of range: a trap that would kill a whole server
    }
}

let jobs: JobCatalog = [Fibonacci.self, Crash.self]
// In a worker process this serves jobs and never returns.
await Crew.serveIfWorker(jobs)

var configuration = WorkerPool.Configuration()
configuration.forwardWorkerStderr = false  // keep the crash report out of the demo's output
try await WorkerPool.withPool(.processes(2), jobs: jobs, configuration: configuration) { pool in
    let value = try await pool.run(Fibonacci(n: 90), priority: .high, timeout: .seconds(5))
    print("fib(90) =", value)
    do {
        _ = try await pool.run(Crash())
    } catch let error as CrewError where error.code == .workerCrashed {
        print("the job crashed its worker (\(error.termination!)); the pool carries on")
    }
    print("fib(10) =", try await pool.run(Fibonacci(n: 10)))
}
