@testable import Crew
import Testing

/// The pool's policies as pure decisions: groups, sizing with an injected clock, tags,
/// targeting, backpressure, recycling and init jobs.
@Suite struct PoolPolicyMachineTests {
    typealias Machine = TestMachine
    typealias Group = Machine.Group

    func at(_ milliseconds: UInt64) -> MonotonicTime { MonotonicTime(nanoseconds: 1_000_000_000 + milliseconds * 1_000_000) }

    func request(_ id: UInt64, _ requirement: Machine.Requirement = .any, priority: JobPriority = .normal, waits: Bool = true) -> Machine.Request {
        Machine.Request(
            id: id, name: "Job\(id)", payload: [], priority: priority, timeout: nil, requirement: requirement,
            waiter: Int(id), waitsForRoom: waits)
    }

    let done: Result<JobOutput, CrewError> = .success(.encoded([]))

    // MARK: Sizing

    @Test func workersStartOnDemandUpToTheMaximumAndStopWhenIdleAboveTheMinimum() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 0, maximum: 2, idleTimeout: .seconds(10))])
        #expect(spawned(machine.start(now: at(0))).isEmpty)
        #expect(spawned(machine.submit(request(1), now: at(0))).map(\.worker) == [1])
        #expect(spawned(machine.submit(request(2), now: at(0))).map(\.worker) == [2])
        #expect(spawned(machine.submit(request(3), now: at(0))).isEmpty)  // at the maximum
        #expect(dispatched(machine.workerReady(1, now: at(5))).map(\.job) == [1])
        #expect(dispatched(machine.workerReady(2, now: at(5))).map(\.job) == [2])
        #expect(dispatched(machine.jobEnded(1, on: 1, done, now: at(6))!).map(\.job) == [3])
        let idle = machine.jobEnded(2, on: 2, done, now: at(7))!
        #expect(idle.contains { if case .checkIdle(2, let when) = $0 { when == at(10_007) } else { false } })
        // Not idle long enough: looked at again when it is (the pool keeps the earliest check).
        #expect(machine.idleCheck(2, now: at(5_000)).contains { if case .checkIdle(2, at(10_007)) = $0 { true } else { false } })
        #expect(released(machine.idleCheck(2, now: at(10_007))) == [2])
        // A worker that got work in the meantime is not stopped by an old check.
        _ = machine.jobEnded(3, on: 1, done, now: at(8))
        _ = machine.submit(request(4), now: at(9))
        #expect(machine.idleCheck(1, now: at(10_008)).isEmpty)
    }

    @Test func jobsCancelledWhileQueuedStartNoWorkersForLaterOnes() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 0, maximum: 4, idleTimeout: .seconds(1))])
        _ = machine.start(now: at(0))
        for id: UInt64 in 1...3 { #expect(spawned(machine.submit(request(id), now: at(0))).map(\.worker) == [Int(id)]) }
        // Cancelled while their workers start: their keys stay in the queue's heap.
        for id: UInt64 in 1...3 { #expect(resumed(machine.cancel(id, now: at(1))) == [Int(id): "cancelled"]) }
        for worker in 1...3 { #expect(dispatched(machine.workerReady(worker, now: at(2))).isEmpty) }
        // Idle, they go: the pool is back to no workers.
        for worker in 1...3 {
            #expect(released(machine.idleCheck(worker, now: at(2_000))) == [worker])
            _ = machine.workerExited(worker, termination: .exited(0), stderrTail: nil, now: at(2_001))
        }
        #expect(machine.activeCount(inGroup: 0) == 0)
        // One job wants one worker, not one per stale key.
        #expect(spawned(machine.submit(request(4), now: at(3_000))).count == 1)
        // Cancelling it leaves a fourth stale key, dropped when the next job is dispatched.
        _ = machine.cancel(4, now: at(3_001))
        #expect(machine.staleKeys[.any] == 4)
        _ = machine.workerReady(4, now: at(3_002))
        #expect(dispatched(machine.submit(request(5), now: at(3_003))).map(\.job) == [5])
        #expect(machine.staleKeys[.any] == nil)  // dropped on the way to job 5
    }

    @Test func theMinimumIsKeptWhenIdle() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 3, idleTimeout: .seconds(1))])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(1))
        _ = machine.submit(request(1), now: at(1))
        _ = machine.jobEnded(1, on: 1, done, now: at(2))
        #expect(machine.idleCheck(1, now: at(60_000)).isEmpty)
    }

    @Test func limitsChangeAtRuntime() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1)])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        #expect(spawned(machine.setLimits(group: 0, minimum: 3, maximum: 4, now: at(1))).map(\.worker) == [2, 3])
        _ = machine.workerReady(2, now: at(2))
        _ = machine.workerReady(3, now: at(2))
        _ = machine.submit(request(1), now: at(3))  // busy: worker 3 (last freed slot first)
        let lowered = machine.setLimits(group: 0, minimum: 1, maximum: 1, now: at(4))
        #expect(released(lowered).count == 2)
        #expect(machine.activeCount(inGroup: 0) == 1)
    }

    // MARK: Groups and qualification

    @Test func taggedJobsGoOnlyToWorkersWithTheTagAndImpossibleOnesFailAtOnce() {
        var machine = Machine(groups: [
            Group(kind: .thread, minimum: 1, maximum: 1, tags: ["io"]),
            Group(kind: .process, minimum: 1, maximum: 1, tags: ["cpu"]),
        ])
        #expect(spawned(machine.start(now: at(0))).map(\.group) == [0, 1])
        _ = machine.workerReady(1, now: at(0))
        _ = machine.workerReady(2, now: at(0))
        #expect(dispatched(machine.submit(request(1, .tag("cpu")), now: at(0))).map(\.worker) == [2])
        // The only "cpu" worker is busy: the job waits, although the "io" worker is free.
        #expect(dispatched(machine.submit(request(2, .tag("cpu")), now: at(0))).isEmpty)
        #expect(dispatched(machine.submit(request(3), now: at(0))).map(\.worker) == [1])
        #expect(resumed(machine.submit(request(4, .tag("gpu")), now: at(0))) == [4: "noEligibleWorker"])
        #expect(dispatched(machine.jobEnded(1, on: 2, done, now: at(1))!).map(\.job) == [2])
    }

    @Test func aTargetedJobWaitsForItsWorkerAndFailsWhenItIsGone() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 2, maximum: 2)])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.workerReady(2, now: at(0))
        let first = dispatched(machine.submit(request(1, .worker(1)), now: at(0)))
        #expect(first.map(\.worker) == [1])
        #expect(dispatched(machine.submit(request(2, .worker(1)), now: at(0))).isEmpty)  // worker 2 is free, but not its target
        #expect(resumed(machine.submit(request(3, .worker(99)), now: at(0))) == [3: "noEligibleWorker"])
        let exit = machine.workerExited(1, termination: .signaled(9), stderrTail: nil, now: at(1))
        #expect(resumed(exit) == [1: "workerCrashed", 2: "noEligibleWorker"])
    }

    @Test func theBestQueuedJobWinsAcrossRequirements() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1, tags: ["a"])])
        _ = machine.start(now: at(0))
        _ = machine.submit(request(1, .any, priority: .low), now: at(0))
        _ = machine.submit(request(2, .tag("a"), priority: .high), now: at(0))
        _ = machine.submit(request(3, .worker(1)), now: at(0))
        var order = dispatched(machine.workerReady(1, now: at(0))).map(\.job)
        while let last = order.last, order.count < 3 {
            order += dispatched(machine.jobEnded(last, on: 1, done, now: at(1))!).map(\.job)
        }
        #expect(order == [2, 3, 1])
    }

    // MARK: Backpressure

    @Test func aFullQueueRefusesOrParksAndAdmitsInOrder() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1)], maxQueued: 2)
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.submit(request(1), now: at(0))  // runs
        _ = machine.submit(request(2), now: at(0))
        _ = machine.submit(request(3), now: at(0))  // queue full now
        #expect(resumed(machine.submit(request(4, waits: false), now: at(0))) == [4: "queueFull"])
        #expect(machine.submit(request(5), now: at(0)).isEmpty)  // parked
        #expect(machine.overflowCount == 1)
        _ = machine.jobEnded(1, on: 1, done, now: at(1))  // 2 runs, 5 enters the queue
        #expect(machine.overflowCount == 0)
        #expect(machine.queuedCount == 2)
        #expect(resumed(machine.cancel(5, now: at(2))) == [5: "cancelled"])
    }

    /// The limit is on jobs that wait: with the queue full of jobs only a busy group can take,
    /// a job another group's free worker can take starts there at once, and leaves nothing
    /// behind in the queues (no key of a job that never waited).
    @Test func aFullQueueStillHandsAJobToAFreeWorkerThatCanTakeIt() {
        var machine = Machine(
            groups: [
                Group(kind: .process, minimum: 1, maximum: 1, tags: ["gpu"]),
                Group(kind: .process, minimum: 1, maximum: 1),
            ],
            maxQueued: 1)
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.workerReady(2, now: at(0))
        #expect(dispatched(machine.submit(request(1, .tag("gpu")), now: at(0))).map(\.worker) == [1])
        #expect(dispatched(machine.submit(request(2, .tag("gpu")), now: at(0))).isEmpty)  // the queue is full now
        #expect(dispatched(machine.submit(request(3, waits: false), now: at(0))).map(\.worker) == [2])
        #expect(resumed(machine.submit(request(4, waits: false), now: at(0))) == [4: "queueFull"])
        #expect(machine.queuedCount == 1)
        #expect(machine.staleKeys.isEmpty)
    }

    // MARK: Recycling

    @Test func aWorkerRetiresAfterItsMaximumOfJobsAndItsReplacementStartsDuringItsLastJob() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1, maxJobsPerWorker: 2)])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.submit(request(1), now: at(0))
        let last = machine.submit(request(2), now: at(0))
        #expect(dispatched(last).isEmpty)
        let second = machine.jobEnded(1, on: 1, done, now: at(1))!
        #expect(dispatched(second).map(\.job) == [2])
        #expect(spawned(second).map(\.worker) == [2])  // while job 2 runs
        _ = machine.submit(request(3), now: at(1))
        #expect(dispatched(machine.workerReady(2, now: at(2))).map { $0 } .map(\.worker) == [2])
        #expect(released(machine.jobEnded(2, on: 1, done, now: at(3))!) == [1])
    }

    @Test func aWorkerPastItsMaximumAgeServesUntilItsSuccessorIsReady() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1, maxAge: .seconds(60))])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.submit(request(1), now: at(0))
        let aged = machine.jobEnded(1, on: 1, done, now: at(61_000))!
        #expect(spawned(aged).map(\.worker) == [2])
        #expect(released(aged).isEmpty)
        // No dip in capacity: the old worker still takes jobs while its successor starts.
        #expect(dispatched(machine.submit(request(2), now: at(61_001))).map(\.worker) == [1])
        #expect(spawned(machine.jobEnded(2, on: 1, done, now: at(61_002))!).isEmpty)  // one successor only
        let ready = machine.workerReady(2, now: at(61_005))
        #expect(released(ready) == [1])
        #expect(dispatched(machine.submit(request(3), now: at(61_006))).map(\.worker) == [2])
    }

    @Test func aMemoryHandOverWaitsForTheWorkersJobs() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1, jobsPerWorker: 2)])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.submit(request(1), now: at(0))
        _ = machine.submit(request(2), now: at(0))
        _ = machine.jobEnded(1, on: 1, done, now: at(1))
        let handOver = machine.handOver(1, because: "memory", now: at(1))
        #expect(spawned(handOver).map(\.worker) == [2])
        #expect(dispatched(machine.submit(request(3), now: at(1))).map(\.worker) == [1])
        #expect(released(machine.workerReady(2, now: at(2))).isEmpty)  // jobs 2 and 3 still run there
        _ = machine.jobEnded(2, on: 1, done, now: at(3))
        #expect(released(machine.jobEnded(3, on: 1, done, now: at(4))!) == [1])
    }

    @Test func aSuccessorThatDiesStartingLeavesItsPredecessorServing() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1)])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        #expect(spawned(machine.handOver(1, because: "memory", now: at(1))).map(\.worker) == [2])
        let died = machine.workerExited(2, termination: .exited(1), stderrTail: nil, now: at(2))
        #expect(spawned(died).isEmpty)  // worker 1 is still there and serving
        #expect(dispatched(machine.submit(request(1), now: at(3))).map(\.worker) == [1])
        // The next check tries again.
        #expect(spawned(machine.handOver(1, because: "memory", now: at(4))).map(\.worker) == [3])
    }

    @Test func loweringTheMaximumEndsAStartingSuccessorAndTheHandOverStartsAgain() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1)])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        #expect(spawned(machine.handOver(1, because: "memory", now: at(1))).map(\.worker) == [2])
        let lowered = machine.setLimits(group: 0, minimum: 1, maximum: 1, now: at(2))
        #expect(killed(lowered) == [2])  // the starting successor, not a stranded "retiring" one
        _ = machine.workerExited(2, termination: .signaled(9), stderrTail: nil, now: at(3))
        #expect(machine.workers.count == 1)
        #expect(spawned(machine.handOver(1, because: "memory", now: at(4))).map(\.worker) == [3])
    }

    @Test func anIdleWorkerPastItsAgeIsLookedAtAgainWhenItsSuccessorDies() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1, maxAge: .seconds(60))])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        #expect(spawned(machine.idleCheck(1, now: at(60_000))).map(\.worker) == [2])
        let died = machine.workerExited(2, termination: .exited(1), stderrTail: nil, now: at(60_010))
        #expect(idleChecks(died) == [1])
        #expect(spawned(machine.idleCheck(1, now: at(60_010))).map(\.worker) == [3])
    }

    @Test func anIdleWorkerPastItsAgeAboveTheMinimumJustGoes() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 0, maximum: 1, maxAge: .seconds(60))])
        _ = machine.start(now: at(0))
        _ = machine.submit(request(1), now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.jobEnded(1, on: 1, done, now: at(1))
        let check = machine.idleCheck(1, now: at(60_000))
        #expect(released(check) == [1])
        #expect(spawned(check).isEmpty)
    }

    /// A group gives up after `startFailureLimit` workers in a row failed to start, having
    /// started that many: a worker stopped for failing to start (its setup job failed, its
    /// handshake was refused) used to be replaced at once, before its exit was counted, so the
    /// group started one more only to give up as it exited.
    @Test func aGroupThatGivesUpStartedNoMoreWorkersThanItsLimit() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1)], startFailureLimit: 2)
        var spawns = spawnedWorkers(machine.start(now: at(0)))
        for round in 0..<2 {
            let worker = spawns.last!
            spawns += spawnedWorkers(machine.startFailed(worker, message: "refused", now: at(UInt64(round * 10))))
            spawns += spawnedWorkers(machine.workerExited(worker, termination: .exited(1), stderrTail: nil, now: at(UInt64(round * 10 + 1))))
        }
        #expect(spawns == [1, 2])
        #expect(machine.startFailures[0] != nil)  // given up
    }

    @Test func workersThatFailAfterTheirGroupGaveUpScheduleNoMoreRetries() {
        var machine = Machine(
            groups: [Group(kind: .process, minimum: 3, maximum: 3)], startFailureLimit: 2, startFailureCooldown: .seconds(5))
        _ = machine.start(now: at(0))
        var retryTimes: [MonotonicTime] = []
        for (index, worker) in [1, 2, 3].enumerated() {
            retryTimes += retries(machine.workerExited(worker, termination: .exited(1), stderrTail: nil, now: at(UInt64(index * 50))))
        }
        #expect(retryTimes == [at(50) + .seconds(5)])
    }

    // MARK: Init jobs

    @Test func theSetupJobRunsBeforeWorkAndItsFailureCountsAsAFailedStart() {
        var machine = Machine(
            groups: [Group(kind: .process, minimum: 1, maximum: 1)], startFailureLimit: 2, setup: .init(name: "Setup", payload: [9]))
        _ = machine.start(now: at(0))
        _ = machine.submit(request(1), now: at(0))
        let ready = machine.workerReady(1, now: at(0))
        let setup = ready.compactMap { if case .dispatch(let job) = $0 { (job.jobID, job.name) } else { nil } }
        #expect(setup.map(\.1) == ["Setup"])  // not job 1 yet
        #expect(dispatched(machine.jobEnded(setup[0].0, on: 1, done, now: at(1))!).map(\.job) == [1])

        // Another worker whose setup job fails is stopped; twice in a row stops the respawning.
        _ = machine.workerExited(1, termination: .signaled(9), stderrTail: nil, now: at(2))
        _ = machine.submit(request(2), now: at(2))
        for worker in [2, 3] {
            let actions = machine.workerReady(worker, now: at(3))
            guard let (jobID, _) = actions.compactMap({ if case .dispatch(let job) = $0 { (job.jobID, job.name) } else { nil } }).first else {
                Issue.record("no setup job for worker \(worker)")
                return
            }
            _ = machine.jobEnded(jobID, on: worker, .failure(CrewError(.jobFailed, "no database", jobName: "Setup")), now: at(4))
            let exit = machine.workerExited(worker, termination: .signaled(9), stderrTail: nil, now: at(5))
            if worker == 3 {
                #expect(resumed(exit) == [2: "workerStartFailed"])
                #expect(spawned(exit).isEmpty)
            }
        }
    }

    @Test func aBroadcastReachesReadyWorkersAndIsReplayedOnNewOnes() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 2, maximum: 2)])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.addInitJob(.init(name: "Update", payload: [1]))
        #expect(machine.broadcastTargets == [1])  // worker 2 is still starting: it replays
        let replay = machine.workerReady(2, now: at(1))
        #expect(replay.contains { if case .dispatch(let job) = $0 { job.workerID == 2 && job.name == "Update" } else { false } })
    }

    /// A broadcast's replay runs under the broadcast's timeout (it ran with none: a replay that
    /// hung kept its worker starting up for ever, a worker the group never replaced), and one
    /// that exceeds it is a failure to start, which counts toward the group's give-up.
    @Test func aReplayThatExceedsTheBroadcastsTimeoutIsAFailureToStart() {
        var machine = Machine(
            groups: [Group(kind: .process, minimum: 2, maximum: 2)], startFailureLimit: 1, startFailureCooldown: .seconds(5))
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.addInitJob(.init(name: "Update", payload: [1], timeout: .seconds(1)))
        let replay = machine.workerReady(2, now: at(1))
        let replayed: (jobID: UInt64, timeout: Duration?)? = replay.lazy.compactMap {
            if case .dispatch(let job) = $0, job.workerID == 2, job.name == "Update" { (job.jobID, job.timeout) } else { nil }
        }.first
        #expect(replayed?.timeout == .seconds(1))
        guard let jobID = replayed?.jobID else { return }
        #expect(killed(machine.timeoutExpired(jobID: jobID, after: .seconds(1), now: at(1_001))) == [2])
        let exit = machine.workerExited(2, termination: .signaled(9), stderrTail: nil, now: at(1_002))
        #expect(retries(exit) == [at(1_002) + .seconds(5)])  // the group gave up, for its cool-down
        #expect(spawnedWorkers(exit).isEmpty)
    }

    /// Lowering a group's maximum to 0 during a drain fails the jobs only it could take; if they
    /// were all the drain waited for, it is over then (shutdown waited for an unrelated event,
    /// or for its drain timeout when none came).
    @Test func jobsFailedBySetLimitsDuringADrainEndIt() {
        var machine = Machine(groups: [
            Group(kind: .process, minimum: 0, maximum: 1, tags: ["a"]),
            Group(kind: .process, minimum: 1, maximum: 1),
        ])
        _ = machine.start(now: at(0))
        _ = machine.submit(request(1, .tag("a")), now: at(0))  // its worker is starting
        #expect(!machine.beginShutdown(cancelPending: false).contains { if case .drained = $0 { true } else { false } })
        let lowered = machine.setLimits(group: 0, minimum: 0, maximum: 0, now: at(1))
        #expect(resumed(lowered) == [1: "noEligibleWorker"])
        #expect(lowered.contains { if case .drained = $0 { true } else { false } })
    }
}

extension PoolPolicyMachineTests {
    /// An idle worker at its group's minimum, whose idle check comes first, is still handed over
    /// at its maximum age: the idle check schedules the age check it stood in for.
    @Test func anIdleWorkerAtTheMinimumIsHandedOverAtItsMaximumAge() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 1, maximum: 1, idleTimeout: .seconds(1), maxAge: .seconds(10))])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.submit(.init(id: 1, name: "Job", payload: [1], priority: .normal, timeout: nil, waiter: 1), now: at(0))
        let ended = machine.jobEnded(1, on: 1, .success(.encoded([])), now: at(0)) ?? []
        #expect(idleChecks(ended) == [1])  // at t0 + 1 s, the earlier of the two
        let atIdle = machine.idleCheck(1, now: at(1_000))
        #expect(spawnedWorkers(atIdle).isEmpty)  // at the minimum: it stays
        #expect(idleChecks(atIdle) == [1])  // and is looked at again at its maximum age
        let atAge = machine.idleCheck(1, now: at(10_000))
        #expect(spawnedWorkers(atAge) == [2])  // its successor starts
    }

    /// A worker that never gets a job is looked at when it reaches its maximum age, too: the
    /// check is scheduled when it becomes ready, not only when a job of its ends.
    @Test func aWorkerThatNeverRanAJobIsHandedOverAtItsMaximumAge() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 1, maximum: 1, maxAge: .seconds(10))])
        _ = machine.start(now: at(0))
        let ready = machine.workerReady(1, now: at(5))
        #expect(ready.contains { if case .checkIdle(1, let when) = $0 { when == at(10_000) } else { false } })
        #expect(spawnedWorkers(machine.idleCheck(1, now: at(10_000))) == [2])
    }
}

extension PoolPolicyMachineTests {
    /// A caller waiting for room whose job goes straight to a free slot, and is that worker's
    /// last job (its retirement looks at the queue again), runs once; the caller behind it
    /// keeps its place instead of being dropped.
    @Test func aJobFromTheOverflowThatRetiresItsWorkerRunsOnceAndLosesNoOtherCaller() {
        var machine = Machine(
            groups: [Group(kind: .process, minimum: 1, maximum: 1, jobsPerWorker: 3, maxJobsPerWorker: 3)], maxQueued: 1)
        _ = machine.start(now: at(0))
        _ = machine.submit(request(1), now: at(0))  // queued
        for id: UInt64 in 2...4 { #expect(machine.submit(request(id), now: at(0)).isEmpty) }  // waiting for room
        #expect(machine.overflowCount == 3)
        let actions = machine.workerReady(1, now: at(1))
        // Its three slots take jobs 1 to 3; the third is its last, and it retires.
        #expect(dispatched(actions).map(\.job) == [1, 2, 3])
        #expect(resumed(actions).isEmpty)
        // Job 4 waits (in the queue now), and job 3 is not queued to run again.
        #expect(Set(machine.queued.keys) == [4])
        #expect(machine.overflowCount == 0)
        #expect(Set(machine.running.keys) == [1, 2, 3])
    }
}

extension PoolPolicyMachineTests {
    /// A worker handing over to a successor (its age) that reaches its job limit meanwhile
    /// retires with that successor as its replacement: the group does not start a second one
    /// and end up above its maximum.
    @Test func aWorkerThatRetiresDuringItsHandOverGetsNoSecondReplacement() {
        var machine = Machine(
            groups: [Group(kind: .process, minimum: 1, maximum: 1, maxJobsPerWorker: 2, maxAge: .seconds(10))])
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        #expect(dispatched(machine.submit(request(1), now: at(1))).map(\.worker) == [1])
        // Past its age when its first job ends: its successor starts, and it serves on meanwhile.
        #expect(spawnedWorkers(machine.jobEnded(1, on: 1, done, now: at(11_000))!) == [2])
        // Its second job is its last: it retires, and worker 2, already starting, replaces it.
        let actions = machine.submit(request(2), now: at(11_001))
        #expect(dispatched(actions).map(\.worker) == [1])
        #expect(spawnedWorkers(actions).isEmpty)
        #expect(machine.activeCount(inGroup: 0) == 1)
        _ = machine.workerReady(2, now: at(11_002))
        #expect(released(machine.jobEnded(2, on: 1, done, now: at(11_003))!) == [1])
        #expect(machine.workers.keys.sorted() == [1, 2])
    }
}

extension PoolPolicyMachineTests {
    /// Callers waiting for room get into the queue as soon as there is room: also when the jobs
    /// admitted first go straight to free slots and leave the queue empty again. A job
    /// submitted later must not take that room and start before them.
    @Test func callersWaitingForRoomFillTheQueueAgainAfterAdmittedJobsStartAtOnce() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 1, jobsPerWorker: 2)], maxQueued: 1)
        _ = machine.start(now: at(0))
        _ = machine.submit(request(1), now: at(0))  // queued: its worker is starting
        for id: UInt64 in 2...4 { #expect(machine.submit(request(id), now: at(0)).isEmpty) }  // waiting for room
        // Two slots: job 1 from the queue, job 2 admitted from the overflow and started at once.
        #expect(dispatched(machine.workerReady(1, now: at(1))).map(\.job) == [1, 2])
        // The queue is empty again: job 3 gets in, job 4 still waits for room.
        #expect(machine.queued.keys.sorted() == [3])
        #expect(machine.overflowCount == 1)
        // A later job waits for room too, behind 3 and 4.
        #expect(machine.submit(request(5), now: at(2)).isEmpty)
        #expect(dispatched(machine.jobEnded(1, on: 1, done, now: at(3))!).map(\.job) == [3])
        #expect(dispatched(machine.jobEnded(2, on: 1, done, now: at(4))!).map(\.job) == [4])
        #expect(dispatched(machine.jobEnded(3, on: 1, done, now: at(5))!).map(\.job) == [5])
    }
}

extension PoolPolicyMachineTests {
    /// Jobs that lowering a group's maximum fails make room in the queue: a caller waiting for
    /// room gets in at once ("however it came"), ahead of a job submitted after it.
    @Test func roomMadeBySetLimitsGoesToTheCallersWaitingForIt() {
        var machine = Machine(
            groups: [
                Group(kind: .process, minimum: 1, maximum: 1),
                Group(kind: .process, minimum: 1, maximum: 1, tags: ["t"]),
            ],
            maxQueued: 1)
        _ = machine.start(now: at(0))
        _ = machine.workerReady(1, now: at(0))
        _ = machine.workerReady(2, now: at(0))
        #expect(dispatched(machine.submit(request(1, .tag("t")), now: at(0))).map(\.worker) == [2])
        #expect(dispatched(machine.submit(request(2), now: at(0))).map(\.worker) == [1])
        #expect(machine.submit(request(3, .tag("t")), now: at(0)).isEmpty)  // queued: the queue is full
        #expect(machine.submit(request(4), now: at(0)).isEmpty)  // waits for room
        // No worker may carry "t" any more: job 3 fails, and job 4 takes its place in the queue.
        #expect(resumed(machine.setLimits(group: 1, minimum: 0, maximum: 0, now: at(1))) == [3: "noEligibleWorker"])
        #expect(machine.queued.keys.sorted() == [4])
        #expect(machine.overflowCount == 0)
        #expect(machine.submit(request(5), now: at(2)).isEmpty)  // waits for room, behind 4
        #expect(dispatched(machine.jobEnded(2, on: 1, done, now: at(3))!).map(\.job) == [4])
    }
}
