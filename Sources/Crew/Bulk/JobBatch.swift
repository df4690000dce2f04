import Synchronization

/// Several jobs of one type sent as one message and run one after another: `map`'s chunking,
/// which makes tiny jobs cost one round trip per chunk instead of one each.
struct JobBatch<Element: Job>: Job {
    static var jobName: String { Element.jobName + "#batch" }
    static var isIdempotent: Bool { Element.isIdempotent }
    /// The element type's policy: retrying a chunk runs its jobs again, which only idempotent
    /// types may declare a policy for.
    static var retryPolicy: RetryPolicy? { Element.retryPolicy }

    var jobs: [Element]

    func run(in context: JobContext) async throws -> BatchResult<Element.Output> {
        // Cancellation is noticed between jobs through a flag the handler sets: asking the task
        // before every job (a thread-local look-up and a call into the runtime) was a tenth of a
        // worker's time on a chunk of tiny jobs.
        let cancelled = CancellationFlag()
        return try await withTaskCancellationHandler {
            var result = BatchResult<Element.Output>()
            result.outputs.reserveCapacity(jobs.count)
            // An index loop: `enumerated()` would look up the metadata of its (offset, element)
            // tuple at every step, in this generic code that is never specialised.
            var index = 0
            while index < jobs.count {
                if cancelled.isSet { throw CancellationError() }
                do {
                    result.outputs.append(try await jobs[index].run(in: context))
                } catch {
                    result.failures.append(Self.failure(error, at: index, first: result.failures.isEmpty))
                }
                index += 1
            }
            return result
        } onCancel: {
            cancelled.set()
        }
    }

    /// A job's failure as the batch reports it. In a worker process its text is cut, as a lone
    /// job's is, so that errors alone never make the batch's answer too large for a frame (which
    /// would fail the whole chunk with `unencodableOutput`): the first failure, the only one the
    /// caller sees (the map ends there), may take half a frame, later ones a few hundred bytes.
    private static func failure(_ error: any Error, at index: Int, first: Bool) -> BatchResult<Element.Output>.Failure {
        let type = String(reflecting: Swift.type(of: error))
        let message = String(describing: error)
        let limit = Crew.servedMaxFrameSize.load(ordering: .relaxed)
        guard limit != .max else { return .init(index: index, type: type, message: message) }
        let fittedType = WorkerServer.fitted(type, within: first ? 4_096 : 256)
        let room = first ? max(256, min(1 << 20, (limit - 512) / 2 - fittedType.utf8.count)) : 256
        return .init(index: index, type: fittedType, message: WorkerServer.fitted(message, within: room))
    }
}

/// Set once, from any thread; read cheaply.
final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}

/// A batch's outcome: the outputs of the jobs that succeeded, in order, and the failures with
/// their positions. (Outputs travel as one array, so arrays of numbers go out as one block.)
struct BatchResult<Output: Codable & Sendable>: Codable, Sendable {
    struct Failure: Codable, Sendable {
        var index: Int
        var type: String
        var message: String
    }
    var outputs: [Output] = []
    var failures: [Failure] = []

    /// One outcome per job, in order; nil if the counts do not add up.
    func outcomes(count: Int) -> [Result<Output, CrewError>]? {
        guard outputs.count + failures.count == count else { return nil }
        var results: [Result<Output, CrewError>] = []
        results.reserveCapacity(count)
        var nextOutput = 0
        var nextFailure = 0
        for index in 0..<count {
            if nextFailure < failures.count && failures[nextFailure].index == index {
                let failure = failures[nextFailure]
                results.append(.failure(CrewError(.jobFailed, failure.message, remoteErrorType: failure.type)))
                nextFailure += 1
            } else if nextOutput < outputs.count {
                results.append(.success(outputs[nextOutput]))
                nextOutput += 1
            } else {
                return nil
            }
        }
        return nextFailure == failures.count ? results : nil
    }
}
