#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCrewSystem

/// Thin, errno-aware wrappers over the few syscalls the wire needs. They retry on EINTR and
/// never raise SIGPIPE (sockets use MSG_NOSIGNAL).
enum SystemIO {
    /// An errno value, with the call that produced it.
    struct Failure: Error, CustomStringConvertible {
        var call: String
        var errno: Int32
        var description: String { "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
    }

    /// Makes a connected Unix stream socket pair, both ends close-on-exec.
    static func socketPair() throws(Failure) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else { throw Failure(call: "socketpair", errno: errno) }
        return (fds[0], fds[1])
    }

    /// Makes a pipe, both ends close-on-exec: (read end, write end).
    static func pipe() throws(Failure) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard ccrew_pipe_cloexec(&fds) == 0 else { throw Failure(call: "pipe2", errno: errno) }
        return (fds[0], fds[1])
    }

    /// Writes all of `bytes` to a socket; returns false if the peer is gone.
    static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        writeFully(bytes) { send(fd, $0, $1, Int32(MSG_NOSIGNAL)) }
    }

    /// Writes all of `bytes` to any descriptor (pipes, terminals); returns false on error.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        writeFully(bytes) { write(fd, $0, $1) }
    }

    private static func writeFully(_ bytes: UnsafeRawBufferPointer, _ call: (UnsafeRawPointer, Int) -> Int) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = call(bytes.baseAddress! + offset, bytes.count - offset)
            if n > 0 {
                offset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return false
            }
        }
        return true
    }

    /// Waits until `fd` has something to read (or has ended or failed), for at most `timeout`;
    /// returns false if the time ran out first (or a signal interrupted the wait).
    static func waitReadable(_ fd: Int32, within timeout: Duration) -> Bool {
        ccrew_wait_readable(fd, timeout.clampedNanoseconds) > 0
    }

    /// Reads into `buffer`; returns the byte count, 0 at end of stream, or -1 on error.
    static func readSome(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
        while true {
            let n = read(fd, buffer.baseAddress!, buffer.count)
            if n < 0 && errno == EINTR { continue }
            return n
        }
    }
}
