import Glibc

/// Nanoseconds on the monotonic clock: the benchmarks' one time source.
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Microseconds elapsed since `start` (a ``monotonicNanoseconds()`` reading).
func microseconds(since start: UInt64) -> Double {
    Double(monotonicNanoseconds() - start) / 1_000
}

/// Milliseconds elapsed since `start` (a ``monotonicNanoseconds()`` reading).
func milliseconds(since start: UInt64) -> Double {
    Double(monotonicNanoseconds() - start) / 1_000_000
}

/// Seconds elapsed since `start` (a ``monotonicNanoseconds()`` reading).
func seconds(since start: UInt64) -> Double {
    Double(monotonicNanoseconds() - start) / 1_000_000_000
}

extension Array where Element == Double {
    /// The `p`-th percentile (0...1) by nearest rank: the smallest sample with at least a
    /// fraction `p` of the samples at or below it. Sorts a copy; fine for a few 100,000 samples.
    func percentile(_ p: Double) -> Double {
        precondition(!isEmpty, "no samples")
        let sorted = self.sorted()
        let rank = Int((p * Double(sorted.count)).rounded(.up))
        return sorted[Swift.min(Swift.max(rank, 1), sorted.count) - 1]
    }

    /// The median (the mean of the two middle values for an even count).
    var median: Double {
        precondition(!isEmpty, "no samples")
        let sorted = self.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

/// One figure's repetitions, summarised: the median is the figure, min and max show the spread.
struct Summary: Sendable {
    /// One value per repetition, in the order they ran.
    var values: [Double]
    var median: Double { values.median }
    var min: Double { values.min()! }
    var max: Double { values.max()! }

    /// - Precondition: `values` is not empty.
    init(_ values: [Double]) {
        precondition(!values.isEmpty, "a figure needs at least one repetition")
        self.values = values
    }
}
