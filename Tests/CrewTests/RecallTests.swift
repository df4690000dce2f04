import Crew
import CrewTestJobs
import Glibc
import Testing

extension ProcessTests {
    /// Held (prefetched) jobs that a busy worker has not started go back to the pool for a
    /// worker that is idle, with real worker processes.
    @Suite(.timeLimit(.minutes(1))) struct Recalling {
        /// Each worker runs a job that waits for a gate, and holds four more. Once worker B's
        /// gate opens, B runs its four and, idle, calls back A's, half at a time: all eight end
        /// while A's first job still waits. Without recalls, A's four would wait behind it (until
        /// the test's time limit).
        @Test func jobsHeldBehindALongJobMoveToAnIdleWorker() async throws {
            try await withPool(.processes(2).prefetch(4)) { pool in
                let long = temporaryPath("long")
                let short = temporaryPath("short")
                defer {
                    unlink(long)
                    unlink(short)
                }
                #expect(await eventually { pool.snapshot().workers.filter { $0.state == .ready }.count == 2 })
                let (a, b) = (pool.snapshot().workers[0].id, pool.snapshot().workers[1].id)
                let head = Task { try await pool.run(WaitForFile(path: long), on: a) }
                let other = Task { try await pool.run(WaitForFile(path: short), on: b) }
                #expect(await eventually { pool.snapshot().workers.allSatisfy { $0.currentJobs.count == 1 } })
                let held = (0..<8).map { value in Task { try await pool.run(Echo(value)) } }
                #expect(await eventually { pool.snapshot().workers.allSatisfy { $0.currentJobs.count == 5 } })
                openGate(short)
                _ = try await other.value
                for (value, job) in held.enumerated() { #expect(try await job.value == value) }
                // A still runs its first job: the ones it held did not wait for it.
                #expect(pool.snapshot().workers.first { $0.id == a }?.currentJobs.map(\.name) == [WaitForFile.jobName])
                openGate(long)
                _ = try await head.value
                try await expectNothingLeftAndServing(pool)
            }
        }

        /// Worker W holds X (low) when H (high, pinned to W) comes: W runs H first, as its own
        /// priority order says, and the pool, which lists W's jobs in that order, calls back X
        /// (not H) once the other worker is idle. X ends while H still runs.
        @Test func aLowJobHeldBehindAHigherOneThatStartedMovesToAnIdleWorker() async throws {
            try await withPool(.processes(2).prefetch(2)) { pool in
                let gates = (0..<3).map { temporaryPath("recall-\($0)") }
                defer { for gate in gates { unlink(gate) } }
                #expect(await eventually { pool.snapshot().workers.filter { $0.state == .ready }.count == 2 })
                let ids = pool.snapshot().workers.map(\.id)
                let first = ids.map { id in Task { try await pool.run(WaitForFile(path: gates[id == ids[0] ? 0 : 1]), on: id) } }
                #expect(await eventually { pool.snapshot().workers.allSatisfy { $0.currentJobs.count == 1 } })
                let x = Task { try await pool.run(Echo(42), priority: .low) }
                #expect(await eventually { pool.snapshot().workers.contains { $0.currentJobs.count == 2 } })
                let w = try #require(pool.snapshot().workers.first { $0.currentJobs.count == 2 }).id
                let (mine, other) = w == ids[0] ? (0, 1) : (1, 0)
                let h = Task { try await pool.run(WaitForFile(path: gates[2]), on: w, priority: .high) }
                #expect(await eventually { pool.snapshot().workers.first { $0.id == w }?.currentJobs.count == 3 })
                // W's first job ends: W starts H and still holds X. Then the other worker goes idle.
                openGate(gates[mine])
                _ = try await first[mine].value
                #expect(await eventually { pool.snapshot().workers.first { $0.id == w }?.currentJobs.count == 2 })
                openGate(gates[other])
                _ = try await first[other].value
                #expect(try await x.value == 42)
                #expect(pool.snapshot().workers.first { $0.id == w }?.currentJobs.map(\.name) == [WaitForFile.jobName])
                openGate(gates[2])
                _ = try await h.value
                try await expectNothingLeftAndServing(pool)
            }
        }
    }
}
