/// Several jobs of one type sent as one message and run one after another: `map`'s chunking,
/// which makes tiny jobs cost one round trip per chunk instead of one each.
struct JobBatch<Element: Job>: Job {
    static var jobName: String { Element.jobName + "#batch" }
    static var isIdempotent: Bool { Element.isIdempotent }

    var jobs: [Element]

    func run(in context: JobContext) async throws -> [BatchOutcome<Element.Output>] {
        var outcomes: [BatchOutcome<Element.Output>] = []
        outcomes.reserveCapacity(jobs.count)
        for job in jobs {
            try context.checkCancellation()
            do {
                outcomes.append(.success(try await job.run(in: context)))
            } catch {
                outcomes.append(.failure(type: String(reflecting: Swift.type(of: error)), message: String(describing: error)))
            }
        }
        return outcomes
    }
}

/// One job's outcome inside a batch: a job that throws fails alone, not its whole chunk.
enum BatchOutcome<Output: Codable & Sendable>: Codable, Sendable {
    case success(Output)
    case failure(type: String, message: String)
}
