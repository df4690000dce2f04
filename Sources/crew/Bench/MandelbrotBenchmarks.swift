import Crew
import Glibc

/// The demo's workload as a speedup test: render `settings.mandelbrot` one row per job (the
/// `MandelbrotRow` job, `MandelbrotGeometry.renderRow`) on 1 and 2 process workers, and in this
/// process on a TaskGroup limited to 2 rows at a time. Seconds per render.
///
/// Unlike `MandelbrotCommand.render`, the pool is started (and every worker has answered) before
/// the clock starts, and shut down after it stops: start-up is ``PoolBenchmarks/spawnToFirstResult(_:)``'s
/// figure, and including it here would blur the scaling comparison.
enum MandelbrotBenchmarks {
    static func speedup(_ settings: BenchSettings) async throws -> [String: [Double]] {
        let geometry = settings.mandelbrot
        let reference = checksum(await renderInProcess(geometry, concurrency: 2))  // also the warm-up
        var times: [String: [Double]] = [:]
        times["mandelbrot_1_worker_s"] = try await timedRenders(settings, reference, workers: 1, rowsPerMessage: 1).wall
        let two = try await timedRenders(settings, reference, workers: 2, rowsPerMessage: 1)
        times["mandelbrot_2_workers_s"] = two.wall
        times["mandelbrot_2_workers_parent_cpu_ms"] = two.parentCPU
        // The same jobs, 8 rows per message: what the per-message cost is (info).
        times["mandelbrot_2_workers_8_per_message_s"] = try await timedRenders(settings, reference, workers: 2, rowsPerMessage: 8).wall
        var inProcess: [Double] = []
        for _ in 0..<settings.repetitions {
            let start = monotonicNanoseconds()
            let rows = await renderInProcess(geometry, concurrency: 2)
            inProcess.append(seconds(since: start))
            guard checksum(rows) == reference else { throw BenchError("the TaskGroup rendered a different image") }
        }
        times["mandelbrot_taskgroup_2_s"] = inProcess
        return times
    }

    /// Renders on a new pool of `workers` (after a warm-up render), checking each image against
    /// `reference`: per repetition, the wall time in s and this process's CPU time in ms.
    private static func timedRenders(
        _ settings: BenchSettings, _ reference: UInt64, workers: Int, rowsPerMessage: Int
    ) async throws -> (wall: [Double], parentCPU: [Double]) {
        let geometry = settings.mandelbrot
        return try await withBenchPool(MandelbrotCommand.workers(workers)) { pool in
            _ = try await MandelbrotCommand.renderRows(on: pool, geometry, workers: workers, rowsPerMessage: rowsPerMessage)
            var wall: [Double] = [], parentCPU: [Double] = []
            for _ in 0..<settings.repetitions {
                let start = monotonicNanoseconds()
                let cpuStart = processCPUSeconds()
                let rows = try await MandelbrotCommand.renderRows(on: pool, geometry, workers: workers, rowsPerMessage: rowsPerMessage)
                wall.append(seconds(since: start))
                parentCPU.append((processCPUSeconds() - cpuStart) * 1000)
                guard checksum(rows) == reference else {
                    throw BenchError("\(workers) worker(s), \(rowsPerMessage) row(s) per message, rendered a different image")
                }
            }
            return (wall, parentCPU)
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
