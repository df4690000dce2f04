import Crew
import Glibc

/// The process-worker figures: a `WorkerPool` of this binary's own workers, running the jobs of
/// ``CrewJobs/catalog``.
enum PoolBenchmarks {
    /// `Noop` round trips through a pool with one process worker, one call after another:
    /// per repetition, the p50 and p99 in µs. A new pool per repetition, for the same reason
    /// the floor benchmark starts a new peer per repetition (placement is sticky).
    static func roundTrip(_ settings: BenchSettings) async throws -> [String: [Double]] {
        var p50: [Double] = [], p99: [Double] = []
        for _ in 0..<settings.repetitions {
            let samples = try await withProcessPool(1) { pool in
                _ = try await timeNoops(pool, settings.warmUpRoundTrips)
                return try await timeNoops(pool, settings.roundTrips)
            }
            p50.append(samples.percentile(0.50))
            p99.append(samples.percentile(0.99))
        }
        return ["process_rtt_us_p50": p50, "process_rtt_us_p99": p99]
    }

    static func timeNoops(_ pool: WorkerPool, _ count: Int) async throws -> [Double] {
        var samples = [Double]()
        samples.reserveCapacity(count)
        for i in 0..<count {
            let start = monotonicNanoseconds()
            let answer = try await pool.run(Noop(value: i))
            samples.append(microseconds(since: start))
            guard answer == i else { throw BenchError("Noop(\(i)) answered \(answer)") }
        }
        return samples
    }

    /// Tiny jobs through a pool with two process workers, `settings.inFlight` outstanding: each
    /// `pool.run` its own child task, and (info) the same jobs through `mapUnordered`, one job
    /// per message. Jobs per second, per repetition.
    static func throughput(_ settings: BenchSettings) async throws -> [String: [Double]] {
        // Each worker holds the next jobs while it runs one (prefetch), so frames batch.
        try await withBenchPool(Workers.processes(2).prefetch(32)) { pool in
            [
                "process_jobs_per_s": try await rates(settings) { try await runConcurrently(pool, jobs: $0, inFlight: settings.inFlight) },
                "process_map_unchunked_jobs_per_s": try await rates(settings) { try await mapUnchunked(pool, jobs: $0, inFlight: settings.inFlight) },
            ]
        }
    }

    /// `settings.throughputJobs` Noops through a new pool of `workers`, each `pool.run` its own
    /// child task: jobs per second, per repetition.
    static func concurrentRates(_ workers: Workers, _ settings: BenchSettings) async throws -> [Double] {
        try await withBenchPool(workers) { pool in
            try await rates(settings) { try await runConcurrently(pool, jobs: $0, inFlight: settings.inFlight) }
        }
    }

    /// Runs `settings.throughputJobs` jobs through `run` per repetition, after a warm-up of a
    /// tenth as many; `run` returns how many completed. Jobs per second, per repetition.
    private static func rates(_ settings: BenchSettings, _ run: (Int) async throws -> Int) async throws -> [Double] {
        _ = try await run(settings.throughputJobs / 10)
        var rates: [Double] = []
        for _ in 0..<settings.repetitions {
            let start = monotonicNanoseconds()
            let jobs = try await run(settings.throughputJobs)
            rates.append(Double(jobs) / seconds(since: start))
        }
        return rates
    }

    /// Runs `jobs` Noops through `mapUnordered` (one job per message) with at most `inFlight`
    /// outstanding; returns how many completed, after checking their outputs.
    static func mapUnchunked(_ pool: WorkerPool, jobs: Int, inFlight: Int) async throws -> Int {
        var completed = 0
        for try await (job, output) in pool.mapUnordered((0..<jobs).lazy.map { Noop(value: $0) }, maxInFlight: inFlight) {
            guard output == job.value else { throw BenchError("Noop(\(job.value)) answered \(output)") }
            completed += 1
        }
        return completed
    }

    /// Runs `jobs` Noops with at most `inFlight` outstanding; returns how many completed.
    static func runConcurrently(_ pool: WorkerPool, jobs: Int, inFlight: Int) async throws -> Int {
        try await withThrowingTaskGroup(of: Int.self) { group in
            var submitted = 0
            var completed = 0
            while submitted < min(inFlight, jobs) {
                let value = submitted
                group.addTask { try await pool.run(Noop(value: value)) }
                submitted += 1
            }
            while try await group.next() != nil {
                completed += 1
                if submitted < jobs {
                    let value = submitted
                    group.addTask { try await pool.run(Noop(value: value)) }
                    submitted += 1
                }
            }
            return completed
        }
    }

    /// A new pool with one process worker, until its first `Noop` result is back: ms per repetition.
    /// The pool's shutdown is not timed.
    static func spawnToFirstResult(_ settings: BenchSettings) async throws -> [String: [Double]] {
        var times: [Double] = []
        for repetition in -1..<settings.repetitions {  // -1: the warm-up
            let start = monotonicNanoseconds()
            let pool = try WorkerPool(.processes(1), jobs: CrewJobs.catalog)
            let answer: Int
            do {
                answer = try await pool.run(Noop(value: 42))
            } catch {
                await pool.shutdown()
                throw error
            }
            let elapsed = milliseconds(since: start)
            await pool.shutdown()
            guard answer == 42 else { throw BenchError("Noop(42) answered \(answer)") }
            if repetition >= 0 { times.append(elapsed) }
        }
        return ["spawn_to_first_result_ms": times]
    }

    /// The resident set of a worker process that has served one job and idled 100 ms, in MiB,
    /// from /proc/PID/statm; a new pool per repetition.
    static func idleWorkerMemory(_ settings: BenchSettings) async throws -> [String: [Double]] {
        var sizes: [Double] = []
        for _ in 0..<settings.repetitions {
            let size = try await withProcessPool(1) { pool -> Double in
                _ = try await pool.run(Noop(value: 1))
                try await Task.sleep(for: .milliseconds(100))
                guard let pid = pool.workerProcessIDs.first, let bytes = residentBytes(of: pid) else {
                    throw BenchError("cannot read the worker's resident set size")
                }
                return Double(bytes) / 1_048_576
            }
            sizes.append(size)
        }
        return ["idle_worker_rss_mb": sizes]
    }

    /// Resident bytes of `pid`, from the second field of /proc/PID/statm (pages).
    private static func residentBytes(of pid: Int32) -> Int? {
        let fields = readSmallFile("/proc/\(pid)/statm").split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * sysconf(Int32(_SC_PAGESIZE))
    }

    /// From `kill(pid, SIGKILL)` on the only worker, busy with a `Pause(milliseconds: 10_000)`,
    /// until a `Noop` submitted right after the kill has been served by its replacement: ms per
    /// repetition.
    static func crashRecovery(_ settings: BenchSettings) async throws -> [String: [Double]] {
        try await withProcessPool(1) { pool in
            var times: [Double] = []
            for repetition in -1..<settings.repetitions {  // -1: the warm-up
                _ = try await pool.run(Noop(value: 0))  // a live, idle worker
                guard let pid = pool.workerProcessIDs.first else { throw BenchError("the pool has no worker process") }
                let victim = Task { try await pool.run(Pause(milliseconds: 10_000)) }
                // The worker is idle, so the job is dispatched at once; give the worker time to start it.
                try await Task.sleep(for: .milliseconds(30))
                guard pool.queuedJobCount == 0 else { throw BenchError("the Pause job was not dispatched") }
                let start = monotonicNanoseconds()
                kill(pid, SIGKILL)
                let answer = try await pool.run(Noop(value: 7))
                let elapsed = milliseconds(since: start)
                guard answer == 7 else { throw BenchError("Noop(7) answered \(answer)") }
                switch await victim.result {
                case .failure(let error as CrewError) where error.code == .workerCrashed:
                    break
                case let other:
                    throw BenchError("the killed worker's job ended with \(other), not CrewError.workerCrashed")
                }
                if repetition >= 0 { times.append(elapsed) }
            }
            return ["crash_recovery_ms": times]
        }
    }

    /// For a `Spin()` job with a 200 ms timeout on an idle worker (so dispatch is immediate):
    /// the time from `pool.run` until its `CrewError.timedOut`, minus 200 ms, per repetition.
    static func timeoutOvershoot(_ settings: BenchSettings) async throws -> [String: [Double]] {
        let timeout = 200.0
        return try await withProcessPool(1) { pool in
            var overshoots: [Double] = []
            for repetition in -1..<settings.repetitions {  // -1: the warm-up
                _ = try await pool.run(Noop(value: 0))  // a live, idle worker (the last one was killed)
                let start = monotonicNanoseconds()
                do {
                    let value = try await pool.run(Spin(), timeout: .milliseconds(Int(timeout)))
                    throw BenchError("Spin() returned \(value) instead of timing out")
                } catch let error as CrewError where error.code == .timedOut {
                    let elapsed = milliseconds(since: start)
                    if repetition >= 0 { overshoots.append(elapsed - timeout) }
                }
            }
            return ["timeout_overshoot_ms": overshoots]
        }
    }
}

/// Runs `body` on a new pool of `count` process workers of this binary, once every worker has
/// answered a job (so no figure includes worker start-up), and shuts the pool down afterwards.
func withProcessPool<R: Sendable>(_ count: Int, _ body: (WorkerPool) async throws -> R) async throws -> R {
    try await withBenchPool(.processes(count), body)
}

/// Runs `body` with a pool of this binary's jobs once every worker is ready (has finished its
/// handshake), so start-up never counts in a measurement.
func withBenchPool<R: Sendable>(_ workers: Workers, _ body: (WorkerPool) async throws -> R) async throws -> R {
    try await WorkerPool.withPool(workers, jobs: CrewJobs.catalog) { pool in
        let expected = workers.groups.reduce(0) { $0 + $1.minimum }
        for _ in 0..<500 {
            if pool.snapshot().workers.filter({ $0.state == .ready }).count >= expected { return try await body(pool) }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw BenchError("\(expected) workers never all became ready")
    }
}
