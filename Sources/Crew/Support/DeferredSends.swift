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
/// Only a worker that has work already waits: one that gets a job with fewer than three in
/// flight has it handed over at once (with everything enqueued for it before), so that a loop of
/// small jobs never leaves a starving worker idle until it ends.
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
            sends.flush()
        }
        body()
    }

    /// Submits deferred before the scope hands over what it has so far: a long loop of small
    /// jobs would otherwise leave the workers idle until it ends.
    static let maxDeferred = 16

    private var deferred = 0

    /// Notes that `handle` has jobs enqueued to hand over when the scope ends (or sooner, after
    /// ``maxDeferred`` submits).
    func add(_ handle: any WorkerHandle) {
        // One or two workers per loop as a rule: a scan is cheap.
        if !handles.contains(where: { $0 === handle }) { handles.append(handle) }
        deferred += 1
        if deferred >= Self.maxDeferred { flush() }
    }

    /// Hands over everything enqueued so far.
    private func flush() {
        let due = handles
        handles.removeAll(keepingCapacity: true)
        deferred = 0
        for handle in due { handle.sendEnqueued() }
    }
}
