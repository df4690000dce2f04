@testable import Crew
import CrewTestJobs
import Glibc
import Testing

extension ProcessTests {
    @Suite(.serialized) struct CancellationFaults {
        /// `Job.run`: "Throws: any error; the caller receives a CrewError with code jobFailed";
        /// `CrewError.Code.cancelled`: "The awaiting task was cancelled". A job that throws
        /// `CancellationError` by itself (nobody cancelled the caller) is a failing job.
        @Test func aJobThatThrowsCancellationErrorUncancelledIsAJobFailure() async throws {
            try await withTestPool(1) { pool in
                let caller = Task { try await pool.run(ThrowsCancellationError()) }
                do {
                    let value = try await caller.value
                    Issue.record("expected an error, got \(value)")
                } catch let error as CrewError {
                    #expect(!caller.isCancelled)
                    #expect(error.code == .jobFailed, "the caller was never cancelled, yet got \(error.code): \(error.message)")
                }
            }
        }

        /// A cancelled job that stops by itself ends; its grace-period timer should go with it,
        /// like a timeout timer (`Supervisor`: "A job's timeout timer is cancelled when the job
        /// ends"), or every cancellation holds a timer for the whole grace period.
        @Test func aCancelledJobThatStopsLeavesNoGraceTimerBehind() async throws {
            try await withTestPool(1, { $0.cancellationGracePeriod = .seconds(600) }) { pool in
                let pid = try await pool.run(Sleep(milliseconds: 0))
                let before = Supervisor.shared.pendingTimerCount
                for _ in 0..<20 {
                    let running = Task { try await pool.run(Sleep(milliseconds: 60_000)) }
                    #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.first?.currentJobs.count == 1 })
                    running.cancel()
                    await expectCrewError(.cancelled) { try await running.value }
                    // The worker answered: the job has ended.
                    #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.first?.currentJobs.isEmpty == true })
                }
                #expect(try await pool.run(Sleep(milliseconds: 0)) == pid)  // every job honoured its cancellation
                let after = Supervisor.shared.pendingTimerCount
                #expect(after <= before + 4, "timers pending: \(before) before, \(after) after 20 cancelled jobs that all ended")
            }
        }

        /// `shutdown()` drains until "no caller awaits a queued or running job". A caller that
        /// waits for room and is cancelled during the drain was the last one: the drain ends
        /// then, not after `drainTimeout`.
        @Test func cancellingTheLastCallerWaitingForRoomEndsADrain() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            let pool = try WorkerPool(.processes(1), jobs: TestJobs.catalog, configuration: testConfiguration {
                $0.maxQueued = 0
                $0.shutdown.drainTimeout = .seconds(60)
            })
            #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.first?.state == .ready })
            let blocker = await startGateJob(pool, gate: gate)
            let waiting = Task { try await pool.run(Echo(1)) }
            #expect(await eventually(within: .seconds(20)) { pool.snapshot().waitingForRoom == 1 })
            let shutdown = Task { await pool.shutdown() }
            #expect(await eventually(within: .seconds(20)) { pool.core.isShuttingDown })
            // The running job's caller goes first; the one waiting for room is the last a drain
            // waits for.
            blocker.cancel()
            await expectCrewError(.cancelled) { try await blocker.value }
            waiting.cancel()
            await expectCrewError(.cancelled) { try await waiting.value }
            let clock = ContinuousClock()
            let start = clock.now
            await shutdown.value
            #expect(clock.now - start < .seconds(30), "shutdown took \(clock.now - start) after its last caller was cancelled")
        }

        /// `maxQueued`: "0 means: run only on a free worker"; `run` "waits for room". A job that
        /// arrived while the only worker was busy should run once that worker is free.
        @Test func withAQueueLimitOfZeroAWaitingJobRunsOnceTheWorkerIsFree() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(.processes(1), { $0.maxQueued = 0 }) { pool in
                #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.first?.state == .ready })
                let blocker = await startGateJob(pool, gate: gate)
                let waiting = Task { try await pool.run(Echo(7)) }
                #expect(await eventually(within: .seconds(20)) { pool.snapshot().waitingForRoom == 1 })
                openGate(gate)
                _ = try await blocker.value
                let ran = await eventually(within: .seconds(20)) { pool.snapshot().waitingForRoom == 0 }
                #expect(ran, "the job still waits for room with the worker idle: \(pool.snapshot())")
                if !ran { waiting.cancel() }
                _ = try? await waiting.value
            }
        }
    }
}
