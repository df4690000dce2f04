@testable import Crew
import Testing

/// Held (prefetched) jobs called back from a busy worker for an idle one, without processes.
@Suite struct RecallMachineTests {
    typealias Machine = TestMachine
    let t0 = MonotonicTime(nanoseconds: 1_000_000_000)

    func request(
        _ id: UInt64, requirement: Machine.Requirement = .any, timeout: Duration? = nil, priority: JobPriority = .normal
    ) -> Machine.Request {
        Machine.Request(id: id, name: "Job\(id)", payload: [UInt8(id)], priority: priority, timeout: timeout, requirement: requirement, waiter: Int(id))
    }

    /// Two ready workers holding 4 jobs each beyond the one they run: jobs 1 and 3–6 on worker 2,
    /// 2 and 7–10 on worker 1 (free slots are taken last in, first out).
    func twoFullWorkers(timeouts: Set<UInt64> = [], priorities: [UInt64: JobPriority] = [:]) -> Machine {
        var machine = Machine(groups: [.init(kind: .process, minimum: 2, maximum: 2, jobsPerWorker: 1, prefetch: 4)])
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.workerReady(2, now: t0)
        var placed: [(job: UInt64, worker: Int)] = []
        for id: UInt64 in 1...10 {
            let request = request(id, timeout: timeouts.contains(id) ? .seconds(9) : nil, priority: priorities[id] ?? .normal)
            placed += dispatched(machine.submit(request, now: t0))
        }
        #expect(placed.filter { $0.worker == 2 }.map(\.job) == [1, 3, 4, 5, 6])
        #expect(placed.filter { $0.worker == 1 }.map(\.job) == [2, 7, 8, 9, 10])
        return machine
    }

    /// Ends worker 2's jobs; returns the actions of the last end (when it goes idle).
    func drainWorkerTwo(_ machine: inout Machine) -> [Machine.Action] {
        var last: [Machine.Action] = []
        for id: UInt64 in [1, 3, 4, 5, 6] { last = machine.jobEnded(id, on: 2, .success(.encoded([])), now: t0)! }
        return last
    }

    func recalls(_ actions: [Machine.Action]) -> [(worker: Int, jobs: [UInt64])] {
        actions.compactMap { if case .recall(let worker, let jobs) = $0 { (worker, jobs) } else { nil } }
    }

    @Test func anIdleWorkerCallsBackHalfOfABusyWorkersHeldJobsTheLastFirst() {
        var machine = twoFullWorkers()
        let idle = drainWorkerTwo(&machine)
        #expect(recalls(idle).map(\.worker) == [1])
        #expect(recalls(idle).first?.jobs == [10, 9])
        // Given back, each goes to the idle worker, not back to the one it came from.
        #expect(dispatched(machine.jobRecalled(10, on: 1, now: t0)!).map { [$0.job, UInt64($0.worker)] } == [[10, 2]])
        #expect(dispatched(machine.jobRecalled(9, on: 1, now: t0)!).map { [$0.job, UInt64($0.worker)] } == [[9, 2]])
        #expect(machine.workers[1]!.inFlight == [2, 7, 8])
        #expect(machine.workers[2]!.inFlight == [10, 9])
        // Worker 2 runs them and goes idle again: it calls back half of what is left, once each.
        _ = machine.jobEnded(10, on: 2, .success(.encoded([])), now: t0)
        let again = machine.jobEnded(9, on: 2, .success(.encoded([])), now: t0)!
        #expect(recalls(again).first?.jobs == [8])
        #expect(resumed(again) == [9: "ok"])
    }

    /// A worker runs the jobs it holds highest priority first: those gain the most from moving
    /// to an idle worker, so they are called back first.
    @Test func theHighestPriorityHeldJobsAreCalledBackFirst() {
        var machine = twoFullWorkers(priorities: [8: .high, 7: .critical])
        #expect(recalls(drainWorkerTwo(&machine)).first?.jobs == [7, 8])
    }

    /// The pool lists a worker's jobs in the order the worker runs them: a held job of higher
    /// priority goes ahead of held ones of lower priority, as in the worker. Once the job before
    /// them ends, the pool knows the higher one runs, and calls back the lower one.
    @Test func aHeldJobBehindAHigherOneThatStartedIsTheOneCalledBack() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 2, maximum: 2, jobsPerWorker: 1, prefetch: 2)])
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.workerReady(2, now: t0)
        #expect(dispatched(machine.submit(request(1), now: t0)).map(\.worker) == [2])
        #expect(dispatched(machine.submit(request(2), now: t0)).map(\.worker) == [1])
        #expect(dispatched(machine.submit(request(3, priority: .low), now: t0)).map(\.worker) == [2])
        #expect(dispatched(machine.submit(request(4, requirement: .worker(2), priority: .high), now: t0)).map(\.worker) == [2])
        #expect(machine.workers[2]!.inFlight == [1, 4, 3])
        _ = machine.jobEnded(1, on: 2, .success(.encoded([])), now: t0)  // worker 2 starts job 4
        #expect(recalls(machine.jobEnded(2, on: 1, .success(.encoded([])), now: t0)!).first?.jobs == [3])
    }

    @Test func aRecalledJobGoesBackToItsPlaceInTheQueue() {
        var machine = twoFullWorkers()
        _ = drainWorkerTwo(&machine)
        // Before the worker gives them back, new jobs fill worker 2 again and one more waits.
        for id: UInt64 in 11...15 { #expect(dispatched(machine.submit(request(id), now: t0)).map(\.worker) == [2]) }
        #expect(dispatched(machine.submit(request(16), now: t0)).isEmpty)
        // Job 10 was queued before 16, so it takes the slot it leaves first.
        #expect(dispatched(machine.jobRecalled(10, on: 1, now: t0)!).map(\.job) == [10])
        #expect(machine.queuedCount == 1)
    }

    @Test func onlyJobsTheIdleWorkerMayRunAreCalledBack() {
        // Jobs 7 and 8 may run on worker 1 alone, job 9 only on a worker tagged "gpu" (worker 1).
        var machine = Machine(groups: [
            .init(kind: .process, minimum: 1, maximum: 1, tags: ["gpu"], jobsPerWorker: 1, prefetch: 4),
            .init(kind: .process, minimum: 1, maximum: 1, jobsPerWorker: 1, prefetch: 4),
        ])
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        _ = machine.workerReady(2, now: t0)
        let requirements: [UInt64: Machine.Requirement] = [1: .tag("gpu"), 7: .worker(1), 8: .worker(1), 9: .tag("gpu")]
        var placed: [(job: UInt64, worker: Int)] = []
        for id: UInt64 in [1, 2, 7, 8, 9, 10] {
            placed += dispatched(machine.submit(request(id, requirement: requirements[id] ?? .any), now: t0))
        }
        #expect(placed.filter { $0.worker == 1 }.map(\.job) == [1, 7, 8, 9])
        #expect(placed.filter { $0.worker == 2 }.map(\.job) == [2, 10])
        _ = machine.jobEnded(2, on: 2, .success(.encoded([])), now: t0)
        #expect(recalls(machine.jobEnded(10, on: 2, .success(.encoded([])), now: t0)!).isEmpty)
    }

    @Test func aHeldJobThatReportedItsStartIsNotCalledBack() {
        // Job 10 has a timeout, so the worker reports when it starts it (out of order here: the
        // pool does not know the worker's order).
        var machine = twoFullWorkers(timeouts: [10])
        _ = machine.jobStarted(10, on: 1)
        #expect(recalls(drainWorkerTwo(&machine)).first?.jobs == [9, 8])
    }

    /// The worker that asked is gone when the jobs come back (it idled out), and the group may
    /// grow: the jobs are demand again, and a worker starts for them rather than leaving them
    /// queued until the busy worker's long job ends.
    @Test func aJobGivenBackWithNoSlotFreeStartsAWorker() {
        var machine = Machine(groups: [
            .init(kind: .process, minimum: 1, maximum: 2, jobsPerWorker: 1, prefetch: 2, idleTimeout: .seconds(1)),
        ])
        _ = machine.start(now: t0)
        _ = machine.workerReady(1, now: t0)
        #expect(dispatched(machine.submit(request(1), now: t0)).map(\.worker) == [1])
        #expect(spawnedWorkers(machine.submit(request(2), now: t0)) == [2])
        #expect(dispatched(machine.workerReady(2, now: t0)).map(\.job) == [2])
        var placed: [(job: UInt64, worker: Int)] = []
        for id: UInt64 in 3...6 { placed += dispatched(machine.submit(request(id), now: t0)) }
        var last: [Machine.Action] = []
        for id in [2] + placed.filter({ $0.worker == 2 }).map(\.job) { last = machine.jobEnded(id, on: 2, .success(.encoded([])), now: t0)! }
        let asked = recalls(last)
        #expect(asked.map(\.worker) == [1])
        // Worker 2 idles out and exits before worker 1 gives the jobs back.
        #expect(released(machine.idleCheck(2, now: t0 + .seconds(2))) == [2])
        _ = machine.workerExited(2, termination: .exited(0), stderrTail: nil, now: t0 + .seconds(2))
        var given: [Machine.Action] = []
        for job in asked.first?.jobs ?? [] { given += machine.jobRecalled(job, on: 1, now: t0 + .seconds(2))! }
        #expect(spawnedWorkers(given).count == 1)
        #expect(machine.queuedCount == asked.first?.jobs.count)
    }

    @Test func aJobGivenBackUnaskedIsAProtocolViolation() {
        var machine = twoFullWorkers()
        #expect(machine.jobRecalled(9, on: 1, now: t0) == nil)  // never called back
        _ = drainWorkerTwo(&machine)
        #expect(machine.jobRecalled(10, on: 2, now: t0) == nil)  // not that worker's
        #expect(machine.jobRecalled(10, on: 1, now: t0) != nil)
        #expect(machine.jobRecalled(10, on: 1, now: t0) == nil)  // given back twice
    }

    @Test func aJobCancelledWhileCalledBackOnlyFreesItsSlot() {
        var machine = twoFullWorkers()
        _ = drainWorkerTwo(&machine)
        #expect(resumed(machine.cancel(10, now: t0)) == [10: "cancelled"])
        let given = machine.jobRecalled(10, on: 1, now: t0)!
        #expect(dispatched(given).isEmpty)
        #expect(resumed(given).isEmpty)
        #expect(machine.queuedCount == 0)
        #expect(machine.workers[1]!.inFlight == [2, 7, 8, 9])
    }

    @Test func aBusyWorkerWithNothingHeldIsNotAskedAndNeitherIsAnyoneAfterShutdown() {
        var machine = twoFullWorkers()
        // Worker 1 still runs job 2 and holds nothing more (as far as the pool knows).
        for id: UInt64 in [7, 8, 9, 10] { _ = machine.jobEnded(id, on: 1, .success(.encoded([])), now: t0) }
        #expect(recalls(drainWorkerTwo(&machine)).isEmpty)

        var stopping = twoFullWorkers()
        _ = stopping.stopWorkers()
        #expect(recalls(drainWorkerTwo(&stopping)).isEmpty)
    }
}
