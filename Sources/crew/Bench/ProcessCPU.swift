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
        nanoseconds += firstNumber(inFile: "/proc/\(pid)/task/\(name)/schedstat")
    }
    return Double(nanoseconds) / 1e6
}

/// The leading decimal number of a small file, or 0.
private func firstNumber(inFile path: String) -> UInt64 {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 64)
    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard count > 0 else { return 0 }
    var value: UInt64 = 0
    for byte in buffer[..<count] {
        guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { break }
        value = value * 10 + UInt64(byte - UInt8(ascii: "0"))
    }
    return value
}
