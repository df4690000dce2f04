import Glibc

/// CPU time a process has used so far, all its threads, in milliseconds: the sum of the first
/// field of `/proc/PID/task/*/schedstat` (nanoseconds on a CPU, exact, unlike the 10 ms ticks of
/// `/proc/PID/stat`). Threads that have already ended are not counted, so measure processes whose
/// threads outlive the interval (a pool's workers, the benchmark itself). 0 if `pid` is gone.
func processCPUMilliseconds(_ pid: pid_t) -> Double {
    guard let directory = opendir("/proc/\(pid)/task") else { return 0 }
    defer { closedir(directory) }
    var nanoseconds: UInt64 = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard name.first?.isNumber == true else { continue }
        let fields = readSmallFile("/proc/\(pid)/task/\(name)/schedstat").split(separator: " ")
        nanoseconds += fields.first.flatMap { UInt64($0) } ?? 0
    }
    return Double(nanoseconds) / 1e6
}

/// The first 4 KiB of a /proc file; empty if unreadable.
func readSmallFile(_ path: String) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = read(fd, &buffer, buffer.count)
    return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : ""
}
