@testable import Crew
import CrewTestJobs
import Glibc
import Logging
import Synchronization
import Testing

// MARK: Probes shared by the in-process jobs below (they run in this process)

/// Notes jobs leave, per test key.
private let reviewNotes = Mutex<[String: [String]]>([:])
/// Per key: jobs running now, and the most that ran at once.
private let reviewConcurrency = Mutex<[String: (now: Int, most: Int)]>([:])

private func note(_ key: String, _ text: String) {
    reviewNotes.withLock { $0[key, default: []].append(text) }
}

private func notes(_ key: String) -> [String] {
    reviewNotes.withLock { $0[key] ?? [] }
}

private func enter(_ key: String) {
    reviewConcurrency.withLock { table in
        var entry = table[key] ?? (0, 0)
        entry.now += 1
        entry.most = max(entry.most, entry.now)
        table[key] = entry
    }
}

private func leave(_ key: String) {
    reviewConcurrency.withLock { $0[key]!.now -= 1 }
}

private func mostAtOnce(_ key: String) -> Int {
    reviewConcurrency.withLock { $0[key]?.most ?? 0 }
}

private func currentThreadName() -> String {
    let fd = open("/proc/thread-self/comm", O_RDONLY)
    var buffer = [UInt8](repeating: 0, count: 32)
    let n = max(0, read(fd, &buffer, buffer.count))
    close(fd)
    return String(decoding: buffer[..<n].filter { $0 != 10 }, as: UTF8.self)
}

/// Whether `name` is a thread worker's thread's (`crew-t` and the worker's id).
func isThreadWorkerThread(_ name: String) -> Bool {
    let prefix = PosixThread.name(.jobs, worker: 0).dropLast()
    return name.hasPrefix(prefix) && name.count > prefix.count && name.dropFirst(prefix.count).allSatisfy(\.isWholeNumber)
}

/// The names of this process's threads that thread workers run.
private func crewThreadCount() -> Int {
    guard let dir = opendir("/proc/self/task") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        guard Int(name) != nil else { continue }
        if isThreadWorkerThread(readFile("/proc/self/task/\(name)/comm")[...].trimmed()) { count += 1 }
    }
    return count
}

// MARK: In-process jobs (not in the catalog: pools without processes run any job)

/// Loops, checking only `isCancelled`, until cancelled or `limit` seconds passed.
private struct LoopUntilCancelled: Job {
    var key: String
    var limit: Int = 20
    func run(in context: JobContext) async throws -> Int {
        note(key, "started")
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(limit)
        while !context.isCancelled && clock.now < deadline { usleep(5_000) }
        note(key, context.isCancelled ? "cancelled" : "deadline")
        return 0
    }
}

/// Counts how many run at once; ignores cancellation until another job notes "release"
/// (or `limit` seconds passed).
private struct Stubborn: Job {
    var key: String
    var limit: Int = 10
    func run(in context: JobContext) async throws -> Int {
        enter(key)
        note(key, "started")
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(limit)
        while !notes(key).contains("release") && clock.now < deadline { usleep(5_000) }
        note(key, "ended")
        leave(key)
        return 0
    }
}

/// Counts how many run at once, then lets the ``Stubborn`` jobs of its key go.
private struct Releaser: Job {
    var key: String
    func run(in context: JobContext) async throws -> Int {
        enter(key)
        note(key, "releaser ran")
        usleep(20_000)
        leave(key)
        note(key, "release")
        return 0
    }
}

private actor Elsewhere {
    func value() -> Int { 1 }
}

/// The thread it runs on at several points: at the start, after a sleep, after an actor call,
/// in a task-group child, after `async let`, after a continuation resumed on another thread.
private struct ThreadTrail: Job {
    func run(in context: JobContext) async throws -> [String] {
        var trail = [currentThreadName()]
        try await Task.sleep(for: .milliseconds(5))
        trail.append(currentThreadName())
        _ = await Elsewhere().value()
        trail.append(currentThreadName())
        let child = await withTaskGroup(of: String.self) { group in
            group.addTask { currentThreadName() }
            return await group.next()!
        }
        trail.append(child)
        async let other = currentThreadName()
        trail.append(await other)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            PosixThread.start(name: "review-resumer") { usleep(2_000); c.resume() }.detach()
        }
        trail.append(currentThreadName())
        await Task.yield()
        trail.append(currentThreadName())
        return trail
    }
}

private struct Context: Job {
    func run(in context: JobContext) async throws -> [String] {
        ["\(context.workerID)", "\(context.jobID)", "\(context.processID)", currentThreadName()]
    }
}

// MARK: Tests with pools

extension ProcessTests {
    @Suite struct LocalWorkerFaults {
        // Passing coverage (kept: untested before). The README promises that blocking code on a
        // thread worker never occupies the cooperative pool; the existing test only looks at the
        // thread a job starts on, not where it resumes after awaiting.
        @Test func threadJobsStayOnTheirOwnThreadAcrossEveryKindOfAwait() async throws {
            try await withPool(.threads(1)) { pool in
                let trail = try await pool.run(ThreadTrail())
                #expect(trail.allSatisfy(isThreadWorkerThread), "\(trail)")
            }
        }

        // Passing coverage: run(on:) to thread and inline workers, JobContext fields per kind, the
        // snapshot of in-process workers, tag routing in a mixed in-process pool.
        @Test func inProcessWorkersHaveRightContextsSnapshotsAndTargeting() async throws {
            let workers: Workers = [.threads(2, tags: ["io"]), .inline(maxConcurrent: 1, tags: ["cheap"])]
            try await withPool(workers) { pool in
                #expect(await eventually { pool.snapshot().workers.allSatisfy { $0.state == .ready } })
                let snapshot = pool.snapshot()
                for worker in snapshot.workers {
                    #expect(worker.processID == nil && worker.residentBytes == nil)
                    let c = try await pool.run(Context(), on: worker.id)
                    #expect(c[0] == "\(worker.id)")
                    #expect(c[2] == "\(getpid())")
                    if worker.kind == .thread { #expect(c[3] == PosixThread.name(.jobs, worker: worker.id), "\(c)") }
                    else { #expect(!isThreadWorkerThread(c[3]), "\(c)") }
                }
                let io = try await pool.run(Context(), requiring: "io")
                #expect(isThreadWorkerThread(io[3]))
                let cheap = try await pool.run(Context(), requiring: "cheap")
                #expect(!isThreadWorkerThread(cheap[3]))
                await expectCrewError(.noEligibleWorker) { try await pool.run(Context(), requiring: "gpu") }
                await expectCrewError(.noEligibleWorker) { try await pool.run(Context(), on: 999) }
            }
        }

        // Passing coverage: a thread worker's OS thread ends with it, after a timeout (worker
        // killed), a cancellation and a shutdown; timed-out and cancelled jobs see cancellation.
        @Test func threadWorkersLeaveNoThreadAfterTimeoutsCancellationsAndShutdown() async throws {
            let before = crewThreadCount()
            let key = "leak-\(UInt32.random(in: 0...UInt32.max))"
            try await withPool(.threads(2)) { pool in
                await expectCrewError(.timedOut) { try await pool.run(LoopUntilCancelled(key: key, limit: 10), timeout: .milliseconds(100)) }
                let t = Task { try await pool.run(LoopUntilCancelled(key: key + "b", limit: 10)) }
                #expect(await eventually { notes(key + "b").contains("started") })
                t.cancel()
                await expectCrewError(.cancelled) { try await t.value }
                for i in 0..<20 { _ = try await pool.run(Echo(i)) }
            }
            #expect(await eventually { crewThreadCount() <= before }, "\(crewThreadCount()) vs \(before)")
            #expect(notes(key) == ["started", "cancelled"])
            #expect(notes(key + "b") == ["started", "cancelled"])
        }

        // MARK: Shutdown and timeouts of jobs that do not stop at once

        /// README "Shutdown": "lets queued and running jobs finish (at most
        /// shutdown.drainTimeout ...)". WorkerPool.shutdown: "then lets every worker exit,
        /// escalating ... for workers that linger". For in-process kinds the only escalation is
        /// cooperative cancellation; a job that checks `isCancelled` must be asked to stop once
        /// the drain timeout has passed, or shutdown waits for it without bound.
        @Test(arguments: [Workers.threads(1), .inline(maxConcurrent: 1)])
        func shutdownCancelsACooperativeInProcessJobOnceTheDrainTimeoutPassed(workers: Workers) async throws {
            let key = "drain-\(UInt32.random(in: 0...UInt32.max))"
            let pool = try WorkerPool(workers, jobs: TestJobs.catalog, configuration: testConfiguration {
                $0.shutdown.drainTimeout = .milliseconds(200)
            })
            let job = Task { try await pool.run(LoopUntilCancelled(key: key, limit: 10)) }
            #expect(await eventually { notes(key).contains("started") })
            await pool.shutdown()
            await expectCrewError(.poolShutDown) { try await job.value }
            #expect(await eventually(within: .seconds(15)) { notes(key).count == 2 })
            // It used to run to its own 10 s limit ("deadline"), the shutdown waiting for it.
            #expect(notes(key) == ["started", "cancelled"])
        }

        /// Configuration.cancellationGracePeriod / WorkerHandle.kill: a cancelled job that does
        /// not stop within the grace period has its worker ended; an in-process worker "reports
        /// its exit at once (a job that ignores cancellation runs on, detached from the pool)".
        /// shutdown(cancelPending: true) asks running jobs to cancel, but a thread job that
        /// ignores it keeps shutdown waiting until the job returns on its own.
        @Test func shutdownWithCancelPendingDoesNotWaitForAThreadJobThatIgnoresCancellation() async throws {
            let key = "stubborn-\(UInt32.random(in: 0...UInt32.max))"
            let pool = try WorkerPool(.threads(1), jobs: TestJobs.catalog, configuration: testConfiguration {
                $0.shutdown.drainTimeout = .milliseconds(200)
            })
            let job = Task { try await pool.run(Stubborn(key: key, limit: 15)) }
            #expect(await eventually { notes(key).contains("started") })
            await pool.shutdown(cancelPending: true)
            // It used to return only once the job ended by itself (15 s).
            #expect(!notes(key).contains("ended"), "shutdown waited for the job to end by itself")
            note(key, "release")
            await expectCrewError(.poolShutDown) { try await job.value }
            #expect(await eventually(within: .seconds(20)) { notes(key).contains("ended") })
        }

        /// `WorkerKind.inline`: timeouts are cooperative, and a job that ignores its timeout runs
        /// on detached while a replacement takes its place, so the next job runs beside it.
        @Test func aTimedOutInlineJobThatIgnoresItRunsOnBesideItsReplacement() async throws {
            let key = "inline-\(UInt32.random(in: 0...UInt32.max))"
            try await withPool(.inline(maxConcurrent: 1)) { pool in
                let first = Task { try await pool.run(Stubborn(key: key, limit: 10), timeout: .milliseconds(100)) }
                #expect(await eventually { notes(key).contains("started") })
                let second = Task { try await pool.run(Releaser(key: key)) }
                await expectCrewError(.timedOut) { try await first.value }
                _ = try await second.value
                #expect(await eventually(within: .seconds(15)) { notes(key).contains("ended") })
                #expect(mostAtOnce(key) == 2, "\(notes(key))")
            }
        }
    }
}

/// An in-process worker driven directly, without a pool, to order what the pool's threads can
/// interleave: a cancel before its job, a dispatch after the kill.
@Suite struct LocalWorkerOrderingTests {
    /// The pool sends dispatches after releasing its lock, so a caller's cancel can reach a
    /// worker before the job does. A thread or inline worker dropped such a cancel: the job ran
    /// uncancelled (until the grace period killed the worker with all its other jobs). It is
    /// answered as cancelled now, and never runs.
    @Test(arguments: [WorkerKind.thread, .inline])
    func aCancelThatOvertakesItsJobKeepsTheJobFromRunning(kind: WorkerKind) async {
        let ended = Mutex<[UInt64: CrewError.Code?]>([:])
        let ran = Mutex<[UInt64]>([])
        let worker = LocalWorker(
            id: 1, kind: kind, logger: Logger(label: "crew.test"),
            events: LocalWorkerEvents(
                jobEnded: { jobID, result in
                    ended.withLock { table in
                        switch result {
                        case .success: table[jobID] = .some(nil)
                        case .failure(let error): table[jobID] = error.code
                        }
                    }
                },
                exited: {}))
        func job(_ jobID: UInt64) -> DispatchedJob {
            let payload = JobPayload(encoded: nil, local: { _ in
                ran.withLock { $0.append(jobID) }
                return Int(jobID)
            })
            return DispatchedJob(jobID: jobID, name: "Probe", payload: payload, announceStart: false)
        }
        worker.cancel(jobID: 1)  // before its dispatch
        worker.dispatch([job(1), job(2)])
        #expect(await eventually { ended.withLock { $0.count == 2 } })
        #expect(ended.withLock { $0[1] } == .some(.cancelled))
        #expect(ended.withLock { $0[2] } == .some(nil))
        #expect(ran.withLock { $0 } == [2])
        worker.release()
    }

    /// A dispatch the pool decided on before it killed the worker can arrive after the kill.
    /// The job must not run then: the pool has failed it with the worker already (an inline
    /// worker ran it anyway, detached; a thread worker queued it on a stopped thread, leaking it).
    @Test(arguments: [WorkerKind.thread, .inline])
    func aDispatchThatArrivesAfterTheKillRunsNothing(kind: WorkerKind) async throws {
        let ran = Mutex<[UInt64]>([])
        let exited = Mutex(false)
        let worker = LocalWorker(
            id: 1, kind: kind, logger: Logger(label: "crew.test"),
            events: LocalWorkerEvents(jobEnded: { _, _ in }, exited: { exited.withLock { $0 = true } }))
        worker.kill()
        #expect(exited.withLock { $0 })
        let payload = JobPayload(encoded: nil, local: { _ in
            ran.withLock { $0.append(1) }
            return 1
        })
        worker.dispatch([DispatchedJob(jobID: 1, name: "Probe", payload: payload, announceStart: false)])
        try await Task.sleep(for: .milliseconds(100))  // room for a wrongly started job to run
        #expect(ran.withLock { $0 }.isEmpty)
    }
}
