@testable import Crew
import CrewTestJobs
import Glibc
import Testing

extension ProcessTests {
    @Suite struct Faults {
        @Test func aThrowingJobReportsTheErrorAndTheWorkerSurvives() async throws {
            try await withTestPool(1) { pool in
                let before = try await pool.run(Sleep(milliseconds: 0))
                let error = await expectCrewError(.jobFailed) { try await pool.run(Fail("disk full")) }
                #expect(error?.remoteErrorType?.hasSuffix("TestFailure") == true)
                #expect(error?.message.contains("disk full") == true)
                #expect(try await pool.run(Sleep(milliseconds: 0)) == before)
            }
        }

        @Test(arguments: Crash.Kind.allCases)
        func aCrashFailsOnlyItsJobAndTheWorkerIsReplaced(kind: Crash.Kind) async throws {
            try await withTestPool(2) { pool in
                // A long job on the other worker must not notice the crash.
                async let bystander = pool.run(Sleep(milliseconds: 400))
                try await Task.sleep(for: .milliseconds(50))
                let error = await expectCrewError(.workerCrashed) { try await pool.run(Crash(kind)) }
                switch kind {
                case .exit:
                    #expect(error?.termination == .exited(42))
                case .sigkill:
                    #expect(error?.termination == .signaled(SIGKILL))
                case .abort:
                    #expect(error?.termination == .signaled(SIGABRT))
                case .fatalError, .indexOutOfRange, .forceUnwrapNil, .overflow:
                    #expect(error?.termination == .signaled(SIGILL) || error?.termination == .signaled(SIGTRAP))
                    // Swift's crash report: the backtracer's banner, and the runtime's message where it has one.
                    let tail = error?.stderrTail ?? ""
                    #expect(tail.contains("Backtracing"), "stderr tail: \(tail)")
                    #expect(tail.contains(kind == .overflow ? "arithmetic overflow" : "Fatal error"), "stderr tail: \(tail)")
                }
                #expect(error?.jobName == Crash.jobName)
                _ = try await bystander
                for value in 0..<4 { #expect(try await pool.run(Echo(value)) == value) }
                // The crashed worker's pid goes once it is reaped, which can come after its
                // replacement has started.
                #expect(await eventually { pool.workerProcessIDs.count == 2 })
            }
        }

        @Test func jobsThatEndInTimeLeaveNoTimerBehind() async throws {
            let before = Supervisor.shared.pendingTimerCount
            try await withPool(Workers.processes(2).prefetch(4)) { pool in
                // Held jobs get their timers when they start, the others when they are sent.
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for value in 0..<2_000 { group.addTask { try await pool.run(Echo(value), timeout: .seconds(600)) } }
                    for try await _ in group {}
                }
                try await withPool(.inline(maxConcurrent: 2)) { inline in
                    for value in 0..<100 { _ = try await inline.run(Echo(value), timeout: .seconds(600)) }
                }
                // Without cancellation, 2,100 ten-minute timers would wait here.
                #expect(Supervisor.shared.pendingTimerCount <= before + 4)
                // Nor do jobs that end with their worker's death, without an answer.
                for _ in 0..<3 {
                    await expectCrewError(.workerCrashed) { try await pool.run(Crash(.sigkill), timeout: .seconds(600)) }
                }
                #expect(Supervisor.shared.pendingTimerCount <= before + 4)
            }
        }

        @Test func aTimeoutKillsTheWorkerAndAReplacementServes() async throws {
            try await withTestPool(1) { pool in
                let error = await expectCrewError(.timedOut) { try await pool.run(Spin(), timeout: .milliseconds(200)) }
                #expect(error?.jobName == Spin.jobName)
                let pid = try await pool.run(Sleep(milliseconds: 0))
                #expect(pid > 0)
                // The timeout counts from the start, not from the queue: a queued job is not timed
                // out (counted from the queue, the second would need 800 ms of its 700).
                async let first = pool.run(Sleep(milliseconds: 400), timeout: .seconds(5))
                async let second = pool.run(Sleep(milliseconds: 400), timeout: .milliseconds(700))
                _ = try await (first, second)
            }
        }

        /// A timeout already spent (a budget computed as `deadline - now`, a hair negative) times
        /// the job out, like a zero one: a negative sub-second Duration has seconds 0 and negative
        /// attoseconds, which the conversion to nanoseconds turned into a UInt64 and trapped on,
        /// in the caller's process. The same held for every duration of the configuration.
        @Test func aTimeoutAlreadySpentTimesTheJobOut() async throws {
            try await withTestPool(1) { pool in
                await expectCrewError(.timedOut) { try await pool.run(Spin(), timeout: .milliseconds(-1)) }
                await expectCrewError(.timedOut) { try await pool.run(Spin(), timeout: .nanoseconds(-1)) }
                let pid = try await pool.run(Sleep(milliseconds: 0))
                #expect(pid > 0)
            }
        }

        @Test func aJobTypeOutsideThePoolsCatalogFailsAtOnce() async throws {
            try await withTestPool(1) { pool in
                await expectCrewError(.unknownJobType) { try await pool.run(NotInWorkerCatalog()) }
                let value = try await pool.run(Echo(1))
                #expect(value == 1)
            }
        }

        @Test func aWorkerWithoutThePoolsJobsIsRefusedAtTheHandshake() async throws {
            let jobs = JobCatalog(TestJobs.catalog.names.isEmpty ? [] : [Echo.self, NotInWorkerCatalog.self])
            let error = await expectCrewError(.workerStartFailed) {
                try await WorkerPool.withPool(.processes(1), jobs: jobs, configuration: testConfiguration()) { pool in
                    try await pool.run(Echo(1))
                }
            }
            #expect(error?.message.contains("NotInWorkerCatalog") == true, "\(String(describing: error))")
        }

        @Test func undecodableArgumentsFailTheJobAndTheWorkerSurvives() async throws {
            try await withTestPool(1) { pool in
                let before = try await pool.run(Sleep(milliseconds: 0))
                let error = await expectCrewError(.undecodableArguments) { try await pool.run(Picky(-1)) }
                #expect(error?.message.contains("negative values are refused") == true)
                #expect(try await pool.run(Picky(5)) == 5)
                #expect(try await pool.run(Sleep(milliseconds: 0)) == before)
            }
        }

        @Test func aMissingExecutableFailsAtOnce() async throws {
            await expectCrewError(.workerStartFailed) {
                try WorkerPool(.processes(1), jobs: TestJobs.catalog, configuration: testConfiguration {
                    $0.executable = .path("/nonexistent/crew-worker")
                })
            }
        }

        @Test func aWorkerThatDiesAtStartupFailsJobsInsteadOfSpinning() async throws {
            // /bin/true is a valid executable that exits at once, without a handshake.
            let error = await expectCrewError(.workerStartFailed) {
                try await WorkerPool.withPool(.processes(2), jobs: TestJobs.catalog, configuration: testConfiguration {
                    $0.executable = .path("/bin/true")
                }) { pool in
                    try await pool.run(Echo(1))
                }
            }
            #expect(error?.termination == .exited(0))
        }

        @Test func garbageOnTheChannelReplacesTheWorkerAndSparesTheParent() async throws {
            try await withTestPool(1) { pool in
                let garbage: [[UInt8]] = [
                    [0xff, 0xff, 0xff, 0x7f, 1, 2, 3],  // a length over the limit
                    [5, 0, 0, 0, 0xee, 1, 2, 3, 4],  // an unknown message type
                    [9, 0, 0, 0, 3, 42, 0, 0, 0, 0, 0, 0, 0],  // a result for a job nobody sent
                    [9, 0, 0, 0, 14, 42, 0, 0, 0, 0, 0, 0, 0],  // a job given back that nobody called back
                    [0, 0, 0, 0, 0],  // a zero length
                ]
                for bytes in garbage {
                    let old = pool.workerProcessIDs
                    await expectCrewError(.protocolViolation) { try await pool.run(Garbage(bytes)) }
                    let value = try await pool.run(Echo(7))
                    #expect(value == 7)
                    #expect(pool.workerProcessIDs != old)
                }
            }
        }

        @Test func anOversizedOutputIsRefusedByTheWorker() async throws {
            try await withTestPool(1, { $0.maxFrameSize = 64 * 1024 }) { pool in
                let blob = try await pool.run(Blob(count: 1000))
                #expect(blob.count == 1000)
                await expectCrewError(.unencodableOutput) { try await pool.run(Blob(count: 100_000)) }
                await expectCrewError(.unencodableArguments) { try await pool.run(Garbage([UInt8](repeating: 1, count: 100_000))) }
                let value = try await pool.run(Echo(3))
                #expect(value == 3)
            }
        }

        @Test func workersIgnoreTheTerminalsInterruptAndShowTheirName() async throws {
            try await withTestPool(1) { pool in
                let me = try await pool.run(WhoAmI())
                #expect(me.commandLine.hasPrefix("crew-worker \(me.workerID)"))
                #expect(me.parentPID == getpid())
                kill(me.pid, SIGINT)
                try await Task.sleep(for: .milliseconds(100))
                #expect(try await pool.run(WhoAmI()).pid == me.pid)
            }
        }
    }
}

extension ProcessTests.Faults {
    @Test func aWorkerKilledFromOutsideBetweenJobsCostsAtMostTheJobsItHeld() async throws {
        try await withTestPool(2) { pool in
            for _ in 0..<3 {
                let pids = pool.workerProcessIDs
                for pid in pids { kill(pid, SIGKILL) }
                // Sends may hit the dead sockets before the pool notices: no SIGPIPE, typed errors only.
                let outcomes = await withTaskGroup(of: String.self) { group in
                    for value in 0..<50 {
                        group.addTask {
                            do {
                                return try await pool.run(Echo(value)) == value ? "ok" : "wrong"
                            } catch let error as CrewError {
                                return "\(error.code)"
                            } catch {
                                return "\(error)"
                            }
                        }
                    }
                    var outcomes: [String: Int] = [:]
                    for await outcome in group { outcomes[outcome, default: 0] += 1 }
                    return outcomes
                }
                #expect(Set(outcomes.keys).isSubset(of: ["ok", "workerCrashed"]), "\(outcomes)")
                #expect(outcomes["ok", default: 0] >= 48, "\(outcomes)")
                #expect(await eventually { pool.workerProcessIDs.count == 2 && Set(pool.workerProcessIDs).isDisjoint(with: pids) })
            }
        }
    }
}
