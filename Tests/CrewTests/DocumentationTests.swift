import Crew
import CrewTestJobs
import Glibc
import Logging
import Testing

// Doc examples, written out as they appear in the docs.

private struct DocSquare: Job {
    var value: Int
    func run(in context: JobContext) async throws -> Int { value * value }
}

private struct Render: Job {
    var row: Int
    func run(in context: JobContext) async throws -> [UInt8] { [UInt8(truncatingIfNeeded: row)] }
}

private struct Thumbnail: Job {
    var path: String
    var width: Int
    init(of path: String) { self.path = path; width = 1 }
    init(path: String, width: Int) { self.path = path; self.width = width }
    func run(in context: JobContext) async throws -> [UInt8] {
        context.logger.info("thumbnail", metadata: ["path": "\(path)"])
        return [UInt8(truncatingIfNeeded: width)]
    }
}

private struct Parse: Job {
    var file: String
    func run(in context: JobContext) async throws -> Int { file.count }
}

private struct Fetch: Job {
    static var isIdempotent: Bool { true }
    static var retryPolicy: RetryPolicy? { .exponential(maxAttempts: 4) }
    func run(in context: JobContext) async throws -> Int { 1 }
}

private struct Pixel: Job, PlainData {
    var x: Int32
    var y: Int32
    func run(in context: JobContext) async throws -> Double { Double(x * y) }
}

/// Throws `CancellationError` on its own (as code does whose inner work was cancelled), while
/// nobody cancelled the caller.
private struct ThrowsCancellationError: Job {
    func run(in context: JobContext) async throws -> Int { throw CancellationError() }
}

extension ProcessTests {
    @Suite struct Documentation {
        @Test func docExamplesCompileAndRun() async throws {
            // Crew.md overview / WorkerPool doc, on inline workers (the test worker lacks these types).
            let jobs: JobCatalog = [DocSquare.self]
            await Crew.serveIfWorker(jobs)
            let nine = try await WorkerPool.withPool(.inline, jobs: jobs) { pool in
                try await pool.run(DocSquare(value: 3), timeout: .seconds(1))
            }
            #expect(nine == 9)

            // Configuration.swift Workers example.
            let workers: Workers = [.threads(2), .processes(1...8, tags: ["heavy"], idleTimeout: .seconds(30))]
            #expect(workers.groups.count == 2)

            try await WorkerPool.withPool(.inline(maxConcurrent: 2), jobs: [Render.self, Thumbnail.self, Parse.self, Fetch.self, Pixel.self]) { pool in
                // map over a sequence (WorkerPool+Map.swift).
                var image: [[UInt8]] = []
                for try await row in pool.map((0..<1200).lazy.map { Render(row: $0) }, chunkSize: 4) {
                    image.append(row)
                }
                #expect(image.count == 1200)
                // map over an async sequence.
                let (uploads, continuation) = AsyncStream.makeStream(of: String.self)
                continuation.yield("a"); continuation.finish()
                for try await thumbnail in pool.map(uploads.map { Thumbnail(of: $0) }) {
                    #expect(thumbnail == [1])
                }
                // GettingStarted run.
                let p = "x"
                let bytes = try await pool.run(Thumbnail(path: p, width: 256), priority: .high, timeout: .seconds(5))
                #expect(bytes == [0])
                // JobTracker example.
                let files = ["a", "bb", "ccc"]
                let tracker = JobTracker()
                for file in files {
                    try await tracker.waitUntilFewer(than: 8)
                    tracker.track { try await pool.run(Parse(file: file)) }
                }
                try await tracker.waitForAll()
                #expect(tracker.inFlight == 0)
                // PoolSnapshot example.
                let snapshot = pool.snapshot()
                for worker in snapshot.workers { _ = (worker.id, worker.kind, worker.state, worker.jobsDone) }  // the doc prints these
                #expect(try await pool.run(Fetch()) == 1)
                #expect(try await pool.run(Pixel(x: 2, y: 3)) == 6)
            }
        }

        /// WorkerPool: "After shutdown(cancelPending:) every call fails with poolShutDown."
        @Test func everyCallAfterShutdownFailsWithPoolShutDown() async throws {
            let pool = try WorkerPool(.processes(1), jobs: TestJobs.catalog, configuration: testConfiguration())
            await pool.shutdown()
            await expectCrewError(.poolShutDown) { try await pool.run(Echo(1)) }
            await expectCrewError(.poolShutDown) { try await pool.run(NotInWorkerCatalog()) }
            await expectCrewError(.poolShutDown) { try await pool.broadcast(Echo(1)) }
            await expectCrewError(.poolShutDown) { () async throws -> [Int] in
                var all: [Int] = []
                for try await value in pool.map([Echo(1), Echo(2)]) { all.append(value) }
                return all
            }
        }

        /// Job.run: "Throws: any error; the caller receives a CrewError with code jobFailed";
        /// FaultsAndShutdown.md: "cancelled: the awaiting task was cancelled".
        @Test(arguments: [Workers.threads(1), .inline(maxConcurrent: 1)])
        func aJobThrowingCancellationErrorIsJobFailed(workers: Workers) async throws {
            try await WorkerPool.withPool(workers, jobs: []) { pool in
                let error = await expectCrewError(.jobFailed) { try await pool.run(ThrowsCancellationError()) }
                #expect(error?.remoteErrorType == "Swift.CancellationError")
            }
        }
    }
}
