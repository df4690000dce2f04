#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCrewSystem

/// A dedicated OS thread, for work that must never occupy Swift's cooperative pool: blocking
/// reads on a worker's channel, the supervisor's timers and spawns.
struct PosixThread: @unchecked Sendable {
    private let handle: pthread_t

    private final class Box {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts `body` on a new thread named `name` (Linux keeps at most 15 bytes of it: see
    /// `name(_:worker:)` for names that carry a worker's id).
    ///
    /// - Parameter stackSize: 512 KiB suits our own threads, which only shuffle bytes; threads
    ///   that run users' jobs get the 8 MiB a main thread has, since job code (and decoding a
    ///   deeply nested value) may recurse deeply.
    static func start(name: String, stackSize: Int = 512 * 1024, _ body: @escaping @Sendable () -> Void) -> PosixThread {
        let box = Unmanaged.passRetained(Box(name: name, body: body))
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setstacksize(&attr, stackSize)
        defer { pthread_attr_destroy(&attr) }
        var handle = pthread_t()
        let rc = pthread_create(&handle, &attr, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            // A write to a closed pipe or socket raises SIGPIPE in the writing thread; blocked
            // here, it stays pending and harmless, and the write fails with EPIPE instead.
            var pipeSignal = sigset_t()
            sigemptyset(&pipeSignal)
            sigaddset(&pipeSignal, SIGPIPE)
            pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
            _ = box.name.withCString { ccrew_set_thread_name($0) }
            box.body()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return PosixThread(handle: handle)
    }

    /// Waits for the thread to finish.
    func join() {
        pthread_join(handle, nil)
    }

    /// Lets the thread's resources go when it finishes, without a join.
    func detach() {
        pthread_detach(handle)
    }
}

extension PosixThread {
    /// What a thread does for one worker: the letter after `crew-` in its name.
    enum WorkerRole: String {
        /// A thread worker's own thread, which runs its jobs.
        case jobs = "t"
        /// The pool's reader of a process worker's channel (its answers).
        case channel = "r"
        /// The pool's copier of a process worker's stderr.
        case stderr = "e"
    }

    /// The most digits of a worker's id that a name keeps: `crew-`, the role's letter and these
    /// make the 15 bytes Linux keeps of a thread's name.
    static let workerIDDigits = 9

    /// The name of a thread that serves worker `id`, as `top -H`, `perf` and
    /// `/proc/<pid>/task/<tid>/comm` show it: `crew-`, the role's letter and the id, as in
    /// `crew-t42` (thread worker 42's thread), `crew-r42` and `crew-e42` (the reader and stderr
    /// threads of process worker 42).
    ///
    /// Linux cuts a name at 15 bytes, so a long fixed prefix such as `crew-thread-` would leave
    /// room for three digits only, and workers 1000 and 1001 would share a name. This one keeps up
    /// to `workerIDDigits` digits: every worker of a pool up to id 999,999,999 has names of
    /// its own. A larger id keeps its last nine digits, zero-padded (`crew-t000000001` for id
    /// 1,000,000,001), so it differs from every id of the same role less than a billion away.
    static func name(_ role: WorkerRole, worker id: Int) -> String {
        let modulus: UInt = 1_000_000_000  // 10^workerIDDigits
        let magnitude = id.magnitude
        guard magnitude >= modulus else { return "crew-\(role.rawValue)\(magnitude)" }
        let tail = String(magnitude % modulus)
        return "crew-\(role.rawValue)" + String(repeating: "0", count: workerIDDigits - tail.utf8.count) + tail
    }
}
