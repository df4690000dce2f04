@testable import Crew
import CrewTestJobs
import Foundation
import Glibc
import Synchronization
import Testing

extension ProcessTests {
    /// A worker receives its jobs in the order the pool assigned them, whichever thread sends
    /// them. The pool decides under its lock and sends after unlocking; two threads that each
    /// dispatched a job could send them in reverse order, and a worker holding jobs (prefetch)
    /// would then run the later one first, while the earlier one's timeout ran.
    @Suite struct DispatchOrder {
        @Test func pendingDispatchesGiveBackEverythingOldestFirst() {
            let pending = PendingDispatches()
            for id: UInt64 in 1...3 {
                pending.append(DispatchedJob(jobID: id, name: "x", payload: JobPayload(), announceStart: false))
            }
            #expect(pending.take().map(\.jobID) == [1, 2, 3])
            #expect(pending.take().isEmpty)
        }

        /// Four threads act as the pool does: each assigns a job under one lock, enqueues it
        /// there, and sends after unlocking, yielding the CPU in between as a preempted thread
        /// would. A real worker process running one job at a time starts them in the order they
        /// reached it, which must be the order of assignment. The jobs ask to announce their
        /// start, and the announcements are what is compared: a worker frees its slot before it
        /// answers, so a job's answer may leave after the next job's, but a job is announced only
        /// once the one before it has ended.
        @Test func jobsReachAProcessWorkerInTheOrderTheyWereEnqueued() async throws {
            let started = Mutex<[UInt64]>([])
            let answered = Mutex(0)
            let exited = Mutex(false)
            let worker = try await spawnTestWorker()
            worker.start(ProcessWorker.Callbacks(
                hello: { _ in },
                messages: { messages in
                    for message in messages {
                        switch message {
                        case .started(let jobID): started.withLock { $0.append(jobID) }
                        case .result: answered.withLock { $0 += 1 }
                        default: Issue.record("unexpected \(message)")
                        }
                    }
                },
                violation: { Issue.record("protocol violation: \($0)") },
                exited: { _, _ in exited.withLock { $0 = true } }))

            let threads = 4, jobsPerThread = 500
            let assignment = Mutex<UInt64>(0)
            let arguments = try BinaryEncoder().encode(Echo(7))
            DispatchQueue.concurrentPerform(iterations: threads) { _ in
                for _ in 0..<jobsPerThread {
                    assignment.withLock { next in
                        worker.enqueue(DispatchedJob(
                            jobID: next, name: Echo.jobName, payload: JobPayload(encoded: arguments), announceStart: true))
                        next += 1
                    }
                    sched_yield()  // another thread may assign and send meanwhile
                    worker.sendEnqueued()
                }
            }
            let total = threads * jobsPerThread
            #expect(await eventually(within: .seconds(20)) { answered.withLock { $0 } == total })
            let order = started.withLock { $0 }
            #expect(order.count == total)
            let misplaced = order.enumerated().filter { $0.offset != Int($0.element) }.prefix(5).map(\.element)
            #expect(misplaced.isEmpty, "jobs started out of their order of assignment, first at \(misplaced)")
            worker.release()
            #expect(await eventually { exited.withLock { $0 } })
        }
    }
}
