@testable import Crew
import Testing

@Suite struct Scaling {
    typealias Machine = TestMachine
    let t0 = MonotonicTime(nanoseconds: 1_000_000_000)

    func request(_ id: UInt64, _ requirement: Machine.Requirement = .any) -> Machine.Request {
        Machine.Request(id: id, name: "Job\(id)", payload: [], priority: .normal, timeout: nil, requirement: requirement, waiter: Int(id))
    }

    /// One group tagged "gpu", 0...2 workers. A job for any worker starts worker 1; a second job,
    /// for "gpu", waits too: 2 jobs wait for 1 slot, so a second worker starts (a starting worker's
    /// slot used to be counted for both queues).
    @Test func aStartingWorkerCountsForOneQueueOnly() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 0, maximum: 2, tags: ["gpu"])])
        _ = machine.start(now: t0)
        #expect(spawned(machine.submit(request(1), now: t0)).count == 1)
        #expect(spawned(machine.submit(request(2, .tag("gpu")), now: t0)).count == 1)
    }

    /// A plain group and a "gpu" group. A "gpu" job starts a gpu worker; a job for any worker then
    /// waits too, and a plain worker starts for it (the gpu worker's one slot used to be counted
    /// for both).
    @Test func aJobForAnyWorkerStartsOneBesideAStartingTaggedWorker() {
        var machine = Machine(groups: [
            .init(kind: .process, minimum: 0, maximum: 2),
            .init(kind: .process, minimum: 0, maximum: 2, tags: ["gpu"]),
        ])
        _ = machine.start(now: t0)
        #expect(spawned(machine.submit(request(1, .tag("gpu")), now: t0)).map(\.group) == [1])
        #expect(spawned(machine.submit(request(2), now: t0)).count == 1)
    }

    /// 0...2 workers, maxQueued 0: a `run` caller waits for room, and a worker starts for it (none
    /// used to, so it waited for ever).
    @Test func aCallerWaitingForRoomStartsAWorker() {
        var machine = Machine(groups: [.init(kind: .process, minimum: 0, maximum: 2)], maxQueued: 0)
        _ = machine.start(now: t0)
        #expect(spawned(machine.submit(request(1), now: t0)).count == 1)
    }
}
