/// A target a figure (or a ratio of two) should reach.
struct Goal: Sendable {
    enum Bound: Sendable {
        case atMost(Double)
        case atLeast(Double)
        /// No target: a figure to read the others by.
        case informational
    }

    /// The JSON key under `goals`.
    var key: String
    /// What the table shows.
    var label: String
    var bound: Bound
    /// The value judged, from the figures' medians; nil if a figure it needs is missing.
    var value: @Sendable (BenchResults) -> Double?

    func isMet(by value: Double) -> Bool {
        switch bound {
        case .atMost(let limit): value <= limit
        case .atLeast(let limit): value >= limit
        case .informational: true
        }
    }

    var target: String {
        switch bound {
        case .atMost(let limit): "≤ \(formatFigure(limit))"
        case .atLeast(let limit): "≥ \(formatFigure(limit))"
        case .informational: "(info)"
        }
    }

    /// A ratio of two figures' medians.
    static func ratio(_ key: String, _ label: String, _ numerator: String, _ denominator: String, _ bound: Bound) -> Goal {
        Goal(key: key, label: label, bound: bound) { results in
            guard let top = results[numerator], let bottom = results[denominator], bottom > 0 else { return nil }
            return top / bottom
        }
    }

    /// A figure's median itself.
    static func figure(_ key: String, _ label: String, _ bound: Bound) -> Goal {
        Goal(key: key, label: label, bound: bound) { $0[key] }
    }

    static let all: [Goal] = [
        .ratio("process_rtt_p50_over_floor", "process RTT p50 / floor p50", "process_rtt_us_p50", "floor_rtt_us_p50", .atMost(1.5)),
        .ratio("process_rtt_p99_over_floor", "process RTT p99 / floor p99", "process_rtt_us_p99", "floor_rtt_us_p99", .atMost(3)),
        .ratio("mandelbrot_speedup_2_workers", "Mandelbrot 1 worker / 2 workers", "mandelbrot_1_worker_s", "mandelbrot_2_workers_s", .atLeast(1.95)),
        .ratio("mandelbrot_2_workers_over_taskgroup", "Mandelbrot 2 workers / TaskGroup (≤ 3% slower)", "mandelbrot_2_workers_s", "mandelbrot_taskgroup_2_s", .atMost(1.03)),
        .figure("process_jobs_per_s", "process jobs/s", .atLeast(200_000)),
        .figure("process_map_chunked_jobs_per_s", "chunked map jobs/s", .atLeast(10_000_000)),
        .figure("spawn_to_first_result_ms", "spawn to first result (ms)", .atMost(10)),
        .figure("idle_worker_rss_mb", "idle worker RSS (MiB)", .atMost(20)),
        .figure("crash_recovery_ms", "crash recovery (ms)", .atMost(20)),
        .figure("timeout_overshoot_ms", "timeout overshoot (ms)", .atMost(20)),
    ]

    /// Ratios without a target, to read the goals by: the unpinned floor lands on one CPU or on
    /// two (a factor of about 10 on this VM), so the p50 goal flips with it; the Mandelbrot goals
    /// computed on plain processes fed over socketpairs show how close one message per row can
    /// come on this machine at all; the in-process speedup, what the second vCPU gives at all;
    /// the workers' CPU against the `TaskGroup`'s, whether the workers' kernel costs more than
    /// the in-process one; the render with fewer messages shows what the per-message cost is; and
    /// throughput on an inline worker, what one `pool.run` per job reaches with no process,
    /// thread or encoding in its path.
    static let informational: [Goal] = [
        .ratio("process_rtt_p50_over_same_cpu_floor", "process RTT p50 / same-CPU floor p50", "process_rtt_us_p50", "floor_same_cpu_rtt_us_p50", .informational),
        .ratio("process_rtt_p50_over_cross_cpu_floor", "process RTT p50 / cross-CPU floor p50", "process_rtt_us_p50", "floor_cross_cpu_rtt_us_p50", .informational),
        .ratio("mandelbrot_taskgroup_speedup_2_threads", "Mandelbrot in-process: TaskGroup of 1 / TaskGroup of 2",
               "mandelbrot_taskgroup_1_s", "mandelbrot_taskgroup_2_s", .informational),
        .ratio("mandelbrot_workers_cpu_over_taskgroup_cpu", "Mandelbrot CPU per render: 2 workers' / TaskGroup's",
               "mandelbrot_2_workers_workers_cpu_ms", "mandelbrot_taskgroup_2_cpu_ms", .informational),
        .ratio("mandelbrot_floor_speedup_2_processes", "Mandelbrot raw limit: 1 process / 2 processes",
               "mandelbrot_floor_1_process_s", "mandelbrot_floor_2_processes_s", .informational),
        .ratio("mandelbrot_floor_2_processes_over_taskgroup", "Mandelbrot raw limit: 2 processes / TaskGroup",
               "mandelbrot_floor_2_processes_s", "mandelbrot_taskgroup_2_s", .informational),
        .ratio("mandelbrot_2_workers_over_floor", "Mandelbrot 2 workers / raw limit, 2 processes",
               "mandelbrot_2_workers_s", "mandelbrot_floor_2_processes_s", .informational),
        .ratio("process_jobs_over_inline_jobs", "process jobs/s / inline jobs/s (pool.run, no process in the path)",
               "process_jobs_per_s", "inline_jobs_per_s", .informational),
        .ratio("mandelbrot_8_per_message_over_taskgroup", "Mandelbrot 2 workers, 8 rows per message / TaskGroup",
               "mandelbrot_2_workers_8_per_message_s", "mandelbrot_taskgroup_2_s", .informational),
    ]
}
