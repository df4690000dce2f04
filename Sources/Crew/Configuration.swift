public import Logging

/// Which workers a pool has: one or more groups, each of one kind, with its own size, tags and
/// recycling policy.
///
/// ```swift
/// try await WorkerPool.withPool(.processes(4), jobs: jobs) { pool in ... }
/// // 2 threads for blocking I/O, and 1 to 8 processes tagged "heavy" that stop after 30 s idle:
/// let workers: Workers = [.threads(2), .processes(1...8, tags: ["heavy"], idleTimeout: .seconds(30))]
/// ```
public struct Workers: Sendable, ExpressibleByArrayLiteral {
    /// One group of workers.
    public struct Group: Sendable {
        /// The kind of every worker in the group.
        public var kind: WorkerKind
        /// Workers kept running even when idle.
        public var minimum: Int
        /// The most workers the group starts; more start on demand while jobs wait, up to this.
        public var maximum: Int
        /// Tags the group's workers carry; a job may require one (``WorkerPool/run(_:priority:timeout:requiring:retry:)``).
        public var tags: Set<String> = []
        /// How many jobs one worker runs at once. Async, I/O-bound jobs may share a worker; CPU-bound
        /// jobs want 1. Default: 1.
        public var jobsPerWorker: Int = 1
        /// Process workers only: how many more jobs a worker may hold, queued in the worker, beyond
        /// those it runs. The next job is then already there when the current one ends, which hides
        /// the round trip for short jobs. The worker runs the jobs it holds highest priority first
        /// (then in the order they came), so a job of higher priority waits for the jobs running,
        /// not for those held. A held job's timeout counts from when it starts. Jobs are
        /// held only while no worker is starting and no group may start one: until then they wait
        /// in the pool, so that a burst starts workers (up to ``maximum``) rather than queueing in
        /// a busy one.
        ///
        /// A worker with a slot free and nothing queued for it calls back about half of the jobs
        /// held in the busy worker that holds the most it could run (the highest priority first),
        /// so that jobs held behind a long one do not wait for it while a worker is free. They go
        /// back to the queue where they were (even past ``WorkerPool/Configuration/maxQueued``:
        /// they had been admitted) and on to the first free slot, the idle worker's as a rule. A
        /// job the busy worker has started by then runs there as usual, and a job run with
        /// ``WorkerPool/run(_:on:priority:timeout:)`` never moves.
        ///
        /// While held jobs still wait in a worker, a finished job's answer (with the next job's
        /// start) may wait for company, for at most 6 ms, until the answers held back number
        /// three times the jobs still waiting: at a prefetch of 8 the pool then reads about 6
        /// answers per wake-up instead of one, which cut the parent's CPU per row in the demo by
        /// more than half. So a held job's timeout may start up to 6 ms late, and a worker that
        /// dies in that time takes the held answers with it (their jobs fail with its death, or
        /// are retried). With a prefetch under 2 every answer leaves at once, and so does the
        /// answer of a job with a timeout, so that one that ends in time is never taken for one
        /// that ran over.
        /// Default: 0.
        public var prefetch: Int = 0
        /// Workers above ``minimum`` stop after being idle this long. Default: never.
        public var idleTimeout: Duration?
        /// Retire a worker after it ran this many jobs (its replacement starts while it runs its
        /// last one). Default: never.
        public var maxJobsPerWorker: Int?
        /// Retire a worker this long after it started; it serves on until its successor is ready.
        /// Default: never.
        public var maxAge: Duration?
        /// Process workers only: retire a worker whose resident memory exceeds this many bytes,
        /// checked after each of its jobs; it serves on until its successor is ready. Default: no limit.
        public var maxResidentBytes: Int?

        /// A group of `minimum...maximum` workers of `kind`.
        public init(kind: WorkerKind, minimum: Int, maximum: Int, tags: Set<String> = []) {
            precondition(minimum >= 0 && maximum >= max(1, minimum), "a group needs 0 <= minimum <= maximum and maximum >= 1")
            self.kind = kind
            self.minimum = minimum
            self.maximum = maximum
            self.tags = tags
        }
    }

    /// The groups, in the order the pool prefers them when starting workers on demand.
    public var groups: [Group]

    /// A pool of these groups.
    public init(_ groups: [Group]) {
        precondition(!groups.isEmpty, "a pool needs at least one group of workers")
        self.groups = groups
    }

    public init(arrayLiteral elements: Workers...) {
        self.init(elements.flatMap(\.groups))
    }

    /// `count` supervised worker processes: crash, memory and hard-timeout isolation.
    public static func processes(_ count: Int, tags: Set<String> = []) -> Workers {
        precondition(count >= 1, "a pool needs at least one worker")
        return Workers([Group(kind: .process, minimum: count, maximum: count, tags: tags)])
    }

    /// Between `range.lowerBound` and `range.upperBound` worker processes, started on demand and
    /// stopped after `idleTimeout` idle.
    public static func processes(_ range: ClosedRange<Int>, tags: Set<String> = [], idleTimeout: Duration = .seconds(60)) -> Workers {
        var group = Group(kind: .process, minimum: range.lowerBound, maximum: range.upperBound, tags: tags)
        group.idleTimeout = idleTimeout
        return Workers([group])
    }

    /// One process worker per core.
    public static var processesPerCore: Workers { .processes(max(1, System.coreCount)) }

    /// `count` dedicated OS threads in this process, for blocking or synchronous jobs.
    public static func threads(_ count: Int, tags: Set<String> = []) -> Workers {
        precondition(count >= 1, "a pool needs at least one worker")
        return Workers([Group(kind: .thread, minimum: count, maximum: count, tags: tags)])
    }

    /// Jobs run as tasks in this process, at most `maxConcurrent` at once (a job that ignores
    /// its timeout or cancellation runs on detached, beside its replacement: see ``WorkerKind/inline``).
    public static func inline(maxConcurrent: Int = System.coreCount, tags: Set<String> = []) -> Workers {
        precondition(maxConcurrent >= 1, "a pool needs at least one worker")
        return Workers([Group(kind: .inline, minimum: maxConcurrent, maximum: maxConcurrent, tags: tags)])
    }

    /// Jobs run as tasks in this process, as many at once as there are cores.
    public static var inline: Workers { .inline() }

    /// The same groups with `jobsPerWorker` set on each.
    public func jobsPerWorker(_ count: Int) -> Workers {
        precondition(count >= 1)
        return modifying { $0.jobsPerWorker = count }
    }

    /// The same groups, each process worker holding up to `count` more jobs than it runs.
    public func prefetch(_ count: Int) -> Workers {
        precondition(count >= 0)
        return modifying { $0.prefetch = count }
    }

    /// The same groups, each retiring a worker after `count` jobs.
    public func maxJobsPerWorker(_ count: Int) -> Workers {
        precondition(count >= 1)
        return modifying { $0.maxJobsPerWorker = count }
    }

    /// The same groups, each retiring a worker `age` (more than zero) after it started.
    public func maxAge(_ age: Duration) -> Workers {
        precondition(age > .zero, "a maximum age of zero or less would replace every worker as soon as it is ready")
        return modifying { $0.maxAge = age }
    }

    /// The same groups, each retiring a process worker whose resident memory exceeds `bytes`.
    public func maxResidentBytes(_ bytes: Int) -> Workers { modifying { $0.maxResidentBytes = bytes } }

    private func modifying(_ change: (inout Group) -> Void) -> Workers {
        var copy = self
        for index in copy.groups.indices { change(&copy.groups[index]) }
        return copy
    }

    var hasProcesses: Bool { groups.contains { $0.kind.isOutOfProcess } }
    var hasInProcess: Bool { groups.contains { !$0.kind.isOutOfProcess } }
}

/// The program a pool runs as its worker processes.
public struct WorkerExecutable: Sendable, Hashable {
    let path: String

    /// The running program itself, re-executed. Its `main` must call
    /// ``Crew/serveIfWorker(_:logger:)`` first thing.
    public static var current: WorkerExecutable { WorkerExecutable(path: "/proc/self/exe") }

    /// Another program, whose `main` calls ``Crew/serveIfWorker(_:logger:)``. Under `swift test`
    /// the running program is the test runner, so tests use a small worker executable this way.
    public static func path(_ path: String) -> WorkerExecutable { WorkerExecutable(path: path) }
}

extension WorkerPool {
    /// How a pool runs. Every property has a documented default.
    public struct Configuration: Sendable {
        /// The program process workers run. Default: ``WorkerExecutable/current``.
        public var executable: WorkerExecutable = .current
        /// Extra command-line arguments for worker processes. Default: none.
        public var arguments: [String] = []
        /// Extra environment variables for worker processes (added to the parent's). Default: none.
        public var environment: [String: String] = [:]
        /// The most jobs that may wait for a worker. When it is reached, ``WorkerPool/run(_:priority:timeout:requiring:retry:)``
        /// suspends until there is room and ``WorkerPool/trySubmit(_:priority:timeout:requiring:)`` fails with
        /// ``CrewError/Code/queueFull``. A job that a free worker takes at once never waits, so it
        /// goes even when the queue is full (0 means: run only on a free worker). Default: no limit.
        public var maxQueued: Int?
        /// The largest frame (job arguments or output, plus a few bytes) either side accepts.
        /// It must be under 4 GiB, and large enough for a worker's hello, which lists the
        /// catalog's job names (checked when a pool with process workers is created). Default: 64 MiB.
        public var maxFrameSize: Int = WireProtocol.defaultMaxFrameSize
        /// How long a cancelled running job may take to stop before its process is killed. Default: 1 s.
        public var cancellationGracePeriod: Duration = .seconds(1)
        /// Copy what workers write to stderr to this process's stderr, as well as keeping its tail for
        /// crash reports. Default: true.
        public var forwardWorkerStderr: Bool = true
        /// How many workers of a group in a row may die while starting (before their handshake, or in
        /// their setup job) before the group stops starting workers, and its jobs fail with
        /// ``CrewError/Code/workerStartFailed`` instead of waiting for a worker that never comes
        /// (unless workers of the group still serve: they serve on and take the jobs). Default: 3.
        public var startFailureLimit: Int = 3
        /// How long a group whose workers keep failing to start stays given up: jobs for it fail at
        /// once meanwhile, then it tries to start a worker again (one more failure and it gives up
        /// for another period). A transient fault (a full disk, a missing mount) thus does not
        /// break the pool for good. nil: give up for the pool's lifetime. Default: 10 s.
        public var startFailureCooldown: Duration? = .seconds(10)
        /// How the pool stops.
        public var shutdown = Shutdown()
        /// Where the pool logs worker starts, deaths, protocol violations and refused handshakes.
        /// Default: a logger that discards everything (a library does not choose where your logs go;
        /// every fault also reaches the caller as a ``CrewError``).
        public var logger = Logger(label: "crew.pool", factory: { _ in SwiftLogNoOpLogHandler() })

        /// Shutdown timing.
        public struct Shutdown: Sendable {
            /// How long queued and running jobs may take to finish after shutdown begins. Default: 30 s.
            public var drainTimeout: Duration = .seconds(30)
            /// After the drain, how long workers get to exit on their own before SIGTERM, and again
            /// before SIGKILL. Thread and inline workers get the same periods: their running jobs
            /// are cancelled after the first, and after the second a job that ignores it runs on
            /// detached while the shutdown completes. Default: 2 s.
            public var terminateGracePeriod: Duration = .seconds(2)

            /// The defaults.
            public init() {}
        }

        /// The defaults.
        public init() {}
    }
}

/// Facts about the machine.
public enum System {
    /// The number of cores this process may use.
    public static var coreCount: Int { availableCoreCount() }
}
