import Crew
import CrewTestJobs
import Glibc
import Testing

extension ProcessTests {
    @Suite struct LifecycleFaults {
        /// README "Backpressure": once `maxQueued` jobs wait, `run` suspends "until there is room".
        /// Here the queued job ahead of it fails (its target worker died), so there is room: the
        /// caller waiting for room gets in, and a worker starts for it (it used to wait for ever).
        @Test func aCallerWaitingForRoomIsAdmittedWhenQueuedJobsFailBecauseTheirWorkerDied() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(.processes(0...1, idleTimeout: .seconds(60)), { $0.maxQueued = 1 }) { pool in
                let busy = Task { try await pool.run(WaitForFile(path: gate)) }
                #expect(await eventually(within: .seconds(20)) {
                    pool.snapshot().workers.first?.currentJobs.map(\.name) == [WaitForFile.jobName]
                })
                let worker = try #require(pool.snapshot().workers.first)
                let pid = try #require(worker.processID)
                let targeted = Task { try await pool.run(Echo(1), on: worker.id) }
                #expect(await eventually { pool.queuedJobCount == 1 })
                let waiting = Task { try await pool.run(Echo(2)) }
                #expect(await eventually { pool.snapshot().waitingForRoom == 1 })

                kill(pid, SIGKILL)
                await expectCrewError(.workerCrashed) { try await busy.value }
                await expectCrewError(.noEligibleWorker) { try await targeted.value }
                // The queue is empty now: the waiting caller must get in, and a worker start for it.
                let admitted = await eventually(within: .seconds(20)) { pool.snapshot().waitingForRoom == 0 }
                #expect(admitted, "queued \(pool.queuedJobCount), waiting for room \(pool.snapshot().waitingForRoom), workers \(pool.snapshot().workers.count)")
                if !admitted { waiting.cancel() }
                let value = try? await waiting.value
                #expect(value == 2)
            }
        }

        /// `Group.idleTimeout`: "Workers above `minimum` stop after being idle this long", and
        /// `setLimits` changes the minimum at runtime. Workers that became surplus by a lowered
        /// minimum while idle stop too (they used to stay for ever).
        @Test func idleWorkersAboveALoweredMinimumStopAfterTheirIdleTimeout() async throws {
            try await withPool(.processes(2...3, idleTimeout: .milliseconds(200))) { pool in
                #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.filter { $0.state == .ready }.count == 2 })
                // Both idle for a while (a settle, not a timing assertion): the case of a pool
                // whose load dropped.
                try await Task.sleep(for: .milliseconds(500))
                pool.setLimits(minimum: 1, maximum: 3)
                var shrunk = false
                var trail: [Int] = []
                for _ in 0..<1000 {
                    let ws = pool.snapshot().workers
                    trail.append(ws.count * 100 + ws.filter { $0.state == .ready }.count)
                    if ws.count == 1 { shrunk = true; break }
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(shrunk, "workers: \(pool.snapshot().workers.map { "\($0.id) \($0.state)" })")
            }
        }

        /// README "Recycling and crash loops": "If workers keep dying while they start (..., a
        /// crashing setup job), the pool stops respawning after `startFailureLimit` (3) in a row
        /// ... instead of spinning." Also while a healthy worker still serves (it used to respawn
        /// for ever then).
        @Test func workersThatKeepDyingInTheirSetupJobAreNotRespawnedForeverWhileAnotherServes() async throws {
            let fault = temporaryPath("fault")
            defer { unlink(fault) }
            try await withPool(.processes(2), setup: ExitWhileFileExists(path: fault), { $0.startFailureLimit = 3 }) { pool in
                #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.filter { $0.state == .ready }.count == 2 })
                openGate(fault)  // from now on every new worker dies in its setup job
                let victim = try #require(pool.snapshot().workers.last?.processID)
                kill(victim, SIGKILL)
                try await Task.sleep(for: .seconds(4))
                // Workers 1 and 2, then at most three failed replacements (3, 4, 5).
                let highest = pool.snapshot().workers.map(\.id).max() ?? 0
                #expect(highest <= 6, "worker ids reached \(highest): the pool keeps respawning")
                unlink(fault)
            }
        }

        /// `broadcast`: "Runs `job` on every current worker". A worker that is retiring (it runs its
        /// last job under `maxJobsPerWorker`) takes no more jobs, so it is not a target (it used to
        /// be, and its result was `.noEligibleWorker`).
        @Test func aBroadcastDoesNotFailForAWorkerThatIsRetiring() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(Workers.processes(1).maxJobsPerWorker(2)) { pool in
                #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.first?.state == .ready })
                _ = try await pool.run(Echo(0))
                let busy = await startGateJob(pool, gate: gate)  // its last job: it retires
                #expect(await eventually(within: .seconds(20)) {
                    let states = pool.snapshot().workers.map(\.state)
                    return states == [.retiring, .ready]
                })
                let results = try await pool.broadcast(SetState("review", 3))
                for (workerID, result) in results {
                    if case .failure(let error) = result {
                        Issue.record("broadcast failed on worker \(workerID): \(error)")
                    }
                }
                openGate(gate)
                _ = try await busy.value
            }
        }

        /// `maxQueued` is "the most jobs that may wait for a worker"; with 0, no job may wait, but
        /// a job for an idle worker needs no waiting, so it runs (it used to wait for ever).
        @Test func aQueueLimitOfZeroStillRunsJobsOnIdleWorkers() async throws {
            try await withPool(.processes(1), { $0.maxQueued = 0 }) { pool in
                #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.first?.state == .ready })
                let job = Task { try await pool.run(Echo(4)) }
                let ran = await eventually(within: .seconds(20)) { pool.snapshot().waitingForRoom == 0 && pool.snapshot().workers.allSatisfy { $0.jobsDone > 0 } }
                #expect(ran, "waiting for room: \(pool.snapshot().waitingForRoom), free slots: \(pool.snapshot().freeSlots)")
                if !ran { job.cancel() }
                let value = try? await job.value
                #expect(value == 4)
            }
        }
    }
}

extension ProcessTests.LifecycleFaults {
    /// README "Faults": a crash fails only its job, "the worker is replaced", and "the pool keeps
    /// serving in every case". A broadcast whose job threw (an ordinary `.jobFailed` result, the
    /// worker went on) is not replayed on the replacement, which would die in it as a start
    /// failure (the pool then failed every job with `.workerStartFailed`).
    @Test func aBroadcastThatThrewDoesNotKeepReplacementsFromStarting() async throws {
        try await withPool(.processes(1), { $0.startFailureCooldown = .seconds(60) }) { pool in
            #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.first?.state == .ready })
            let results = try await pool.broadcast(RefuseNegative(-1))
            #expect(results.count == 1)
            if case .failure(let error)? = results.first?.result { #expect(error.code == .jobFailed) }
            #expect(try await pool.run(Echo(1)) == 1)  // the worker went on
            await expectCrewError(.workerCrashed) { try await pool.run(Crash(.sigkill)) }
            do {
                let value = try await pool.run(Echo(2), timeout: .seconds(20))
                #expect(value == 2)
            } catch {
                Issue.record("after one crash the pool no longer serves: \(error)")
            }
        }
    }

    /// `startFailureLimit`: jobs fail with `.workerStartFailed` "instead of waiting for a worker
    /// that never comes". Here the worker does come (it was still in its setup job when the
    /// third one in a row died): once it is ready, jobs run on it (they used to fail at once).
    @Test func aWorkerThatBecomesReadyAfterTheGroupGaveUpServesJobs() async throws {
        let prefix = temporaryPath("ticket")
        let gate = temporaryPath("gate")
        defer {
            unlink(gate)
            for ticket in 0..<8 { unlink("\(prefix)-\(ticket)") }
        }
        let adjust: (inout WorkerPool.Configuration) -> Void = {
            $0.startFailureLimit = 3
            $0.startFailureCooldown = .seconds(60)
        }
        try await withPool(.processes(2), setup: FailUntilTicket(prefix: prefix, failures: 3, gate: gate), adjust) { pool in
            // Tickets 0, 1, 2 die; the worker with ticket 3 waits in its setup job.
            #expect(await eventually(within: .seconds(20)) { access("\(prefix)-3", F_OK) == 0 })
            await expectCrewError(.workerStartFailed) { try await pool.trySubmit(Echo(0)) }
            openGate(gate)
            #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.contains { $0.state == .ready } })
            let value = try? await pool.run(Echo(5))
            #expect(value == 5, "a ready worker: \(pool.snapshot().workers.map { "\($0.id) \($0.state)" })")
        }
    }

    /// README "Shutdown": "When it returns, every worker has been reaped: no child process, zombie
    /// or file descriptor is left", even when a job left a background process behind that holds
    /// the worker's stderr open (the pool's end of that pipe used to stay open).
    @Test func noDescriptorRemainsWhenAJobLeftABackgroundProcess() async throws {
        let descriptors = await descriptorBaseline()
        let pipesBefore = Set(pipeDescriptors())
        let sleeper = try await withTestPool(1) { pool in
            try await pool.run(SpawnSleeper(seconds: 30))
        }
        defer { kill(sleeper, SIGKILL) }
        let leaked = openDescriptorCount() - descriptors
        #expect(leaked == 0, "\(leaked) descriptor(s) left; new pipes: \(Set(pipeDescriptors()).subtracting(pipesBefore))")
    }
}

/// The targets of this process's descriptors that are pipes.
private func pipeDescriptors() -> [String] {
    (0..<1024).compactMap { fd -> String? in
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let target = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target.hasPrefix("pipe:") ? "\(fd) -> \(target)" : nil
    }
}

extension ProcessTests.LifecycleFaults {
    /// A process may run with its standard descriptors closed (some daemons do). Its pool's
    /// first descriptors are then numbered 0 to 3, and spawning a worker wired them over each
    /// other: the channel was copied onto fd 3, where the stderr pipe's write end was, before
    /// that was copied onto fd 2, so the worker's stderr was its channel, and a job writing to
    /// stderr broke the protocol (or with the channel's own end at 3, the worker had none).
    /// The driver closes 0 to 3 itself, after the concurrency runtime made its descriptors.
    @Test func aPoolWorksInAProcessWhoseLowDescriptorsAreFree() async throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 3, "/dev/null", O_RDONLY, 0)  // so the runtime's go above
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = ["CrewTestWorker", "pool-with-low-fds"].map { (word: String) in word.withCString { strdup($0) } } + [nil]
        defer { argv.forEach { free($0) } }
        let rc = posix_spawn(&pid, testWorkerPath, &actions, nil, argv, environ)
        posix_spawn_file_actions_destroy(&actions)
        #expect(rc == 0)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // Exited (not signalled) with 0: every job answered right.
        #expect(status & 0x7f == 0 && (status >> 8) & 0xff == 0, "wait status \(status)")
    }
}
