import HeapModule

extension PoolStateMachine {
    // MARK: Submitting

    /// A caller submits a job.
    mutating func submit(_ request: Request, now: MonotonicTime) -> [Action] {
        guard lifecycle == .running else {
            return [.resume(request.waiter, .failure(.takesNoNewJobs(jobName: request.name)))]
        }
        if let error = unservable(request.requirement, name: request.name) {
            return [.resume(request.waiter, .failure(error))]
        }
        if let maxQueued, queued.count >= maxQueued {
            // The limit is on jobs that wait: one that a free worker takes at once does not.
            var actions: [Action] = []
            if let (workerID, group) = takeFreeSlot(for: request.requirement, waitsForRoom: request.waitsForRoom) {
                assign(request, to: workerID, group: group, now: now, &actions)
                return actions
            }
            guard request.waitsForRoom else {
                return actions + [.resume(request.waiter, .failure(CrewError(
                    .queueFull, "the queue holds its maximum of \(maxQueued) jobs", jobName: request.name)))]
            }
            overflow.append(request)
            // A caller waiting for room is demand too: a worker may start for it.
            scaleUp(now: now, &actions)
            return actions
        }
        enqueue(request)
        var actions: [Action] = []
        dispatch(now: now, &actions)
        return actions
    }

    /// Queues a request behind those of its priority, or at `sequence` (a recalled job goes
    /// back where it was).
    mutating func enqueue(_ request: Request, sequence: UInt64? = nil) {
        let sequence = sequence ?? {
            nextSequence += 1
            return nextSequence
        }()
        let key = QueueKey(priority: request.priority, sequence: sequence, id: request.id)
        queued[request.id] = (request, key)
        if case .any = request.requirement {
            anyQueue.insert(key)
        } else {
            keyedQueues[request.requirement, default: Heap()].insert(key)
        }
    }

    /// Whether any job waits in a queue (cancelled ones included until they are dropped).
    var hasQueueKeys: Bool { !anyQueue.isEmpty || !keyedQueues.isEmpty }

    /// A queued job left the queue without its heap key (cancelled, failed): the key is stale.
    mutating func keyWentStale(_ requirement: Requirement) {
        staleKeys[requirement, default: 0] += 1
    }

    /// A stale key was dropped from its heap.
    private mutating func staleKeyDropped(_ requirement: Requirement) {
        staleKeys[requirement, default: 1] -= 1
        if staleKeys[requirement] == 0 { staleKeys[requirement] = nil }
    }

    /// Nil if some worker, now or later, can take a job with this requirement; the error otherwise.
    func unservable(_ requirement: Requirement, name: String) -> CrewError? {
        switch requirement {
        case .worker(let id):
            if let worker = workers[id], worker.isActive { return nil }
            return CrewError(.noEligibleWorker, "worker \(id) does not exist or is stopping", jobName: name)
        case .any where groups.indices.contains(where: { groups[$0].maximum > 0 && startFailures[$0] == nil }):
            return nil  // the common case, without building the list below
        case .any, .tag:
            let able = groups.indices.filter { canServe(group: $0, requirement) }
            if able.contains(where: { takesJobs(group: $0) }) { return nil }
            if let failed = able.lazy.compactMap({ startFailures[$0] }).first {
                var error = failed
                error.jobName = name
                return error
            }
            let what = if case .tag(let tag) = requirement { "a worker tagged \"\(tag)\"" } else { "a worker" }
            return CrewError(.noEligibleWorker, "no worker group of this pool can ever provide \(what)", jobName: name)
        }
    }

    /// Whether a group's workers may take jobs now or later: it has not given up starting
    /// workers, or some of its workers still serve (they serve on after it gave up).
    func takesJobs(group index: Int) -> Bool {
        startFailures[index] == nil || workers.values.contains { $0.group == index && $0.acceptsJobs }
    }

    private func canServe(group index: Int, _ requirement: Requirement) -> Bool {
        let group = groups[index]
        guard group.maximum > 0 else { return false }
        switch requirement {
        case .any: return true
        case .tag(let tag): return group.tags.contains(tag)
        case .worker(let id): return workers[id]?.group == index
        }
    }

    // MARK: Dispatching

    /// Matches queued jobs with free slots, then starts workers for what is left.
    ///
    /// With `scalingUp` false it starts no workers for the jobs already queued: after a slot
    /// freed up, which adds no demand. (Jobs it admits from the overflow are new demand, and
    /// may still start workers.)
    mutating func dispatch(now: MonotonicTime, scalingUp: Bool = true, _ actions: inout [Action]) {
        matchQueued(now: now, &actions)
        admitOverflow(now: now, &actions)
        if scalingUp { scaleUp(now: now, &actions) }
    }

    /// Hands queued jobs to free slots: slots where a job starts at once first, held (prefetch)
    /// slots only when none is left and no worker may start or is starting (see
    /// ``mayHoldJobs()``).
    private mutating func matchQueued(now: MonotonicTime, _ actions: inout [Action]) {
        // Stop as soon as the queue is empty: with many free slots (large prefetch), scanning
        // them all on every submit and every answer made each job cost O(slots).
        var unmatched: [Int] = []
        var unmatchedHeld: [Int] = []
        var holdingAllowed: Bool?
        while !queued.isEmpty {
            let held: Bool
            let workerID: Int
            if let slot = freeSlots.popLast() {
                (workerID, held) = (slot, false)
            } else if !heldSlots.isEmpty, holdingAllowed ?? mayHoldJobs() {
                holdingAllowed = true
                (workerID, held) = (heldSlots.removeLast(), true)
            } else {
                break
            }
            guard let group = updateWorker(workerID, { $0.acceptsJobs ? $0.group : nil }) ?? nil else { continue }
            guard let (request, sequence) = popBestRequest(forWorker: workerID, group: group) else {
                if held { unmatchedHeld.append(workerID) } else { unmatched.append(workerID) }
                continue
            }
            assign(request, to: workerID, group: group, sequence: sequence, now: now, &actions)
        }
        if !unmatched.isEmpty { freeSlots.append(contentsOf: unmatched.reversed()) }
        if !unmatchedHeld.isEmpty { heldSlots.append(contentsOf: unmatchedHeld.reversed()) }
    }

    /// Takes a free slot for a job that would have to wait in a full queue, one where it starts
    /// at once first: the slot's worker and its group, or nil if no free slot can take the job.
    /// A queued job that could use a slot would have been matched with it already, so no queued
    /// job is overtaken, with one exception: a caller that may not wait (`trySubmit`) takes a
    /// held slot in any case, also while ``mayHoldJobs()`` keeps queued jobs out of held slots
    /// (they wait for a worker that is starting); refusing it with `queueFull` beside a free slot
    /// would be worse. A caller that may wait takes a held slot only under that rule.
    private mutating func takeFreeSlot(for requirement: Requirement, waitsForRoom: Bool) -> (workerID: Int, group: Int)? {
        if let (index, group) = lastSlot(in: freeSlots, taking: requirement) { return (freeSlots.remove(at: index), group) }
        guard !waitsForRoom || mayHoldJobs() else { return nil }
        if let (index, group) = lastSlot(in: heldSlots, taking: requirement) { return (heldSlots.remove(at: index), group) }
        return nil
    }

    /// Whether a job may go to a held (prefetch) slot, to wait in a busy worker: only while no
    /// worker is starting and no group may start one. Otherwise the job waits in the pool,
    /// where a worker that starts for it (or is starting) takes it; in a busy worker's slot it
    /// would wait behind that worker's job while the new worker had nothing to do, and it would
    /// not count as demand, so a pool of `processes(1...8).prefetch(32)` would let one worker
    /// absorb 33 jobs before starting a second.
    ///
    /// The rule is pool-wide, not per requirement: while a group may still grow, jobs that only
    /// another group's (full) workers can take wait in the pool too, without prefetch.
    func mayHoldJobs() -> Bool {
        if anyGroupBelowMaximum() { return false }
        for index in workers.indices where workers.values[index].phase.isStartingUp { return false }
        return true
    }

    /// The last of `slots` whose worker may take a job with this requirement now: its index, and
    /// the worker's group.
    private func lastSlot(in slots: [Int], taking requirement: Requirement) -> (index: Int, group: Int)? {
        for index in slots.indices.reversed() {
            if let group = group(takingJobsFor: requirement, workerID: slots[index]) { return (index, group) }
        }
        return nil
    }

    /// The worker's group, if the worker takes jobs now and may take one with this requirement.
    func group(takingJobsFor requirement: Requirement, workerID: Int) -> Int? {
        guard let worker = workers[workerID], worker.acceptsJobs else { return nil }
        switch requirement {
        case .any: return worker.group
        case .tag(let tag): return groups[worker.group].tags.contains(tag) ? worker.group : nil
        case .worker(let id): return id == workerID ? worker.group : nil
        }
    }

    /// Hands a request to a worker. `sequence` is its place in the queue, if it came from there.
    private mutating func assign(
        _ request: Request, to workerID: Int, group: Int, sequence: UInt64? = nil, now: MonotonicTime, _ actions: inout [Action]
    ) {
        let jobsPerWorker = groups[group].jobsPerWorker
        let position = heldPosition(for: request.priority, on: workerID, runsAtOnce: jobsPerWorker)
        // In place, with one look-up: a copy would make every append copy the worker's job list.
        let (startsNow, jobsDispatched) = updateWorker(workerID) { worker in
            // A job beyond what the worker runs at once waits in the worker: its timeout starts later.
            let startsNow = worker.inFlight.count < jobsPerWorker
            if let position { worker.inFlight.insert(request.id, at: position) } else { worker.inFlight.append(request.id) }
            worker.jobsDispatched += 1
            worker.idleSince = nil
            return (startsNow, worker.jobsDispatched)
        }!
        // A held job can be called back for an idle worker, unless only this worker may run it.
        let held: HeldJob? = if startsNow || request.requirement == .worker(workerID) {
            nil
        } else {
            HeldJob(
                payload: request.payload, priority: request.priority, timeout: request.timeout,
                requirement: request.requirement, sequence: sequence ?? 0)  // 0: it went ahead of the queue
        }
        running[request.id] = RunningJob(
            name: request.name, workerID: workerID, waiter: request.waiter, pendingTimeout: startsNow ? nil : request.timeout,
            priority: request.priority, held: held)
        actions.append(.dispatch(Dispatch(
            workerID: workerID, jobID: request.id, name: request.name, payload: request.payload,
            timeout: startsNow ? request.timeout : nil, announceStart: !startsNow && request.timeout != nil, timed: request.timeout != nil,
            priority: request.priority)))
        if let limit = groups[group].maxJobsPerWorker, jobsDispatched >= limit {
            // Its last job: start the replacement now, while that job runs.
            retire(workerID, because: "it ran its maximum of \(limit) jobs", now: now, &actions)
        }
    }

    /// Where a job held by a worker goes in its `inFlight`, if not at the end: the worker holds
    /// jobs highest priority first (see `WorkerServer`), so a job that outranks the last ones
    /// held goes ahead of them, and `inFlight` stays in the order the worker runs its jobs in
    /// (the jobs it runs first; a recall relies on it). Nil, the common case, for the end.
    private func heldPosition(for priority: JobPriority, on workerID: Int, runsAtOnce: Int) -> Int? {
        guard let index = workers.index(forKey: workerID), workers.values[index].inFlight.count > runsAtOnce,
              let last = workers.values[index].inFlight.last, let lastPriority = running[last]?.priority, lastPriority < priority
        else { return nil }
        let inFlight = workers.values[index].inFlight
        var position = inFlight.count - 1
        while position > runsAtOnce, let before = running[inFlight[position - 1]]?.priority, before < priority { position -= 1 }
        return position
    }

    /// The best queued job this worker may take: the highest priority, then the oldest, among
    /// the jobs for any worker, for one of its tags, and for it alone.
    private mutating func popBestRequest(forWorker workerID: Int, group: Int) -> (request: Request, sequence: UInt64)? {
        var best: (Requirement, QueueKey)?
        func consider(_ requirement: Requirement) {
            guard let min = liveMinimum(of: requirement) else { return }
            if best.map({ min < $0.1 }) ?? true { best = (requirement, min) }
        }
        consider(.any)
        if !keyedQueues.isEmpty {
            consider(.worker(workerID))
            for tag in groups[group].tags { consider(.tag(tag)) }
        }
        guard let (requirement, key) = best else { return nil }
        if case .any = requirement {
            anyQueue.removeMin()
        } else {
            keyedQueues[requirement]!.removeMin()
            if keyedQueues[requirement]!.isEmpty { keyedQueues[requirement] = nil }
        }
        return (queued.removeValue(forKey: key.id)!.request, key.sequence)
    }

    /// The first key of a queue that belongs to a job still queued, after dropping the keys of
    /// jobs cancelled while queued; nil if none is left. The heap is changed in place, never
    /// copied (a copy would cost a pass over the whole queue per dispatch).
    ///
    /// A job is enqueued once, so a key is live exactly while its job is queued.
    private mutating func liveMinimum(of requirement: Requirement) -> QueueKey? {
        if case .any = requirement {
            while let min = anyQueue.min {
                if queued.index(forKey: min.id) != nil { return min }
                anyQueue.removeMin()
                staleKeyDropped(requirement)
            }
            return nil
        }
        guard keyedQueues[requirement] != nil else { return nil }
        while let min = keyedQueues[requirement]!.min {
            if queued.index(forKey: min.id) != nil { return min }
            keyedQueues[requirement]!.removeMin()
            staleKeyDropped(requirement)
        }
        keyedQueues[requirement] = nil
        return nil
    }

    private mutating func admitOverflow(now: MonotonicTime, _ actions: inout [Action]) {
        guard !overflow.isEmpty, let maxQueued else { return }
        // Jobs admitted may go to free slots at once and leave room again: admit more then.
        var admitted = true
        while admitted {
            admitted = false
            while !overflow.isEmpty && queued.count < maxQueued {
                enqueue(overflow.removeFirst())
                admitted = true
            }
            if admitted { matchQueued(now: now, &actions) }
        }
        // Callers still waiting for room whose job a free worker takes at once (the limit is on
        // jobs that wait; with maxQueued 0, this is the only way in).
        // A request leaves the overflow before it is placed: placing it may retire its worker
        // (its last job), which looks at the overflow again and must not find it there.
        var index = 0
        while index < overflow.count && !(freeSlots.isEmpty && heldSlots.isEmpty) {
            if let (workerID, group) = takeFreeSlot(for: overflow[index].requirement, waitsForRoom: true) {
                assign(overflow.remove(at: index), to: workerID, group: group, now: now, &actions)
            } else {
                index += 1
            }
        }
    }

    /// Starts workers, within each group's maximum, for queued jobs no free worker can take.
    private mutating func scaleUp(now: MonotonicTime, _ actions: inout [Action]) {
        guard lifecycle == .running || lifecycle == .draining, hasQueueKeys || !overflow.isEmpty else { return }
        // The common case under load: every group is at its maximum, so nothing can start. (A
        // method, not a closure: a closure here captured a copy of the whole machine per submit.)
        guard anyGroupBelowMaximum() else { return }
        // Jobs still queued (a heap's count includes the stale keys of cancelled jobs, which
        // would start workers for nothing), and callers waiting for room: demand too.
        var waitingByRequirement: [Requirement: Int] = [.any: anyQueue.count - staleKeys[.any, default: 0]]
        for (requirement, heap) in keyedQueues { waitingByRequirement[requirement, default: 0] += heap.count - staleKeys[requirement, default: 0] }
        for request in overflow { waitingByRequirement[request.requirement, default: 0] += 1 }
        // Each starting worker's slots count once: for tagged jobs first (fewer workers can take
        // them), then for jobs any worker can take. Only the jobs a worker runs at once count:
        // jobs wait in the pool rather than in a held slot while workers may start (see
        // mayHoldJobs), so a starting worker takes only those when it is ready.
        var spare: [Int: Int] = [:]
        for worker in workers.values where worker.phase.isStartingUp { spare[worker.id] = groups[worker.group].jobsPerWorker }
        for requirement in waitingByRequirement.keys.filter({ $0 != .any }) + [.any] {
            if case .worker = requirement { continue }
            var waiting = waitingByRequirement[requirement] ?? 0
            guard waiting > 0 else { continue }
            for (workerID, slots) in spare where slots > 0 && waiting > 0 {
                guard let worker = workers[workerID], canServe(group: worker.group, requirement) else { continue }
                let taken = min(slots, waiting)
                spare[workerID] = slots - taken
                waiting -= taken
            }
            var index = 0
            while waiting > 0 && index < groups.count {
                if startFailures[index] == nil && canServe(group: index, requirement)
                    && activeCount(inGroup: index) < groups[index].maximum {
                    let id = nextWorkerID
                    spawn(group: index, now: now, &actions)
                    let taken = min(groups[index].jobsPerWorker, waiting)
                    spare[id] = groups[index].jobsPerWorker - taken
                    waiting -= taken
                } else {
                    index += 1
                }
            }
        }
    }

    mutating func spawn(group: Int, now: MonotonicTime, _ actions: inout [Action]) {
        let id = nextWorkerID
        nextWorkerID += 1
        workers[id] = Worker(id: id, group: group, startedAt: now)
        actions.append(.spawn(workerID: id, group: group))
    }

    // MARK: Ending

    /// A worker started a job it held: its timeout counts from now. Nil if the worker holds no
    /// such job (a protocol violation).
    mutating func jobStarted(_ jobID: UInt64, on workerID: Int) -> [Action]? {
        guard var job = running[jobID], job.workerID == workerID else { return nil }
        job.held = nil
        let timeout = job.pendingTimeout
        job.pendingTimeout = nil
        running[jobID] = job
        guard let timeout else { return [] }
        return [.armTimeout(jobID: jobID, timeout: timeout)]
    }

    /// A worker reported a job's end. Returns nil if the worker had no such job: it broke the
    /// protocol, and the caller should report ``protocolViolation(_:message:now:)``.
    mutating func jobEnded(_ jobID: UInt64, on workerID: Int, _ result: Result<JobOutput, CrewError>, now: MonotonicTime) -> [Action]? {
        guard let job = running.removeValue(forKey: jobID) else { return nil }
        guard job.workerID == workerID, workers[workerID] != nil else {
            running[jobID] = job
            return nil
        }
        let (group, startedAt, acceptsJobs) = updateWorker(workerID) { worker in
            if let index = worker.inFlight.firstIndex(of: jobID) { worker.inFlight.remove(at: index) }
            worker.jobsDone += 1
            return (worker.group, worker.startedAt, worker.acceptsJobs)
        }!
        var actions: [Action] = []
        if job.isInit {
            initJobEnded(workerID, result, now: now, &actions)
            return actions
        }
        if let waiter = job.waiter { actions.append(.resume(waiter, result)) }
        if let maxAge = groups[group].maxAge, startedAt + maxAge <= now, acceptsJobs {
            handOver(workerID, because: "it reached its maximum age of \(maxAge)", now: now, &actions)
        }
        slotFreed(workerID, now: now, &actions)
        checkDrained(&actions)
        return actions
    }

    /// A worker's job ended: give it another, release it if it is retiring, or note it idle.
    mutating func slotFreed(_ workerID: Int, now: MonotonicTime, _ actions: inout [Action]) {
        guard let (ready, group, inFlight) = updateWorker(workerID, { ($0.acceptsJobs, $0.group, $0.inFlight.count) }) else { return }
        let runsAtOnce = inFlight < groups[group].jobsPerWorker
        if ready {
            addFreeSlot(workerID, runsAtOnce: runsAtOnce)
            dispatch(now: now, scalingUp: false, &actions)
            // Nothing queued for it: jobs held in busy workers may come back for it.
            recallHeldJobs(for: workerID, &actions)
            // Idle now: note it, and check back when it may go.
            let idle = updateWorker(workerID) { worker in
                guard worker.inFlight.isEmpty && worker.acceptsJobs else { return false }
                worker.idleSince = now
                return true
            }
            if idle == true { scheduleIdleCheck(workerID, now: now, &actions) }
            return
        }
        switch workers[workerID]!.phase {
        case .retiring where workers[workerID]!.inFlight.isEmpty:
            workers[workerID]!.phase = .stopping(.retired("retired"))
            actions.append(.release(workerID: workerID))
        default:
            break
        }
    }

    /// The timer of a ``Action/checkIdle(workerID:at:)`` fired: an idle worker above its group's
    /// minimum, or past its maximum age, goes.
    mutating func idleCheck(_ workerID: Int, now: MonotonicTime) -> [Action] {
        guard let worker = workers[workerID], worker.acceptsJobs, worker.inFlight.isEmpty, let idleSince = worker.idleSince else {
            return []
        }
        let group = groups[worker.group]
        let aboveMinimum = activeCount(inGroup: worker.group) > group.minimum
        var actions: [Action] = []
        if let maxAge = group.maxAge, worker.startedAt + maxAge <= now {
            // Idle and too old: above the minimum it just goes; otherwise a successor takes over.
            if aboveMinimum {
                stop(workerID, .idle, release: true, now: now, &actions)
                return actions
            }
            handOver(workerID, because: "it reached its maximum age of \(maxAge)", now: now, &actions)
            if workers[workerID]?.successor != nil { return actions }
        }
        if let timeout = group.idleTimeout, idleSince + timeout <= now, aboveMinimum {
            stop(workerID, .idle, release: true, now: now, &actions)
            return actions
        }
        // Still here and idle: what was due is dealt with; what is still ahead gets a check (the
        // pool keeps one pending check per worker, the earliest, so this one may stand in for a
        // later one: an idle timeout for a maximum age, or a new idle spell for an old one).
        scheduleIdleCheck(workerID, now: now, afterCheck: true, &actions)
        return actions
    }

    /// Schedules the next look at an idle worker: when its idle timeout ends (if its group is
    /// above its minimum) or when it reaches its maximum age, whichever comes first; a time
    /// already past, at once. With `afterCheck` (a check just dealt with what was due), only
    /// times still ahead count.
    mutating func scheduleIdleCheck(_ workerID: Int, now: MonotonicTime, afterCheck: Bool = false, _ actions: inout [Action]) {
        guard let (group, startedAt, idleSince) = updateWorker(workerID, { worker -> (Int, MonotonicTime, MonotonicTime)? in
            guard worker.acceptsJobs, worker.inFlight.isEmpty, let since = worker.idleSince else { return nil }
            return (worker.group, worker.startedAt, since)
        }) ?? nil else { return }
        var times: [MonotonicTime] = []
        if let idle = groups[group].idleTimeout, activeCount(inGroup: group) > groups[group].minimum { times.append(idleSince + idle) }
        if let maxAge = groups[group].maxAge { times.append(startedAt + maxAge) }
        if afterCheck { times.removeAll { $0 <= now } }
        if let at = times.min() { actions.append(.checkIdle(workerID: workerID, at: max(now, at))) }
    }

    /// Retires a worker: it takes no new jobs, a replacement starts now, and it is released
    /// once its jobs are done.
    ///
    /// With `replace` false (its successor is ready already: a hand-over), no replacement starts
    /// beyond the group's minimum.
    mutating func retire(_ workerID: Int, because reason: String, replace: Bool = true, now: MonotonicTime, _ actions: inout [Action]) {
        guard var worker = workers[workerID], worker.isActive, !worker.phase.isStartingUp else { return }
        let activeBefore = activeCount(inGroup: worker.group)
        worker.phase = .retiring(reason)
        workers[workerID] = worker
        removeFreeSlots(of: workerID)
        replenish(now: now, &actions)
        // Capacity does not dip: a group above its minimum gets a replacement too (replenishing
        // only reaches the minimum). A successor already starting (a hand-over under way) is
        // that replacement.
        if replace, worker.successor == nil, activeCount(inGroup: worker.group) < activeBefore, startFailures[worker.group] == nil,
           lifecycle == .running || lifecycle == .draining {
            spawn(group: worker.group, now: now, &actions)
        }
        if worker.inFlight.isEmpty { slotFreed(workerID, now: now, &actions) }
    }

    /// Replaces a worker without a dip in capacity: its successor starts now, and the worker
    /// serves on until the successor is ready, then retires. Nothing happens if a successor is
    /// already starting, or if the group's workers keep failing to start (it serves on then).
    mutating func handOver(_ workerID: Int, because reason: String, now: MonotonicTime, _ actions: inout [Action]) {
        guard let worker = workers[workerID], worker.acceptsJobs, worker.successor == nil,
              // A limit of 0 gives up at the first failure, like 1: with none yet, hand over.
              startFailures[worker.group] == nil, consecutiveStartFailures[worker.group] < max(1, startFailureLimit),
              lifecycle == .running || lifecycle == .draining
        else { return }
        let successor = nextWorkerID
        spawn(group: worker.group, now: now, &actions)
        workers[workerID]!.successor = successor
        workers[successor]!.retireOnReady = (workerID, reason)
    }

    /// The pool found a process worker over its memory limit between jobs.
    mutating func handOver(_ workerID: Int, because reason: String, now: MonotonicTime) -> [Action] {
        var actions: [Action] = []
        handOver(workerID, because: reason, now: now, &actions)
        return actions
    }

    // MARK: Cancellation and timeouts

    /// The awaiting task was cancelled: a queued job is dropped, a running one asked to stop.
    mutating func cancel(_ jobID: UInt64, now: MonotonicTime) -> [Action] {
        if let (request, _) = queued.removeValue(forKey: jobID) {
            keyWentStale(request.requirement)
            var actions: [Action] = [.resume(request.waiter, .failure(CrewError(
                .cancelled, "the job was cancelled before it started", jobName: request.name)))]
            // Room in the queue: a caller waiting for it gets in (and may start a worker).
            dispatch(now: now, &actions)
            checkDrained(&actions)
            return actions
        }
        if let index = overflow.firstIndex(where: { $0.id == jobID }) {
            let request = overflow.remove(at: index)
            var actions: [Action] = [.resume(request.waiter, .failure(CrewError(
                .cancelled, "the job was cancelled while it waited for room in the queue", jobName: request.name)))]
            // It may have been the last thing a drain waited for.
            checkDrained(&actions)
            return actions
        }
        guard var job = running[jobID], let waiter = job.waiter else { return [] }
        job.waiter = nil
        running[jobID] = job
        var actions: [Action] = [
            .resume(waiter, .failure(CrewError(
                .cancelled, "the job was cancelled after its worker had taken it (to run, or held to run next)",
                jobName: job.name, workerID: job.workerID))),
            .requestCancel(workerID: job.workerID, jobID: jobID),
        ]
        checkDrained(&actions)
        return actions
    }

    /// A running job's timeout expired: its caller gets `timedOut`, its worker is ended and replaced.
    mutating func timeoutExpired(jobID: UInt64, after timeout: Duration, now: MonotonicTime) -> [Action] {
        guard var job = running[jobID] else { return [] }
        var actions: [Action] = []
        if let waiter = job.waiter {
            job.waiter = nil
            running[jobID] = job
            actions.append(.resume(waiter, .failure(CrewError(
                .timedOut, "the job ran longer than its timeout of \(timeout); its worker was stopped",
                jobName: job.name, workerID: job.workerID))))
        }
        // A setup job (a broadcast's replay) that hangs is a worker that failed to start: it
        // counts toward the group's give-up, so a replay that always hangs does not respawn
        // workers for ever.
        let reason: StopReason = job.isInit
            ? .startFailed("its setup job \(job.name) ran longer than its timeout of \(timeout)")
            : .timedOut(jobID: jobID, name: job.name)
        stop(job.workerID, reason, release: false, now: now, &actions)
        checkDrained(&actions)
        return actions
    }

    /// A cancelled job still runs after the grace period: its worker is ended and replaced.
    mutating func cancelGraceExpired(jobID: UInt64, now: MonotonicTime) -> [Action] {
        guard let job = running[jobID] else { return [] }
        var actions: [Action] = []
        stop(job.workerID, .cancelGraceExpired(jobID: jobID), release: false, now: now, &actions)
        return actions
    }

    func checkDrained(_ actions: inout [Action]) {
        if isDrained { actions.append(.drained) }
    }

    /// Whether shutdown has begun and no caller awaits a queued or running job.
    var isDrained: Bool {
        lifecycle != .running && queued.isEmpty && overflow.isEmpty && running.values.allSatisfy { $0.waiter == nil }
    }
}
