import Glibc
import Synchronization

/// A process the benchmarks start themselves (not a pool worker): the running binary,
/// re-executed with a hidden `crew bench …` subcommand, with chosen descriptors mapped in.
struct BenchChild {
    let pid: pid_t

    /// Spawns `/proc/self/exe` with `arguments` (after the program name).
    ///
    /// - Parameter descriptors: `(source, target)` pairs: the child gets `source` as `target`.
    ///   Every source must be close-on-exec and at least 10 (see ``highDescriptor(_:)``), so that
    ///   `dup2` always clears close-on-exec on the target and no mapping overwrites another's source.
    static func spawn(_ arguments: [String], descriptors: [(source: Int32, target: Int32)]) throws -> BenchChild {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (source, target) in descriptors {
            precondition(source >= 10 && source != target, "map descriptors from 10 up")
            posix_spawn_file_actions_adddup2(&actions, source, target)
        }
        // Like a pool's workers: an empty signal mask and default dispositions.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = (["crew"] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = spawnLock.withLock { _ in posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, argv, environ) }
        guard rc == 0 else { throw BenchError("cannot spawn /proc/self/exe: \(String(cString: strerror(rc)))") }
        return BenchChild(pid: pid)
    }

    /// Waits for the child to end; returns its exit status, or 128 + the signal that killed it.
    @discardableResult
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}

/// Moves `fd` to a close-on-exec descriptor numbered 10 or higher and closes the original.
func highDescriptor(_ fd: Int32) -> Int32 {
    let moved = fcntl(fd, F_DUPFD_CLOEXEC, 10)
    precondition(moved >= 0, "F_DUPFD_CLOEXEC failed: \(String(cString: strerror(errno)))")
    close(fd)
    return moved
}

/// A connected pair of Unix stream sockets, close-on-exec, numbered 10 or higher.
func benchSocketPair() throws -> (Int32, Int32) {
    var fds: [Int32] = [0, 0]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
        throw BenchError("socketpair failed: \(String(cString: strerror(errno)))")
    }
    return (highDescriptor(fds[0]), highDescriptor(fds[1]))
}

/// A pipe (read end, write end), close-on-exec, numbered 10 or higher.
///
/// Glibc's `pipe2` is not visible to Swift, so the pipe is made with `pipe` and then moved to
/// close-on-exec descriptors, under ``spawnLock`` so that no concurrent spawn inherits it meanwhile.
func benchPipe() throws -> (read: Int32, write: Int32) {
    try spawnLock.withLock { _ in
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw BenchError("pipe failed: \(String(cString: strerror(errno)))") }
        return (highDescriptor(fds[0]), highDescriptor(fds[1]))
    }
}

/// Held while a descriptor is briefly inheritable (``benchPipe()``) and while spawning.
let spawnLock = Mutex<Void>(())

/// Reads exactly `count` bytes into `buffer` with blocking `read`; false at end-of-file or on an error.
func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Bool {
    var done = 0
    while done < count {
        let n = read(fd, buffer + done, count - done)
        if n > 0 { done += n } else if n < 0 && errno == EINTR { continue } else { return false }
    }
    return true
}

/// Writes exactly `count` bytes from `buffer` with blocking writes; false on an error.
///
/// A socket is written with `send(MSG_NOSIGNAL)`, so that a peer that died makes the write fail
/// rather than raise SIGPIPE, which would end the whole benchmark; anything else with `write`.
func writeFully(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Bool {
    var done = 0
    var socket = true
    while done < count {
        var n = socket ? send(fd, buffer + done, count - done, Int32(MSG_NOSIGNAL)) : write(fd, buffer + done, count - done)
        if n < 0 && socket && errno == ENOTSOCK {
            socket = false
            n = write(fd, buffer + done, count - done)
        }
        if n > 0 { done += n } else if n < 0 && errno == EINTR { continue } else { return false }
    }
    return true
}

/// Runs `body(0)`, …, `body(count - 1)` on `count` new POSIX threads; returns their results in
/// index order once all have finished.
///
/// The benchmarks' blocking loops (raw ping-pong, spawn-and-wait) run here rather than on Swift's
/// cooperative pool, as a plain C program would, and without blocking that pool while they run.
func onThreads<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) async -> [T] {
    precondition(count > 0, "no threads to run")
    let collector = ThreadResults<T>(count)
    return await withCheckedContinuation { waiter in
        collector.state.withLock { $0.waiter = waiter }
        for index in 0..<count {
            var thread = pthread_t()
            let start = Unmanaged.passRetained(ThreadStart { collector.finish(index, body(index)) }).toOpaque()
            let rc = pthread_create(&thread, nil, { raw in
                Unmanaged<ThreadStart>.fromOpaque(raw!).takeRetainedValue().run()
                return nil
            }, start)
            precondition(rc == 0, "pthread_create failed: \(rc)")
            pthread_detach(thread)
        }
    }
}

/// What a thread of ``onThreads(_:_:)`` runs.
private final class ThreadStart {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

/// The results of ``onThreads(_:_:)``'s threads; the last one to finish resumes the caller.
private final class ThreadResults<T: Sendable>: Sendable {
    struct State {
        var results: [T?]
        var remaining: Int
        var waiter: CheckedContinuation<[T], Never>?
    }
    let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(results: Array(repeating: nil, count: count), remaining: count)) }

    func finish(_ index: Int, _ value: T) {
        let done = state.withLock { state -> (CheckedContinuation<[T], Never>, [T])? in
            state.results[index] = value
            state.remaining -= 1
            guard state.remaining == 0, let waiter = state.waiter else { return nil }
            return (waiter, state.results.map { $0! })
        }
        if let (waiter, results) = done { waiter.resume(returning: results) }
    }
}

/// A benchmark that could not run as planned.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    /// The machine cannot run this benchmark (too few CPUs, say): its figures are skipped, not failed.
    var unavailable = false
    init(_ description: String, unavailable: Bool = false) {
        self.description = description
        self.unavailable = unavailable
    }
}
