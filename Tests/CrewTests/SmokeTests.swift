import Crew
import CrewTestJobs
import Testing

@Suite(.timeLimit(.minutes(1)))
struct SmokeTests {
    @Test func runsAJobInAProcess() async throws {
        let result = try await WorkerPool.withPool(.processes(2), jobs: TestJobs.catalog, configuration: testConfiguration()) { pool in
            try await pool.run(Add(2, 3))
        }
        #expect(result == 5)
    }
}
