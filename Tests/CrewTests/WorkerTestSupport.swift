@testable import Crew

/// A process worker of the test worker executable, spawned (on the supervisor's thread, as a
/// pool spawns them: see `ProcessWorker.spawn`) and not started: no pool around it, so a test
/// plays the pool's part with its own callbacks.
func spawnTestWorker(concurrency: Int = 1) async throws -> ProcessWorker {
    let spec = ProcessWorker.LaunchSpec(
        executablePath: testWorkerPath, arguments: [], environment: [:],
        maxFrameSize: WireProtocol.defaultMaxFrameSize, forwardStderr: true, concurrency: concurrency)
    return try await withCheckedThrowingContinuation { continuation in
        Supervisor.shared.submit {
            continuation.resume(with: Result { () throws(CrewError) in try ProcessWorker.spawn(id: 1, spec) })
        }
    }
}
