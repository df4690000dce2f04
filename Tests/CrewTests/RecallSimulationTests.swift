@testable import Crew
import Testing

/// The state machine driven at random against model workers that behave like `WorkerServer`
/// (held jobs wait in order, a recall gives back only a job still waiting, a start is announced
/// with the answer before it, a cancel that overtakes its job is remembered), with submits of
/// every requirement, cancels that may overtake earlier frames, timeouts, retirements, slow
/// workers, drains and shutdowns. After every step each ready worker's free and held slots and
/// jobs in flight add up to its slots, and, while nothing is on its way to or from it, the pool
/// sees the jobs it has; at the end every job's caller was resumed exactly
/// once, and no job ran twice.
@Suite struct RecallSimulationTests {
    typealias Machine = TestMachine

    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    enum ToWorker { case run(UInt64, announce: Bool, priority: JobPriority), cancel(UInt64), recall(UInt64) }
    enum ToPool { case started(UInt64), recalled(UInt64), result(UInt64), cancelled(UInt64) }

    final class SimWorker {
        let id: Int
        let concurrency: Int
        var ready = false
        var releasing = false
        var running: [UInt64] = []
        /// Held jobs, highest priority first, then in the order they came (like `WorkerServer`).
        var pending: [(UInt64, Bool, JobPriority)] = []
        var earlyCancels: Set<UInt64> = []
        var inbox: [ToWorker] = []
        var outbox: [ToPool] = []
        init(id: Int, concurrency: Int) { self.id = id; self.concurrency = concurrency }
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    func simulate(seed: UInt64, groups: [Machine.Group], maxQueued: Int?, steps: Int) throws -> (resumes: Int, recalls: Int, given: Int) {
        var rng = SplitMix(state: seed)
        var machine = Machine(groups: groups, maxQueued: maxQueued)
        let t0 = MonotonicTime(nanoseconds: 1_000_000_000)
        var sims: [Int: SimWorker] = [:]
        var starting: [Int] = []
        var resumedCount: [Int: Int] = [:]
        var ranOn: [UInt64: [Int]] = [:]
        var submitted: Set<UInt64> = []
        var nextJob: UInt64 = 1
        var recallsSent = 0
        var givenBack = 0
        var exited: [Int] = []

        var drainedSeen = false
        func apply(_ actions: [Machine.Action]) throws {
            for action in actions {
                if case .drained = action, !drainedSeen, seed % 4 == 1 { drainedSeen = true; try apply(machine.stopWorkers()) }
                switch action {
                case .dispatch(let job):
                    guard let sim = sims[job.workerID] else { throw Failure(description: "dispatch to unknown worker \(job.workerID)") }
                    sim.inbox.append(.run(job.jobID, announce: job.announceStart, priority: job.priority))
                case .recall(let w, let jobs):
                    recallsSent += jobs.count
                    for job in jobs { sims[w]?.inbox.append(.recall(job)) }
                case .requestCancel(let w, let job):
                    if Bool.random(using: &rng) { sims[w]?.inbox.insert(.cancel(job), at: 0) } else { sims[w]?.inbox.append(.cancel(job)) }
                case .resume(let waiter, _):
                    resumedCount[waiter, default: 0] += 1
                    if resumedCount[waiter]! > 1 { throw Failure(description: "job \(waiter) resumed twice") }
                case .spawn(let w, let group):
                    sims[w] = SimWorker(id: w, concurrency: groups[group].jobsPerWorker)
                    starting.append(w)
                case .kill(let w):
                    exited.append(w)
                case .release(let w):
                    sims[w]?.releasing = true
                default:
                    break
                }
            }
        }

        func workerStep(_ sim: SimWorker) {
            // deliver one inbound message
            guard !sim.inbox.isEmpty else { return }
            switch sim.inbox.removeFirst() {
            case .run(let job, let announce, let priority):
                if sim.earlyCancels.remove(job) != nil { sim.outbox.append(.cancelled(job)); return }
                if sim.running.count < sim.concurrency {
                    sim.running.append(job)
                } else {
                    sim.pending.insert((job, announce, priority), at: sim.pending.firstIndex { $0.2 < priority } ?? sim.pending.count)
                }
            case .cancel(let job):
                if let i = sim.pending.firstIndex(where: { $0.0 == job }) {
                    sim.pending.remove(at: i)
                    sim.outbox.append(.cancelled(job))
                } else if !sim.running.contains(job) {
                    sim.earlyCancels.insert(job)
                }
            case .recall(let job):
                if let i = sim.pending.firstIndex(where: { $0.0 == job }) {
                    sim.pending.remove(at: i)
                    sim.outbox.append(.recalled(job))
                }
            }
        }

        func finishOne(_ sim: SimWorker, index: Int) {
            let job = sim.running.remove(at: index)
            ranOn[job, default: []].append(sim.id)
            sim.outbox.append(.result(job))
            if !sim.pending.isEmpty {
                let (next, announce, _) = sim.pending.removeFirst()
                sim.running.append(next)
                if announce { sim.outbox.append(.started(next)) }
            }
        }

        func poolStep(_ sim: SimWorker) throws {
            guard !sim.outbox.isEmpty else { return }
            let message = sim.outbox.removeFirst()
            let outcome: [Machine.Action]?
            switch message {
            case .started(let j): outcome = machine.jobStarted(j, on: sim.id)
            case .recalled(let j): givenBack += 1; outcome = machine.jobRecalled(j, on: sim.id, now: t0)
            case .result(let j): outcome = machine.jobEnded(j, on: sim.id, .success(.encoded([])), now: t0)
            case .cancelled(let j):
                outcome = machine.jobEnded(j, on: sim.id, .failure(CrewError(.cancelled, "c")), now: t0)
            }
            guard let outcome else { throw Failure(description: "protocol violation on \(message) from \(sim.id)") }
            try apply(outcome)
        }

        func checkSlots() throws {
            for (id, worker) in machine.workers where worker.acceptsJobs {
                let slots = machine.freeSlots.filter { $0 == id }.count + machine.heldSlots.filter { $0 == id }.count
                let per = machine.groups[worker.group].slotsPerWorker
                if slots + worker.inFlight.count != per {
                    throw Failure(description: "worker \(id): \(slots) free slots + \(worker.inFlight.count) in flight != \(per)")
                }
                // With nothing on its way either way, the pool sees the jobs the worker has. (Not
                // always in the worker's order: a job of higher priority sent while the worker
                // started the next held one is ahead of that one in the pool's view.)
                guard let sim = sims[id], sim.inbox.isEmpty, sim.outbox.isEmpty else { continue }
                if Set(worker.inFlight) != Set(sim.running + sim.pending.map(\.0)) || worker.inFlight.count != sim.running.count + sim.pending.count {
                    throw Failure(description: "worker \(id): the pool sees \(worker.inFlight), the worker runs \(sim.running) and holds \(sim.pending.map(\.0))")
                }
            }
        }

        try apply(machine.start(now: t0))
        var step = 0
        while true {
            step += 1
            let quiet = starting.isEmpty && exited.isEmpty && sims.values.allSatisfy { $0.inbox.isEmpty && $0.outbox.isEmpty && $0.running.isEmpty }
            if step > steps && quiet { break }
            if step > steps * 20 { throw Failure(description: "did not settle") }
            let roll = Int.random(in: 0..<100, using: &rng)
            if !exited.isEmpty && roll < 10 {
                let w = exited.removeFirst()
                sims[w] = nil
                try apply(machine.workerExited(w, termination: .exited(0), stderrTail: nil, now: t0))
                continue
            }
            if !starting.isEmpty && roll < 20 {
                let w = starting.removeFirst()
                if let sim = sims[w] { sim.ready = true }
                try apply(machine.workerReady(w, now: t0))
                continue
            }
            if step <= steps && roll < 35 {
                let id = nextJob
                nextJob += 1
                submitted.insert(id)
                let readyIDs = machine.workers.keys.sorted()
                let pick = Int.random(in: 0..<10, using: &rng)
                let requirement: Machine.Requirement =
                    if pick == 0, let w = readyIDs.randomElement(using: &rng) { .worker(w) } else if pick == 1 { .tag("gpu") } else { .any }
                let timeout: Duration? = Bool.random(using: &rng) ? .seconds(100) : nil
                let priority: JobPriority = Int.random(in: 0..<4, using: &rng) == 0 ? .high : .normal
                try apply(machine.submit(
                    Machine.Request(id: id, name: "J\(id)", payload: [], priority: priority, timeout: timeout, requirement: requirement, waiter: Int(id)),
                    now: t0))
                continue
            }
            if roll == 38, let (job, _) = machine.running.filter({ !$0.value.isInit && $0.value.pendingTimeout == nil }).randomElement(using: &rng) {
                try apply(machine.timeoutExpired(jobID: job, after: .seconds(1), now: t0))
                continue
            }
            if step == steps / 2 && (seed % 5 == 0 || seed % 4 == 1) { try apply(machine.beginShutdown(cancelPending: seed % 10 == 0)) }
            if step <= steps && roll < 38, let victim = submitted.randomElement(using: &rng) {
                try apply(machine.cancel(victim, now: t0))
                continue
            }
            guard let sim = Array(sims.values).randomElement(using: &rng) else { continue }
            let r2 = Int.random(in: 0..<3, using: &rng)
            if r2 == 0 { workerStep(sim) }
            else if r2 == 1 { try poolStep(sim) }
            else if !sim.running.isEmpty, sim.id % 3 != 1 || Int.random(in: 0..<12, using: &rng) == 0 {
                // worker ids ≡ 1 mod 3 are slow: their jobs end rarely
                finishOne(sim, index: Int.random(in: 0..<sim.running.count, using: &rng))
            }
            if sim.releasing && sim.running.isEmpty && sim.pending.isEmpty && sim.inbox.isEmpty && sim.outbox.isEmpty && !exited.contains(sim.id) {
                exited.append(sim.id)
            }
            try checkSlots()
        }
        // Drain: let all workers finish.
        for job in submitted where resumedCount[Int(job)] == nil {
            throw Failure(description: "job \(job) never resumed (queued: \(machine.queued[job] != nil), running: \(String(describing: machine.running[job])))")
        }
        for (job, workers) in ranOn where workers.count > 1 {
            throw Failure(description: "job \(job) ran \(workers.count) times on \(workers)")
        }
        return (resumedCount.count, recallsSent, givenBack)
    }

    @Test(arguments: 0..<300) func randomRunsLoseNothing(seed: Int) throws {
        let groups: [Machine.Group] = switch seed % 3 {
        case 0: [.init(kind: .process, minimum: 3, maximum: 3, jobsPerWorker: 1, prefetch: 4)]
        case 1: [.init(kind: .process, minimum: 2, maximum: 2, tags: ["gpu"], jobsPerWorker: 2, prefetch: 3, maxJobsPerWorker: 7),
                 .init(kind: .process, minimum: 2, maximum: 2, jobsPerWorker: 1, prefetch: 2)]
        default: [.init(kind: .process, minimum: 1, maximum: 3, tags: ["gpu"], jobsPerWorker: 1, prefetch: 5, maxJobsPerWorker: 9)]
        }
        let result = try simulate(seed: UInt64(seed) &* 7919 &+ 1, groups: groups, maxQueued: seed % 2 == 0 ? nil : 4, steps: 400)
        #expect(result.resumes > 0)
    }

    /// The runs above do exercise recalls: over the first 30 seeds, many are asked for and many
    /// jobs come back.
    @Test func theRunsCallJobsBack() throws {
        var (recalls, given) = (0, 0)
        for seed in 0..<30 {
            let groups: [Machine.Group] = [.init(kind: .process, minimum: 3, maximum: 3, jobsPerWorker: 1, prefetch: 4)]
            let result = try simulate(seed: UInt64(seed) &* 7919 &+ 1, groups: groups, maxQueued: nil, steps: 400)
            recalls += result.recalls
            given += result.given
        }
        #expect(recalls > 30)
        #expect(given > 10)
    }
}
