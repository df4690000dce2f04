@testable import Crew

/// The state machine as the pure tests use it: waiters are numbers, payloads bytes.
typealias TestMachine = PoolStateMachine<Int, [UInt8]>

/// The jobs `actions` dispatch, with their workers.
func dispatched(_ actions: [TestMachine.Action]) -> [(job: UInt64, worker: Int)] {
    actions.compactMap { if case .dispatch(let job) = $0 { (job.jobID, job.workerID) } else { nil } }
}

/// The waiters `actions` resume, with the error code or "ok".
func resumed(_ actions: [TestMachine.Action]) -> [Int: String] {
    var result: [Int: String] = [:]
    for case .resume(let waiter, let outcome) in actions {
        result[waiter] = switch outcome {
        case .success: "ok"
        case .failure(let error): "\(error.code)"
        }
    }
    return result
}

/// The workers `actions` spawn, with their groups.
func spawned(_ actions: [TestMachine.Action]) -> [(worker: Int, group: Int)] {
    actions.compactMap { if case .spawn(let id, let group) = $0 { (id, group) } else { nil } }
}

/// The ids of the workers `actions` spawn.
func spawnedWorkers(_ actions: [TestMachine.Action]) -> [Int] { spawned(actions).map(\.worker) }

/// The workers `actions` release.
func released(_ actions: [TestMachine.Action]) -> [Int] {
    actions.compactMap { if case .release(let id) = $0 { id } else { nil } }
}

/// The times of the start retries the actions ask for.
func retries(_ actions: [TestMachine.Action]) -> [MonotonicTime] {
    actions.compactMap { if case .retryStart(_, let at) = $0 { at } else { nil } }
}

/// The workers the actions kill.
func killed(_ actions: [TestMachine.Action]) -> [Int] {
    actions.compactMap { if case .kill(let workerID) = $0 { workerID } else { nil } }
}

/// The workers the actions schedule an idle check for.
func idleChecks(_ actions: [TestMachine.Action]) -> [Int] {
    actions.compactMap { if case .checkIdle(let workerID, _) = $0 { workerID } else { nil } }
}
