extension PoolStateMachine {
    // MARK: Starting

    /// Starts every group's minimum of workers.
    mutating func start(now: MonotonicTime) -> [Action] {
        var actions: [Action] = []
        replenish(now: now, &actions)
        return actions
    }

    /// Starts workers until every group has its minimum of active ones.
    mutating func replenish(now: MonotonicTime, _ actions: inout [Action]) {
        guard lifecycle == .running || lifecycle == .draining else { return }
        for index in groups.indices where startFailures[index] == nil {
            for _ in activeCount(inGroup: index)..<max(activeCount(inGroup: index), groups[index].minimum) {
                spawn(group: index, now: now, &actions)
            }
        }
        // Queued work may want more than the minimum, and callers waiting for room may fit now
        // (jobs that left the queue with a worker that ended made room).
        if !queued.isEmpty || !overflow.isEmpty { dispatch(now: now, &actions) }
    }

    /// A worker finished its handshake: it runs its init jobs, then takes work.
    mutating func workerReady(_ workerID: Int, now: MonotonicTime) -> [Action] {
        guard let worker = workers[workerID], worker.phase == .starting else { return [] }
        if lifecycle == .stopping || lifecycle == .stopped {
            workers[workerID]!.phase = .stopping(.shutdown)
            return [.release(workerID: workerID)]
        }
        var actions: [Action] = []
        advanceInit(workerID, next: 0, now: now, &actions)
        return actions
    }

    /// Runs the worker's next init job, or makes it ready when none is left.
    private mutating func advanceInit(_ workerID: Int, next: Int, now: MonotonicTime, _ actions: inout [Action]) {
        var worker = workers[workerID]!
        var next = next
        while next < initJobs.count && initJobs[next].withdrawn { next += 1 }
        if next < initJobs.count {
            worker.phase = .initializing(next: next + 1)
            let job = initJobs[next]
            let jobID = nextInitJobID
            nextInitJobID += 1
            worker.inFlight.append(jobID)
            workers[workerID] = worker
            running[jobID] = RunningJob(name: job.name, workerID: workerID, waiter: nil, isInit: true)
            actions.append(.dispatch(Dispatch(
                workerID: workerID, jobID: jobID, name: job.name, payload: job.payload, timeout: job.timeout, announceStart: false,
                timed: job.timeout != nil, priority: .normal)))
            return
        }
        worker.phase = .ready
        worker.idleSince = now
        let predecessor = worker.retireOnReady
        worker.retireOnReady = nil
        workers[workerID] = worker
        consecutiveStartFailures[worker.group] = 0
        // A worker started after all (one that was still starting when the group gave up): the
        // group serves again, and its cool-down has nothing left to wait for.
        let endsGiveUp = startFailures[worker.group] != nil
        startFailures[worker.group] = nil
        startRetryAt[worker.group] = nil
        for slot in 0..<groups[worker.group].slotsPerWorker {
            addFreeSlot(workerID, runsAtOnce: slot < groups[worker.group].jobsPerWorker)
        }
        // A hand-over is complete: the worker this one replaces retires now.
        if let (old, reason) = predecessor, workers[old]?.successor == workerID {
            workers[old]!.successor = nil
            retire(old, because: reason, replace: false, now: now, &actions)
        }
        // As at the end of a cool-down, the group starts its minimum again: while it had given
        // up, workers that ended were not replaced, and its retry will find nothing to do.
        if endsGiveUp { replenish(now: now, &actions) }
        slotFreedAfterStart(workerID, now: now, &actions)
    }

    private mutating func slotFreedAfterStart(_ workerID: Int, now: MonotonicTime, _ actions: inout [Action]) {
        dispatch(now: now, &actions)
        recallHeldJobs(for: workerID, &actions)
        scheduleIdleCheck(workerID, now: now, &actions)
    }

    /// An init job ended on a worker that is starting up.
    mutating func initJobEnded(_ workerID: Int, _ result: Result<JobOutput, CrewError>, now: MonotonicTime, _ actions: inout [Action]) {
        guard let worker = workers[workerID], case .initializing(let next) = worker.phase else { return }
        switch result {
        case .success:
            advanceInit(workerID, next: next, now: now, &actions)
        case .failure(let error):
            stop(workerID, .startFailed("its setup job \(error.jobName ?? "") failed: \(error.message)"), release: false, now: now, &actions)
        }
    }

    /// Registers a job that every worker started from now on runs before it takes work
    /// (a broadcast's replay). Workers still starting up run it too.
    /// Returns its index, for ``withdrawInitJob(_:)``.
    mutating func addInitJob(_ job: InitJob) -> Int {
        initJobs.append(job)
        return initJobs.count - 1
    }

    /// Workers that start from now on skip this init job (a broadcast that failed on the
    /// current workers is not replayed on later ones).
    mutating func withdrawInitJob(_ index: Int) {
        initJobs[index].withdrawn = true
    }

    /// The workers a broadcast reaches now: those that take jobs. (Workers still starting run it
    /// as an init job; a retiring worker takes no more jobs, so it is left out.)
    var broadcastTargets: [Int] {
        workers.values.filter(\.acceptsJobs).map(\.id).sorted()
    }

    /// Changes a group's limits at runtime: starts workers up to the new minimum, releases idle
    /// ones above the new maximum (busy ones retire when their jobs are done), and lets idle ones
    /// above a lowered minimum go after their idle timeout.
    mutating func setLimits(group index: Int, minimum: Int, maximum: Int, now: MonotonicTime) -> [Action] {
        precondition(minimum >= 0 && maximum >= minimum, "need 0 <= minimum <= maximum")
        groups[index].minimum = minimum
        groups[index].maximum = maximum
        var actions: [Action] = []
        var excess = activeCount(inGroup: index) - maximum
        let members = workers.values.filter { $0.group == index && $0.isActive }
            .sorted { ($0.inFlight.count, $1.id) < ($1.inFlight.count, $0.id) }
        for worker in members where excess > 0 {
            if worker.phase.isStartingUp {
                // Not serving yet: end it (a retiring phase would strand it, as only a starting
                // worker becomes ready).
                stop(worker.id, .idle, release: false, now: now, &actions)
            } else if worker.inFlight.isEmpty && worker.acceptsJobs {
                stop(worker.id, .idle, release: true, now: now, &actions)
            } else {
                workers[worker.id]!.phase = .retiring("the pool's maximum was lowered")
                removeFreeSlots(of: worker.id)
            }
            excess -= 1
        }
        // Idle checks were only scheduled for workers above the minimum when they went idle; with
        // a lowered minimum, idle workers may be above it now. (A check finds out when it fires.)
        if groups[index].idleTimeout != nil, activeCount(inGroup: index) > minimum {
            for id in workers.keys.sorted() where workers[id]!.group == index { scheduleIdleCheck(id, now: now, &actions) }
        }
        // Jobs no worker can take any more fail first: the room they leave in the queue goes to
        // callers waiting for it when replenishing dispatches.
        failUnservable(&actions)
        replenish(now: now, &actions)
        return actions
    }

    // MARK: Faults

    /// A worker broke the protocol (garbage, an oversized frame, an answer to no job).
    mutating func protocolViolation(_ workerID: Int, message: String, now: MonotonicTime) -> [Action] {
        var actions: [Action] = []
        stop(workerID, .protocolViolation(message), release: false, now: now, &actions)
        return actions
    }

    /// A worker could not start: its spawn failed, or its handshake did not match.
    mutating func startFailed(_ workerID: Int, message: String, now: MonotonicTime) -> [Action] {
        var actions: [Action] = []
        stop(workerID, .startFailed(message), release: false, now: now, &actions)
        return actions
    }

    /// Takes a worker out of service: killed (`release: false`) or let go.
    mutating func stop(_ workerID: Int, _ reason: StopReason, release: Bool, now: MonotonicTime, _ actions: inout [Action]) {
        guard var worker = workers[workerID] else { return }
        if case .stopping = worker.phase { return }
        worker.phase = .stopping(reason)
        workers[workerID] = worker
        removeFreeSlots(of: workerID)
        actions.append(release ? .release(workerID: workerID) : .kill(workerID: workerID))
        // A worker that failed to start is replaced once its exit has been counted: replaced
        // now, a group that gives up would start one worker more than its limit for nothing.
        if case .startFailed = reason { return }
        replenish(now: now, &actions)
    }

    /// A worker ended (or could not be started). Fails its unfinished jobs and replaces it.
    mutating func workerExited(
        _ workerID: Int, termination: CrewError.Termination?, stderrTail: String?, now: MonotonicTime
    ) -> [Action] {
        guard let worker = workers.removeValue(forKey: workerID) else { return [] }
        removeFreeSlots(of: workerID)
        var actions: [Action] = []
        // A successor that never became ready: its predecessor serves on, and hands over later
        // (after its next job, or at once if it is idle: nothing else would look at it again).
        if let (old, _) = worker.retireOnReady, workers[old]?.successor == workerID {
            workers[old]!.successor = nil
            if workers[old]!.inFlight.isEmpty && workers[old]!.acceptsJobs {
                actions.append(.checkIdle(workerID: old, at: now))
            }
        }
        let reason: StopReason? = if case .stopping(let reason) = worker.phase { reason } else { nil }
        let what = termination.map { "its process \($0)" } ?? "it could not be started"

        for jobID in worker.inFlight {
            guard let job = running.removeValue(forKey: jobID), let waiter = job.waiter else { continue }
            var error: CrewError = switch reason {
            case .timedOut(_, let name)?:
                CrewError(.workerCrashed, "the worker was stopped because another job (\(name)) timed out on it")
            case .cancelGraceExpired?:
                CrewError(.workerCrashed, "the worker was stopped because a cancelled job on it did not stop")
            case .protocolViolation(let message)?:
                CrewError(.protocolViolation, "the worker broke the wire protocol (\(message)); it was killed")
            case .startFailed(let message)?:
                CrewError(.workerStartFailed, message)
            case .shutdown?:
                CrewError(.poolShutDown, "the pool shut down before the job finished")
            case .retired?, .idle?, nil:
                CrewError(.workerCrashed, "the worker died while it ran the job: \(what)")
            }
            error.jobName = job.name
            error.workerID = workerID
            error.termination = termination
            error.stderrTail = stderrTail
            actions.append(.resume(waiter, .failure(error)))
        }

        // Jobs aimed at this worker alone can never run now.
        failQueued(where: { $0.requirement == .worker(workerID) }, &actions) { request in
            CrewError(.noEligibleWorker, "worker \(workerID) ended before the job could run on it", jobName: request.name)
        }

        let diedStarting: Bool = switch reason {
        case .startFailed?: true
        case nil: worker.phase.isStartingUp
        default: false
        }
        if diedStarting {
            consecutiveStartFailures[worker.group] += 1
            // Give up starting workers even if others of the group still serve: they serve on
            // (see `takesJobs(group:)`), and respawning would spin.
            if consecutiveStartFailures[worker.group] >= startFailureLimit {
                let detail: String = if case .startFailed(let message)? = reason {
                    message
                } else {
                    "\(consecutiveStartFailures[worker.group]) workers in a row ended while starting; the last: \(what)"
                }
                let retry = startFailureCooldown.map { "; the pool tries again in \($0)" } ?? ""
                let newlyGivenUp = startFailures[worker.group] == nil
                startFailures[worker.group] = CrewError(
                    .workerStartFailed, "\(groups[worker.group].kind) workers cannot be started: \(detail)\(retry)",
                    termination: termination, stderrTail: stderrTail)
                failUnservable(&actions)
                // One retry per give-up: workers that were starting with this one and fail later
                // must not cut the cool-down short.
                if newlyGivenUp, let cooldown = startFailureCooldown {
                    startRetryAt[worker.group] = now + cooldown
                    actions.append(.retryStart(group: worker.group, at: now + cooldown))
                }
            }
        }

        // The last worker of a group that gave up starting workers: its queued jobs have nobody left.
        if startFailures[worker.group] != nil { failUnservable(&actions) }

        switch lifecycle {
        case .running, .draining:
            replenish(now: now, &actions)
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

    /// The cool-down of a group that gave up starting workers is over: it takes jobs again and
    /// starts its minimum of workers. One more failure to start makes it give up again at once.
    mutating func startRetryDue(group index: Int, now: MonotonicTime) -> [Action] {
        guard startFailures[index] != nil, let due = startRetryAt[index], now >= due else { return [] }
        startFailures[index] = nil
        startRetryAt[index] = nil
        consecutiveStartFailures[index] = max(0, startFailureLimit - 1)
        var actions: [Action] = []
        replenish(now: now, &actions)
        return actions
    }

    /// Fails queued jobs that no worker can ever take any more.
    mutating func failUnservable(_ actions: inout [Action]) {
        var errors: [UInt64: CrewError] = [:]
        for (id, entry) in queued {
            if let error = unservable(entry.request.requirement, name: entry.request.name) { errors[id] = error }
        }
        for request in overflow {
            if let error = unservable(request.requirement, name: request.name) { errors[request.id] = error }
        }
        guard !errors.isEmpty else { return }
        failQueued(where: { errors[$0.id] != nil }, &actions) { errors[$0.id]! }
    }

    /// Removes queued (and overflowed) jobs matching `predicate` and fails them.
    mutating func failQueued(
        where predicate: (Request) -> Bool, _ actions: inout [Action], error: (Request) -> CrewError
    ) {
        let doomed = queued.values.filter { predicate($0.request) }.sorted { $0.key < $1.key }
        for (request, _) in doomed {
            queued[request.id] = nil
            keyWentStale(request.requirement)
            actions.append(.resume(request.waiter, .failure(error(request))))
        }
        // Their heap keys are dropped lazily (see popBestRequest).
        let overflowed = overflow.filter(predicate)
        overflow.removeAll(where: predicate)
        for request in overflowed { actions.append(.resume(request.waiter, .failure(error(request)))) }
        // They may have been the last thing a drain waited for.
        if !doomed.isEmpty || !overflowed.isEmpty { checkDrained(&actions) }
    }

    // MARK: Shutdown

    /// Stops taking jobs. With `cancelPending`, queued jobs fail at once and running ones are asked
    /// to cancel; otherwise both go on. Returns ``Action/drained`` once nothing is awaited.
    ///
    /// During a drain, a call with `cancelPending` escalates it: what the drain waits for is
    /// failed and cancelled as if the shutdown had asked for that from the start.
    mutating func beginShutdown(cancelPending: Bool) -> [Action] {
        switch lifecycle {
        case .running: lifecycle = .draining
        case .draining where cancelPending: break
        default: return []
        }
        var actions: [Action] = []
        if cancelPending {
            failQueued(where: { _ in true }, &actions) { request in
                CrewError(.poolShutDown, "the pool shut down before the job started", jobName: request.name)
            }
            for jobID in failRunningWaiters("the pool shut down while the job ran", &actions) {
                actions.append(.requestCancel(workerID: running[jobID]!.workerID, jobID: jobID))
            }
        }
        checkDrained(&actions)
        return actions
    }

    /// Resumes every caller of a running job with `poolShutDown`; returns those jobs' ids.
    private mutating func failRunningWaiters(_ message: String, _ actions: inout [Action]) -> [UInt64] {
        var failed: [UInt64] = []
        for (jobID, job) in running.sorted(by: { $0.key < $1.key }) {
            guard let waiter = job.waiter else { continue }
            actions.append(.resume(waiter, .failure(CrewError(.poolShutDown, message, jobName: job.name, workerID: job.workerID))))
            running[jobID]!.waiter = nil
            failed.append(jobID)
        }
        return failed
    }

    /// Releases every worker; jobs still queued or running fail with `poolShutDown`.
    mutating func stopWorkers() -> [Action] {
        guard lifecycle == .running || lifecycle == .draining else { return [] }
        lifecycle = .stopping
        var actions: [Action] = []
        failQueued(where: { _ in true }, &actions) { request in
            CrewError(.poolShutDown, "the pool shut down before the job started", jobName: request.name)
        }
        _ = failRunningWaiters("the pool shut down before the job finished", &actions)
        freeSlots.removeAll()
        heldSlots.removeAll()
        for id in workers.keys.sorted() {
            if case .stopping = workers[id]!.phase { continue }  // already on its way out
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

