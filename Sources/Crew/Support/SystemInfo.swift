#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCrewSystem

func availableCoreCount() -> Int { Int(ccrew_available_cores()) }

/// Resident set size of a process in bytes, from /proc/PID/statm; nil if it is gone.
func residentSetSize(of pid: Int32) -> Int? {
    let fd = open("/proc/\(pid)/statm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 128)
    let n = buffer.withUnsafeMutableBytes { SystemIO.readSome(fd, $0) }
    guard n > 0 else { return nil }
    let fields = String(decoding: buffer[..<n], as: UTF8.self).split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
    return pages * sysconf(Int32(_SC_PAGESIZE))
}
