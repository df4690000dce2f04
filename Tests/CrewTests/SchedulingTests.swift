import Crew
import CrewTestJobs
import Glibc
import Synchronization
import Testing

extension ProcessTests {
    @Suite struct Scheduling {
        @Test func aThousandConcurrentJobsWithMixedPrioritiesComplete() async throws {
            let priorities: [JobPriority] = [.low, .normal, .high, .critical, JobPriority(3)]
            try await withTestPool(2) { pool in
                try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                    for value in 0..<1000 {
                        group.addTask {
                            (value, try await pool.run(Add(value, 1), priority: priorities[value % priorities.count]))
                        }
                    }
                    var seen = 0
                    for try await (value, result) in group {
                        #expect(result == value + 1)
                        seen += 1
                    }
                    #expect(seen == 1000)
                }
            }
        }

        @Test func whileSaturatedHigherPrioritiesStartFirstAndEqualOnesInOrder() async throws {
            try await withTestPool(1) { pool in
                // Occupy the only worker until every job below is queued.
                let blocker = Task { try await pool.run(Sleep(milliseconds: 30_000)) }
                #expect(await eventually { pool.queuedJobCount == 0 && !pool.workerProcessIDs.isEmpty })
                try await Task.sleep(for: .milliseconds(50))

                let starts = StampRecorder()
                let plan: [(id: Int, priority: JobPriority)] = (0..<40).map { index in
                    (index, [JobPriority.low, .normal, .high, .critical][(index * 7) % 4])
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (id, priority) in plan {
                        group.addTask {
                            starts.append(id, try await pool.run(Stamp(id), priority: priority))
                        }
                        // Submit in a known order: wait until this one is queued.
                        #expect(await eventually { pool.queuedJobCount == id + 1 })
                    }
                    blocker.cancel()
                    try await group.waitForAll()
                }
                _ = await blocker.result
                let expected = plan.sorted { a, b in
                    a.priority != b.priority ? a.priority > b.priority : a.id < b.id
                }.map(\.id)
                // The workers' clock says when each job started (callers may resume in any order).
                #expect(starts.idsByStart == expected)
            }
        }

        /// With prefetch the jobs wait in the worker, not in the pool: the worker runs those it
        /// holds highest priority first too, then in the order they came.
        @Test func aWorkerRunsTheJobsItHoldsHighestPriorityFirst() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(.processes(1).prefetch(8)) { pool in
                let blocker = await startGateJob(pool, gate: gate)
                let starts = StampRecorder()
                let plan: [(id: Int, priority: JobPriority)] = [
                    (0, .low), (1, .normal), (2, .high), (3, .normal), (4, .critical), (5, .low), (6, .high), (7, JobPriority(-3)),
                ]
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (id, priority) in plan {
                        group.addTask { starts.append(id, try await pool.run(Stamp(id), priority: priority)) }
                        // Sent in a known order: wait until the worker holds this one.
                        #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == id + 2 })
                    }
                    #expect(pool.queuedJobCount == 0)
                    openGate(gate)
                    try await group.waitForAll()
                }
                _ = try await blocker.value
                #expect(starts.idsByStart == [4, 2, 6, 1, 3, 7, 0, 5])
            }
        }

        @Test func cancellingAQueuedJobRemovesIt() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withTestPool(1) { pool in
                let blocker = await startGateJob(pool, gate: gate)
                let queued = Task { try await pool.run(Echo(1)) }
                #expect(await eventually { pool.queuedJobCount == 1 })
                queued.cancel()
                await expectCrewError(.cancelled) { try await queued.value }
                #expect(pool.queuedJobCount == 0)
                openGate(gate)
                _ = try await blocker.value
            }
        }

        @Test func cancellingARunningCooperativeJobKeepsItsWorker() async throws {
            try await withTestPool(1) { pool in
                let pid = try await pool.run(Sleep(milliseconds: 0))
                let running = Task { try await pool.run(Sleep(milliseconds: 30_000)) }
                #expect(await eventually { pool.queuedJobCount == 0 })
                try await Task.sleep(for: .milliseconds(100))
                running.cancel()
                await expectCrewError(.cancelled) { try await running.value }
                // The job stopped by itself: the same process serves on.
                let after = try await pool.run(Sleep(milliseconds: 0))
                #expect(after == pid)
            }
        }

        @Test func cancellingARunningJobThatIgnoresItKillsItsWorkerAfterTheGracePeriod() async throws {
            try await withTestPool(1) { pool in
                let pid = try await pool.run(Sleep(milliseconds: 0))
                let running = Task { try await pool.run(BlockingSleep(milliseconds: 30_000)) }
                #expect(await eventually { pool.queuedJobCount == 0 })
                try await Task.sleep(for: .milliseconds(100))
                running.cancel()
                await expectCrewError(.cancelled) { try await running.value }
                #expect(await eventually { !isAlive(pid) })
                let after = try await pool.run(Sleep(milliseconds: 0))
                #expect(after != pid)
            }
        }

        @Test func aJobCanStartAPoolOfItsOwn() async throws {
            try await withTestPool(1) { pool in
                let outer = try await pool.run(WhoAmI())
                let inner = try await pool.run(Nested(workers: 2))
                #expect(inner.count == 2)
                #expect(!inner.contains(outer.pid))
                // The inner pool was shut down with its job.
                #expect(await eventually { !inner.contains(where: isAlive) })
            }
        }
    }
}

/// Collects values from concurrent tasks.
final class Recorder: Sendable {
    private let storage = Mutex<[Int]>([])
    func append(_ value: Int) { storage.withLock { $0.append(value) } }
    var values: [Int] { storage.withLock { $0 } }
}

/// Collects (id, start time) pairs from concurrent tasks.
final class StampRecorder: Sendable {
    private let storage = Mutex<[(Int, UInt64)]>([])
    func append(_ id: Int, _ stamp: UInt64) { storage.withLock { $0.append((id, stamp)) } }
    var idsByStart: [Int] { storage.withLock { $0 }.sorted { $0.1 < $1.1 }.map(\.0) }
}
