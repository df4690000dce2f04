import HeapModule

/// Every decision a ``WorkerPool`` makes, as a pure state machine: which queued job goes to
/// which worker, when a worker is replaced, which caller is resumed with what, when shutdown is
/// complete. It does no I/O and reads no clock (times come in as arguments), so it is tested
/// exhaustively without processes. The pool holds it behind a lock and performs the returned
/// ``Action``s after unlocking.
///
/// `Waiter` is what the pool resumes when a job ends (a continuation in production).
struct PoolStateMachine<Waiter> {
    /// A job as submitted.
    struct Request {
        var id: UInt64
        var name: String
        var arguments: [UInt8]
        var priority: JobPriority
        var timeout: Duration?
        var waiter: Waiter
    }

    /// Something the pool must do after the state changed.
    enum Action {
        /// Send the job to the worker; arm a timeout timer if `timeout` is set.
        case dispatch(workerID: Int, jobID: UInt64, name: String, arguments: [UInt8], timeout: Duration?)
        /// Resume a caller.
        case resume(Waiter, Result<[UInt8], CrewError>)
        /// Ask the worker to cancel the job; if it still runs after `grace`, call ``cancelGraceExpired(jobID:)``.
        case requestCancel(workerID: Int, jobID: UInt64)
        /// Start a new worker with this id; report with ``workerReady(_:)`` or ``workerExited(_:termination:stderrTail:)``.
        case spawn(workerID: Int)
        /// Kill the worker's process now (SIGKILL); its exit is reported as usual.
        case kill(workerID: Int)
        /// Let the worker go: tell it to finish and exit; escalate if it lingers.
        case release(workerID: Int)
        /// Nothing is queued or running any more (shutdown may proceed).
        case drained
        /// Every worker has exited (shutdown is complete).
        case allWorkersExited
    }

    /// Why the pool is ending a worker; decides the error its unfinished jobs get.
    enum StopReason: Equatable {
        case timedOut(jobID: UInt64, name: String)
        case cancelGraceExpired(jobID: UInt64)
        case protocolViolation(String)
        case handshakeFailed(String)
        case shutdown
    }

    enum Phase: Equatable {
        /// Spawned (or being spawned); no hello yet.
        case starting
        /// Takes jobs.
        case ready
        /// Takes no more jobs; its exit is awaited.
        case stopping(StopReason?)
    }

    struct Worker {
        var id: Int
        var phase: Phase = .starting
        var inFlight: [UInt64] = []
        var jobsDone = 0
    }

    struct RunningJob {
        var name: String
        var workerID: Int
        /// Nil once the caller was resumed early (timeout, cancellation).
        var waiter: Waiter?
    }

    enum Lifecycle: Equatable {
        case running
        /// No new jobs; queued and running ones go on.
        case draining
        /// Workers are being released.
        case stopping
        case stopped
    }

    private struct QueueKey: Comparable {
        var priority: JobPriority
        var sequence: UInt64
        var id: UInt64
        // Heap's min is the next job: highest priority, then lowest sequence.
        static func < (a: QueueKey, b: QueueKey) -> Bool {
            a.priority != b.priority ? a.priority > b.priority : a.sequence < b.sequence
        }
    }

    private(set) var lifecycle: Lifecycle = .running
    private(set) var workers: [Int: Worker] = [:]
    private(set) var running: [UInt64: RunningJob] = [:]
    private var queue = Heap<QueueKey>()
    private var queued: [UInt64: Request] = [:]
    /// Free job slots, as worker ids; a worker with room for n jobs appears n times. Last in, first out,
    /// so work concentrates on warm workers.
    private var freeSlots: [Int] = []
    private var nextWorkerID = 1
    private var nextSequence: UInt64 = 0
    private(set) var consecutiveStartFailures = 0
    /// Set when workers keep failing to start; new jobs fail at once with it.
    private(set) var startFailure: CrewError?

    /// How many workers the pool keeps.
    let workerCount: Int
    /// How many jobs one worker runs at once.
    let jobsPerWorker: Int
    /// How many workers in a row may die before finishing their handshake before the pool gives up.
    let startFailureLimit: Int

    init(workerCount: Int, jobsPerWorker: Int = 1, startFailureLimit: Int = 3) {
        precondition(workerCount >= 1 && jobsPerWorker >= 1)
        self.workerCount = workerCount
        self.jobsPerWorker = jobsPerWorker
        self.startFailureLimit = startFailureLimit
    }

    /// Jobs waiting for a worker.
    var queuedCount: Int { queued.count }

    /// Workers counted against ``workerCount``: all but those on their way out.
    private var activeWorkerCount: Int {
        workers.values.count { if case .stopping = $0.phase { false } else { true } }
    }

    // MARK: Starting

    /// Starts the initial workers.
    mutating func start() -> [Action] {
        var actions: [Action] = []
        replenish(&actions)
        return actions
    }

    private mutating func replenish(_ actions: inout [Action]) {
        guard lifecycle == .running || lifecycle == .draining, startFailure == nil else { return }
        for _ in activeWorkerCount..<max(activeWorkerCount, workerCount) {
            let id = nextWorkerID
            nextWorkerID += 1
            workers[id] = Worker(id: id)
            actions.append(.spawn(workerID: id))
        }
    }

    /// A worker finished its handshake.
    mutating func workerReady(_ workerID: Int) -> [Action] {
        guard var worker = workers[workerID], worker.phase == .starting else { return [] }
        var actions: [Action] = []
        if lifecycle == .stopping || lifecycle == .stopped {
            worker.phase = .stopping(.shutdown)
            workers[workerID] = worker
            return [.release(workerID: workerID)]
        }
        worker.phase = .ready
        workers[workerID] = worker
        consecutiveStartFailures = 0
        for _ in 0..<jobsPerWorker { freeSlots.append(workerID) }
        dispatch(&actions)
        return actions
    }

    // MARK: Jobs

    /// A caller submits a job.
    mutating func submit(_ request: Request) -> [Action] {
        guard lifecycle == .running else {
            return [.resume(request.waiter, .failure(CrewError(
                .poolShutDown, "the pool is shut down and takes no new jobs", jobName: request.name)))]
        }
        if let startFailure {
            var error = startFailure
            error.jobName = request.name
            return [.resume(request.waiter, .failure(error))]
        }
        nextSequence += 1
        queue.insert(QueueKey(priority: request.priority, sequence: nextSequence, id: request.id))
        queued[request.id] = request
        var actions: [Action] = []
        dispatch(&actions)
        return actions
    }

    private mutating func dispatch(_ actions: inout [Action]) {
        while !freeSlots.isEmpty, let key = queue.popMin() {
            guard let request = queued.removeValue(forKey: key.id) else { continue }  // cancelled while queued
            let workerID = freeSlots.removeLast()
            workers[workerID]!.inFlight.append(request.id)
            running[request.id] = RunningJob(name: request.name, workerID: workerID, waiter: request.waiter)
            actions.append(.dispatch(
                workerID: workerID, jobID: request.id, name: request.name, arguments: request.arguments,
                timeout: request.timeout
            ))
        }
    }

    /// A worker reported a job's end. Returns nil if the worker had no such job: it broke the
    /// protocol, and the caller should report ``protocolViolation(_:message:)``.
    mutating func jobEnded(_ jobID: UInt64, on workerID: Int, _ result: Result<[UInt8], CrewError>) -> [Action]? {
        guard let job = running[jobID], job.workerID == workerID, var worker = workers[workerID] else { return nil }
        running[jobID] = nil
        worker.inFlight.removeAll { $0 == jobID }
        worker.jobsDone += 1
        let isReady = worker.phase == .ready
        workers[workerID] = worker
        var actions: [Action] = []
        if let waiter = job.waiter { actions.append(.resume(waiter, result)) }
        if isReady {
            freeSlots.append(workerID)
            dispatch(&actions)
        }
        checkDrained(&actions)
        return actions
    }

    /// The awaiting task was cancelled: a queued job is dropped, a running one asked to stop.
    mutating func cancel(_ jobID: UInt64) -> [Action] {
        if let request = queued.removeValue(forKey: jobID) {
            var actions: [Action] = [.resume(request.waiter, .failure(CrewError(
                .cancelled, "the job was cancelled before it started", jobName: request.name)))]
            checkDrained(&actions)
            return actions
        }
        guard var job = running[jobID], let waiter = job.waiter else { return [] }
        job.waiter = nil
        running[jobID] = job
        return [
            .resume(waiter, .failure(CrewError(
                .cancelled, "the job was cancelled while it ran", jobName: job.name, workerID: job.workerID))),
            .requestCancel(workerID: job.workerID, jobID: jobID),
        ]
    }

    /// A running job's timeout expired: its caller gets `timedOut`, its worker is killed and replaced.
    mutating func timeoutExpired(jobID: UInt64, after timeout: Duration) -> [Action] {
        guard var job = running[jobID] else { return [] }
        var actions: [Action] = []
        if let waiter = job.waiter {
            job.waiter = nil
            running[jobID] = job
            actions.append(.resume(waiter, .failure(CrewError(
                .timedOut, "the job ran longer than its timeout of \(timeout); its worker was killed",
                jobName: job.name, workerID: job.workerID))))
        }
        stop(job.workerID, .timedOut(jobID: jobID, name: job.name), &actions)
        return actions
    }

    /// A cancelled job still runs after the grace period: its worker is killed and replaced.
    mutating func cancelGraceExpired(jobID: UInt64) -> [Action] {
        guard let job = running[jobID] else { return [] }
        var actions: [Action] = []
        stop(job.workerID, .cancelGraceExpired(jobID: jobID), &actions)
        return actions
    }

    // MARK: Worker faults

    /// A worker broke the protocol (garbage, an oversized frame, an answer to no job).
    mutating func protocolViolation(_ workerID: Int, message: String) -> [Action] {
        var actions: [Action] = []
        stop(workerID, .protocolViolation(message), &actions)
        return actions
    }

    /// A worker's handshake did not match (version, catalog).
    mutating func handshakeFailed(_ workerID: Int, message: String) -> [Action] {
        var actions: [Action] = []
        stop(workerID, .handshakeFailed(message), &actions)
        return actions
    }

    private mutating func stop(_ workerID: Int, _ reason: StopReason, _ actions: inout [Action]) {
        guard var worker = workers[workerID] else { return }
        if case .stopping(let existing) = worker.phase, existing != nil { return }
        worker.phase = .stopping(reason)
        workers[workerID] = worker
        freeSlots.removeAll { $0 == workerID }
        actions.append(.kill(workerID: workerID))
        replenish(&actions)
    }

    /// A worker process ended (or could not be started). Fails its unfinished jobs, replaces it.
    mutating func workerExited(_ workerID: Int, termination: CrewError.Termination?, stderrTail: String?) -> [Action] {
        guard let worker = workers.removeValue(forKey: workerID) else { return [] }
        freeSlots.removeAll { $0 == workerID }
        var actions: [Action] = []
        let reason: StopReason? = if case .stopping(let reason) = worker.phase { reason } else { nil }
        let what = termination.map { "its process \($0)" } ?? "it could not be started"

        for jobID in worker.inFlight {
            guard let job = running.removeValue(forKey: jobID), let waiter = job.waiter else { continue }
            let error: CrewError = switch reason {
            case .timedOut(_, let name)?:
                CrewError(.workerCrashed, "the worker was killed because another job (\(name)) timed out on it")
            case .cancelGraceExpired?:
                CrewError(.workerCrashed, "the worker was killed because a cancelled job on it did not stop")
            case .protocolViolation(let message)?:
                CrewError(.protocolViolation, "the worker broke the wire protocol (\(message)); it was killed")
            case .handshakeFailed(let message)?:
                CrewError(.handshakeFailed, message)
            case .shutdown?:
                CrewError(.poolShutDown, "the pool shut down before the job finished")
            case nil:
                CrewError(.workerCrashed, "the worker died while it ran the job: \(what)")
            }
            var detailed = error
            detailed.jobName = job.name
            detailed.workerID = workerID
            detailed.termination = termination
            detailed.stderrTail = stderrTail
            actions.append(.resume(waiter, .failure(detailed)))
        }

        if worker.phase == .starting || { if case .stopping(.handshakeFailed) = worker.phase { true } else { false } }() {
            consecutiveStartFailures += 1
            if consecutiveStartFailures >= startFailureLimit && !workers.values.contains(where: { $0.phase == .ready }) {
                let message: String = switch reason {
                case .handshakeFailed(let message)?: message
                default: "\(consecutiveStartFailures) workers in a row ended before their handshake; the last: \(what)"
                }
                startFailure = CrewError(
                    .workerStartFailed, "workers cannot be started: \(message)",
                    termination: termination, stderrTail: stderrTail)
                failQueued(with: startFailure!, &actions)
            }
        }

        switch lifecycle {
        case .running, .draining:
            replenish(&actions)
            checkDrained(&actions)
        case .stopping:
            if workers.isEmpty {
                lifecycle = .stopped
                actions.append(.allWorkersExited)
            }
        case .stopped:
            break
        }
        return actions
    }

    private mutating func failQueued(with error: CrewError, _ actions: inout [Action]) {
        for request in queued.values.sorted(by: { $0.id < $1.id }) {
            var error = error
            error.jobName = request.name
            actions.append(.resume(request.waiter, .failure(error)))
        }
        queued.removeAll()
        queue = Heap()
    }

    // MARK: Shutdown

    /// Stops taking jobs. With `cancelPending`, queued jobs fail at once and running ones are asked
    /// to cancel; otherwise both go on. Returns ``Action/drained`` once nothing is left.
    mutating func beginShutdown(cancelPending: Bool) -> [Action] {
        guard lifecycle == .running else { return [] }
        lifecycle = .draining
        var actions: [Action] = []
        if cancelPending {
            failQueued(with: CrewError(.poolShutDown, "the pool shut down before the job started"), &actions)
            for (jobID, job) in running.sorted(by: { $0.key < $1.key }) {
                guard let waiter = job.waiter else { continue }
                running[jobID]!.waiter = nil
                actions.append(.resume(waiter, .failure(CrewError(
                    .poolShutDown, "the pool shut down while the job ran", jobName: job.name, workerID: job.workerID))))
                actions.append(.requestCancel(workerID: job.workerID, jobID: jobID))
            }
        }
        checkDrained(&actions)
        return actions
    }

    private func checkDrained(_ actions: inout [Action]) {
        if lifecycle == .draining && queued.isEmpty && running.values.allSatisfy({ $0.waiter == nil }) {
            actions.append(.drained)
        }
    }

    /// Releases every worker; jobs still queued or running fail with `poolShutDown`.
    mutating func stopWorkers() -> [Action] {
        guard lifecycle == .running || lifecycle == .draining else { return [] }
        lifecycle = .stopping
        var actions: [Action] = []
        failQueued(with: CrewError(.poolShutDown, "the pool shut down before the job started"), &actions)
        for (jobID, job) in running.sorted(by: { $0.key < $1.key }) {
            guard let waiter = job.waiter else { continue }
            running[jobID]!.waiter = nil
            actions.append(.resume(waiter, .failure(CrewError(
                .poolShutDown, "the pool shut down before the job finished", jobName: job.name, workerID: job.workerID))))
        }
        freeSlots.removeAll()
        for id in workers.keys.sorted() {
            if case .stopping = workers[id]!.phase {
                continue  // already on its way out (killed)
            }
            workers[id]!.phase = .stopping(.shutdown)
            actions.append(.release(workerID: id))
        }
        if workers.isEmpty {
            lifecycle = .stopped
            actions.append(.allWorkersExited)
        }
        return actions
    }
}

extension PoolStateMachine {
    /// Whether shutdown has begun and no caller awaits a queued or running job.
    var isDrained: Bool {
        lifecycle != .running && queued.isEmpty && running.values.allSatisfy { $0.waiter == nil }
    }
}

extension PoolStateMachine: Sendable where Waiter: Sendable {}
extension PoolStateMachine.Request: Sendable where Waiter: Sendable {}
extension PoolStateMachine.Action: Sendable where Waiter: Sendable {}
extension PoolStateMachine.RunningJob: Sendable where Waiter: Sendable {}
