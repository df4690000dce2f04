/// How much work each benchmark does: the full run, or `--quick` for smoke tests.
struct BenchSettings: Sendable {
    /// Whether these are the reduced `--quick` settings.
    var quick: Bool
    /// Measured repetitions per figure (after a warm-up); each figure is their median.
    var repetitions: Int
    /// Round trips per repetition for the latency figures (floor, process).
    var roundTrips: Int
    /// Unmeasured round trips before the first repetition.
    var warmUpRoundTrips: Int
    /// Jobs per repetition for the throughput figures.
    var throughputJobs: Int
    /// Jobs kept in flight by the throughput figures (a sliding window over a task group).
    var inFlight: Int
    /// Processes spawned per repetition by the spawn-per-job baseline.
    var spawnsPerRepetition: Int
    /// The Mandelbrot image the speedup figures render, one job per row.
    var mandelbrot: MandelbrotGeometry

    /// The full run: the figures the goals are judged by.
    static let full = BenchSettings(
        quick: false, repetitions: 5, roundTrips: 10_000, warmUpRoundTrips: 2_000,
        throughputJobs: 100_000, inFlight: 512, spawnsPerRepetition: 200,
        mandelbrot: MandelbrotGeometry(width: 1600, height: 1200, iterations: 256)
    )

    /// A smoke test: every figure measured, on less work (also fine in a debug build).
    static let quickRun = BenchSettings(
        quick: true, repetitions: 3, roundTrips: 1_000, warmUpRoundTrips: 200,
        throughputJobs: 5_000, inFlight: 256, spawnsPerRepetition: 10,
        mandelbrot: MandelbrotGeometry(width: 320, height: 240, iterations: 256)
    )
}
