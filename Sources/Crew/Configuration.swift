public import Logging

/// Which workers a pool has.
///
/// ```swift
/// try await WorkerPool.withPool(.processes(4), jobs: jobs) { pool in ... }
/// ```
public struct Workers: Sendable {
    enum Kind: Sendable, Equatable {
        case processes(Int)
    }
    let kind: Kind

    /// `count` supervised worker processes: crash, memory and hard-timeout isolation.
    /// - Precondition: `count >= 1`.
    public static func processes(_ count: Int) -> Workers {
        precondition(count >= 1, "a pool needs at least one worker")
        return Workers(kind: .processes(count))
    }

    /// One process worker per core.
    public static var processesPerCore: Workers { .processes(max(1, System.coreCount)) }

    var count: Int {
        switch kind {
        case .processes(let count): count
        }
    }
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
        /// The program workers run. Default: ``WorkerExecutable/current``.
        public var executable: WorkerExecutable = .current
        /// Extra command-line arguments for worker processes. Default: none.
        public var arguments: [String] = []
        /// Extra environment variables for worker processes (added to the parent's). Default: none.
        public var environment: [String: String] = [:]
        /// How many jobs one worker runs at once. Async, I/O-bound jobs may share a worker; CPU-bound
        /// jobs want 1. Default: 1.
        public var jobsPerWorker: Int = 1
        /// The largest frame (job arguments or output, plus a few bytes) either side accepts.
        /// Default: 64 MiB.
        public var maxFrameSize: Int = WireProtocol.defaultMaxFrameSize
        /// How long a cancelled running job may take to stop before its process is killed. Default: 1 s.
        public var cancellationGracePeriod: Duration = .seconds(1)
        /// Copy what workers write to stderr to this process's stderr, as well as keeping its tail for
        /// crash reports. Default: true.
        public var forwardWorkerStderr: Bool = true
        /// How many workers in a row may die before their handshake before jobs fail with
        /// ``CrewError/Code/workerStartFailed`` instead of waiting for a worker that never comes. Default: 3.
        public var startFailureLimit: Int = 3
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
            /// before SIGKILL. Default: 2 s.
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
