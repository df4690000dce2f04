import Crew
import Glibc

/// The demo's workload as a speedup test: render `settings.mandelbrot` one row per job (the
/// `MandelbrotRow` job, `MandelbrotGeometry.renderRow`) on 1 and 2 process workers, and in this
/// process on a TaskGroup limited to 2 rows at a time. Seconds per render, and for some variants
/// the CPU per render of this process and of the workers: against the `TaskGroup`'s CPU, they
/// split a gap between renders into work the workers' kernel does anyway, what the pool adds,
/// and vCPU time nobody used.
///
/// The variants alternate: each repetition renders once with each of them, in an order that
/// rotates from one repetition to the next, so the ratios the goals are about compare renders
/// from the same seconds rather than blocks measured a minute apart (this VM's speed drifts by
/// more than the 3% the 2-worker goal allows).
///
/// Unlike `MandelbrotCommand.render`, the pools are started (and every worker has answered) before
/// any clock starts, and shut down after the last render: start-up is
/// ``PoolBenchmarks/spawnToFirstResult(_:)``'s figure, and including it here would blur the
/// scaling comparison.
enum MandelbrotBenchmarks {
    /// One way to render the image.
    private struct Variant {
        var key: String
        /// The key of the figure for this process's CPU per render, if there is one.
        var parentCPUKey: String? = nil
        /// The worker processes whose CPU per render is the figure `workersCPUKey`.
        var workers: [pid_t] = []
        var workersCPUKey: String? = nil
        /// Renders the image; returns its rows.
        var render: () async throws -> [[UInt8]]
    }

    static func speedup(_ settings: BenchSettings) async throws -> [String: [Double]] {
        let geometry = settings.mandelbrot
        let reference = checksum(await renderInProcess(geometry, concurrency: 2))  // also the warm-up
        let floorOne = try MandelbrotFloor(geometry, peers: 1)
        defer { floorOne.stop() }
        let floorTwo = try MandelbrotFloor(geometry, peers: 2)
        defer { floorTwo.stop() }
        return try await withBenchPool(MandelbrotCommand.workers(1)) { one in
            try await withBenchPool(MandelbrotCommand.workers(2)) { two in
                try await withBenchPool(MandelbrotCommand.workers(2)) { twoBatched in
                    let variants = [
                        Variant(key: "mandelbrot_taskgroup_2_s", parentCPUKey: "mandelbrot_taskgroup_2_cpu_ms") {
                            await renderInProcess(geometry, concurrency: 2)
                        },
                        // What the machine's second vCPU gives a plain in-process render (info).
                        Variant(key: "mandelbrot_taskgroup_1_s") { await renderInProcess(geometry, concurrency: 1) },
                        Variant(key: "mandelbrot_1_worker_s") {
                            try await MandelbrotCommand.renderRows(on: one, geometry, workers: 1)
                        },
                        Variant(
                            key: "mandelbrot_2_workers_s", parentCPUKey: "mandelbrot_2_workers_parent_cpu_ms",
                            workers: two.snapshot().workers.compactMap(\.processID), workersCPUKey: "mandelbrot_2_workers_workers_cpu_ms"
                        ) {
                            try await MandelbrotCommand.renderRows(on: two, geometry, workers: 2)
                        },
                        // The raw limit of one message per row (info).
                        Variant(key: "mandelbrot_floor_1_process_s") { try await floorOne.render() },
                        Variant(key: "mandelbrot_floor_2_processes_s", parentCPUKey: "mandelbrot_floor_2_parent_cpu_ms") {
                            try await floorTwo.render()
                        },
                        // The same jobs, 8 rows per message: what the per-message cost is (info).
                        Variant(key: "mandelbrot_2_workers_8_per_message_s") {
                            try await MandelbrotCommand.renderRows(on: twoBatched, geometry, workers: 2, rowsPerMessage: 8)
                        },
                    ]
                    for variant in variants.dropFirst() { _ = try await variant.render() }  // the pools' warm-up
                    var times: [String: [Double]] = [:]
                    for repetition in 0..<settings.repetitions {
                        for offset in 0..<variants.count {
                            let variant = variants[(repetition + offset) % variants.count]
                            let start = monotonicNanoseconds()
                            let parentStart = processCPUSeconds()
                            let workersStart = variant.workers.reduce(0) { $0 + processCPUMilliseconds($1) }
                            let rows = try await variant.render()
                            times[variant.key, default: []].append(seconds(since: start))
                            if let key = variant.parentCPUKey {
                                times[key, default: []].append((processCPUSeconds() - parentStart) * 1000)
                            }
                            if let key = variant.workersCPUKey {
                                times[key, default: []].append(variant.workers.reduce(0) { $0 + processCPUMilliseconds($1) } - workersStart)
                            }
                            guard checksum(rows) == reference else { throw BenchError("\(variant.key) rendered a different image") }
                        }
                    }
                    return times
                }
            }
        }
    }

    /// CPU time this process has used (user and system, all threads; not its workers').
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let user = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        let system = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        return user + system
    }

    /// Every row rendered in this process, at most `concurrency` at a time.
    static func renderInProcess(_ geometry: MandelbrotGeometry, concurrency: Int) async -> [[UInt8]] {
        // The body never throws.
        (try? await slidingWindow(rows: geometry.height, window: concurrency) { row in geometry.renderRow(row) }) ?? []
    }

    /// Runs `render(row)` for every row with at most `window` child tasks at once; rows in order.
    private static func slidingWindow(
        rows: Int, window: Int, _ render: @escaping @Sendable (Int) async throws -> [UInt8]
    ) async throws -> [[UInt8]] {
        try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            var result = [[UInt8]](repeating: [], count: rows)
            var next = 0
            while next < min(window, rows) {
                let row = next
                group.addTask { (row, try await render(row)) }
                next += 1
            }
            while let (row, pixels) = try await group.next() {
                result[row] = pixels
                if next < rows {
                    let row = next
                    group.addTask { (row, try await render(row)) }
                    next += 1
                }
            }
            return result
        }
    }

    /// FNV-1a over every byte: proof that each variant rendered the same image.
    private static func checksum(_ rows: [[UInt8]]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for row in rows {
            for byte in row { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        }
        return hash
    }
}
