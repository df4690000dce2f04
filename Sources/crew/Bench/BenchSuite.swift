/// One number `crew bench` reports.
struct FigureSpec: Sendable {
    /// The JSON key, e.g. `floor_rtt_us_p50`.
    var key: String
    /// The unit shown in the table.
    var unit: String
    /// A short explanation for the table.
    var explanation: String
}

/// Figures measured together: one measurement yields one value per repetition for each of them
/// (a latency run yields both its p50 and its p99).
struct Benchmark: Sendable {
    typealias Measure = @Sendable (BenchSettings) async throws -> [String: [Double]]

    /// What the progress line says while it runs.
    var title: String
    var figures: [FigureSpec]
    /// Returns, for each figure's key, one value per repetition; nil for figures not built yet,
    /// which are reported as "n/a" and JSON null.
    var measure: Measure?
}

/// Every figure of `crew bench`, in report order. Adding a figure is one entry here plus the
/// function that measures it.
enum BenchSuite {
    static let all: [Benchmark] = [
        Benchmark(title: "raw socketpair ping-pong", figures: [
            FigureSpec(key: "floor_rtt_us_p50", unit: "µs", explanation: "raw limit: 16 B ping-pong, 2 processes, blocking read/write"),
            FigureSpec(key: "floor_rtt_us_p99", unit: "µs", explanation: "  the same, 99th percentile"),
        ], measure: FloorBenchmark.roundTrip),
        Benchmark(title: "pinned socketpair ping-pong", figures: [
            FigureSpec(key: "floor_same_cpu_rtt_us_p50", unit: "µs", explanation: "  the raw limit, both processes pinned to one CPU (info)"),
            FigureSpec(key: "floor_cross_cpu_rtt_us_p50", unit: "µs", explanation: "  the raw limit, pinned to two CPUs (info)"),
        ], measure: FloorBenchmark.pinnedRoundTrip),
        Benchmark(title: "process round trips", figures: [
            FigureSpec(key: "process_rtt_us_p50", unit: "µs", explanation: "Noop on 1 process worker, sequential pool.run"),
            FigureSpec(key: "process_rtt_us_p99", unit: "µs", explanation: "  the same, 99th percentile"),
        ], measure: PoolBenchmarks.roundTrip),
        Benchmark(title: "thread round trips", figures: [
            FigureSpec(key: "thread_rtt_us_p50", unit: "µs", explanation: "Noop on 1 thread worker, sequential pool.run"),
        ], measure: InProcessBenchmarks.threadRoundTrip),
        Benchmark(title: "inline round trips", figures: [
            FigureSpec(key: "inline_rtt_us_p50", unit: "µs", explanation: "Noop on 1 inline worker, sequential pool.run"),
        ], measure: InProcessBenchmarks.inlineRoundTrip),
        Benchmark(title: "process throughput", figures: [
            FigureSpec(key: "process_jobs_per_s", unit: "jobs/s", explanation: "Noops on 2 process workers (prefetch 32), one pool.run per job, many in flight"),
            FigureSpec(key: "process_map_unchunked_jobs_per_s", unit: "jobs/s", explanation: "  the same Noops through pool.mapUnordered, one job per message (info)"),
        ], measure: PoolBenchmarks.throughput),
        Benchmark(title: "thread throughput", figures: [
            FigureSpec(key: "thread_jobs_per_s", unit: "jobs/s", explanation: "Noops on 2 thread workers, one pool.run per job"),
        ], measure: InProcessBenchmarks.threadThroughput),
        Benchmark(title: "inline throughput", figures: [
            FigureSpec(key: "inline_jobs_per_s", unit: "jobs/s", explanation: "  Noops on 1 inline worker running 2 at a time, one pool.run per job (info)"),
        ], measure: InProcessBenchmarks.inlineThroughput),
        Benchmark(title: "chunked map throughput", figures: [
            FigureSpec(key: "process_map_chunked_jobs_per_s", unit: "jobs/s", explanation: "Noops (PlainData) through pool.map, 4096 per chunk, 2 process workers"),
            FigureSpec(key: "process_map_chunked_codable_jobs_per_s", unit: "jobs/s", explanation: "  the same with CodableNoop: the same struct through Codable (info)"),
        ], measure: InProcessBenchmarks.chunkedMap),
        Benchmark(title: "one process per job", figures: [
            FigureSpec(key: "spawn_per_job_jobs_per_s", unit: "jobs/s", explanation: "baseline: posix_spawn + wait per job, one spawner per core"),
        ], measure: SpawnBaseline.jobsPerSecond),
        Benchmark(title: "Mandelbrot", figures: [
            FigureSpec(key: "mandelbrot_1_worker_s", unit: "s", explanation: "demo render, one job per row via pool.map, 1 process worker (prefetch 8)"),
            FigureSpec(key: "mandelbrot_2_workers_s", unit: "s", explanation: "  the same on 2 process workers"),
            FigureSpec(key: "mandelbrot_taskgroup_2_s", unit: "s", explanation: "  the same in-process, TaskGroup of 2 (no pool)"),
            FigureSpec(key: "mandelbrot_taskgroup_1_s", unit: "s", explanation: "  the same in-process, TaskGroup of 1 (info)"),
            FigureSpec(key: "mandelbrot_2_workers_parent_cpu_ms", unit: "ms", explanation: "  CPU the parent used per 2-worker render, all threads (info)"),
            FigureSpec(key: "mandelbrot_2_workers_workers_cpu_ms", unit: "ms", explanation: "  CPU the 2 workers used per render, all threads (info)"),
            FigureSpec(key: "mandelbrot_taskgroup_2_cpu_ms", unit: "ms", explanation: "  CPU the TaskGroup render used, all threads (info)"),
            FigureSpec(key: "mandelbrot_floor_1_process_s", unit: "s", explanation: "  raw limit: 1 plain process fed rows over a socketpair, 16 ahead, no pool (info)"),
            FigureSpec(key: "mandelbrot_floor_2_processes_s", unit: "s", explanation: "  the same with 2 plain processes (info)"),
            FigureSpec(key: "mandelbrot_floor_2_parent_cpu_ms", unit: "ms", explanation: "  CPU the parent used per 2-process raw render (info)"),
            FigureSpec(key: "mandelbrot_2_workers_8_per_message_s", unit: "s", explanation: "  2 workers, 8 rows (8 jobs) per message (info)"),
        ], measure: MandelbrotBenchmarks.speedup),
        Benchmark(title: "start-up", figures: [
            FigureSpec(key: "spawn_to_first_result_ms", unit: "ms", explanation: "new pool (1 process worker) until its first Noop result"),
        ], measure: PoolBenchmarks.spawnToFirstResult),
        Benchmark(title: "idle worker memory", figures: [
            FigureSpec(key: "idle_worker_rss_mb", unit: "MiB", explanation: "RSS of an idle worker after one job (/proc/PID/statm)"),
        ], measure: PoolBenchmarks.idleWorkerMemory),
        Benchmark(title: "crash recovery", figures: [
            FigureSpec(key: "crash_recovery_ms", unit: "ms", explanation: "SIGKILL of a busy worker until the next Noop is served"),
        ], measure: PoolBenchmarks.crashRecovery),
        Benchmark(title: "timeout overshoot", figures: [
            FigureSpec(key: "timeout_overshoot_ms", unit: "ms", explanation: "Spin() with a 200 ms timeout: time to .timedOut − 200 ms"),
        ], measure: PoolBenchmarks.timeoutOvershoot),
    ]
}

/// What became of one figure.
enum FigureResult: Sendable {
    case measured(Summary)
    case notBuilt
    case skipped
    case failed(String)

    var median: Double? {
        if case .measured(let summary) = self { summary.median } else { nil }
    }
}

/// Every figure's result, in report order.
struct BenchResults: Sendable {
    var figures: [(spec: FigureSpec, result: FigureResult)] = []

    /// The median of the figure with this key, if it was measured.
    subscript(_ key: String) -> Double? {
        figures.first { $0.spec.key == key }?.result.median
    }

    var failures: [(key: String, message: String)] {
        figures.compactMap { figure in
            if case .failed(let message) = figure.result { (figure.spec.key, message) } else { nil }
        }
    }

    /// Runs every benchmark in `suite` (only those with a figure whose key contains `only`, if
    /// given); a benchmark that throws marks its figures failed and the rest still run.
    static func measure(
        _ suite: [Benchmark], _ settings: BenchSettings, only: String? = nil, progress: (String) -> Void
    ) async -> BenchResults {
        var results = BenchResults()
        for benchmark in suite {
            guard let measure = benchmark.measure else {
                results.figures += benchmark.figures.map { ($0, .notBuilt) }
                continue
            }
            if let only, !benchmark.figures.contains(where: { $0.key.contains(only) }) {
                results.figures += benchmark.figures.map { ($0, .skipped) }
                continue
            }
            progress(benchmark.title)
            do {
                let values = try await measure(settings)
                for spec in benchmark.figures {
                    // Measured with the others of its benchmark, but not asked for.
                    if let only, !spec.key.contains(only) {
                        results.figures.append((spec, .skipped))
                        continue
                    }
                    guard let samples = values[spec.key], !samples.isEmpty else {
                        results.figures.append((spec, .failed("the benchmark produced no \(spec.key)")))
                        continue
                    }
                    results.figures.append((spec, .measured(Summary(samples))))
                }
            } catch let error as BenchError where error.unavailable {
                results.figures += benchmark.figures.map { ($0, .skipped) }
            } catch {
                results.figures += benchmark.figures.map { ($0, .failed("\(error)")) }
            }
        }
        return results
    }
}
