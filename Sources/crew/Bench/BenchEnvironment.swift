import Crew
import Glibc

/// Where the figures were measured, recorded beside them.
struct BenchEnvironment: Sendable {
    var cores = System.coreCount
    var swiftVersion = Self.compilerVersion
    var buildConfiguration = Self.configuration
    /// When the run started, ISO 8601 in UTC.
    var date = Self.utcNow()
    /// The 1-minute load average when the run started: other work on the machine skews the figures.
    var loadAverage = Self.oneMinuteLoad()

    /// The compiler that built this binary, from `#if compiler` checks.
    static var compilerVersion: String {
        #if compiler(>=6.4)
        return "6.4 or later"
        #elseif compiler(>=6.3.2)
        return "6.3.2 or later"
        #elseif compiler(>=6.3.1)
        return "6.3.1"
        #elseif compiler(>=6.3)
        return "6.3"
        #else
        return "before 6.3"
        #endif
    }

    static var configuration: String {
        #if DEBUG
        return "debug"
        #else
        return "release"
        #endif
    }

    /// CPU time, in clock ticks, used by the whole machine and by this process with its reaped
    /// children (pool workers, peers, one-shot jobs), since boot.
    struct CPUTicks: Sendable {
        var machineBusy: Int
        var machineTotal: Int
        var ours: Int

        static func now() -> CPUTicks? {
            // /proc/stat: "cpu  user nice system idle iowait irq softirq steal …"
            let stat = readSmallFile("/proc/stat").split(separator: "\n").first?.split(separator: " ").dropFirst().compactMap { Int($0) }
            // /proc/self/stat after the ")": state is field 3, utime..cstime are fields 14–17.
            let me = readSmallFile("/proc/self/stat")
            guard let stat, stat.count >= 8, let close = me.lastIndex(of: ")") else { return nil }
            let fields = me[me.index(after: close)...].split(separator: " ").compactMap { Int($0) }
            // fields[0] is field 4 (ppid): utime is field 14, so index 10.
            guard fields.count >= 14 else { return nil }
            let busy = stat[0] + stat[1] + stat[2] + stat[5] + stat[6] + stat[7]
            return CPUTicks(machineBusy: busy, machineTotal: busy + stat[3] + stat[4], ours: fields[10...13].reduce(0, +))
        }

        /// The share (0–100) of the machine's CPU capacity that other processes used between
        /// `start` and `end`.
        static func othersPercent(from start: CPUTicks, to end: CPUTicks) -> Double {
            let total = end.machineTotal - start.machineTotal
            guard total > 0 else { return 0 }
            let others = (end.machineBusy - start.machineBusy) - (end.ours - start.ours)
            return max(0, 100 * Double(others) / Double(total))
        }
    }

    /// The first field of /proc/loadavg; nil if unreadable.
    static func oneMinuteLoad() -> Double? {
        readSmallFile("/proc/loadavg").split(separator: " ").first.flatMap { Double($0) }
    }

    /// The current time as `2025-01-31T12:34:56Z`, without Foundation.
    static func utcNow() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}
