/// A pool's state at one moment: its workers, its queue, its free capacity.
///
/// ```swift
/// let snapshot = pool.snapshot()
/// for worker in snapshot.workers { print(worker.id, worker.kind, worker.state, worker.jobsDone) }
/// ```
public struct PoolSnapshot: Sendable {
    /// One worker.
    public struct Worker: Sendable {
        /// The worker's number (``JobContext/workerID`` in its jobs; the target of ``WorkerPool/run(_:on:priority:timeout:)``).
        public var id: Int
        /// Process, thread or inline.
        public var kind: WorkerKind
        /// The index of its group in ``Workers/groups``.
        public var group: Int
        /// The tags it carries.
        public var tags: Set<String>
        /// Its process id, for a process worker.
        public var processID: Int32?
        /// What it is doing.
        public var state: WorkerState
        /// The jobs it holds, oldest first: those it runs and, with
        /// ``Workers/Group/prefetch``, those waiting in it for their turn; while it starts, its
        /// setup job and replayed broadcasts.
        public var currentJobs: [Job]
        /// Jobs it has finished (including its setup job and broadcasts).
        public var jobsDone: Int
        /// Time since it was started.
        public var uptime: Duration
        /// Its resident memory in bytes, for a process worker.
        public var residentBytes: Int?
    }

    /// A job a worker runs.
    public struct Job: Sendable, Hashable {
        /// The job's pool-assigned id (``JobContext/jobID``).
        public var id: UInt64
        /// The job type's wire name.
        public var name: String
    }

    /// A worker's phase.
    public struct WorkerState: Hashable, Sendable, CustomStringConvertible {
        /// Being spawned, or waiting for its handshake.
        public static let starting = WorkerState(description: "starting")
        /// Running its setup job and replaying broadcasts.
        public static let initializing = WorkerState(description: "initializing")
        /// Taking jobs (busy or idle: see ``Worker/currentJobs``).
        public static let ready = WorkerState(description: "ready")
        /// Finishing its jobs before it is let go (job limit, memory limit, age); a replacement started.
        public static let retiring = WorkerState(description: "retiring")
        /// Stopped by the pool (timeout, shutdown, idle); waiting for it to exit.
        public static let stopping = WorkerState(description: "stopping")

        public let description: String

        init(description: String) { self.description = description }

        init<W, P>(_ phase: PoolStateMachine<W, P>.Phase) {
            switch phase {
            case .starting: self = .starting
            case .initializing: self = .initializing
            case .ready: self = .ready
            case .retiring: self = .retiring
            case .stopping: self = .stopping
            }
        }
    }

    /// Every worker, by id.
    public var workers: [Worker]
    /// Jobs waiting for a worker, per priority.
    public var queueDepth: [JobPriority: Int]
    /// Callers waiting for room in a full queue (see ``WorkerPool/Configuration/maxQueued``).
    public var waitingForRoom: Int
    /// Job slots free on ready workers.
    public var freeSlots: Int
}
