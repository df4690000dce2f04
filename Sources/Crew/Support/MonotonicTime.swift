#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A point on CLOCK_MONOTONIC, in nanoseconds. The pool's state machine receives these as
/// arguments rather than reading a clock, so its decisions are testable with made-up times.
struct MonotonicTime: Comparable, Hashable, Sendable {
    var nanoseconds: UInt64

    /// The current time.
    static func now() -> MonotonicTime {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return MonotonicTime(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }

    static func < (lhs: MonotonicTime, rhs: MonotonicTime) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    static func + (lhs: MonotonicTime, rhs: Duration) -> MonotonicTime {
        MonotonicTime(nanoseconds: lhs.nanoseconds &+ rhs.clampedNanoseconds)
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    func since(_ earlier: MonotonicTime) -> Duration {
        nanoseconds > earlier.nanoseconds ? .nanoseconds(Int64(nanoseconds - earlier.nanoseconds)) : .zero
    }

    var asTimespec: timespec {
        timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }
}

extension Duration {
    /// The duration in nanoseconds, clamped to 0...UInt64.max/2.
    var clampedNanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        // Both components carry the sign: -0.5 s is (0, -5e17), and its attoseconds must not
        // reach the UInt64 conversion below.
        if seconds < 0 || attoseconds < 0 { return 0 }
        if seconds > 4_000_000_000 { return UInt64.max / 2 }
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    /// The duration in (fractional) milliseconds, for logs and reports.
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}
