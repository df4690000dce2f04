import Crew
import CrewTestJobs
import Glibc
import Testing

/// Every test that starts worker processes lives under this suite, which runs its tests one at
/// a time: they count this process's children and descriptors, and a 2-core machine gains
/// nothing from running them side by side.
@Suite(.serialized, .timeLimit(.minutes(2)))
enum ProcessTests {}

/// A job type the test worker's catalog does not have.
struct NotInWorkerCatalog: Job {
    func run(in context: JobContext) async throws -> Int { 0 }
}

func withTestPool<R: Sendable>(
    _ workers: Int = 2,
    _ adjust: (inout WorkerPool.Configuration) -> Void = { _ in },
    _ body: (WorkerPool) async throws -> sending R
) async throws -> sending R {
    try await WorkerPool.withPool(.processes(workers), jobs: TestJobs.catalog, configuration: testConfiguration(adjust), body)
}

/// Runs `body`, expecting a CrewError with `code`; returns it.
@discardableResult
func expectCrewError(
    _ code: CrewError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> some Any
) async -> CrewError? {
    do {
        let value = try await body()
        Issue.record("expected CrewError.\(code), got the value \(value)", sourceLocation: sourceLocation)
    } catch let error as CrewError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected CrewError.\(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}
