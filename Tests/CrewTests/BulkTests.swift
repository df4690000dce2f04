import Crew
import CrewTestJobs
import Glibc
import Synchronization
import Testing

/// A sequence that counts how far it has been pulled.
struct CountingJobs: Sequence, Sendable {
    let count: Int
    let pulled: Recorder

    func makeIterator() -> AnyIterator<Add> {
        var next = 0
        return AnyIterator {
            guard next < count else { return nil }
            defer { next += 1 }
            pulled.append(next)
            return Add(next, 1000)
        }
    }
}

/// An endless sequence of `GatedRefuse(index)` that counts how far it has been pulled: the first
/// waits for `gate`, the one at `failing` fails.
struct CountingGatedJobs: Sequence, Sendable {
    let gate: String
    let failing: Int
    let pulled: Recorder

    func makeIterator() -> AnyIterator<GatedRefuse> {
        var next = 0
        return AnyIterator {
            defer { next += 1 }
            pulled.append(next)
            return GatedRefuse(next == failing ? -1 : next, gate: next == 0 ? gate : nil)
        }
    }
}

/// Waits until no worker holds a job and nothing is queued, then a little longer, so that the
/// answers of every job have been delivered to their callbacks (no assertion depends on it:
/// it only makes the situation under test, several finished chunks at once, certain).
private func waitUntilIdle(_ pool: WorkerPool) async {
    _ = await eventually(within: .seconds(20)) {
        let snapshot = pool.snapshot()
        return snapshot.workers.allSatisfy { $0.currentJobs.isEmpty } && snapshot.queueDepth.values.allSatisfy { $0 == 0 }
    }
    try? await Task.sleep(for: .milliseconds(300))
}

extension ProcessTests {
    @Suite struct Bulk {
        @Test(arguments: [1, 7, 64])
        func mapReturnsOutputsInInputOrder(chunkSize: Int) async throws {
            try await withPool(.processes(2)) { pool in
                var outputs: [Int] = []
                for try await output in pool.map((0..<500).map { Add($0, 1) }, chunkSize: chunkSize) {
                    outputs.append(output)
                }
                #expect(outputs == (0..<500).map { $0 + 1 })
            }
        }

        /// A chunk size far larger than the input (say, "all in one message") sends the input as
        /// one chunk; it does not reserve room for `chunkSize` jobs first.
        @Test(arguments: [1 << 40, Int.max])
        func aChunkSizeFarLargerThanTheInputSendsItAsOneChunk(chunkSize: Int) async throws {
            try await withPool(.processes(1)) { pool in
                var outputs: [Int] = []
                for try await output in pool.map((0..<5).map { Add($0, 1) }, chunkSize: chunkSize) { outputs.append(output) }
                #expect(outputs == [1, 2, 3, 4, 5])
                var unordered: [Int] = []
                for try await (_, output) in pool.mapUnordered((0..<5).map { Add($0, 1) }, chunkSize: chunkSize) { unordered.append(output) }
                #expect(unordered.sorted() == [1, 2, 3, 4, 5])
            }
        }

        @Test func mapPullsItsInputLazily() async throws {
            try await withPool(.processes(1)) { pool in
                let pulled = Recorder()
                var iterator = pool.map(CountingJobs(count: 1_000_000, pulled: pulled), maxInFlight: 4).makeAsyncIterator()
                for expected in 0..<10 {
                    let output = try await iterator.next()
                    #expect(output == expected + 1000)
                }
                // Ten consumed, at most four more started: the million are never pulled at once.
                #expect(pulled.values.count <= 14)
            }
        }

        @Test func mapUnorderedYieldsInCompletionOrder() async throws {
            try await withPool(.processes(2)) { pool in
                let jobs = [Sleep(milliseconds: 400), Sleep(milliseconds: 10), Sleep(milliseconds: 10)]
                var order: [Int] = []
                for try await (job, _) in pool.mapUnordered(jobs, maxInFlight: 2) {
                    order.append(job.milliseconds)
                }
                #expect(order.count == 3)
                #expect(order.last == 400)
            }
        }

        @Test func aFailureEndsTheMapAfterTheOutputsBeforeIt() async throws {
            try await withPool(.processes(2)) { pool in
                let jobs: [Picky] = [Picky(1), Picky(2), Picky(-3), Picky(4)]
                var outputs: [Int] = []
                let error = await expectCrewError(.undecodableArguments) {
                    for try await output in pool.map(jobs, maxInFlight: 1) { outputs.append(output) }
                    return outputs
                }
                #expect(outputs == [1, 2])
                #expect(error?.jobName == Picky.jobName)
            }
        }

        @Test func aJobThatThrowsInsideAChunkFailsAloneWithItsError() async throws {
            try await withPool(.processes(1)) { pool in
                var seen: [Int] = []
                let error = await expectCrewError(.jobFailed) {
                    for try await output in pool.map([Echo(1), Echo(2)], chunkSize: 2) { seen.append(output) }
                    for try await output in pool.map([Fail("third")], chunkSize: 2) { seen.append(output) }
                    return seen
                }
                #expect(seen == [1, 2])
                #expect(error?.message.contains("third") == true)
            }
        }

        /// A job that throws in the middle of a chunk: the chunk's outputs before it come out,
        /// then its error, in either order and on either kind of worker.
        @Test(arguments: [Workers.processes(1), .threads(1)], [true, false])
        func aJobThatThrowsMidChunkComesAfterTheChunksOutputsBeforeIt(workers: Workers, ordered: Bool) async throws {
            try await withPool(workers) { pool in
                let jobs = [1, 2, -3, 4, 5, -6].map { RefuseNegative($0) }
                var outputs: [Int] = []
                let error = await expectCrewError(.jobFailed) {
                    if ordered {
                        for try await output in pool.map(jobs, chunkSize: jobs.count) { outputs.append(output) }
                    } else {
                        for try await (_, output) in pool.mapUnordered(jobs, chunkSize: jobs.count) { outputs.append(output) }
                    }
                    return outputs
                }
                #expect(outputs == [1, 2])
                #expect(error?.message.contains("refused -3") == true)
                #expect(error?.jobName == RefuseNegative.jobName)
                let value = try await pool.run(RefuseNegative(7))
                #expect(value == 7)
            }
        }

        @Test func aWorkerThatDiesUnderAMapFailsItAndThePoolServesOn() async throws {
            try await withPool(.processes(1)) { pool in
                var outputs: [Int] = []
                let error = await expectCrewError(.workerCrashed) {
                    for try await output in pool.map([Echo(1)], maxInFlight: 1) { outputs.append(output) }
                    for try await output in pool.map([Crash(.sigkill), Crash(.sigkill)], maxInFlight: 1) { outputs.append(output) }
                    return outputs
                }
                #expect(outputs == [1])
                #expect(error?.jobName == Crash.jobName)
                let value = try await pool.run(Echo(7))
                #expect(value == 7)
                #expect(await eventually { pool.snapshot().queueDepth.values.reduce(0, +) == 0 })
            }
        }

        @Test(arguments: [1, 3])
        func aChunkThatCannotBeSentFailsTheMapAtOnce(chunkSize: Int) async throws {
            try await withPool(.processes(1)) { pool in
                // Refused before it reaches the pool (not in the catalog): the chunk ends inside
                // its own submission.
                await expectCrewError(.unknownJobType) {
                    for try await _ in pool.map((0..<10).map { _ in NotInWorkerCatalog() }, chunkSize: chunkSize) {}
                }
                let value = try await pool.run(Echo(3))
                #expect(value == 3)
            }
        }

        /// "Either way the error names the job's type": a chunk refused before it reaches the
        /// pool (its type is not in the catalog, or its message exceeds the maximum frame size)
        /// is named for its jobs' type too, not for the internal batch that carried it.
        @Test func aChunkThatCannotBeSentNamesTheJobTypeNotTheBatch() async throws {
            try await withPool(.processes(1), { $0.maxFrameSize = 64 * 1024 }) { pool in
                let unknown = await expectCrewError(.unknownJobType) {
                    for try await _ in pool.map((0..<6).map { _ in NotInWorkerCatalog() }, chunkSize: 3) {}
                }
                #expect(unknown?.jobName == NotInWorkerCatalog.jobName)
                #expect(unknown.map { !$0.message.contains("#batch") } ?? false, "\(unknown?.message ?? "")")
                let tooLarge = await expectCrewError(.unencodableArguments) {
                    for try await _ in pool.map([SetState(String(repeating: "k", count: 100_000), 1), SetState("a", 2)], chunkSize: 2) {}
                }
                #expect(tooLarge?.jobName == SetState.jobName)
                try await expectNothingLeftAndServing(pool)
            }
        }

        @Test func aChunkThatCannotBeEncodedAmongOthersFailsTheMapAfterTheOutputsBeforeIt() async throws {
            // The 21st job is too large for a frame; the others, before and after it, are sent
            // while it fails.
            try await withPool(.processes(2), { $0.maxFrameSize = 64 * 1024 }) { pool in
                let jobs = (0..<40).map { SetState($0 == 20 ? String(repeating: "k", count: 100_000) : "key\($0)", $0) }
                var outputs = 0
                await expectCrewError(.unencodableArguments) {
                    for try await _ in pool.map(jobs, maxInFlight: 40) { outputs += 1 }
                }
                #expect(outputs == 20)
                // The jobs after it were cancelled or ran to their end.
                try await expectNothingLeftAndServing(pool)
            }
        }

        @Test(arguments: [1, 2])
        func aChunkPastItsTimeoutFailsTheMapWithTimedOut(chunkSize: Int) async throws {
            try await withPool(.processes(1)) { pool in
                await expectCrewError(.timedOut) {
                    for try await _ in pool.map([Spin(), Spin()], chunkSize: chunkSize, timeout: .milliseconds(200)) {}
                }
                let value = try await pool.run(Echo(5))
                #expect(value == 5)
            }
        }

        @Test(arguments: [1, 3])
        func cancellingTheConsumerCancelsTheChunksThatRun(chunkSize: Int) async throws {
            // The sleeps are cancelled in the workers (cooperatively), and nothing waits.
            try await expectCancellingTheConsumerStopsEverything(chunkSize: chunkSize) { Sleep(milliseconds: 60_000) }
        }

        @Test(arguments: [1, 3])
        func cancellingTheConsumerCancelsChunksOnTheRetryPath(chunkSize: Int) async throws {
            // A cancelled job is not retried: nothing runs or waits afterwards.
            try await expectCancellingTheConsumerStopsEverything(chunkSize: chunkSize) { RetriedSleep(milliseconds: 60_000) }
        }

        /// A consumer of a map over endless long jobs is cancelled once both workers run one:
        /// it gets `.cancelled`, every job ends in the workers, the queue empties, and the pool
        /// serves on.
        private func expectCancellingTheConsumerStopsEverything<J: Job>(
            chunkSize: Int, _ job: @escaping @Sendable () -> J
        ) async throws {
            try await withPool(.processes(2)) { pool in
                let consumer = Task {
                    for try await _ in pool.map((0..<100).lazy.map { _ in job() }, maxInFlight: 4, chunkSize: chunkSize) {}
                }
                #expect(await eventually { pool.snapshot().workers.reduce(0) { $0 + $1.currentJobs.count } == 2 })
                consumer.cancel()
                await expectCrewError(.cancelled) { try await consumer.value }
                try await expectNothingLeftAndServing(pool)
            }
        }

        @Test(arguments: [1, 2])
        func aJobTypesRetryPolicyAppliesInAMap(chunkSize: Int) async throws {
            try await withPool(.processes(1)) { pool in
                // Each job crashes its worker the first time it runs (3 attempts allowed).
                let markers = (0..<2).map { temporaryPath("retried-\(chunkSize)-\($0)") }
                defer { for marker in markers { unlink(marker) } }
                let jobs = markers.enumerated().map { RetriedCrashOnce(marker: $0.element, value: $0.offset) }
                // One by one, each job is retried alone; in a chunk, the chunk is retried (its
                // jobs are idempotent) until every job in it has had its crash: three attempts.
                var outputs: [Int] = []
                for try await output in pool.map(jobs, maxInFlight: 1, chunkSize: chunkSize) { outputs.append(output) }
                #expect(outputs == [0, 1])
            }
        }

        @Test func mapWorksOnInProcessWorkersToo() async throws {
            try await withPool(.threads(2)) { pool in
                var total = 0
                for try await output in pool.map((0..<100).map { Unencodable($0) }, chunkSize: 10) { total += output }
                #expect(total == 2 * (0..<100).reduce(0, +))
            }
        }

        /// `mapUnordered` promises completion order. One worker runs one job at a time, so each
        /// `Stamp` (its start time) finishes after the ones before it: yielded in completion
        /// order, the stamps rise.
        @Test func mapUnorderedYieldsChunksThatFinishedTogetherInCompletionOrder() async throws {
            try await withPool(.processes(1)) { pool in
                var iterator = pool.mapUnordered((0..<20).map { Stamp($0) }, maxInFlight: 20).makeAsyncIterator()
                var stamps: [UInt64] = []
                var tags: [Int] = []
                if let (job, stamp) = try await iterator.next() { tags.append(job.tag); stamps.append(stamp) }
                // Let the other 19 finish while the consumer is away.
                await waitUntilIdle(pool)
                while let (job, stamp) = try await iterator.next() { tags.append(job.tag); stamps.append(stamp) }
                #expect(tags.count == 20)
                #expect(stamps == stamps.sorted(), "yielded out of completion order: \(tags)")
            }
        }

        /// `mapUnordered` throws the first failure it meets "after the outputs that finished
        /// before it". On one worker, jobs 0...38 finish before job 39 fails: all of them come out.
        @Test func mapUnorderedKeepsTheOutputsThatFinishedBeforeTheFailure() async throws {
            try await withPool(.processes(1)) { pool in
                let jobs = (0..<40).map { RefuseNegative($0 == 39 ? -1 : $0) }
                var iterator = pool.mapUnordered(jobs, maxInFlight: 40).makeAsyncIterator()
                var outputs: [Int] = []
                let error = await expectCrewError(.jobFailed) {
                    if let (_, output) = try await iterator.next() { outputs.append(output) }
                    await waitUntilIdle(pool)
                    while let (_, output) = try await iterator.next() { outputs.append(output) }
                    return outputs
                }
                #expect(error?.message.contains("refused -1") == true)
                #expect(outputs.sorted() == Array(0...38), "lost outputs that finished before the failure: got \(outputs)")
            }
        }

        /// "Ending the iteration early cancels them too", over a plain sequence (only the async
        /// input's early end was tested). 
        @Test(arguments: [true, false])
        func breakingOutOfAMapOverASequenceCancelsWhatRuns(ordered: Bool) async throws {
            try await withPool(.processes(2)) { pool in
                let open = temporaryPath("open")
                openGate(open)
                defer { unlink(open) }
                let never = temporaryPath("never")
                let jobs = [WaitForFile(path: open)] + (0..<6).map { _ in WaitForFile(path: never) }
                // Both workers hold a job that never ends on its own when the loop is left.
                let bothBusy: @Sendable () async -> Bool = {
                    await eventually(within: .seconds(20)) { pool.snapshot().workers.reduce(0) { $0 + $1.currentJobs.count } == 2 }
                }
                if ordered {
                    for try await _ in pool.map(jobs, maxInFlight: 4) {
                        #expect(await bothBusy())
                        break
                    }
                } else {
                    for try await _ in pool.mapUnordered(jobs, maxInFlight: 4) {
                        #expect(await bothBusy())
                        break
                    }
                }
                try await expectNothingLeftAndServing(pool)
            }
        }

        /// "After shutdown every call fails with poolShutDown": map too (both the callback and
        /// the retry path), and it does not hang.
        @Test(arguments: [1, 3])
        func mapAfterShutdownFailsWithPoolShutDown(chunkSize: Int) async throws {
            let pool = try WorkerPool(.processes(1), jobs: TestJobs.catalog, configuration: testConfiguration())
            await pool.shutdown()
            await expectCrewError(.poolShutDown) {
                var count = 0
                for try await _ in pool.map((0..<10).map { Echo($0) }, chunkSize: chunkSize) { count += 1 }
                return count
            }
            await expectCrewError(.poolShutDown) {
                var count = 0
                for try await _ in pool.map((0..<10).map { RetriedSleep(milliseconds: $0) }, chunkSize: chunkSize) { count += 1 }
                return count
            }
        }

        /// Once a chunk has failed, an ordered map will end with its error, so it starts nothing
        /// more, even while that chunk waits for earlier ones to be handed out: chunk 0 waits for
        /// a gate while chunk 1 fails (alone, or in the middle of its chunk); when the gate opens,
        /// chunk 0's outputs come out, then the error, and nothing past the first `maxInFlight`
        /// chunks was ever pulled.
        @Test(arguments: [1, 2])
        func anOrderedMapStartsNothingOnceAChunkHasFailed(chunkSize: Int) async throws {
            try await withPool(.processes(2)) { pool in
                let gate = temporaryPath("failed-chunk-gate")
                defer { unlink(gate) }
                let pulled = Recorder()
                // Chunk 0 waits for the gate; chunk 1 fails at its last job; then endless jobs.
                let jobs = CountingGatedJobs(gate: gate, failing: 2 * chunkSize - 1, pulled: pulled)
                let consumer = Task {
                    var outputs: [Int] = []
                    do {
                        for try await output in pool.map(jobs, maxInFlight: 2, chunkSize: chunkSize) { outputs.append(output) }
                    } catch {
                        return (outputs, error as? CrewError)
                    }
                    return (outputs, nil)
                }
                // Chunk 1 has failed and its failure has reached the waiting consumer; chunk 0 waits.
                #expect(await eventually(within: .seconds(20)) {
                    let snapshot = pool.snapshot()
                    return pulled.values.count == 2 * chunkSize && snapshot.workers.reduce(0) { $0 + $1.currentJobs.count } == 1
                        && snapshot.queueDepth.values.allSatisfy { $0 == 0 }
                })
                try await Task.sleep(for: .milliseconds(300))
                openGate(gate)
                let (outputs, error) = await consumer.value
                #expect(error?.code == .jobFailed)
                #expect(error?.message.contains("refused -1") == true)
                // Every output before the failed job, its own chunk's included.
                #expect(outputs == Array(0..<(2 * chunkSize - 1)))
                #expect(pulled.values == Array(0..<(2 * chunkSize)), "started chunks after the failure")
                try await expectNothingLeftAndServing(pool)
            }
        }

        /// Cancelling a chunk after the failed one must not cost the chunks before it, whose
        /// outputs still come out: a cancelled job that ignores cancellation gets its worker
        /// killed after the grace period, and with several jobs per worker that would take an
        /// earlier chunk with it (its outputs lost, and its crash thrown in place of the failure).
        /// Chunk 0 waits for a gate, chunk 1 fails, chunk 2 ignores cancellation, all on one worker.
        @Test func anOrderedMapCancelsNothingThatSharesAWorkerWithAnEarlierChunk() async throws {
            try await withPool(Workers.processes(1).jobsPerWorker(3)) { pool in
                let first = temporaryPath("earlier-chunk-gate")
                let failing = temporaryPath("failing-chunk-gate")
                defer { unlink(first); unlink(failing) }
                let jobs = [
                    GatedRefuse(0, gate: first), GatedRefuse(-1, gate: failing), GatedRefuse(2, blockMilliseconds: 3_000),
                ]
                let consumer = Task {
                    var outputs: [Int] = []
                    do {
                        for try await output in pool.map(jobs, maxInFlight: 3) { outputs.append(output) }
                    } catch {
                        return (outputs, error as? CrewError)
                    }
                    return (outputs, nil)
                }
                #expect(await eventually(within: .seconds(20)) {
                    pool.snapshot().workers.reduce(0) { $0 + $1.currentJobs.count } == 3
                })
                openGate(failing)
                // Long enough for the grace period (300 ms) to end, had chunk 2 been cancelled.
                try await Task.sleep(for: .milliseconds(1_000))
                openGate(first)
                let (outputs, error) = await consumer.value
                #expect(outputs == [0])
                #expect(error?.code == .jobFailed)
                #expect(error?.message.contains("refused -1") == true)
                try await expectNothingLeftAndServing(pool)
            }
        }

        /// A job whose arguments the worker cannot decode fails its whole chunk (the chunk is
        /// decoded as one message), as the README says, and the error names the job's type, not
        /// the internal batch that carried it.
        @Test func aJobWhoseArgumentsCannotBeDecodedFailsItsWholeChunkUnderItsOwnName() async throws {
            try await withPool(.processes(1)) { pool in
                let jobs = [Picky(1), Picky(2), Picky(-3), Picky(4)]
                var outputs: [Int] = []
                let error = await expectCrewError(.undecodableArguments) {
                    for try await output in pool.map(jobs, chunkSize: 4) { outputs.append(output) }
                    return outputs
                }
                #expect(outputs.isEmpty)
                #expect(error?.jobName == Picky.jobName)
            }
        }
    }

    @Suite struct Tracker {
        @Test func waitsForAllAnyAndFewer() async throws {
            try await withPool(.processes(2)) { pool in
                let tracker = JobTracker()
                try await tracker.waitForAll()  // nothing tracked: returns at once
                for milliseconds in [50, 300, 300] {
                    tracker.track { try await pool.run(Sleep(milliseconds: milliseconds)) }
                }
                #expect(tracker.inFlight == 3)
                try await tracker.waitForAny()
                #expect(tracker.inFlight <= 2)
                try await tracker.waitUntilFewer(than: 2)
                #expect(tracker.inFlight < 2)
                try await tracker.waitForAll()
                #expect(tracker.inFlight == 0)
            }
        }

        @Test func boundsHowManyJobsAreInFlight() async throws {
            try await withPool(.processes(2)) { pool in
                let tracker = JobTracker()
                let peak = Mutex(0)
                for value in 0..<40 {
                    try await tracker.waitUntilFewer(than: 3)
                    peak.withLock { $0 = max($0, tracker.inFlight + 1) }
                    tracker.track { try await pool.run(Echo(value)) }
                }
                try await tracker.waitForAll()
                #expect(peak.withLock { $0 } <= 3)
            }
        }

        /// A cancelled waiter stops waiting with `CancellationError`, whether it was cancelled
        /// before or while it waited; the job it waited for runs on, still tracked.
        @Test func aCancelledWaitEndsAndLeavesTheJobsAlone() async throws {
            let gate = temporaryPath("tracker-gate")
            defer { unlink(gate) }
            try await withPool(.processes(1)) { pool in
                let tracker = JobTracker()
                let job = tracker.track { try await pool.run(WaitForFile(path: gate)) }
                let waiters = [
                    Task { try await tracker.waitForAll() },
                    Task { try await tracker.waitForAny() },
                    Task { try await tracker.waitUntilFewer(than: 1) },
                ]
                #expect(await eventually(within: .seconds(20)) { pool.snapshot().workers.contains { !$0.currentJobs.isEmpty } })
                for waiter in waiters { waiter.cancel() }
                for waiter in waiters {
                    await #expect(throws: CancellationError.self) { try await waiter.value }
                }
                // Cancelled before it starts waiting.
                let early = Task {
                    withUnsafeCurrentTask { $0?.cancel() }
                    try await tracker.waitForAll()
                }
                await #expect(throws: CancellationError.self) { try await early.value }
                #expect(tracker.inFlight == 1)
                openGate(gate)
                _ = try await job.value
                try await tracker.waitForAll()
                #expect(tracker.inFlight == 0)
            }
        }
    }
}
