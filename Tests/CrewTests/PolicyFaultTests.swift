@testable import Crew
import CrewTestJobs
import Glibc
import Synchronization
import Testing

/// A flag a task sets when it is done, read by the test without awaiting the task.
private final class ReviewFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

/// A job whose type's retry policy lists `queueFull` among the failures it retries.
private struct RetriesQueueFull: Job {
    static var isIdempotent: Bool { true }
    static var retryPolicy: RetryPolicy? {
        RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(1), retryableCodes: [.workerCrashed, .queueFull])
    }
    func run(in context: JobContext) async throws -> Int { 1 }
}

extension ProcessTests {
    @Suite struct PolicyFaults {
        /// `prefetch` lets a worker hold "the next job while it finishes the current one"; it must
        /// not make a job wait behind a running one while another worker of the pool is idle
        /// ("jobs queue until a worker is free").
        @Test func aPrefetchedJobDoesNotWaitBehindARunningOneWhileAnotherWorkerIsIdle() async throws {
            let gate = temporaryPath("gate")
            defer { unlink(gate) }
            try await withPool(Workers.processes(2).prefetch(1)) { pool in
                #expect(await eventually { pool.snapshot().workers.filter { $0.state == .ready }.count == 2 })
                let blocked = Task { try await pool.run(WaitForFile(path: gate)) }
                #expect(await eventually {
                    pool.snapshot().workers.contains { $0.currentJobs.map(\.name) == [WaitForFile.jobName] }
                })
                let done = ReviewFlag()
                let echo = Task {
                    let value = try await pool.run(Echo(7))
                    done.set()
                    return value
                }
                // One worker is idle the whole time: the echo must not need the gate.
                let finished = await eventually(within: .seconds(10)) { done.isSet }
                let holders = pool.snapshot().workers.map { "\($0.id): \($0.currentJobs.map(\.name))" }
                #expect(finished, "the echo waits behind the gated job; workers: \(holders)")
                openGate(gate)
                _ = try await blocked.value
                #expect(try await echo.value == 7)
            }
        }

        /// `run(_:on:)` takes the type's ``Job/retryPolicy`` (it passes no policy of its own). A job
        /// that crashes its target worker while it runs must report that crash
        /// (`workerCrashed`); `noEligibleWorker` is documented for a worker that "is gone, or
        /// ends before the job runs".
        @Test func aTargetedJobThatCrashesItsWorkerReportsTheCrashDespiteItsTypesRetryPolicy() async throws {
            let marker = temporaryPath("crash-once-on")
            defer { unlink(marker) }
            try await withPool(.processes(2)) { pool in
                let workerID = try await pool.run(SetState("review", 1))
                let error = await expectCrewError(.workerCrashed) {
                    try await pool.run(RetriedCrashOnce(marker: marker, value: 1), on: workerID)
                }
                #expect(access(marker, F_OK) == 0)  // it did run, and crashed its worker
                _ = error
            }
        }

        /// `trySubmit` refuses a job only when it would wait in a full queue. Once a worker took
        /// it, a retry (the type's policy) is the same job: with `maxQueued` 0 and the only
        /// worker restarting after the crash, the retry used to fail with `queueFull`, hiding
        /// the crash it was retrying; it waits for the replacement now.
        @Test func aRetryOfAnAcceptedTrySubmitWaitsForRoom() async throws {
            let marker = temporaryPath("crash-once-try")
            defer { unlink(marker) }
            try await withPool(.processes(1), { $0.maxQueued = 0 }) { pool in
                #expect(await eventually { pool.snapshot().freeSlots == 1 })
                let value = try await pool.trySubmit(RetriedCrashOnce(marker: marker, value: 7))
                #expect(value == 7)
                #expect(access(marker, F_OK) == 0)  // the first attempt ran, and crashed its worker
            }
        }

        /// `trySubmit` "fails at once with queueFull" when the queue is full, even for a job type
        /// whose retry policy lists `queueFull`: retrying the refusal (and retries wait for room)
        /// made it wait for the busy worker instead.
        @Test func trySubmitRefusesAtOnceWhateverTheRetryPolicyLists() async throws {
            let gate = temporaryPath("try-gate")
            defer { unlink(gate) }
            try await withPool(.threads(1), { $0.maxQueued = 0 }) { pool in
                let busy = Task { try await pool.run(WaitForFile(path: gate)) }
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 1 })
                let refused = ReviewFlag()
                let attempt = Task {
                    defer { refused.set() }
                    await expectCrewError(.queueFull) { try await pool.trySubmit(RetriesQueueFull()) }
                }
                #expect(await eventually(within: .seconds(10)) { refused.isSet })
                close(open(gate, O_CREAT | O_WRONLY, 0o600))
                _ = try await busy.value
                await attempt.value
            }
        }

        /// ``Job/jobName`` is "the job type's stable name on the wire", by default the fully
        /// qualified type name, and parent and workers must agree on it for the handshake. For a
        /// `fileprivate` (or `private`, or function-local) job type the default is
        /// `String(reflecting:)`, which embeds the load address of the type's context
        /// ("(unknown context at $55d0…)"), and so differs in every process of the same binary:
        /// a pool of `.current` workers with such a type refuses every worker.
        @Test func aFilePrivateJobTypesDefaultNameIsTheSameInEveryProcess() async throws {
            try await withPool(.processes(2)) { pool in
                #expect(await eventually { pool.snapshot().workers.filter { $0.state == .ready }.count == 2 })
                let ids = pool.snapshot().workers.map(\.id).sorted()
                let first = try await pool.run(PrivateJobName(), on: ids[0])
                let second = try await pool.run(PrivateJobName(), on: ids[1])
                // Two processes of the same worker executable.
                #expect(first == second)
            }
        }
    }
}

/// Recycling decisions, driven on the state machine directly.
@Suite struct PolicyMachineFaults {
    typealias Machine = TestMachine
    typealias Group = Machine.Group

    func at(_ milliseconds: UInt64) -> MonotonicTime { MonotonicTime(nanoseconds: 1_000_000_000 + milliseconds * 1_000_000) }

    func request(_ id: UInt64) -> Machine.Request {
        Machine.Request(id: id, name: "Job\(id)", payload: [], priority: .normal, timeout: nil, requirement: .any, waiter: Int(id))
    }

    let done: Result<JobOutput, CrewError> = .success(.encoded([]))

    /// `maxJobsPerWorker`: "Retire a worker after it ran this many jobs (its replacement starts
    /// while it runs its last one)"; README: "Capacity never dips". In a group sized on demand
    /// (1...2) with both workers serving, the one that takes its last job gets no replacement:
    /// the group is down to one serving worker, and the next job waits for a spawn.
    @Test func aWorkerOfAnOnDemandGroupIsReplacedWhileItRunsItsLastJob() {
        var machine = Machine(groups: [Group(kind: .process, minimum: 1, maximum: 2, maxJobsPerWorker: 2)])
        #expect(spawnedWorkers(machine.start(now: at(0))) == [1])
        _ = machine.workerReady(1, now: at(1))
        #expect(dispatched(machine.submit(request(1), now: at(2))).map(\.worker) == [1])
        // Job 2 finds no free worker: a second one starts on demand and takes it.
        #expect(spawnedWorkers(machine.submit(request(2), now: at(2))) == [2])
        #expect(dispatched(machine.workerReady(2, now: at(3))).map(\.job) == [2])
        _ = machine.jobEnded(1, on: 1, done, now: at(4))
        // Worker 1 takes its second and last job: it retires, and its replacement should start now.
        let last = machine.submit(request(3), now: at(5))
        #expect(dispatched(last).map(\.worker) == [1])
        #expect(machine.workers[1]?.phase == .retiring("it ran its maximum of 2 jobs"))
        #expect(spawnedWorkers(last).count == 1, "no replacement started for the retiring worker")
    }
}
