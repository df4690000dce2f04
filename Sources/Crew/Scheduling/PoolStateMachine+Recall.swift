extension PoolStateMachine {
    // MARK: Calling held jobs back

    /// A worker could start a job at once (it is idle, or with ``Group/jobsPerWorker`` above 1
    /// has a slot free) and nothing queued is for it: calls back, from the busy worker holding
    /// the most of them, about half of the held (prefetched) jobs this worker could run, the
    /// highest priority first and then the last held, so that they do not wait there behind a
    /// long job while this worker sits idle. At most as many as this worker has room for.
    ///
    /// A recalled job the worker has already started is run there as usual (the pool cannot
    /// tell started from held unless the job has a timeout): the recall costs two small frames.
    mutating func recallHeldJobs(for workerID: Int, _ actions: inout [Action]) {
        guard lifecycle == .running || lifecycle == .draining, let taker = workers.index(forKey: workerID) else { return }
        let (group, inFlight) = (workers.values[taker].group, workers.values[taker].inFlight.count)
        guard workers.values[taker].acceptsJobs, inFlight < groups[group].jobsPerWorker else { return }
        let room = groups[group].slotsPerWorker - inFlight
        var best: (donor: Int, jobs: [UInt64])?
        for index in workers.indices {
            let donor = workers.values[index]
            let runsAtOnce = groups[donor.group].jobsPerWorker
            switch donor.phase {
            case .ready, .retiring: break
            default: continue
            }
            guard donor.id != workerID, donor.inFlight.count > runsAtOnce else { continue }
            var candidates: [(id: UInt64, priority: JobPriority)] = []
            // The jobs beyond those it runs at once are held, the last one first.
            for jobID in donor.inFlight[runsAtOnce...].reversed() {
                guard let job = running[jobID], let held = job.held, !job.recalling, job.waiter != nil,
                      self.group(takingJobsFor: held.requirement, workerID: workerID) != nil
                else { continue }
                candidates.append((jobID, held.priority))
            }
            if candidates.count > (best?.jobs.count ?? 0) {
                // The highest priority first: those the donor would have run next gain the most
                // from running now. Within a priority, the last held first (as listed).
                let order = candidates.indices.sorted { a, b in
                    candidates[a].priority != candidates[b].priority ? candidates[a].priority > candidates[b].priority : a < b
                }
                best = (donor.id, order.map { candidates[$0].id })
            }
        }
        guard let (donor, candidates) = best else { return }
        let recalled = Array(candidates.prefix(min(room, (candidates.count + 1) / 2)))
        for jobID in recalled { running[jobID]!.recalling = true }
        actions.append(.recall(workerID: donor, jobIDs: recalled))
    }

    /// A worker gave back a held job the pool had called back: the job goes back to the queue,
    /// where it was (even if the queue is full: it had been admitted), and a free slot of
    /// another worker (the idle one's, most often) takes it. Nil if the worker had no such job
    /// being called back: it broke the protocol.
    ///
    /// The job no longer counts toward the worker's ``Group/maxJobsPerWorker``; a worker retired
    /// at the dispatch that reached its maximum stays retired, and runs one job fewer.
    mutating func jobRecalled(_ jobID: UInt64, on workerID: Int, now: MonotonicTime) -> [Action]? {
        guard let job = running[jobID], job.workerID == workerID, job.recalling, let held = job.held, workers[workerID] != nil else {
            return nil
        }
        running[jobID] = nil
        updateWorker(workerID) { worker in
            if let index = worker.inFlight.firstIndex(of: jobID) { worker.inFlight.remove(at: index) }
            worker.jobsDispatched -= 1
        }
        var actions: [Action] = []
        // A job whose caller was resumed already (cancelled meanwhile) just frees its slot.
        if let waiter = job.waiter {
            let request = Request(
                id: jobID, name: job.name, payload: held.payload, priority: held.priority, timeout: held.timeout,
                requirement: held.requirement, waiter: waiter)
            if lifecycle == .running || lifecycle == .draining {
                enqueue(request, sequence: held.sequence)
            } else {
                actions.append(.resume(waiter, .failure(CrewError(
                    .poolShutDown, "the pool shut down before the job ran", jobName: job.name))))
            }
        }
        // Another worker's slot takes it if one is free (the idle worker's, most often): this
        // worker's held slots wait aside meanwhile, since slots are taken last in, first out, and
        // one this worker freed a moment ago, by giving back another job, could be first in line.
        // With no slot free (the idle worker took other jobs meanwhile, or is gone), the job is
        // demand again: a group that may grow starts a worker for it.
        let before = heldSlots.count
        heldSlots.removeAll { $0 == workerID }
        let setAside = before - heldSlots.count
        dispatch(now: now, &actions)
        heldSlots.append(contentsOf: repeatElement(workerID, count: setAside))
        slotFreed(workerID, now: now, &actions)
        checkDrained(&actions)
        return actions
    }
}
