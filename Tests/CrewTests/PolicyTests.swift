@testable import Crew
import CrewTestJobs
import Glibc
import Logging
import Synchronization
import Testing

@discardableResult
func withPool<R: Sendable>(
    _ workers: Workers, setup: (any Job)? = nil, _ adjust: (inout WorkerPool.Configuration) -> Void = { _ in },
    _ body: (WorkerPool) async throws -> sending R
) async throws -> sending R {
    try await WorkerPool.withPool(workers, jobs: TestJobs.catalog, configuration: testConfiguration(adjust), setup: setup, body)
}

extension ProcessTests {
    @Suite struct WorkerKinds {
        @Test(arguments: [Workers.threads(2), .inline(maxConcurrent: 2), .processes(2)])
        func everyKindRunsJobsWithTheSameAPI(workers: Workers) async throws {
            // A logger that keeps metadata (the default one discards everything).
            let logger = Logger(label: "crew.test") { StreamLogHandler.standardError(label: $0) }
            try await withPool(workers, { $0.logger = logger }) { pool in
                let sum = try await pool.run(Add(20, 22))
                #expect(sum == 42)
                await expectCrewError(.jobFailed) { try await pool.run(Fail("nope")) }
                let error = await expectCrewError(.timedOut) { try await pool.run(Sleep(milliseconds: 10_000), timeout: .milliseconds(100)) }
                #expect(error?.jobName == Sleep.jobName)
                let again = try await pool.run(Echo(5))
                #expect(again == 5)
                // Every kind gives a job a logger that names its worker and the job.
                let snapshot = pool.snapshot()
                let metadata = try await pool.run(LoggerMetadata())
                #expect(snapshot.workers.map { "\($0.id)" }.contains(metadata[0]))
                #expect(UInt64(metadata[1]) != nil)
            }
        }

        @Test func inProcessWorkersTakeJobsAsValuesWithoutEncoding() async throws {
            try await withPool(.inline(maxConcurrent: 1)) { pool in
                let value = try await pool.run(Unencodable(21))
                #expect(value == 42)
            }
            try await withPool(.processes(1)) { pool in
                await expectCrewError(.unknownJobType) { try await pool.run(Unencodable(21)) }
            }
        }

        @Test func threadWorkersRunOnTheirOwnThreadsAndNeverBlockTheCooperativePool() async throws {
            try await withPool(.threads(3)) { pool in
                let name = try await pool.run(ThreadName())
                #expect(isThreadWorkerThread(name), "\(name)")
                // Three blocking jobs occupy three threads of ours; the cooperative pool (as many
                // threads as cores) keeps serving a ticker meanwhile.
                let clock = ContinuousClock()
                async let blocked = withThrowingTaskGroup(of: Int32.self) { group in
                    for _ in 0..<3 { group.addTask { try await pool.run(BlockingSleep(milliseconds: 600)) } }
                    return try await group.reduce(0) { $0 + $1 }
                }
                var ticks = 0
                let start = clock.now
                while clock.now - start < .milliseconds(400) {
                    try await Task.sleep(for: .milliseconds(10))
                    ticks += 1
                }
                #expect(ticks > 10)
                _ = try await blocked
            }
        }

        @Test func aMixedPoolRoutesTaggedJobsAndFailsImpossibleOnesAtOnce() async throws {
            let workers: Workers = [.threads(1, tags: ["io"]), .processes(1, tags: ["isolated"])]
            try await withPool(workers) { pool in
                let onThread = try await pool.run(ThreadName(), requiring: "io")
                #expect(isThreadWorkerThread(onThread), "\(onThread)")
                let inProcess = try await pool.run(WhoAmI(), requiring: "isolated")
                #expect(inProcess.pid != getpid())
                await expectCrewError(.noEligibleWorker) { try await pool.run(Echo(1), requiring: "gpu") }
                let snapshot = pool.snapshot()
                #expect(Set(snapshot.workers.map(\.kind)) == [.thread, .process])
            }
        }
    }

    @Suite struct Sizing {
        @Test func workersStartOnDemandAndStopWhenIdle() async throws {
            var workers = Workers.processes(0...2, idleTimeout: .milliseconds(300))
            workers.groups[0].minimum = 0
            try await withPool(workers) { pool in
                #expect(pool.snapshot().workers.isEmpty)
                async let a = pool.run(Sleep(milliseconds: 200))
                async let b = pool.run(Sleep(milliseconds: 200))
                async let c = pool.run(Sleep(milliseconds: 200))
                let pids = try await [a, b, c]
                #expect(Set(pids).count == 2)  // at most the maximum
                #expect(await eventually(within: .seconds(5)) { pool.snapshot().workers.isEmpty })
                let again = try await pool.run(Echo(3))  // and again on demand
                #expect(again == 3)
            }
        }

        @Test func limitsChangeAtRuntime() async throws {
            try await withPool(.processes(1)) { pool in
                pool.setLimits(minimum: 3, maximum: 3)
                #expect(await eventually { pool.snapshot().workers.filter { $0.state == .ready }.count == 3 })
                pool.setLimits(minimum: 1, maximum: 1)
                #expect(await eventually { pool.snapshot().workers.count == 1 })
                let value = try await pool.run(Echo(1))
                #expect(value == 1)
            }
        }

        @Test func aFullQueueMakesTrySubmitFailAndRunWait() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(.processes(1), { $0.maxQueued = 2 }) { pool in
                let busy = await startGateJob(pool, gate: gate)
                let queued = (0..<2).map { value in Task { try await pool.run(Echo(value)) } }
                #expect(await eventually { pool.queuedJobCount == 2 })
                await expectCrewError(.queueFull) { try await pool.trySubmit(Echo(9)) }
                let waiting = Task { try await pool.run(Echo(7)) }  // waits for room, not dropped
                #expect(await eventually { pool.snapshot().waitingForRoom == 1 })
                #expect(pool.queuedJobCount == 2)
                openGate(gate)
                _ = try await busy.value
                for task in queued { _ = try await task.value }
                let waited = try await waiting.value
                #expect(waited == 7)
            }
        }
    }

    @Suite struct Recycling {
        @Test func aWorkerRetiresAfterItsMaximumOfJobs() async throws {
            try await withPool(Workers.processes(1).maxJobsPerWorker(3)) { pool in
                var pids: [Int32] = []
                for _ in 0..<7 { pids.append(try await pool.run(Sleep(milliseconds: 1))) }
                #expect(Set(pids[0..<3]).count == 1)
                #expect(Set(pids[3..<6]).count == 1)
                #expect(pids[0] != pids[3] && pids[3] != pids[6])
            }
        }

        @Test func aWorkerOverItsMemoryLimitRetiresBetweenJobs() async throws {
            try await withPool(Workers.processes(1).maxResidentBytes(80 << 20)) { pool in
                let first = try await pool.run(Hoard(megabytes: 10))
                let second = try await pool.run(Hoard(megabytes: 100))
                #expect(first == second)  // over the limit only after this job
                #expect(await eventually { !pool.workerProcessIDs.contains(second) })
                let third = try await pool.run(Hoard(megabytes: 1))
                #expect(third != second)
            }
        }

        @Test func aWorkerThatGoesIdleOftenHoldsOneIdleTimer() async throws {
            let before = Supervisor.shared.pendingTimerCount
            try await withPool(Workers.processes(1).maxAge(.seconds(600))) { pool in
                // Each job leaves the worker idle, which schedules a check of its age.
                for value in 0..<300 { _ = try await pool.run(Echo(value)) }
                #expect(Supervisor.shared.pendingTimerCount <= before + 2)
            }
        }

        /// A worker waiting out its maximum age at the group's minimum still goes after its idle
        /// timeout once the group has grown above the minimum: the far check of its age must not
        /// hide the nearer idle check (the pool kept only the later of two checks per worker).
        @Test func anIdleTimeoutIsNotHiddenByAPendingAgeCheck() async throws {
            let first = temporaryPath("idle-first"), second = temporaryPath("idle-second")
            defer { unlink(first); unlink(second) }
            try await withPool(Workers.processes(1...2, idleTimeout: .milliseconds(200)).maxAge(.seconds(600))) { pool in
                #expect(await eventually { pool.snapshot().workers.first?.state == .ready })
                let firstJob = Task { try await pool.run(WaitForFile(path: first)) }
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 1 })
                let secondJob = Task { try await pool.run(WaitForFile(path: second)) }
                #expect(await eventually { pool.snapshot().workers.filter { $0.currentJobs.count == 1 }.count == 2 })
                close(open(first, O_CREAT | O_WRONLY, 0o600))
                let firstPID = try await firstJob.value
                // The first worker is idle, above the minimum (the second is busy): it goes.
                let gone = await eventually(within: .seconds(20)) { !pool.workerProcessIDs.contains(firstPID) }
                #expect(gone, "\(pool.snapshot().workers.map { ($0.id, $0.state, $0.currentJobs.count) })")
                close(open(second, O_CREAT | O_WRONLY, 0o600))
                _ = try await secondJob.value
            }
        }

        @Test func aWorkerRetiresAtItsMaximumAge() async throws {
            try await withPool(Workers.processes(1).maxAge(.milliseconds(300))) { pool in
                let first = try await pool.run(Sleep(milliseconds: 0))
                #expect(await eventually { !pool.workerProcessIDs.contains(first) && pool.workerProcessIDs.count == 1 })
                let second = try await pool.run(Sleep(milliseconds: 0))
                #expect(second != first)
            }
        }

        /// `startFailureLimit = 0` (give up at the first worker that dies starting) still lets a
        /// worker retire at its maximum age: the hand-over required fewer consecutive start
        /// failures than the limit, which 0 failures never are, so the worker served on forever.
        @Test func aWorkerRetiresAtItsMaximumAgeWithAStartFailureLimitOfZero() async throws {
            try await withPool(Workers.processes(1).maxAge(.milliseconds(300)), { $0.startFailureLimit = 0 }) { pool in
                let first = try await pool.run(Sleep(milliseconds: 0))
                #expect(await eventually { !pool.workerProcessIDs.contains(first) && pool.workerProcessIDs.count == 1 })
                let second = try await pool.run(Sleep(milliseconds: 0))
                #expect(second != first)
            }
        }

        @Test func aSetupJobThatCrashesStopsTheRespawnLoop() async throws {
            let error = await expectCrewError(.workerStartFailed) {
                try await withPool(.processes(2), setup: Crash(.sigkill)) { pool in
                    try await pool.run(Echo(1))
                }
            }
            #expect(error?.message.contains("setup") == true || error?.termination == .signaled(SIGKILL), "\(String(describing: error))")
        }
    }

    @Suite struct CrashLoopRecovery {
        @Test func aGroupThatGaveUpServesAgainOnceTheFaultIsGone() async throws {
            let fault = temporaryPath("fault")
            openGate(fault)
            defer { unlink(fault) }
            let adjust: (inout WorkerPool.Configuration) -> Void = {
                $0.startFailureLimit = 2
                $0.startFailureCooldown = .milliseconds(300)
                $0.forwardWorkerStderr = false
            }
            try await withPool(.processes(1), setup: ExitWhileFileExists(path: fault), adjust) { pool in
                let error = await expectCrewError(.workerStartFailed) { try await pool.run(Echo(1)) }
                #expect(error?.message.contains("tries again") == true)
                unlink(fault)
                // Within a few cool-downs a new worker starts, runs its setup job and serves.
                var value: Int?
                let clock = ContinuousClock()
                let deadline = clock.now + .seconds(10)
                while value == nil && clock.now < deadline {
                    value = try? await pool.run(Echo(7))
                    if value == nil { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(value == 7)
            }
        }
    }

    @Suite struct WorkerState {
        @Test func theSetupJobRunsOnEveryWorkerBeforeItTakesWork() async throws {
            try await withPool(.processes(2), setup: SetState("ready", 1)) { pool in
                #expect(await eventually { pool.snapshot().workers.filter { $0.state == .ready }.count == 2 })
                async let a = pool.run(GetState("ready"))
                async let b = pool.run(GetState("ready"))
                let values = try await [a, b]
                #expect(values == [1, 1])
                #expect(pool.snapshot().workers.allSatisfy { $0.jobsDone >= 1 })
            }
        }

        @Test func broadcastReachesEveryWorkerAndIsReplayedOnNewOnes() async throws {
            try await withPool(.processes(2)) { pool in
                #expect(await eventually { pool.snapshot().workers.filter { $0.state == .ready }.count == 2 })
                let results = try await pool.broadcast(SetState("table", 7))
                #expect(results.count == 2)
                #expect(results.allSatisfy { (try? $0.result.get()) == $0.workerID })
                for worker in pool.snapshot().workers {
                    let value = try await pool.run(GetState("table"), on: worker.id)
                    #expect(value == 7)
                }
                // A replacement worker replays the broadcast before it takes work.
                let victim = try #require(pool.workerProcessIDs.first)
                kill(victim, SIGKILL)
                #expect(await eventually { pool.snapshot().workers.filter { $0.state == .ready && $0.processID != victim }.count == 2 })
                for worker in pool.snapshot().workers {
                    let value = try await pool.run(GetState("table"), on: worker.id)
                    #expect(value == 7)
                }
            }
        }

        @Test func aJobTargetedAtAWorkerThatIsGoneFailsAtOnce() async throws {
            try await withPool(.processes(1)) { pool in
                await expectCrewError(.noEligibleWorker) { try await pool.run(Echo(1), on: 999) }
            }
        }
    }

    @Suite struct Retries {
        @Test func anIdempotentJobIsRetriedAfterACrash() async throws {
            let marker = temporaryPath("crash-once")
            defer { unlink(marker) }
            try await withPool(.processes(1)) { pool in
                await expectCrewError(.workerCrashed) { try await pool.run(CrashOnce(marker: marker + "-a")) }
                let value = try await pool.run(CrashOnce(marker: marker), retry: .exponential(maxAttempts: 3))
                #expect(value == 1)
            }
            unlink(marker + "-a")
        }

        /// A caller cancelled while it waits out a retry's backoff gets a `CrewError` like any
        /// other cancellation (Task.sleep's own CancellationError used to escape), carrying the
        /// failure it was going to retry.
        @Test func aCallerCancelledDuringTheBackoffGetsCancelled() async throws {
            let marker = temporaryPath("crash-once-backoff")
            defer { unlink(marker) }
            try await withPool(.processes(1)) { pool in
                let call = Task {
                    try await pool.run(CrashOnce(marker: marker), retry: RetryPolicy(maxAttempts: 3, initialBackoff: .seconds(60), jitter: 0))
                }
                // The first attempt crashed (its marker exists) and nothing runs or waits: the
                // caller is in its 60 s backoff.
                #expect(await eventually(within: .seconds(20)) {
                    access(marker, F_OK) == 0 && pool.snapshot().workers.allSatisfy { $0.currentJobs.isEmpty } && pool.queuedJobCount == 0
                })
                call.cancel()
                let error = await expectCrewError(.cancelled) { try await call.value }
                #expect(error?.jobName == CrashOnce.jobName)
                #expect((error?.underlying as? CrewError)?.code == .workerCrashed)
            }
        }

        /// A retry would start after the pool began to shut down: the caller gets the failure
        /// that was to be retried, not poolShutDown from an attempt that cannot start.
        @Test func aCallerWhoseRetryFallsInAShutdownGetsTheOriginalFailure() async throws {
            let marker = temporaryPath("crash-once-shutdown")
            defer { unlink(marker) }
            let pool = try WorkerPool(.processes(1), jobs: TestJobs.catalog, configuration: testConfiguration())
            let call = Task {
                try await pool.run(CrashOnce(marker: marker), retry: RetryPolicy(maxAttempts: 3, initialBackoff: .seconds(2), jitter: 0))
            }
            // The first attempt crashed: the caller waits out its backoff.
            #expect(await eventually(within: .seconds(20)) { access(marker, F_OK) == 0 })
            await pool.shutdown()
            let error = await expectCrewError(.workerCrashed) { try await call.value }
            #expect(error?.jobName == CrashOnce.jobName)
        }

        /// A wait whose growth passes what a `Duration` holds is the cap, and a cap of "no cap"
        /// (`.seconds(Int64.max)`) is a wait `Task.sleep` can take: `Duration * Double` used to
        /// trap on the product (a large multiplier), in the caller's process.
        @Test func backoffSaturatesInsteadOfOverflowing() {
            let steep = RetryPolicy(maxAttempts: 5, initialBackoff: .seconds(1), multiplier: 1e30, maxBackoff: .seconds(60), jitter: 0)
            #expect(steep.backoff(beforeAttempt: 3, random: 0.5) == .seconds(60))
            let uncapped = RetryPolicy(maxAttempts: 40, initialBackoff: .seconds(1), multiplier: 1000, maxBackoff: .seconds(Int64.max), jitter: 0)
            #expect(uncapped.backoff(beforeAttempt: 3, random: 0.5) == .seconds(1000))
            let longest = uncapped.backoff(beforeAttempt: 40, random: 0.5)
            #expect(longest > .seconds(1_000_000_000_000) && longest < .seconds(Int64.max / 2) + .seconds(1_000_000))
        }

        /// A retry whose backoff is "forever" (`.seconds(Int64.max)`) waits, cancellably:
        /// `Task.sleep` trapped on a deadline past what its clock holds, killing the caller's process.
        @Test func aBackoffOfForeverWaitsUntilCancelled() async throws {
            let marker = temporaryPath("crash-once-forever")
            defer { unlink(marker) }
            try await withPool(.processes(1)) { pool in
                let forever = Duration.seconds(Int64.max)
                let call = Task {
                    try await pool.run(
                        CrashOnce(marker: marker),
                        retry: RetryPolicy(maxAttempts: 3, initialBackoff: forever, maxBackoff: forever, jitter: 0))
                }
                #expect(await eventually(within: .seconds(20)) {
                    access(marker, F_OK) == 0 && pool.snapshot().workers.allSatisfy { $0.currentJobs.isEmpty } && pool.queuedJobCount == 0
                })
                call.cancel()
                let error = await expectCrewError(.cancelled) { try await call.value }
                #expect((error?.underlying as? CrewError)?.code == .workerCrashed)
            }
        }

        @Test func backoffGrowsAndStaysWithinItsBounds() {
            let policy = RetryPolicy(maxAttempts: 10, initialBackoff: .milliseconds(100), multiplier: 2, maxBackoff: .seconds(1), jitter: 0)
            #expect(policy.backoff(beforeAttempt: 2, random: 0.5) == .milliseconds(100))
            #expect(policy.backoff(beforeAttempt: 3, random: 0.5) == .milliseconds(200))
            #expect(policy.backoff(beforeAttempt: 9, random: 0.5) == .seconds(1))
            let jittered = RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(100), jitter: 1)
            #expect(jittered.backoff(beforeAttempt: 2, random: 0) == .zero)
            #expect(jittered.backoff(beforeAttempt: 2, random: 1) == .milliseconds(100))
        }
    }

    @Suite struct Introspection {
        @Test func aSnapshotShowsWorkersJobsAndTheQueue() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(.processes(1)) { pool in
                let running = await startGateJob(pool, gate: gate)
                let queued = Task { try await pool.run(Echo(1), priority: .high) }
                #expect(await eventually { pool.queuedJobCount == 1 })
                let snapshot = pool.snapshot()
                let worker = try #require(snapshot.workers.first)
                #expect(worker.kind == .process)
                #expect(worker.state == .ready)
                #expect(worker.processID != nil)
                #expect(worker.currentJobs.map(\.name) == [WaitForFile.jobName])
                #expect((worker.residentBytes ?? 0) > 1 << 20)
                #expect(worker.uptime > .zero)
                #expect(snapshot.queueDepth == [.high: 1])
                #expect(snapshot.freeSlots == 0)
                openGate(gate)
                _ = try await running.value
                _ = try await queued.value
                #expect(pool.snapshot().workers.first?.jobsDone == 2)
            }
        }
    }
}

extension ProcessTests {
    @Suite struct Prefetch {
        @Test func aHeldJobsTimeoutCountsFromItsStart() async throws {
            try await withPool(Workers.processes(1).prefetch(2)) { pool in
                // Three jobs of 400 ms with 1 s timeouts on one worker: the third waits 800 ms in
                // the worker first, and must not time out for that wait.
                async let a = pool.run(Sleep(milliseconds: 400), timeout: .seconds(1))
                async let b = pool.run(Sleep(milliseconds: 400), timeout: .seconds(1))
                async let c = pool.run(Sleep(milliseconds: 400), timeout: .seconds(1))
                let pids = try await [a, b, c]
                #expect(Set(pids).count == 1)
                // And a held job that overruns still times out.
                let d = Task { try await pool.run(Sleep(milliseconds: 100)) }
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 1 })
                let e = Task { try await pool.run(Spin(), timeout: .milliseconds(200)) }
                _ = try await d.value
                await expectCrewError(.timedOut) { try await e.value }
            }
        }

        /// A pool that may grow starts workers for a burst rather than stacking it in the held
        /// slots of the one busy worker: three jobs on `processes(1...3).prefetch(4)`, each
        /// waiting for a gate, end up on three workers, one each, however long workers take to
        /// start.
        @Test func aBurstStartsWorkersInsteadOfWaitingInHeldSlots() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(Workers.processes(1...3).prefetch(4)) { pool in
                _ = try await pool.run(Sleep(milliseconds: 0))  // the first worker is ready
                let jobs = (0..<3).map { _ in Task { try await pool.run(WaitForFile(path: gate)) } }
                #expect(await eventually(within: .seconds(20)) {
                    let workers = pool.snapshot().workers
                    return workers.count == 3 && workers.allSatisfy { $0.currentJobs.count == 1 }
                }, "\(pool.snapshot().workers.map(\.currentJobs.count))")
                openGate(gate)
                var pids: [Int32] = []
                for job in jobs { pids.append(try await job.value) }
                #expect(Set(pids).count == 3, "the jobs ran on workers \(pids)")
            }
        }

        @Test func aCancelledHeldJobNeverRuns() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(Workers.processes(1).prefetch(1)) { pool in
                let pid = try await pool.run(Sleep(milliseconds: 0))
                let running = await startGateJob(pool, gate: gate)
                let held = Task { try await pool.run(Crash(.sigkill)) }
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 2 })
                held.cancel()
                await expectCrewError(.cancelled) { try await held.value }
                // The caller hears at once; the worker drops the held job when the cancel frame
                // reaches it. Open the gate only then, or the job could start first.
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 1 })
                openGate(gate)
                let first = try await running.value
                #expect(first == pid)  // the crash job never ran
                let after = try await pool.run(Sleep(milliseconds: 0))
                #expect(after == pid)
            }
        }

        @Test func cancellingARunningJobSparesTheJobHeldBehindIt() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(Workers.processes(1).prefetch(1)) { pool in
                let pid = try await pool.run(Sleep(milliseconds: 0))
                let running = await startGateJob(pool, gate: gate)
                let held = Task { try await pool.run(Sleep(milliseconds: 50)) }
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 2 })
                running.cancel()
                await expectCrewError(.cancelled) { try await running.value }
                // The held job runs on in the same worker, and is not cancelled with its predecessor.
                let heldPid = try await held.value
                #expect(heldPid == pid)
            }
        }

        @Test func aWorkerRunsSeveralAsyncJobsAtOnce() async throws {
            try await withPool(Workers.processes(1).jobsPerWorker(4)) { pool in
                let clock = ContinuousClock()
                let start = clock.now
                let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
                    for _ in 0..<4 { group.addTask { try await pool.run(Sleep(milliseconds: 500)) } }
                    return try await group.reduce(into: Set<Int32>()) { $0.insert($1) }
                }
                #expect(pids.count == 1)
                // Four 500 ms sleeps in one process: together, not one after another (2 s).
                #expect(clock.now - start < .milliseconds(1900))
            }
        }
    }
}
