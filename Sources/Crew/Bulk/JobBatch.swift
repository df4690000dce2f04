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
                    // The map ends at its first failure and cancels what is still running: the
                    // chunk's later jobs do not run (their outputs would be thrown away, and
                    // their side effects would happen for nothing).
                    result.failure = Self.failure(error, at: index, frameSize: context.answerFrameSize)
                    break
                }
                index += 1
            }
            return result
        } onCancel: {
            cancelled.set()
        }
    }

    /// A job's failure as the batch reports it. When the batch's answer goes back in a frame of
    /// at most `frameSize` bytes (the context's `answerFrameSize`: a process worker's), its text
    /// is cut, as a lone job's is, so that it never makes the answer too large for the frame
    /// (which would fail the whole chunk with `unencodableOutput`): it may take half a frame.
    /// An answer that no frame carries (nil) keeps the whole text, as a lone job's error does.
    private static func failure(_ error: any Error, at index: Int, frameSize: Int?) -> BatchResult<Element.Output>.Failure {
        guard let frameSize else { return .init(index: index, type: String(reflecting: Swift.type(of: error)), message: "\(error)") }
        let (type, message) = WorkerServer.fittedFailure(error, String(describing: error), within: frameSize / 2)
        return .init(index: index, type: type, message: message)
    }
}

/// Set once, from any thread; read cheaply.
final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}

/// A batch's outcome: the outputs of the jobs that succeeded, in order, up to the first job
/// that failed, if one did (the batch stops there). (Outputs travel as one array, so arrays of
/// numbers go out as one block.)
struct BatchResult<Output: Codable & Sendable>: Codable, Sendable {
    struct Failure: Codable, Sendable {
        var index: Int
        var type: String
        var message: String
    }
    var outputs: [Output] = []
    var failure: Failure?

    /// The outputs, and the failure that ended the batch as a `jobFailed` error; nil if the
    /// result does not fit a batch of `count` jobs (every job's output, or the outputs before
    /// the failing job and its failure).
    func outcome(count: Int) -> (outputs: [Output], failure: CrewError?)? {
        guard let failure else { return outputs.count == count ? (outputs, nil) : nil }
        guard failure.index == outputs.count, failure.index < count else { return nil }
        return (outputs, CrewError(.jobFailed, failure.message, remoteErrorType: failure.type))
    }
}
