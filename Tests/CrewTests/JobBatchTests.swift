@testable import Crew
import CrewTestJobs
import Logging
import Testing

@Suite struct JobBatchTests {
    let context = JobContext(workerID: 1, jobID: 1, processID: 1, logger: Logger(label: "test"))

    @Test func failuresKeepTheirPlaceAmongTheOutputs() async throws {
        let batch = JobBatch(jobs: [Picky(1), Picky(2), Picky(3)])
        let result = try await batch.run(in: context)
        #expect(result.outputs == [1, 2, 3])
        let mixed = BatchResult<Int>(outputs: [10, 30], failures: [.init(index: 1, type: "E", message: "second")])
        let outcomes = try #require(mixed.outcomes(count: 3))
        #expect(try outcomes[0].get() == 10)
        #expect(throws: CrewError.self) { try outcomes[1].get() }
        #expect(try outcomes[2].get() == 30)
        #expect(mixed.outcomes(count: 4) == nil)
        #expect(BatchResult<Int>(outputs: [1], failures: [.init(index: 5, type: "", message: "")]).outcomes(count: 2) == nil)
    }

    @Test func aBatchRoundTripsThroughTheCodecWithItsOutputsAsOneBlock() throws {
        let result = BatchResult<Int>(outputs: Array(0..<1000), failures: [])
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
    }
}
