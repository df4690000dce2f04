import Crew

/// The figures of thread and inline workers, and of chunked `map`: the same `Noop` job as the
/// process figures, so the rows compare.
enum InProcessBenchmarks {
    /// `Noop` round trips through one thread worker: per repetition, the p50 in µs.
    static func threadRoundTrip(_ settings: BenchSettings) async throws -> [String: [Double]] {
        ["thread_rtt_us_p50": try await roundTrips(.threads(1), settings)]
    }

    /// `Noop` round trips through one inline worker: per repetition, the p50 in µs.
    static func inlineRoundTrip(_ settings: BenchSettings) async throws -> [String: [Double]] {
        ["inline_rtt_us_p50": try await roundTrips(.inline(maxConcurrent: 1), settings)]
    }

    private static func roundTrips(_ workers: Workers, _ settings: BenchSettings) async throws -> [Double] {
        var p50: [Double] = []
        for _ in 0..<settings.repetitions {
            let samples = try await withBenchPool(workers) { pool in
                _ = try await PoolBenchmarks.timeNoops(pool, settings.warmUpRoundTrips)
                return try await PoolBenchmarks.timeNoops(pool, settings.roundTrips)
            }
            p50.append(samples.percentile(0.50))
        }
        return p50
    }

    /// Tiny jobs on two thread workers, many in flight: jobs per second, per repetition.
    static func threadThroughput(_ settings: BenchSettings) async throws -> [String: [Double]] {
        ["thread_jobs_per_s": try await PoolBenchmarks.concurrentRates(.threads(2), settings)]
    }

    /// Tiny jobs on an inline worker running 2 at a time, many in flight: `pool.run`'s own path
    /// (the caller's task, the state machine, a task per job on the worker's side, the
    /// resumption) with no process, thread or encoding in it, to read `process_jobs_per_s` by.
    /// Jobs per second, per repetition.
    static func inlineThroughput(_ settings: BenchSettings) async throws -> [String: [Double]] {
        ["inline_jobs_per_s": try await PoolBenchmarks.concurrentRates(.inline(maxConcurrent: 2), settings)]
    }

    /// The same tiny jobs through `map` on two process workers, `chunkSize` jobs per message:
    /// jobs per second, per repetition; `Noop` (plain data, copied as one block per chunk) and
    /// `CodableNoop` (the same struct through its `Codable` conformance).
    static func chunkedMap(_ settings: BenchSettings) async throws -> [String: [Double]] {
        try await withProcessPool(2) { pool in
            [
                "process_map_chunked_jobs_per_s": try await chunkedRates(pool, settings) { Noop(value: $0) },
                "process_map_chunked_codable_jobs_per_s": try await chunkedRates(pool, settings) { CodableNoop(value: $0) },
            ]
        }
    }

    private static func chunkedRates<J: Job>(
        _ pool: WorkerPool, _ settings: BenchSettings, _ make: @escaping @Sendable (Int) -> J
    ) async throws -> [Double] where J.Output == Int {
        var rates: [Double] = []
        for repetition in -1..<settings.repetitions {  // -1: the warm-up
            let count = settings.throughputJobs * 10
            let start = monotonicNanoseconds()
            var done = 0
            var checksum = 0
            for try await output in pool.map((0..<count).lazy.map(make), maxInFlight: 8, chunkSize: 4096) {
                checksum &+= output
                done += 1
            }
            let rate = Double(done) / seconds(since: start)
            guard done == count, checksum == count * (count - 1) / 2 else {
                throw BenchError("map returned \(done) outputs with checksum \(checksum)")
            }
            if repetition >= 0 { rates.append(rate) }
        }
        return rates
    }
}
