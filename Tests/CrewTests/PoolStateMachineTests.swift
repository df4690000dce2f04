@testable import Crew
import Testing

/// The pool's decisions without processes: the machine's waiters are plain numbers.
@Suite struct PoolStateMachineTests {
    typealias Machine = TestMachine
    let t0 = MonotonicTime(nanoseconds: 1_000_000_000)

    /// A machine with one group of `count` process workers.
    func makeMachine(_ count: Int, jobsPerWorker: Int = 1, startFailureLimit: Int = 3) -> Machine {
        Machine(
            groups: [.init(kind: .process, minimum: count, maximum: count, jobsPerWorker: jobsPerWorker)],
            startFailureLimit: startFailureLimit)
    }

    func request(_ id: UInt64, _ priority: JobPriority = .normal, timeout: Duration? = nil) -> Machine.Request {
        Machine.Request(id: id, name: "Job\(id)", payload: [UInt8(id % 256)], priority: priority, timeout: timeout, waiter: Int(id))
    }

    @Test func startsItsWorkersAndDispatchesOnlyToReadyOnes() {
        var machine = makeMachine(2)
        #expect(spawnedWorkers(machine.start(now: t0)) == [1, 2])
        #expect(dispatched(machine.submit(request(1), now: t0)).isEmpty)
        #expect(dispatched(machine.workerReady(2, now: t0)).map(\.0) == [1])
        #expect(dispatched(machine.submit(request(2), now: t0)).isEmpty)
        #expect(dispatched(machine.workerReady(1, now: t0)).map(\.0) == [2])
    }

    @Test func priorityFirstThenFirstInFirstOut() {
        var machine = makeMachine(1)
        _ = machine.start(now: t0)
        let plan: [(UInt64, JobPriority)] = [(1, .low), (2, .normal), (3, .high), (4, .normal), (5, .critical), (6, .low), (7, .high)]
        for (id, priority) in plan { _ = machine.submit(request(id, priority), now: t0) }
        var order: [UInt64] = []
        var next = dispatched(machine.workerReady(1, now: t0))
        while let (job, worker) = next.first {
            order.append(job)
            next = dispatched(machine.jobEnded(job, on: worker, .success(.encoded([])), now: t0)!)
        }
        #expect(order == [5, 3, 7, 2, 4, 1, 6])
    }

    @Test func jobsPerWorkerLimitsWhatAWorkerHolds() {
        var machine = makeMachine(1, jobsPerWorker: 3)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        let sent = (1...5).flatMap { dispatched(machine.submit(request($0), now: t0)) }
        #expect(sent.map(\.0) == [1, 2, 3])
        #expect(machine.queuedCount == 2)
        #expect(dispatched(machine.jobEnded(2, on: 1, .success(.encoded([])), now: t0)!).map(\.0) == [4])
    }

    @Test func cancellingAQueuedJobResumesItOnce() {
        var machine = makeMachine(1)
        _ = machine.start(now: t0)
        _ = machine.submit(request(1), now: t0)
        #expect(resumed(machine.cancel(1, now: t0)) == [1: "cancelled"])
        #expect(machine.cancel(1, now: t0).isEmpty)
        #expect(dispatched(machine.workerReady(1, now: t0)).isEmpty)
    }

    @Test func cancellingARunningJobAsksTheWorkerAndIgnoresTheLateAnswer() {
        var machine = makeMachine(1)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.submit(request(1), now: t0)
        let actions = machine.cancel(1, now: t0)
        #expect(resumed(actions) == [1: "cancelled"])
        #expect(actions.contains { if case .requestCancel(1, 1) = $0 { true } else { false } })
        // The worker's answer arrives late: nobody is resumed twice, the worker is free again.
        _ = machine.submit(request(2), now: t0)
        let late = machine.jobEnded(1, on: 1, .success(.encoded([])), now: t0)!
        #expect(resumed(late).isEmpty)
        #expect(dispatched(late).map(\.0) == [2])
        // If it never answers, the grace period kills and replaces the worker.
        _ = machine.cancel(2, now: t0)
        let grace = machine.cancelGraceExpired(jobID: 2, now: t0)
        #expect(grace.contains { if case .kill(1) = $0 { true } else { false } })
        #expect(spawnedWorkers(grace) == [2])
    }

    @Test func aTimeoutResumesTheCallerKillsAndReplacesTheWorker() {
        var machine = makeMachine(1)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.submit(request(1, timeout: .seconds(1)), now: t0)
        _ = machine.submit(request(2), now: t0)
        let actions = machine.timeoutExpired(jobID: 1, after: .seconds(1), now: t0)
        #expect(resumed(actions) == [1: "timedOut"])
        #expect(actions.contains { if case .kill(1) = $0 { true } else { false } })
        #expect(spawnedWorkers(actions) == [2])
        // Job 2 waits for the replacement, and the dead worker's exit resumes nobody again.
        #expect(resumed(machine.workerExited(1, termination: .signaled(9), stderrTail: nil, now: t0)).isEmpty)
        #expect(dispatched(machine.workerReady(2, now: t0)).map { $0.0 } == [2])
        // A timeout for a finished job does nothing.
        _ = machine.jobEnded(2, on: 2, .success(.encoded([])), now: t0)
        #expect(machine.timeoutExpired(jobID: 2, after: .seconds(1), now: t0).isEmpty)
    }

    @Test func aCrashFailsOnlyTheJobsOfThatWorker() {
        var machine = makeMachine(2)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.workerReady(2, now: t0)
        let first = dispatched(machine.submit(request(1), now: t0))[0]
        let second = dispatched(machine.submit(request(2), now: t0))[0]
        #expect(first.1 != second.1)
        let actions = machine.workerExited(first.1, termination: .signaled(4), stderrTail: "Fatal error: boom", now: t0)
        #expect(resumed(actions) == [1: "workerCrashed"])
        #expect(spawnedWorkers(actions) == [3])
        let error = actions.compactMap { if case .resume(_, .failure(let e)) = $0 { e } else { nil } }.first
        #expect(error?.termination == .signaled(4))
        #expect(error?.stderrTail == "Fatal error: boom")
        #expect(resumed(machine.jobEnded(2, on: second.1, .success(.encoded([7])), now: t0)!) == [2: "ok"])
    }

    @Test func anAnswerForAJobTheWorkerDoesNotHoldIsAViolation() {
        var machine = makeMachine(2)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.workerReady(2, now: t0)
        let (job, worker) = dispatched(machine.submit(request(1), now: t0))[0]
        #expect(machine.jobEnded(99, on: worker, .success(.encoded([])), now: t0) == nil)
        #expect(machine.jobEnded(job, on: worker == 1 ? 2 : 1, .success(.encoded([])), now: t0) == nil)
        let actions = machine.protocolViolation(worker, message: "x", now: t0)
        #expect(actions.contains { if case .kill(worker) = $0 { true } else { false } })
        #expect(resumed(machine.workerExited(worker, termination: .signaled(9), stderrTail: nil, now: t0)) == [1: "protocolViolation"])
    }

    @Test func workersThatNeverStartFailTheQueueInsteadOfSpinning() {
        var machine = makeMachine(1, startFailureLimit: 3)
        _ = machine.start(now: t0)
        _ = machine.submit(request(1), now: t0)
        var actions = machine.workerExited(1, termination: .exited(1), stderrTail: "no such library", now: t0)
        #expect(spawnedWorkers(actions) == [2])
        actions = machine.workerExited(2, termination: .exited(1), stderrTail: nil, now: t0)
        #expect(spawnedWorkers(actions) == [3])
        actions = machine.workerExited(3, termination: .exited(1), stderrTail: nil, now: t0)
        #expect(spawnedWorkers(actions).isEmpty)
        #expect(resumed(actions) == [1: "workerStartFailed"])
        #expect(resumed(machine.submit(request(2), now: t0)) == [2: "workerStartFailed"])
    }

    @Test func aGroupThatGaveUpTriesAgainAfterItsCooldown() {
        var machine = Machine(
            groups: [.init(kind: .process, minimum: 1, maximum: 1)], startFailureLimit: 2, startFailureCooldown: .seconds(5))
        _ = machine.start(now: t0)
        _ = machine.submit(request(1), now: t0)
        _ = machine.workerExited(1, termination: .exited(1), stderrTail: nil, now: t0)
        var actions = machine.workerExited(2, termination: .exited(1), stderrTail: nil, now: t0)
        #expect(resumed(actions) == [1: "workerStartFailed"])
        #expect(retries(actions) == [t0 + .seconds(5)])
        #expect(resumed(machine.submit(request(2), now: t0)) == [2: "workerStartFailed"])

        // After the cool-down it starts its minimum again and takes jobs.
        actions = machine.startRetryDue(group: 0, now: t0 + .seconds(5))
        #expect(spawnedWorkers(actions) == [3])
        #expect(resumed(machine.submit(request(3), now: t0 + .seconds(5))).isEmpty)
        // One more failure to start, and it gives up again at once.
        actions = machine.workerExited(3, termination: .exited(1), stderrTail: nil, now: t0 + .seconds(6))
        #expect(spawnedWorkers(actions).isEmpty)
        #expect(resumed(actions) == [3: "workerStartFailed"])
        #expect(retries(actions) == [t0 + .seconds(11)])

        // A worker that does start serves, and resets the count.
        #expect(spawnedWorkers(machine.startRetryDue(group: 0, now: t0 + .seconds(11))) == [4])
        _ = machine.workerReady(4, now: t0 + .seconds(11))
        #expect(dispatched(machine.submit(request(4), now: t0 + .seconds(11))).map(\.job) == [4])
        #expect(machine.consecutiveStartFailures == [0])
        // A retry that comes late, for a group that works, changes nothing.
        #expect(machine.startRetryDue(group: 0, now: t0 + .seconds(12)).isEmpty)
    }

    @Test func aReadyWorkerResetsTheStartFailureCount() {
        var machine = makeMachine(1, startFailureLimit: 2)
        _ = machine.start(now: t0)
        _ = machine.workerExited(1, termination: .exited(1), stderrTail: nil, now: t0)
        _ = machine.workerReady(2, now: t0)
        _ = machine.workerExited(2, termination: .signaled(9), stderrTail: nil, now: t0)
        _ = machine.workerExited(3, termination: .exited(1), stderrTail: nil, now: t0)
        #expect(machine.startFailures == [nil])
    }

    @Test func drainingLetsQueuedJobsFinishThenStopsEveryWorker() {
        var machine = makeMachine(2)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.submit(request(1), now: t0)
        _ = machine.submit(request(2), now: t0)
        _ = machine.submit(request(3), now: t0)
        var actions = machine.beginShutdown(cancelPending: false)
        #expect(!actions.contains { if case .drained = $0 { true } else { false } })
        #expect(resumed(machine.submit(request(4), now: t0)) == [4: "poolShutDown"])
        actions = machine.jobEnded(1, on: 1, .success(.encoded([])), now: t0)!
        #expect(dispatched(actions).map(\.0) == [2])
        actions = machine.jobEnded(2, on: 1, .success(.encoded([])), now: t0)!
        actions = machine.jobEnded(3, on: 1, .success(.encoded([])), now: t0)!
        #expect(actions.contains { if case .drained = $0 { true } else { false } })
        actions = machine.stopWorkers()
        #expect(actions.compactMap { if case .release(let id) = $0 { id } else { nil } } == [1, 2])
        #expect(machine.workerExited(1, termination: .exited(0), stderrTail: nil, now: t0).isEmpty)
        let last = machine.workerExited(2, termination: .exited(0), stderrTail: nil, now: t0)
        #expect(last.contains { if case .allWorkersExited = $0 { true } else { false } })
        #expect(spawnedWorkers(last).isEmpty)
        #expect(machine.lifecycle == .stopped)
    }

    @Test func cancellingShutdownFailsQueuedAndRunningJobs() {
        var machine = makeMachine(1)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.submit(request(1), now: t0)
        _ = machine.submit(request(2), now: t0)
        let actions = machine.beginShutdown(cancelPending: true)
        #expect(resumed(actions) == [1: "poolShutDown", 2: "poolShutDown"])
        #expect(actions.contains { if case .requestCancel(1, 1) = $0 { true } else { false } })
        #expect(actions.contains { if case .drained = $0 { true } else { false } })
    }

    @Test func aWorkerThatFinishesStartingDuringShutdownIsReleased() {
        var machine = makeMachine(1)
        _ = machine.start(now: t0)
        _ = machine.beginShutdown(cancelPending: false)
        _ = machine.stopWorkers()
        #expect(machine.workerReady(1, now: t0).isEmpty)  // already told to go
        #expect(machine.workerExited(1, termination: .exited(0), stderrTail: nil, now: t0).contains {
            if case .allWorkersExited = $0 { true } else { false }
        })
    }
}

extension PoolStateMachineTests {
    @Test func aHeldJobsTimeoutIsArmedWhenItStarts() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 1, maximum: 1, jobsPerWorker: 1, prefetch: 1)])
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        let first = machine.submit(request(1, timeout: .seconds(5)), now: t0)
        let second = machine.submit(request(2, timeout: .seconds(5)), now: t0)
        let timeouts = (first + second).compactMap { if case .dispatch(let job) = $0 { (job.jobID, job.timeout) } else { nil } }
        #expect(timeouts.map(\.0) == [1, 2])
        #expect(timeouts[0].1 == .seconds(5))
        #expect(timeouts[1].1 == nil)  // held: not started yet
        // Both have a timeout, running or held: the worker must never hold their answers back.
        let timed = (first + second).compactMap { if case .dispatch(let job) = $0 { [job.announceStart, job.timed] } else { nil } }
        #expect(timed == [[false, true], [true, true]])
        #expect(machine.submit(request(3), now: t0).isEmpty)  // both slots taken
        // Job 3, without a timeout, takes the held slot job 1 leaves: nothing to announce or rush.
        let ended = machine.jobEnded(1, on: 1, .success(.encoded([])), now: t0)!
        #expect(ended.contains {
            if case .dispatch(let job) = $0 { job.workerID == 1 && job.jobID == 3 && job.timeout == nil && !job.announceStart && !job.timed } else { false }
        })
        let started = machine.jobStarted(2, on: 1)
        #expect(started?.count == 1)
        #expect(started.map { if case .armTimeout(2, .seconds(5))? = $0.first { true } else { false } } == true)
        #expect(machine.jobStarted(99, on: 1) == nil)
    }
}

extension PoolStateMachineTests {
    /// A drain ends once no caller awaits anything, also when the last one waited for room in a
    /// full queue and was cancelled there.
    @Test func cancellingTheLastCallerWaitingForRoomEndsTheDrain() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 1, maximum: 1)], maxQueued: 0)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        #expect(dispatched(machine.submit(request(1), now: t0)).map(\.job) == [1])
        #expect(machine.submit(request(2), now: t0).isEmpty)  // waits for room
        let isDrained: ([Machine.Action]) -> Bool = { $0.contains { if case .drained = $0 { true } else { false } } }
        #expect(!isDrained(machine.beginShutdown(cancelPending: false)))
        #expect(!isDrained(machine.cancel(1, now: t0)))
        #expect(isDrained(machine.cancel(2, now: t0)))
    }
}

extension PoolStateMachineTests {
    /// A worker that was still starting when its group gave up, and makes it after all, ends the
    /// cool-down: the group serves again and starts its minimum of workers, as after a cool-down.
    @Test func aWorkerThatStartsAfterTheGroupGaveUpRestoresItsMinimum() {
        var machine = Machine(
            groups: [.init(kind: .process, minimum: 2, maximum: 2)], startFailureLimit: 2, startFailureCooldown: .seconds(5))
        #expect(spawnedWorkers(machine.start(now: t0)) == [1, 2])
        #expect(spawnedWorkers(machine.workerExited(1, termination: .exited(1), stderrTail: nil, now: t0)) == [3])
        let gaveUp = machine.workerExited(3, termination: .exited(1), stderrTail: nil, now: t0)
        #expect(spawnedWorkers(gaveUp).isEmpty)
        #expect(retries(gaveUp) == [t0 + .seconds(5)])
        // Worker 2 was starting all along, and makes it.
        let actions = machine.workerReady(2, now: t0 + .seconds(1))
        #expect(machine.startFailures == [nil])
        #expect(spawnedWorkers(actions) == [4])
        #expect(machine.activeCount(inGroup: 0) == 2)
        // The retry of the give-up it ended finds nothing to do.
        #expect(machine.startRetryDue(group: 0, now: t0 + .seconds(5)).isEmpty)
        #expect(machine.activeCount(inGroup: 0) == 2)
    }
}

extension PoolStateMachineTests {
    /// The retry of a give-up that a late worker ended must not cut a later give-up's cool-down
    /// short: one more failure waits a whole cool-down.
    @Test func theRetryOfAnEndedGiveUpDoesNotCutTheNextCooldownShort() {
        var machine = Machine(
            groups: [.init(kind: .process, minimum: 2, maximum: 2)], startFailureLimit: 2, startFailureCooldown: .seconds(5))
        _ = machine.start(now: t0)
        _ = machine.workerExited(1, termination: .exited(1), stderrTail: nil, now: t0)
        #expect(retries(machine.workerExited(3, termination: .exited(1), stderrTail: nil, now: t0)) == [t0 + .seconds(5)])
        // Worker 2 makes it after all; its group starts worker 4, and that one fails twice over.
        #expect(spawnedWorkers(machine.workerReady(2, now: t0 + .seconds(1))) == [4])
        #expect(spawnedWorkers(machine.workerExited(4, termination: .exited(1), stderrTail: nil, now: t0 + .seconds(2))) == [5])
        let gaveUp = machine.workerExited(5, termination: .exited(1), stderrTail: nil, now: t0 + .seconds(2))
        #expect(retries(gaveUp) == [t0 + .seconds(7)])
        // The first give-up's retry comes due: the second cool-down still runs.
        #expect(machine.startRetryDue(group: 0, now: t0 + .seconds(5)).isEmpty)
        #expect(machine.startFailures[0] != nil)
        // Its own retry ends it.
        #expect(spawnedWorkers(machine.startRetryDue(group: 0, now: t0 + .seconds(7))) == [6])
        #expect(machine.startFailures == [nil])
    }
}

extension PoolStateMachineTests {
    /// Jobs wait in the pool, not in a busy worker's held (prefetch) slots, while workers may
    /// start: with `processes(1...4).prefetch(8)`, a burst of 6 jobs starts three more workers
    /// at once instead of queueing 6 in the first one. Once every worker is ready and the group
    /// is at its maximum, held slots fill as before.
    @Test func heldSlotsWaitUntilNoWorkerMayStart() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 1, maximum: 4, jobsPerWorker: 1, prefetch: 8)])
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        var actions: [Machine.Action] = []
        for id: UInt64 in 1...6 { actions += machine.submit(request(id), now: t0) }
        #expect(dispatched(actions).map(\.job) == [1])  // the running slot only
        #expect(spawnedWorkers(actions) == [2, 3, 4])  // one per waiting job, up to the maximum
        #expect(machine.queuedCount == 5)

        #expect(dispatched(machine.workerReady(2, now: t0)).map(\.job) == [2])
        #expect(dispatched(machine.workerReady(3, now: t0)).map(\.job) == [3])
        // The last worker ready: none may start now, so the held slots take the rest.
        let last = dispatched(machine.workerReady(4, now: t0))
        #expect(last.map(\.job) == [4, 5, 6])
        #expect(last.first?.worker == 4)
        #expect(machine.queuedCount == 0)
    }

    /// A caller that may not wait (`trySubmit`) still gets a held slot while workers may start:
    /// refusing it with `queueFull` while a worker could hold it would be worse.
    @Test func aCallerThatMayNotWaitStillTakesAHeldSlot() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 1, maximum: 2, jobsPerWorker: 1, prefetch: 1)], maxQueued: 0)
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        #expect(dispatched(machine.submit(request(1), now: t0)).map(\.job) == [1])
        var mayNotWait = request(2)
        mayNotWait.waitsForRoom = false
        let actions = machine.submit(mayNotWait, now: t0)
        #expect(dispatched(actions).map(\.job) == [2])
        #expect(resumed(actions).isEmpty)
    }
}
