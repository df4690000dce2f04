import Crew
import CrewTestJobs
import Glibc
import Synchronization
import Testing

extension ProcessTests {
    @Suite struct Shutdown {
        @Test func afterShutdownEveryCallFails() async throws {
            let pool = try WorkerPool(.processes(1), jobs: TestJobs.catalog, configuration: testConfiguration())
            let value = try await pool.run(Echo(1))
            #expect(value == 1)
            await pool.shutdown()
            await expectCrewError(.poolShutDown) { try await pool.run(Echo(2)) }
            await expectCrewError(.poolShutDown) { try await pool.broadcast(SetState("after", 1)) }
            await pool.shutdown()  // a second call is harmless
        }

        /// A shutdown that drains waits for running jobs; a second call with `cancelPending`
        /// escalates it: the running job's caller gets `poolShutDown` and both calls return (long
        /// before the drain's 10-minute timeout).
        @Test func aCancellingShutdownEscalatesADrainingOne() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            let pool = try WorkerPool(
                .processes(1), jobs: TestJobs.catalog, configuration: testConfiguration { $0.shutdown.drainTimeout = .seconds(600) })
            let job = await startGateJob(pool, gate: gate)
            let jobEnded = Mutex(false)
            let watcher = Task {
                _ = try? await job.value
                jobEnded.withLock { $0 = true }
            }
            let draining = Task { await pool.shutdown() }
            // The drain has begun once new calls fail with poolShutDown (before, a call for a
            // worker that does not exist fails with noEligibleWorker).
            var drainBegun = false
            for _ in 0..<2_000 where !drainBegun {
                do { _ = try await pool.run(Echo(1), on: 9_999) } catch let error as CrewError { drainBegun = error.code == .poolShutDown }
                if !drainBegun { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(drainBegun)
            let cancelling = Task { await pool.shutdown(cancelPending: true) }
            let ended = await eventually(within: .seconds(20)) { jobEnded.withLock { $0 } }
            #expect(ended, "the escalated shutdown left the running job alone")
            if !ended { openGate(gate) }  // let the drain end, so the test does too
            await expectCrewError(.poolShutDown) { try await job.value }
            await watcher.value
            await cancelling.value
            await draining.value
        }

        @Test func noChildZombieOrDescriptorRemains() async throws {
            let children = childProcessIDs()
            let descriptors = await descriptorBaseline()
            try await withTestPool(3) { pool in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for value in 0..<60 { group.addTask { _ = try await pool.run(Echo(value)) } }
                    try await group.waitForAll()
                }
                _ = try? await pool.run(Crash(.sigkill))
                _ = try? await pool.run(Spin(), timeout: .milliseconds(100))
                // The two killed workers' replacements start in the background.
                #expect(await eventually { childProcessIDs().subtracting(children).count >= 3 })
            }
            #expect(childProcessIDs() == children)
            #expect(openDescriptorCount() == descriptors)
        }

        @Test func queuedAndRunningJobsFinishWhenDraining() async throws {
            let pool = try WorkerPool(.processes(2), jobs: TestJobs.catalog, configuration: testConfiguration())
            try await withThrowingTaskGroup(of: Int32.self) { group in
                for _ in 0..<8 { group.addTask { try await pool.run(Sleep(milliseconds: 50)) } }
                // Every job submitted (queued or running) before the shutdown, some still queued:
                // a child task that had not submitted yet would get .poolShutDown, rightly.
                #expect(await eventually {
                    let snapshot = pool.snapshot()
                    let queued = snapshot.queueDepth.values.reduce(0, +)
                    return queued > 0 && queued + snapshot.workers.reduce(0) { $0 + $1.currentJobs.count } == 8
                })
                await pool.shutdown()
                var finished = 0
                for try await _ in group { finished += 1 }
                #expect(finished == 8)
            }
        }

        @Test func shutdownUnderLoadCancelsCleanly() async throws {
            let children = childProcessIDs()
            let descriptors = await descriptorBaseline()
            let pool = try WorkerPool(.processes(2), jobs: TestJobs.catalog, configuration: testConfiguration())
            let outcomes = await withTaskGroup(of: String.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        do {
                            _ = try await pool.run(index % 10 == 0 ? Sleep(milliseconds: 5000) : Sleep(milliseconds: 5))
                            return "ok"
                        } catch let error as CrewError {
                            return "\(error.code)"
                        } catch {
                            return "unexpected \(error)"
                        }
                    }
                }
                try? await Task.sleep(for: .milliseconds(50))
                await pool.shutdown(cancelPending: true)
                var outcomes: [String: Int] = [:]
                for await outcome in group { outcomes[outcome, default: 0] += 1 }
                return outcomes
            }
            #expect(Set(outcomes.keys).isSubset(of: ["ok", "poolShutDown"]), "\(outcomes)")
            #expect(outcomes["poolShutDown", default: 0] > 0, "\(outcomes)")
            #expect(childProcessIDs() == children)
            #expect(openDescriptorCount() == descriptors)
        }

        @Test func shutdownUnderAMapEndsItWithAnErrorAndLeavesNothing() async throws {
            let children = childProcessIDs()
            let descriptors = await descriptorBaseline()
            let pool = try WorkerPool(.processes(2), jobs: TestJobs.catalog, configuration: testConfiguration())
            let started = Recorder()
            let consumer = Task {
                var outputs = 0
                for try await _ in pool.map((0..<10_000).lazy.map { Sleep(milliseconds: $0 % 50 == 20 ? 3000 : 2) }, maxInFlight: 8) {
                    outputs += 1
                    started.append(outputs)
                }
                return outputs
            }
            #expect(await eventually { started.values.count >= 10 })
            await pool.shutdown(cancelPending: true)
            switch await consumer.result {
            case .success(let count):
                Issue.record("the map ended normally after \(count) outputs")
            case .failure(let error as CrewError):
                #expect([.poolShutDown, .cancelled].contains(error.code), "\(error)")
            case .failure(let error):
                Issue.record("unexpected \(error)")
            }
            #expect(childProcessIDs() == children)
            #expect(openDescriptorCount() == descriptors)
        }

        @Test func aWorkerThatIgnoresCancellationIsKilledAtShutdown() async throws {
            let children = childProcessIDs()
            var configuration = testConfiguration()
            configuration.shutdown.drainTimeout = .milliseconds(200)
            configuration.shutdown.terminateGracePeriod = .milliseconds(200)
            let pool = try WorkerPool(.processes(1), jobs: TestJobs.catalog, configuration: configuration)
            let stuck = Task { try await pool.run(BlockingSleep(milliseconds: 20_000)) }
            #expect(await eventually { pool.queuedJobCount == 0 && !pool.workerProcessIDs.isEmpty })
            try await Task.sleep(for: .milliseconds(100))
            await pool.shutdown()
            await expectCrewError(.poolShutDown) { try await stuck.value }
            #expect(childProcessIDs() == children)
        }

        @Test func withPoolShutsDownWhenTheBodyThrows() async throws {
            struct Oops: Error {}
            let children = childProcessIDs()
            await #expect(throws: Oops.self) {
                try await withTestPool(2) { pool in
                    _ = try await pool.run(Echo(1))
                    throw Oops()
                }
            }
            #expect(childProcessIDs() == children)
        }

        @Test func workersDieWithTheirParentEvenBySIGKILL() async throws {
            // A helper process owns a pool of three workers and prints their pids.
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
            posix_spawn_file_actions_addclose(&actions, fds[0])
            var pid: pid_t = 0
            let argv: [UnsafeMutablePointer<CChar>?] = ["CrewTestWorker", "own-pool", "3"].map { (word: String) in word.withCString { strdup($0) } } + [nil]
            defer { argv.forEach { free($0) } }
            let rc = posix_spawn(&pid, testWorkerPath, &actions, nil, argv, environ)
            posix_spawn_file_actions_destroy(&actions)
            close(fds[1])
            #expect(rc == 0)
            var output: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 256)
            while !output.contains(10) {
                let n = read(fds[0], &buffer, buffer.count)
                if n <= 0 { break }
                output += buffer[..<n]
            }
            close(fds[0])
            let workers = String(decoding: output, as: UTF8.self).split(separator: " ").compactMap { Int32($0.trimmed()) }
            #expect(workers.count == 3)
            #expect(workers.allSatisfy(isAlive))

            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            #expect(await eventually(within: .seconds(2)) { !workers.contains(where: isAlive) })
        }
    }
}

extension ProcessTests.Shutdown {
    @Test func aPoolDroppedWithoutShutdownStillLetsItsWorkersGo() async throws {
        let children = childProcessIDs()
        var pids: [Int32] = []
        do {
            let pool = try WorkerPool(.processes(2), jobs: TestJobs.catalog, configuration: testConfiguration())
            _ = try await pool.run(Echo(1))
            pids = pool.workerProcessIDs
        }
        #expect(pids.count == 2)
        #expect(await eventually { childProcessIDs() == children })
    }
}
