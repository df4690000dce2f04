@testable import Crew
import CrewTestJobs
import Glibc
import Logging
import Testing

@Suite struct JobBatchTests {
    let context = JobContext(workerID: 1, jobID: 1, processID: 1, logger: Logger(label: "test"))

    @Test func aBatchStopsAtItsFirstFailure() async throws {
        let batch = JobBatch(jobs: [Picky(1), Picky(2), Picky(3)])
        let result = try await batch.run(in: context)
        #expect(result.outputs == [1, 2, 3] && result.failure == nil)
        let first = temporaryPath("batch-unit-first"), last = temporaryPath("batch-unit-last")
        defer { unlink(first); unlink(last) }
        let jobs = [TouchOrFail(path: first), TouchOrFail(path: "", fails: true), TouchOrFail(path: last)]
        let failing = try await JobBatch(jobs: jobs).run(in: context)
        #expect(failing.outputs == [1])
        #expect(failing.failure?.index == 1 && failing.failure?.message.contains("asked to fail") == true)
        #expect(access(first, F_OK) == 0 && access(last, F_OK) != 0)
    }

    /// A failure's text is cut to half the frame the context's answer travels in, and kept
    /// whole when no frame carries it.
    @Test func aBatchCutsAFailureToItsContextsAnswerFrame() async throws {
        let jobs = [RefuseNegativeAtLength(1, length: 100_000), RefuseNegativeAtLength(-2, length: 100_000)]
        let framed = JobContext(workerID: 1, jobID: 1, processID: 1, workerLogger: Logger(label: "test"), answerFrameSize: 64 * 1024)
        let cut = try await JobBatch(jobs: jobs).run(in: framed)
        #expect(cut.outputs == [1])
        let message = try #require(cut.failure?.message)
        #expect(message.utf8.count <= 32 * 1024 && message.contains("xxxx"))
        #expect(try BinaryEncoder().encode(cut).count < 64 * 1024)
        let whole = try await JobBatch(jobs: jobs).run(in: context)
        #expect((whole.failure?.message.utf8.count ?? 0) >= 100_000)
    }

    @Test func aBatchAnswerMustFitItsJobs() {
        let ended = BatchResult<Int>(outputs: [10], failure: .init(index: 1, type: "E", message: "second"))
        #expect(ended.outcome(count: 3)?.outputs == [10])
        #expect(ended.outcome(count: 3)?.failure?.code == .jobFailed)
        #expect(ended.outcome(count: 1) == nil)  // a failure past the last job
        #expect(BatchResult<Int>(outputs: [1], failure: .init(index: 5, type: "", message: "")).outcome(count: 8) == nil)
        #expect(BatchResult<Int>(outputs: [1, 2], failure: nil).outcome(count: 3) == nil)
    }

    @Test func aBatchRoundTripsThroughTheCodecWithItsOutputsAsOneBlock() throws {
        let result = BatchResult<Int>(outputs: Array(0..<1000), failure: nil)
        let bytes = try BinaryEncoder().encode(result)
        let decoded = try BinaryDecoder().decode(BatchResult<Int>.self, from: bytes)
        #expect(decoded.outputs == result.outputs)
    }
}

extension ProcessTests {
    @Suite struct JobBatchInWorkers {
        /// README, bulk work: "A job that fails ends the map after every output before it, in
        /// input order, even inside a chunk: the chunk's jobs before it come out, then its
        /// error." A lone job's error text is cut to fit a frame; inside a chunk it was not, so
        /// one long error made the whole chunk's answer too large for a frame.
        @Test func aLongErrorInsideAChunkStillEndsTheMapAfterTheOutputsBeforeIt() async throws {
            try await withTestPool(1, { $0.maxFrameSize = 64 * 1024 }) { pool in
                let jobs = [1, 2, -3, 4].map { RefuseNegativeAtLength($0, length: 100_000) }
                var outputs: [Int] = []
                let error = await expectCrewError(.jobFailed) {
                    for try await output in pool.map(jobs, chunkSize: 4) { outputs.append(output) }
                }
                #expect(outputs == [1, 2])
                #expect(error?.message.contains("xxxx") == true)
                #expect(error?.remoteErrorType?.hasSuffix("TestFailure") == true)
                let echoed = try await pool.run(Echo(5))
                #expect(echoed == 5)
            }
        }

        /// A worker cuts a chunk's error text to fit the frames of its own pool; a pool that a
        /// job starts in the worker, of thread or inline workers, sends nothing through a frame,
        /// and its chunks keep their errors whole (as its lone jobs do). The limit was process-wide
        /// once the worker served, so the inner pool cut them to half the outer pool's frame.
        @Test func anInProcessPoolInsideAWorkerKeepsItsChunksErrorsWhole() async throws {
            try await withTestPool(1, { $0.maxFrameSize = 64 * 1024 }) { pool in
                for threads in [true, false] {
                    let kept = try await pool.run(InProcessChunkFailure(length: 100_000, threads: threads))
                    #expect(kept >= 100_000, "threads: \(threads)")
                }
            }
        }

        /// The map ends at the first failure and cancels what still runs; the jobs after the
        /// failure in its own chunk ran all the same (outputs thrown away, side effects done).
        @Test func aChunkStopsAtItsFirstFailure() async throws {
            let before = temporaryPath("batch-before"), after = temporaryPath("batch-after")
            defer { unlink(before); unlink(after) }
            try await withTestPool(1) { pool in
                let jobs = [TouchOrFail(path: before), TouchOrFail(path: "", fails: true), TouchOrFail(path: after)]
                var outputs: [Int] = []
                await expectCrewError(.jobFailed) {
                    for try await output in pool.map(jobs, chunkSize: 3) { outputs.append(output) }
                }
                #expect(outputs == [1])
                #expect(access(before, F_OK) == 0)
                #expect(access(after, F_OK) != 0)
            }
        }
    }
}
