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

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept).
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
