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
        /// would. A real worker process running one job at a time answers in the order the jobs
        /// reached it, which must be the order of assignment.
        @Test func jobsReachAProcessWorkerInTheOrderTheyWereEnqueued() async throws {
            let answered = Mutex<[UInt64]>([])
            let exited = Mutex(false)
            let spec = ProcessWorker.LaunchSpec(
                executablePath: testWorkerPath, arguments: [], environment: [:],
                maxFrameSize: WireProtocol.defaultMaxFrameSize, forwardStderr: true, concurrency: 1)
            let worker = try await withCheckedThrowingContinuation { continuation in
                // Workers are spawned on the supervisor's thread (see ProcessWorker.spawn).
                Supervisor.shared.submit {
                    continuation.resume(with: Result { () throws(CrewError) in try ProcessWorker.spawn(id: 1, spec) })
                }
            }
            worker.start(ProcessWorker.Callbacks(
                hello: { _ in },
                messages: { messages in
                    for case .result(let jobID, _) in messages { answered.withLock { $0.append(jobID) } }
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
                            jobID: next, name: Echo.jobName, payload: JobPayload(encoded: arguments), announceStart: false))
                        next += 1
                    }
                    sched_yield()  // another thread may assign and send meanwhile
                    worker.sendEnqueued()
                }
            }
            let total = threads * jobsPerThread
            #expect(await eventually(within: .seconds(20)) { answered.withLock { $0.count } == total })
            #expect(answered.withLock { $0 } == (0..<UInt64(total)).map { $0 })
            worker.release()
            #expect(await eventually { exited.withLock { $0 } })
        }
    }
}
