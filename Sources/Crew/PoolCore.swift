#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import Synchronization

/// The machinery behind ``WorkerPool``: the state machine behind one lock, the worker handles,
/// and the code that performs the machine's actions (sends, signals, spawns, resumptions).
final class PoolCore: Sendable {
    typealias Machine = PoolStateMachine<Waiter, JobPayload>

    let catalog: JobCatalog
    let configuration: WorkerPool.Configuration
    let workers: Workers
    private let launchSpec: ProcessWorker.LaunchSpec
    private let logger: Logger
    private let nextJobID = Atomic<UInt64>(1)

    private struct State: ~Copyable {
        var machine: Machine
        var handles: [Int: any WorkerHandle] = [:]
        var startedAt: [Int: MonotonicTime] = [:]
        var shutdownStarted = false
        var drainWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
        var nextWaiterID: UInt64 = 0
        /// The timers of running jobs (timeout, cancellation grace), cancelled when the jobs end:
        /// jobs with long timeouts or grace periods hold nothing once they finish.
        var jobTimers: [UInt64: JobTimers] = [:]
        /// Each worker's pending idle check: a new one replaces it, so a worker that goes idle
        /// thousands of times a second holds one timer, not thousands.
        var idleChecks: [Int: (timer: Supervisor.TimerID, at: MonotonicTime)] = [:]
    }
    private let state: Mutex<State>

    init(workers: Workers, catalog: JobCatalog, configuration: WorkerPool.Configuration, setup: Machine.InitJob?) {
        self.catalog = catalog
        self.configuration = configuration
        self.workers = workers
        self.logger = configuration.logger
        launchSpec = ProcessWorker.LaunchSpec(
            executablePath: configuration.executable.path,
            arguments: configuration.arguments,
            environment: configuration.environment,
            maxFrameSize: configuration.maxFrameSize,
            forwardStderr: configuration.forwardWorkerStderr
        )
        let groups = workers.groups.map { group in
            Machine.Group(
                kind: group.kind, minimum: group.minimum, maximum: group.maximum, tags: group.tags,
                jobsPerWorker: group.jobsPerWorker, prefetch: group.kind.isOutOfProcess ? group.prefetch : 0,
                idleTimeout: group.idleTimeout,
                maxJobsPerWorker: group.maxJobsPerWorker, maxAge: group.maxAge)
        }
        state = Mutex(State(machine: Machine(
            groups: groups, maxQueued: configuration.maxQueued,
            startFailureLimit: configuration.startFailureLimit, startFailureCooldown: configuration.startFailureCooldown,
            setup: setup)))
    }

    func start() {
        update { $0.start(now: .now()) }
    }

    /// Runs `change` on the machine under the lock, then performs its actions.
    private func update(_ change: (inout Machine) -> [Machine.Action]) {
        perform(locked { (change(&$0.machine), $0.handles) })
    }

    // MARK: Introspection

    /// Jobs waiting for a worker.
    var queuedCount: Int { state.withLock { $0.machine.queuedCount } }

    var workerProcessIDs: [Int32] {
        state.withLock { $0.handles.values.compactMap(\.processID).sorted() }
    }

    func snapshot() -> PoolSnapshot {
        let now = MonotonicTime.now()
        // One pass under the lock: a job seen running is on a worker seen, and counts agree.
        let (workers, handles, running, groups, queue, free, overflow) = state.withLock { state in
            (state.machine.workers, state.handles, state.machine.running, state.machine.groups,
             state.machine.queueDepthByPriority, state.machine.freeSlotCount, state.machine.overflowCount)
        }
        let entries = workers.values.sorted { $0.id < $1.id }.map { worker in
            let pid = handles[worker.id]?.processID
            return PoolSnapshot.Worker(
                id: worker.id,
                kind: groups[worker.group].kind,
                group: worker.group,
                tags: groups[worker.group].tags,
                processID: pid,
                state: PoolSnapshot.WorkerState(worker.phase),
                currentJobs: worker.inFlight.compactMap { id in running[id].map { .init(id: id, name: $0.name) } },
                jobsDone: worker.jobsDone,
                uptime: now.since(worker.startedAt),
                residentBytes: pid.flatMap(residentSetSize(of:))
            )
        }
        return PoolSnapshot(workers: entries, queueDepth: queue, waitingForRoom: overflow, freeSlots: free)
    }

    // MARK: Jobs

    func submit(
        name: String, payload: JobPayload, priority: JobPriority, timeout: Duration?,
        requirement: Machine.Requirement, waitsForRoom: Bool = true
    ) async throws -> JobOutput {
        let jobID = nextJobID.wrappingAdd(1, ordering: .relaxed).oldValue
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<JobOutput, any Error>) in
                let request = Machine.Request(
                    id: jobID, name: name, payload: payload, priority: priority, timeout: timeout,
                    requirement: requirement, waiter: .task(continuation), waitsForRoom: waitsForRoom)
                update { $0.submit(request, now: .now()) }
                // The handler below may have run before the job was queued; cancel it now then.
                if Task.isCancelled { cancel(jobID) }
            }
        } onCancel: {
            cancel(jobID)
        }
    }

    /// Submits a job without suspending: `completion` gets its outcome (see ``Waiter/callback(_:)``),
    /// possibly before this returns. Waits for room in the queue like `run`. Returns the job's
    /// id, for ``cancel(_:)``.
    func submit(
        name: String, payload: JobPayload, priority: JobPriority, timeout: Duration?,
        completion: @escaping @Sendable (Result<JobOutput, CrewError>) -> Void
    ) -> UInt64 {
        let jobID = nextJobID.wrappingAdd(1, ordering: .relaxed).oldValue
        let request = Machine.Request(
            id: jobID, name: name, payload: payload, priority: priority, timeout: timeout,
            requirement: .any, waiter: .callback(completion), waitsForRoom: true)
        update { $0.submit(request, now: .now()) }
        return jobID
    }

    /// Cancels a job: removed if it waits, asked to stop if it runs; nothing if it has ended.
    func cancel(_ jobID: UInt64) {
        update { $0.cancel(jobID, now: .now()) }
    }

    /// The workers a broadcast reaches now, and the index of its replay: the job is registered
    /// to run on every later worker first (see ``withdrawBroadcast(_:)``).
    /// Throws ``CrewError/Code/poolShutDown`` once the pool is shutting down (nothing is
    /// registered then).
    func prepareBroadcast(name: String, payload: JobPayload, timeout: Duration?) throws(CrewError) -> (targets: [Int], replay: Int) {
        try state.withLock { state throws(CrewError) in
            guard state.machine.lifecycle == .running else {
                throw .takesNoNewJobs(jobName: name)
            }
            let replay = state.machine.addInitJob(.init(name: name, payload: payload, timeout: timeout))
            return (state.machine.broadcastTargets, replay)
        }
    }

    /// Workers started from now on do not replay this broadcast.
    func withdrawBroadcast(_ replay: Int) {
        state.withLock { $0.machine.withdrawInitJob(replay) }
    }

    func setLimits(group: Int, minimum: Int, maximum: Int) {
        update { $0.setLimits(group: group, minimum: minimum, maximum: maximum, now: .now()) }
    }

    // MARK: Performing actions

    /// What a change under the lock left to do: its actions, the worker handles as they were,
    /// and the workers whose jobs it enqueued (the first apart: usually the only one, and then
    /// no array is allocated under the lock).
    private struct Work {
        var actions: [Machine.Action]
        var handles: [Int: any WorkerHandle]
        var sender: (any WorkerHandle)?
        var moreSenders: [any WorkerHandle] = []
    }

    /// Runs `change` under the lock and, still holding it, enqueues the jobs it dispatched at
    /// their workers, so that each worker receives its jobs in the order the machine assigned
    /// them even when several threads send at once (see ``PendingDispatches``).
    private func locked(
        _ change: (inout State) -> (actions: [Machine.Action], handles: [Int: any WorkerHandle])
    ) -> Work {
        state.withLock { state in
            let (actions, handles) = change(&state)
            var work = Work(actions: actions, handles: handles)
            for action in actions {
                guard case .dispatch(let job) = action, let handle = handles[job.workerID] else { continue }
                let workerID = job.workerID
                handle.enqueue(DispatchedJob(
                    jobID: job.jobID, name: job.name, payload: job.payload, announceStart: job.announceStart, timed: job.timed,
                    priority: job.priority.rawValue))
                if work.sender == nil {
                    work.sender = handle
                } else if work.sender!.id != workerID && !work.moreSenders.contains(where: { $0.id == workerID }) {
                    work.moreSenders.append(handle)
                }
            }
            return work
        }
    }

    /// Hands the enqueued jobs over first (one write per process worker: an answer that frees a
    /// slot often lets several held jobs go at once), then performs the other actions in order.
    /// Other actions never need to precede a dispatch: a worker that is killed or released gets
    /// no jobs.
    private func perform(_ work: Work) {
        let (actions, handles) = (work.actions, work.handles)
        work.sender?.sendEnqueued()
        for handle in work.moreSenders { handle.sendEnqueued() }
        for action in actions {
            switch action {
            case .dispatch(let job):
                if let timeout = job.timeout { armTimeout(job.jobID, timeout) }
            case .armTimeout(let jobID, let timeout):
                armTimeout(jobID, timeout)
            case .resume(let waiter, let result):
                waiter.resume(with: result)
            case .requestCancel(let workerID, let jobID):
                handles[workerID]?.cancel(jobID: jobID)
                armCancellationGrace(jobID)
            case .recall(let workerID, let jobIDs):
                handles[workerID]?.recall(jobIDs: jobIDs)
            case .spawn(let workerID, let group):
                start(workerID, group: workers.groups[group])
            case .kill(let workerID):
                handles[workerID]?.kill()
            case .release(let workerID):
                if let handle = handles[workerID] { release(handle) }
            case .checkIdle(let workerID, let at):
                let timer = Supervisor.shared.schedule(at: at) { [weak self] in
                    guard let self else { return }
                    state.withLock { state in
                        if state.idleChecks[workerID]?.at == at { state.idleChecks[workerID] = nil }
                    }
                    update { $0.idleCheck(workerID, now: .now()) }
                }
                // One pending check per worker, the earlier of two. A check that finds the worker
                // idle but not due schedules the next one itself, and one that finds it busy needs
                // none (its next idle spell schedules one); keeping the later one instead could
                // hide a nearer check behind a far one (an idle timeout behind a maximum age).
                let dropped = state.withLock { state -> Supervisor.TimerID? in
                    if let existing = state.idleChecks[workerID], existing.at <= at { return timer }
                    defer { state.idleChecks[workerID] = (timer, at) }
                    return state.idleChecks[workerID]?.timer
                }
                if let dropped { Supervisor.shared.cancel(dropped) }
            case .retryStart(let group, let at):
                Supervisor.shared.schedule(at: at) { [weak self] in
                    self?.update { $0.startRetryDue(group: group, now: .now()) }
                }
            case .drained:
                let waiters = state.withLock { state in
                    defer { state.drainWaiters.removeAll() }
                    return state.drainWaiters.values
                }
                for waiter in waiters { waiter.resume() }
            case .allWorkersExited:
                let waiters = state.withLock { state in
                    defer { state.exitWaiters.removeAll() }
                    return state.exitWaiters
                }
                for waiter in waiters { waiter.resume() }
            }
        }
    }

    /// A running job's timers, one of each kind.
    struct JobTimers {
        var timeout: Supervisor.TimerID?
        var grace: Supervisor.TimerID?
        var all: [Supervisor.TimerID] { [timeout, grace].compactMap { $0 } }
    }

    /// Kills the job's worker if the job has not stopped when the grace period ends.
    private func armCancellationGrace(_ jobID: UInt64) {
        armJobTimer(jobID, after: configuration.cancellationGracePeriod, \.grace) { $0.cancelGraceExpired(jobID: jobID, now: $1) }
    }

    private func armTimeout(_ jobID: UInt64, _ timeout: Duration) {
        armJobTimer(jobID, after: timeout, \.timeout) { $0.timeoutExpired(jobID: jobID, after: timeout, now: $1) }
    }

    /// Schedules `fire` for a running job, kept in `slot` of its timers (replacing an earlier
    /// one) so that the job's end cancels it.
    private func armJobTimer(
        _ jobID: UInt64, after delay: Duration, _ slot: any WritableKeyPath<JobTimers, Supervisor.TimerID?> & Sendable,
        fire: @escaping @Sendable (inout Machine, MonotonicTime) -> [Machine.Action]
    ) {
        let timer = Supervisor.shared.schedule(at: .now() + delay) { [weak self] in
            guard let self else { return }
            state.withLock { _ = $0.jobTimers[jobID]?[keyPath: slot] = nil }
            update { fire(&$0, .now()) }
        }
        let (ended, earlier) = state.withLock { state -> (Bool, Supervisor.TimerID?) in
            // The job may have ended already (a fast job, answered before we got here).
            guard state.machine.running[jobID] != nil else { return (true, nil) }
            let earlier = state.jobTimers[jobID, default: JobTimers()][keyPath: slot]
            state.jobTimers[jobID, default: JobTimers()][keyPath: slot] = timer
            return (false, earlier)
        }
        if ended { Supervisor.shared.cancel(timer) }
        if let earlier { Supervisor.shared.cancel(earlier) }
    }

    private func release(_ handle: any WorkerHandle) {
        handle.release()
        // A worker that lingers with jobs is terminated, then killed: for a process SIGTERM and
        // SIGKILL, for an in-process worker cancelling its jobs, then letting go of them.
        let grace = configuration.shutdown.terminateGracePeriod
        Supervisor.shared.schedule(at: .now() + grace) { handle.terminate() }
        Supervisor.shared.schedule(at: .now() + grace + grace) { handle.kill() }
    }

    // MARK: Workers

    private func start(_ workerID: Int, group: Workers.Group) {
        guard group.kind.isOutOfProcess else {
            let worker = LocalWorker(id: workerID, kind: group.kind, logger: logger, events: LocalWorkerEvents(
                jobEnded: { [self] jobID, result in
                    var timers: [Supervisor.TimerID] = []
                    perform(locked { state in
                        let now = MonotonicTime.now()
                        let actions = Self.endJob(jobID, on: workerID, result, &state, now: now, timers: &timers)
                            ?? state.machine.protocolViolation(workerID, message: "an answer for job \(jobID), which it does not hold", now: now)
                        return (actions, state.handles)
                    })
                    for timer in timers { Supervisor.shared.cancel(timer) }
                },
                exited: { [self] in workerExited(workerID, termination: nil, stderrTail: nil) }
            ))
            let phase = state.withLock { state in
                state.handles[workerID] = worker
                return state.machine.workers[workerID]?.phase
            }
            if phase == .starting {
                update { $0.workerReady(workerID, now: .now()) }
            } else {
                worker.release()  // shutdown began while it was being created
            }
            return
        }
        var spec = launchSpec
        spec.concurrency = group.jobsPerWorker
        let memoryLimit = group.maxResidentBytes
        Supervisor.shared.submit { [self, spec] in
            let worker: ProcessWorker
            do throws(CrewError) {
                worker = try ProcessWorker.spawn(id: workerID, spec)
            } catch {
                logger.error("crew: cannot start worker \(workerID): \(error.message)")
                update { machine in
                    let now = MonotonicTime.now()
                    return machine.startFailed(workerID, message: error.message, now: now)
                        + machine.workerExited(workerID, termination: nil, stderrTail: nil, now: now)
                }
                return
            }
            let phase = state.withLock { state in
                state.handles[workerID] = worker
                return state.machine.workers[workerID]?.phase
            }
            worker.start(callbacks(for: workerID, pid: worker.pid, memoryLimit: memoryLimit))
            logger.debug("crew: started worker", metadata: ["crew.worker": "\(workerID)", "crew.pid": "\(worker.pid)"])
            switch phase {
            case .stopping(.shutdown)?, nil:
                release(worker)
            case .stopping?:
                worker.kill()
            default:
                break
            }
        }
    }

    /// Applies what a worker reported, in the order it reported it, in one pass under the lock:
    /// held jobs that started (their timeouts start now) and jobs that ended. A report about a job
    /// the worker does not hold is a protocol violation.
    private func workerReported(_ workerID: Int, processID: Int32?, _ messages: [WorkerMessage]) {
        var timers: [Supervisor.TimerID] = []
        perform(locked { state in
            let now = MonotonicTime.now()
            var actions: [Machine.Action] = []
            for message in messages {
                let jobID: UInt64
                let outcome: [Machine.Action]?
                switch message {
                case .started(let id):
                    jobID = id
                    outcome = state.machine.jobStarted(id, on: workerID)
                case .recalled(let id):
                    jobID = id
                    // A job cancelled on its way back has a cancellation grace timer: it goes too.
                    Self.takeTimers(of: id, from: &state, into: &timers)
                    outcome = state.machine.jobRecalled(id, on: workerID, now: now)
                case .result(let id, let output):
                    jobID = id
                    outcome = Self.endJob(id, on: workerID, .success(.encoded(output)), &state, now: now, timers: &timers)
                case .failure(let id, let kind, let errorType, let text):
                    jobID = id
                    let error = CrewError(
                        kind.code, text, jobName: state.machine.running[id]?.name, workerID: workerID,
                        processID: processID, remoteErrorType: errorType.isEmpty ? nil : errorType)
                    outcome = Self.endJob(id, on: workerID, .failure(error), &state, now: now, timers: &timers)
                case .hello:
                    continue  // the reader delivers hellos separately
                }
                guard let outcome else {
                    actions += state.machine.protocolViolation(workerID, message: "a message about job \(jobID), which it does not hold", now: now)
                    break
                }
                actions += outcome
            }
            return (actions, state.handles)
        })
        for timer in timers { Supervisor.shared.cancel(timer) }
    }

    /// Under the lock: a worker reported a job's end. Its timeout timer is taken out into
    /// `timers`, to be cancelled after unlocking. Nil if the worker does not hold the job.
    private static func endJob(
        _ jobID: UInt64, on workerID: Int, _ result: Result<JobOutput, CrewError>, _ state: inout State,
        now: MonotonicTime, timers: inout [Supervisor.TimerID]
    ) -> [Machine.Action]? {
        takeTimers(of: jobID, from: &state, into: &timers)
        return state.machine.jobEnded(jobID, on: workerID, result, now: now)
    }

    /// Under the lock: takes a job's timers out of the table, to be cancelled after unlocking.
    private static func takeTimers(of jobID: UInt64, from state: inout State, into timers: inout [Supervisor.TimerID]) {
        if !state.jobTimers.isEmpty, let jobTimers = state.jobTimers.removeValue(forKey: jobID) { timers += jobTimers.all }
    }

    private func workerExited(_ workerID: Int, termination: CrewError.Termination?, stderrTail: String?) {
        var timers: [Supervisor.TimerID] = []
        perform(locked { state in
            let expected: Bool = if case .stopping = state.machine.workers[workerID]?.phase { true } else { false }
            if !expected, let termination {
                logger.warning("crew: worker \(workerID) died: \(termination)")
            }
            // The jobs it held end here, without an answer: their timeouts go with them.
            for jobID in state.machine.workers[workerID]?.inFlight ?? [] {
                if let jobTimers = state.jobTimers.removeValue(forKey: jobID) { timers += jobTimers.all }
            }
            if let timer = state.idleChecks.removeValue(forKey: workerID)?.timer { timers.append(timer) }
            let actions = state.machine.workerExited(workerID, termination: termination, stderrTail: stderrTail, now: .now())
            // Gone from the pool's view before its callers hear of it (perform resumes them).
            let handles = state.handles
            state.handles.removeValue(forKey: workerID)
            return (actions, handles)
        })
        for timer in timers { Supervisor.shared.cancel(timer) }
    }

    private func callbacks(for workerID: Int, pid: Int32, memoryLimit: Int?) -> ProcessWorker.Callbacks {
        ProcessWorker.Callbacks(
            hello: { [self] hello in
                let problem = catalog.handshakeProblem(hello)
                if let problem { logger.error("crew: worker \(workerID) refused: \(problem)") }
                update { machine in
                    if let problem {
                        machine.startFailed(workerID, message: problem, now: .now())
                    } else {
                        machine.workerReady(workerID, now: .now())
                    }
                }
            },
            messages: { [self] messages in
                workerReported(workerID, processID: pid, messages)
                if let memoryLimit, let resident = residentSetSize(of: pid), resident > memoryLimit {
                    update {
                        $0.handOver(workerID, because: "its resident memory (\(resident >> 20) MiB) exceeded \(memoryLimit >> 20) MiB", now: .now())
                    }
                }
            },
            violation: { [self] message in
                logger.error("crew: worker \(workerID) broke the wire protocol: \(message)")
                update { $0.protocolViolation(workerID, message: message, now: .now()) }
            },
            exited: { [self] termination, stderrTail in
                workerExited(workerID, termination: termination, stderrTail: stderrTail)
            }
        )
    }

    // MARK: Shutdown

    /// Whether ``shutdown(cancelPending:)`` has been called (or the pool was abandoned).
    var isShuttingDown: Bool { state.withLock { $0.shutdownStarted } }

    func shutdown(cancelPending: Bool) async {
        let first = state.withLock { state in
            defer { state.shutdownStarted = true }
            return !state.shutdownStarted
        }
        if first {
            update { $0.beginShutdown(cancelPending: cancelPending) }
            await waitUntilDrained(timeout: configuration.shutdown.drainTimeout)
            update { $0.stopWorkers() }
        } else if cancelPending {
            // A shutdown already drains: cancel what it waits for, so that it ends now.
            update { $0.beginShutdown(cancelPending: true) }
        }
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.machine.lifecycle == .stopped { return true }
                state.exitWaiters.append(waiter)
                return false
            }
            if done { waiter.resume() }
        }
    }

    /// Lets every worker go without waiting: for a pool dropped without ``shutdown(cancelPending:)``.
    func abandon() {
        let first = state.withLock { state in
            defer { state.shutdownStarted = true }
            return !state.shutdownStarted
        }
        guard first else { return }
        update { $0.beginShutdown(cancelPending: true) + $0.stopWorkers() }
    }

    private func waitUntilDrained(timeout: Duration) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let id: UInt64? = state.withLock { state in
                guard !state.machine.isDrained else { return nil }
                state.nextWaiterID += 1
                state.drainWaiters[state.nextWaiterID] = waiter
                return state.nextWaiterID
            }
            guard let id else { return waiter.resume() }
            Supervisor.shared.schedule(at: .now() + timeout) { [weak self] in
                self?.state.withLock { $0.drainWaiters.removeValue(forKey: id) }?.resume()
            }
        }
    }
}

