#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Workers whose enqueued jobs a thread hands over at the end of a loop of submits, rather than
/// after each (see ``PoolCore``'s `perform`).
///
/// `map`'s consumer starts a chunk per free place in its window, one submit each, and a process
/// worker's `sendEnqueued` is a write that wakes the worker's reader thread, on a vCPU that is
/// usually busy with a job. Woken for six outputs, the consumer used to make up to six writes
/// to the same workers; inside ``withCurrent(_:)`` the submits only enqueue, and each worker gets
/// one write when the loop ends. The jobs wait in the worker's queue meanwhile, in the order
/// they were assigned, and any other thread's `sendEnqueued` for that worker takes them along.
///
/// A scope must not suspend (it belongs to one thread), and ends before its thread waits for
/// anything those jobs could produce.
@usableFromInline
final class DeferredSends {
    private var handles: [any WorkerHandle] = []

    private init() {}

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key, nil)
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return key
    }()

    /// The calling thread's scope, or nil if it must send at once.
    static var current: DeferredSends? {
        pthread_getspecific(key).map { Unmanaged<DeferredSends>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Runs `body` with the calling thread's sends deferred, then hands over what it enqueued.
    /// Nested scopes join the outermost one.
    @usableFromInline
    static func withCurrent(_ body: () -> Void) {
        if current != nil { return body() }
        let sends = DeferredSends()
        pthread_setspecific(key, Unmanaged.passUnretained(sends).toOpaque())
        defer {
            pthread_setspecific(key, nil)
            for handle in sends.handles { handle.sendEnqueued() }
        }
        body()
    }

    /// Notes that `handle` has jobs enqueued to hand over when the scope ends.
    func add(_ handle: any WorkerHandle) {
        // One or two workers per loop as a rule: a scan is cheap.
        if !handles.contains(where: { $0 === handle }) { handles.append(handle) }
    }
}
