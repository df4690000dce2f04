import HeapModule

/// Every decision a ``WorkerPool`` makes, as a pure state machine: which queued job goes to
/// which worker, when workers start, retire or are replaced, which caller is resumed with what,
/// when shutdown is complete. It does no I/O and reads no clock (times come in as arguments), so
/// it is tested exhaustively without processes. The pool holds it behind a lock and performs the
/// returned ``Action``s after unlocking.
///
/// `Waiter` is what the pool resumes when a job ends (a continuation in production); `Payload`
/// is the job as the pool hands it to a worker (encoded bytes and/or the value itself).
struct PoolStateMachine<Waiter, Payload> {
    /// One group of workers of the same kind and tags, with its sizing and recycling policy.
    struct Group: Equatable {
        var kind: WorkerKind
        var minimum: Int
        var maximum: Int
        var tags: Set<String> = []
        var jobsPerWorker: Int = 1
        /// Jobs a worker may hold beyond those it runs (process workers).
        var prefetch: Int = 0
        var idleTimeout: Duration? = nil
        var maxJobsPerWorker: Int? = nil
        var maxAge: Duration? = nil

        /// How many jobs one worker may hold: those it runs and those it keeps ready.
        var slotsPerWorker: Int { jobsPerWorker + prefetch }
    }

    /// Which workers may take a job.
    enum Requirement: Hashable {
        case any
        case tag(String)
        case worker(Int)
    }

    /// A job as submitted.
    struct Request {
        var id: UInt64
        var name: String
        var payload: Payload
        var priority: JobPriority
        var timeout: Duration?
        var requirement: Requirement = .any
        var waiter: Waiter
        /// When the queue is full: wait for room (`run`) rather than fail (`trySubmit`).
        var waitsForRoom = true
    }

    /// A job every new worker runs before it takes work: the setup job, and every broadcast.
    struct InitJob {
        var name: String
        var payload: Payload
        /// The broadcast's timeout, for its replays too: a replay that hangs would keep its
        /// worker starting up for ever, a lost worker the group never replaces.
        var timeout: Duration? = nil
        /// Skipped by workers that start from now on.
        var withdrawn = false
    }

    /// Something the pool must do after the state changed.
    enum Action {
        /// Hand the job to the worker (see ``Dispatch``).
        case dispatch(Dispatch)
        /// A held job started: arm its timeout timer now.
        case armTimeout(jobID: UInt64, timeout: Duration)
        /// Resume a caller.
        case resume(Waiter, Result<JobOutput, CrewError>)
        /// Ask the worker to cancel the job; if it still runs after the grace period, report
        /// ``cancelGraceExpired(jobID:)``.
        case requestCancel(workerID: Int, jobID: UInt64)
        /// Ask the worker to give back these jobs it holds if it has not started them (another
        /// worker is idle); it reports each one it gives back (``jobRecalled(_:on:now:)``) and
        /// runs the others as usual.
        case recall(workerID: Int, jobIDs: [UInt64])
        /// Start a worker of the group; report ``workerReady(_:now:)`` or ``workerExited(_:termination:stderrTail:now:)``.
        case spawn(workerID: Int, group: Int)
        /// End the worker now (SIGKILL for a process); its exit is reported as usual.
        case kill(workerID: Int)
        /// Let the worker go: it finishes and exits; escalate if it lingers.
        case release(workerID: Int)
        /// Report ``idleCheck(_:now:)`` for the worker at this time.
        case checkIdle(workerID: Int, at: MonotonicTime)
        /// Report ``startRetryDue(group:now:)`` at this time: the group gave up starting workers.
        case retryStart(group: Int, at: MonotonicTime)
        /// Nothing is queued or awaited any more (shutdown may proceed).
        case drained
        /// Every worker has exited (shutdown is complete).
        case allWorkersExited
    }

    /// Why the pool is ending a worker; decides the error its unfinished jobs get.
    enum StopReason: Equatable {
        case timedOut(jobID: UInt64, name: String)
        case cancelGraceExpired(jobID: UInt64)
        case protocolViolation(String)
        case startFailed(String)
        case retired(String)
        case idle
        case shutdown
    }

    enum Phase: Equatable {
        /// Spawned (or being spawned); no hello yet.
        case starting
        /// Running its init jobs (setup, broadcasts); `next` indexes ``initJobs``.
        case initializing(next: Int)
        /// Takes jobs.
        case ready
        /// Takes no new jobs; is released once its jobs are done; a replacement has been started.
        case retiring(String)
        /// Takes no more jobs; its exit is awaited.
        case stopping(StopReason)

        var isStartingUp: Bool {
            switch self {
            case .starting, .initializing: true
            default: false
            }
        }
    }

    struct Worker {
        var id: Int
        var group: Int
        var phase: Phase = .starting
        var inFlight: [UInt64] = []
        var jobsDone = 0
        var jobsDispatched = 0
        var startedAt: MonotonicTime
        var idleSince: MonotonicTime?
        /// The worker starting up to take this one's place; this one serves on until it is ready.
        var successor: Int?
        /// For a successor: the worker to retire once this one is ready, and why.
        var retireOnReady: (workerID: Int, reason: String)?

        var acceptsJobs: Bool { if case .ready = phase { true } else { false } }
        var isActive: Bool {
            switch phase {
            case .retiring, .stopping: false
            default: true
            }
        }
    }

    struct RunningJob {
        var name: String
        var workerID: Int
        /// Nil for init jobs, and once the caller was resumed early (timeout, cancellation).
        var waiter: Waiter?
        var isInit = false
        /// The job's timeout, while the worker holds the job without running it yet.
        var pendingTimeout: Duration? = nil
        /// Its priority: the worker runs the jobs it holds highest first.
        var priority: JobPriority = .normal
        /// For a job the worker holds before running it (prefetch), what it takes to queue the
        /// job again if the pool calls it back for an idle worker; nil for jobs that start at once,
        /// init jobs, and held jobs the worker reported started.
        var held: HeldJob? = nil
        /// The pool asked the worker to give the job back; it is not asked twice.
        var recalling = false
    }

    /// A job handed to a worker.
    struct Dispatch {
        var workerID: Int
        var jobID: UInt64
        var name: String
        var payload: Payload
        /// Arm a timeout timer now: set for a job that starts at once. It is nil for a job the
        /// worker holds before running it; with `announceStart` the worker reports when such a job
        /// starts, and ``Action/armTimeout(jobID:timeout:)`` follows.
        var timeout: Duration?
        var announceStart: Bool
        /// The job has a timeout, whether it starts now or later (a process worker then never
        /// holds its answer back).
        var timed: Bool
        /// A worker runs the jobs it holds highest priority first.
        var priority: JobPriority
    }

    /// A held job's request, less its waiter (which stays with the running job).
    struct HeldJob {
        var payload: Payload
        var priority: JobPriority
        var timeout: Duration?
        var requirement: Requirement
        /// Its place in the queue when it was taken from there, kept if it goes back.
        var sequence: UInt64
    }

    enum Lifecycle: Equatable {
        case running
        /// No new jobs; queued and running ones go on.
        case draining
        /// Workers are being released.
        case stopping
        case stopped
    }

    struct QueueKey: Comparable {
        var priority: JobPriority
        var sequence: UInt64
        var id: UInt64
        // Heap's min is the next job: highest priority, then lowest sequence.
        static func < (a: QueueKey, b: QueueKey) -> Bool {
            a.priority != b.priority ? a.priority > b.priority : a.sequence < b.sequence
        }
    }

    var groups: [Group]
    var lifecycle: Lifecycle = .running
    var workers: [Int: Worker] = [:]
    var running: [UInt64: RunningJob] = [:]
    var queued: [UInt64: (request: Request, key: QueueKey)] = [:]
    /// The queue of jobs for any worker (nearly all jobs): reached without hashing a requirement.
    var anyQueue = Heap<QueueKey>()
    /// The queues of jobs for a tag or for one worker.
    var keyedQueues: [Requirement: Heap<QueueKey>] = [:]
    /// Per requirement, how many keys in its heap belong to jobs no longer queued (cancelled or
    /// failed while queued): heaps drop such keys lazily, so their counts include them.
    var staleKeys: [Requirement: Int] = [:]
    /// Requests waiting for room in a full queue, first come first served.
    var overflow: [Request] = []
    /// Free job slots where a job would start at once, as worker ids; a worker with room for n
    /// such jobs appears n times. Last in, first out, so work concentrates on warm workers and
    /// the others can go idle.
    var freeSlots: [Int] = []
    /// Free prefetch slots, where a job would wait in a busy worker: used only when no slot
    /// above is free, so a job never waits behind another while a worker sits idle.
    var heldSlots: [Int] = []
    var initJobs: [InitJob] = []
    var nextWorkerID = 1
    var nextSequence: UInt64 = 0
    var nextInitJobID: UInt64 = 1 << 63
    /// Per group: workers in a row that died while starting up.
    var consecutiveStartFailures: [Int]
    /// Per group: set when its workers keep failing to start; it starts no more.
    var startFailures: [CrewError?]
    /// Per group that gave up: when its retry is due. A retry that comes earlier belongs to an
    /// earlier give-up (ended by a worker that started after all) and must not cut this one short.
    var startRetryAt: [MonotonicTime?]

    /// The most jobs that may wait in the queue; nil for no limit.
    let maxQueued: Int?
    /// How many workers in a row may die while starting before their group gives up.
    let startFailureLimit: Int
    /// How long a group that gave up waits before it tries one worker again; nil for never.
    let startFailureCooldown: Duration?

    init(
        groups: [Group], maxQueued: Int? = nil, startFailureLimit: Int = 3, startFailureCooldown: Duration? = nil,
        setup: InitJob? = nil
    ) {
        precondition(!groups.isEmpty, "a pool needs at least one worker group")
        self.groups = groups
        self.maxQueued = maxQueued
        self.startFailureLimit = startFailureLimit
        self.startFailureCooldown = startFailureCooldown
        consecutiveStartFailures = Array(repeating: 0, count: groups.count)
        startFailures = Array(repeating: nil, count: groups.count)
        startRetryAt = Array(repeating: nil, count: groups.count)
        if let setup { initJobs.append(setup) }
    }

    /// Jobs waiting for a worker (not counting callers waiting for room in a full queue).
    var queuedCount: Int { queued.count }

    /// Callers waiting for room in a full queue.
    var overflowCount: Int { overflow.count }

    func activeCount(inGroup group: Int) -> Int {
        var count = 0
        // Fields read in place: iterating `workers.values` copied each worker (retaining its
        // job list and its phase's strings), and this runs on the hot path.
        for index in workers.indices where workers.values[index].group == group && workers.values[index].isActive {
            count += 1
        }
        return count
    }

    /// Whether some group may start another worker: below its maximum, and not given up.
    func anyGroupBelowMaximum() -> Bool {
        for index in groups.indices where startFailures[index] == nil && activeCount(inGroup: index) < groups[index].maximum {
            return true
        }
        return false
    }

    /// Changes a worker in place, with one look-up; nil if there is no such worker. (Reading
    /// `workers[id]!` copies the worker, retaining its job list; writing through it again looks
    /// the worker up each time.)
    @inline(__always)
    mutating func updateWorker<R>(_ id: Int, _ change: (inout Worker) -> R) -> R? {
        guard let index = workers.index(forKey: id) else { return nil }
        return change(&workers.values[index])
    }

    /// Free job slots on ready workers.
    var freeSlotCount: Int { freeSlots.count + heldSlots.count }

    /// A worker has room for one more job: a slot where it would start at once, or a held one.
    mutating func addFreeSlot(_ workerID: Int, runsAtOnce: Bool) {
        if runsAtOnce { freeSlots.append(workerID) } else { heldSlots.append(workerID) }
    }

    /// Takes every free slot of a worker that takes no more jobs.
    mutating func removeFreeSlots(of workerID: Int) {
        freeSlots.removeAll { $0 == workerID }
        heldSlots.removeAll { $0 == workerID }
    }

    /// Queued jobs per priority.
    var queueDepthByPriority: [JobPriority: Int] {
        queued.values.reduce(into: [:]) { $0[$1.request.priority, default: 0] += 1 }
    }
}

extension PoolStateMachine: Sendable where Waiter: Sendable, Payload: Sendable {}
extension PoolStateMachine.Request: Sendable where Waiter: Sendable, Payload: Sendable {}
extension PoolStateMachine.InitJob: Sendable where Payload: Sendable {}
extension PoolStateMachine.Action: Sendable where Waiter: Sendable, Payload: Sendable {}
extension PoolStateMachine.RunningJob: Sendable where Waiter: Sendable, Payload: Sendable {}
extension PoolStateMachine.HeldJob: Sendable where Payload: Sendable {}
extension PoolStateMachine.Dispatch: Sendable where Payload: Sendable {}
