extension PoolCore {
    /// Who gets a job's outcome: a suspended caller, or a callback (`map`'s chunks), which runs
    /// on whichever thread ends the job (often a worker's reader thread), after the pool's lock
    /// is released, and must not block.
    enum Waiter: Sendable {
        case task(UnsafeContinuation<JobOutput, any Error>)
        case callback(@Sendable (Result<JobOutput, CrewError>) -> Void)

        func resume(with result: Result<JobOutput, CrewError>) {
            switch self {
            case .task(let continuation): continuation.resume(with: result.mapError { $0 })
            case .callback(let callback): callback(result)
            }
        }
    }
}
