@testable import Crew
import Synchronization
import Testing

/// ``DeferredSends``: inside a scope, the pool's hand-overs to workers wait for its end, one per
/// worker; outside, and after it, they happen at once.
@Suite struct DeferredSendsTests {
    /// Counts hand-overs; does nothing else (no pool uses it).
    final class CountingHandle: WorkerHandle {
        let id: Int
        var processID: Int32? { nil }
        private let count = Mutex(0)
        var sends: Int { count.withLock { $0 } }

        init(id: Int) { self.id = id }
        func enqueue(_ job: DispatchedJob) {}
        func sendEnqueued() { count.withLock { $0 += 1 } }
        func cancel(jobID: UInt64) {}
        func kill() {}
        func release() {}
        func terminate() {}
    }

    @Test func aScopeHandsOverOncePerWorkerAtItsEnd() {
        let first = CountingHandle(id: 1)
        let second = CountingHandle(id: 2)
        #expect(DeferredSends.current == nil)
        DeferredSends.withCurrent {
            let scope = DeferredSends.current
            #expect(scope != nil)
            scope?.add(first)
            scope?.add(second)
            scope?.add(first)
            // A nested scope joins the outer one: nothing leaves at its end.
            DeferredSends.withCurrent {
                #expect(DeferredSends.current === scope)
                DeferredSends.current?.add(second)
            }
            #expect(first.sends == 0 && second.sends == 0)
        }
        #expect(first.sends == 1 && second.sends == 1)
        #expect(DeferredSends.current == nil)
    }

    /// Another thread is not in the scope: its hand-overs are its own business.
    @Test func aScopeBelongsToItsThread() {
        let seen = Recorder()
        DeferredSends.withCurrent {
            PosixThread.start(name: "test-other") {
                seen.append(DeferredSends.current == nil ? 0 : 1)
            }.join()
        }
        #expect(seen.values == [0])
    }
}
