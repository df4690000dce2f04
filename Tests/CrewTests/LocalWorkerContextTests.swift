@testable import Crew
import CrewTestJobs
import Glibc
import Logging
import Synchronization
import Testing

/// A caller's task-local value, which no job should see: a job runs on a worker, not in its caller's task.
private enum CallerLocal {
    @TaskLocal static var traceID: String = "none"
}

/// Per key: notes of jobs that started, and whether they may end.
private let contextGates = Mutex<[String: (started: Int, open: Bool)]>([:])

/// Notes that it started, waits for its key's gate, then returns the task-local value it sees.
private struct SeesTraceID: Job {
    var key: String
    var waits = false
    func run(in context: JobContext) async throws -> String {
        contextGates.withLock { $0[key, default: (0, false)].started += 1 }
        while waits && !contextGates.withLock({ $0[key]?.open ?? false }) {
            try await Task.sleep(for: .milliseconds(2))
        }
        return CallerLocal.traceID
    }
}

extension ProcessTests {
    @Suite struct LocalWorkerContexts {
        /// A thread or inline job ran as a task created in whatever task happened to dispatch it,
        /// and so inherited that task's task-local values (and priority): a job queued by one
        /// caller and started when another caller's job ended saw the other caller's values. A
        /// logger whose metadata provider reads task-locals (a trace id) then stamped one caller's
        /// job with another's id. A job sees no caller's task-locals now, as in a worker process.
        @Test(arguments: [Workers.threads(1), .inline(maxConcurrent: 1)])
        func aJobNeverSeesAnotherCallersTaskLocals(workers: Workers) async throws {
            let key = "trace-\(UInt32.random(in: 0...UInt32.max))"
            try await withPool(workers) { pool in
                let first = Task {
                    try await CallerLocal.$traceID.withValue("caller A") {
                        try await pool.run(SeesTraceID(key: key, waits: true))
                    }
                }
                #expect(await eventually { contextGates.withLock { $0[key]?.started == 1 } })
                // Queued behind the first: it starts when the first ends, from the first's task.
                let second = Task { try await pool.run(SeesTraceID(key: key)) }
                #expect(await eventually { pool.queuedJobCount == 1 })
                contextGates.withLock { $0[key]!.open = true }
                let seen = (second: try await second.value, first: try await first.value)
                #expect(seen.second == "none", "a job saw another caller's task-local value")
                #expect(seen.first == "none")
            }
        }
    }
}
