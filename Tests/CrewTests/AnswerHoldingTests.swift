@testable import Crew
import CrewTestJobs
import Glibc
import Synchronization
import Testing

/// Frames held back for company in a ``FrameOutbox`` (a worker's answers while prefetched jobs
/// wait in it): they leave with the next send that does not hold, or when the hold timer says so.
@Suite(.timeLimit(.minutes(1))) struct FrameHoldingTests {
    private static func run(_ jobID: UInt64) -> (inout FrameWriter) -> Void {
        { $0.write(PoolMessage.run(jobID: jobID, name: "Job", arguments: [], announceStart: false)) }
    }

    /// An outbox with a hold timer on one end of a new socket pair, and the other end (to close).
    private static func holdingOutbox() throws -> (outbox: FrameOutbox, timer: HoldTimer, near: Int32, far: Int32) {
        let (near, far) = try SystemIO.socketPair()
        guard let timer = HoldTimer() else {
            close(near)
            close(far)
            throw SystemIO.Failure(call: "timerfd_create", errno: errno)
        }
        return (FrameOutbox(fd: near, holdTimer: timer), timer, near, far)
    }

    /// Ends `outbox`'s sending side and returns the job ids of the run frames `far` received.
    private static func jobIDsSent(by outbox: FrameOutbox, to far: Int32) throws -> [UInt64] {
        outbox.shutdownWriting()
        defer { outbox.closeDescriptor() }
        return try FrameOutboxTests.runFrameJobIDs(from: far, maxFrameSize: 1 << 16)
    }

    /// Whether `fd` has something to read within `milliseconds`.
    private static func readable(_ fd: Int32, within milliseconds: Int32) -> Bool {
        var request = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&request, 1, milliseconds) > 0
    }

    @Test func heldFramesLeaveWithTheNextSendThatDoesNotHold() throws {
        let (outbox, _, _, far) = try Self.holdingOutbox()
        defer { close(far) }
        #expect(outbox.send(holdingWhileUnder: 3, Self.run(1)))
        #expect(outbox.send(holdingWhileUnder: 3, Self.run(2)))
        #expect(!Self.readable(far, within: 0))
        // The third would make three held sends, not under 3: everything leaves, in order.
        #expect(outbox.send(holdingWhileUnder: 3, Self.run(3)))
        #expect(try Self.jobIDsSent(by: outbox, to: far) == [1, 2, 3])
    }

    /// Holding arms the timer; whoever watches it flushes when it expires. A limit of 1 or
    /// less, or an outbox without a timer, never holds.
    @Test func theTimerExpiresAfterTheHoldAndAFlushSendsWhatWasHeld() throws {
        let (outbox, timer, near, far) = try Self.holdingOutbox()
        defer { close(far) }
        #expect(!Self.readable(timer.fd, within: 0))
        #expect(outbox.send(holdingWhileUnder: 5, Self.run(1)))
        #expect(Self.readable(timer.fd, within: 10_000))
        timer.wait()  // returns at once: consumes the expiry
        #expect(!Self.readable(far, within: 0))
        #expect(outbox.flush())
        #expect(outbox.send(holdingWhileUnder: 1, Self.run(2)))
        let plain = FrameOutbox(fd: near)
        #expect(plain.send(holdingWhileUnder: 5, Self.run(3)))
        #expect(try Self.jobIDsSent(by: outbox, to: far) == [1, 2, 3])
    }

    /// A worker's reader posts the failures it answers itself: a post queues the frame and fires
    /// the timer, and returns even when the channel is full (a send would block there, and a
    /// reader that stops reading deadlocks with a pool blocked sending to it). The thread that
    /// waits on the timer sends it once the peer reads, after everything sent before it.
    @Test func aPostReturnsOnAFullChannelAndTheTimerThreadSendsIt() throws {
        let (outbox, timer, near, far) = try Self.holdingOutbox()
        defer { close(far) }
        // Fill the channel with whole frames: each is one small write, taken whole or refused.
        var filler = FrameWriter(capacity: 256)
        var sent: UInt64 = 0
        while true {
            filler.bytes.removeAll(keepingCapacity: true)
            Self.run(sent + 1)(&filler)
            let written = filler.bytes.withUnsafeBytes { Glibc.send(near, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if written < 0 {
                #expect(errno == EAGAIN)
                break
            }
            try #require(written == filler.bytes.count)
            sent += 1
        }
        #expect(sent > 10)
        #expect(outbox.post(Self.run(sent + 1)))
        #expect(Self.readable(timer.fd, within: 10_000))
        let flusher = PosixThread.start(name: "test-flusher") {
            timer.wait()
            outbox.flush()
            outbox.shutdownWriting()
        }
        #expect(try FrameOutboxTests.runFrameJobIDs(from: far, maxFrameSize: 1 << 16) == Array(1...(sent + 1)))
        flusher.join()
        outbox.closeDescriptor()
    }

    /// Large frames are not held: once `maxHeldBytes` are queued, a send that could hold sends.
    @Test func framesAreNotHeldPastTheByteLimit() throws {
        let (outbox, _, _, far) = try Self.holdingOutbox()
        defer { close(far) }
        let half = [UInt8](repeating: 7, count: FrameOutbox.maxHeldBytes / 2)
        let big: (UInt64) -> (inout FrameWriter) -> Void = { jobID in
            { $0.write(PoolMessage.run(jobID: jobID, name: "Job", arguments: half, announceStart: false)) }
        }
        #expect(outbox.send(holdingWhileUnder: 10, big(1)))
        #expect(!Self.readable(far, within: 0))
        // The second takes the queue past the limit: both leave now, though the count allows 10.
        let received = Recorder()
        let reading = PosixThread.start(name: "test-reader") {
            for jobID in (try? FrameOutboxTests.runFrameJobIDs(from: far, maxFrameSize: 1 << 20)) ?? [] {
                received.append(Int(jobID))
            }
        }
        #expect(outbox.send(holdingWhileUnder: 10, big(2)))
        outbox.shutdownWriting()
        reading.join()
        #expect(received.values == [1, 2])
        outbox.closeDescriptor()
    }

    /// While posted frames wait, nothing is held back: the next send takes them along at once.
    @Test func aSendAfterAPostDoesNotHold() throws {
        let (outbox, _, _, far) = try Self.holdingOutbox()
        defer { close(far) }
        #expect(outbox.post(Self.run(1)))
        #expect(outbox.send(holdingWhileUnder: 5, Self.run(2)))
        #expect(Self.readable(far, within: 0))
        // The posted frame has left: holding works again.
        #expect(outbox.send(holdingWhileUnder: 5, Self.run(3)))
        #expect(try Self.jobIDsSent(by: outbox, to: far) == [1, 2])
        #expect(outbox.flush() == false)
    }
}

extension ProcessTests {
    /// A worker with prefetched jobs holds its answers back for company, within a bound.
    @Suite struct AnswerHolding {
        /// A job with a timeout is never held back. One that ends 5 ms before its timeout, with a
        /// job still waiting behind it, is answered in time; held, its answer would leave after
        /// 6 ms, the pool would take it for a job that ran over and kill the worker. Tried up to
        /// three times, so that a stall of this machine alone cannot fail it: without the rule
        /// every try times out.
        @Test func aJobThatEndsJustInsideItsTimeoutIsNotHeldPastIt() async throws {
            var outcomes: [String] = []
            for _ in 0..<3 {
                let outcome = try await withPool(.processes(1).prefetch(2)) { pool -> String in
                    let later = temporaryPath("later")
                    defer { unlink(later) }
                    let timed = Task { () -> String in
                        do {
                            _ = try await pool.run(Sleep(milliseconds: 300), timeout: .milliseconds(305))
                            return "ok"
                        } catch let error as CrewError { return "\(error.code)" } catch { return "\(error)" }
                    }
                    #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 1 })
                    // Two jobs wait behind it: when it ends, one starts and one still waits.
                    let rest = (0..<2).map { _ in Task { try await pool.run(WaitForFile(path: later)) } }
                    #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 3 })
                    let outcome = await timed.value
                    openGate(later)
                    for job in rest { _ = try? await job.value }
                    return outcome
                }
                outcomes.append(outcome)
                if outcome == "ok" { break }
            }
            #expect(outcomes.last == "ok", "\(outcomes)")
        }

        /// The first job's answer is held (three more jobs wait in the worker) while the next
        /// job blocks until the caller has that answer: only the worker's hold timer can send
        /// it. Without it the caller would wait for ever.
        @Test func aHeldAnswerLeavesWhileTheNextJobBlocks() async throws {
            try await withPool(.processes(1).prefetch(4)) { pool in
                let first = temporaryPath("first")
                let later = temporaryPath("later")
                defer {
                    unlink(first)
                    unlink(later)
                }
                let head = Task { try await pool.run(WaitForFile(path: first)) }
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 1 })
                let rest = (0..<4).map { _ in Task { try await pool.run(WaitForFile(path: later)) } }
                // All five are in the worker: one runs, four are held.
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 5 })
                openGate(first)
                let pid = try await head.value
                openGate(later)
                for job in rest { #expect(try await job.value == pid) }
            }
        }

        /// A worker that dies right after holding an answer back takes it with it: that job, the
        /// one that killed it and the held ones each end with their output or a typed
        /// `workerCrashed`, none waits for ever, and the pool serves on.
        @Test func aWorkerThatDiesWhileHoldingAnAnswerFailsItsJobsTyped() async throws {
            try await withPool(.processes(1).prefetch(4)) { pool in
                let first = temporaryPath("first")
                defer { unlink(first) }
                @Sendable func outcome(_ run: @escaping @Sendable () async throws -> Int) async -> String {
                    do { return "ok \(try await run())" } catch let error as CrewError { return "\(error.code)" } catch { return "\(error)" }
                }
                let head = Task { await outcome { Int(try await pool.run(WaitForFile(path: first))) } }
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 1 })
                let crash = Task { await outcome { try await pool.run(Crash(.sigkill)) } }
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 2 })
                let held = (0..<3).map { value in Task { await outcome { try await pool.run(Echo(value)) } } }
                // All five are in the worker. The head's answer is held (three jobs wait behind
                // the crash), and the crash follows at once.
                #expect(await eventually { pool.snapshot().workers.first?.currentJobs.count == 5 })
                openGate(first)
                #expect(await crash.value == "workerCrashed")
                let headOutcome = await head.value
                #expect(headOutcome.hasPrefix("ok ") || headOutcome == "workerCrashed", "\(headOutcome)")
                for (value, job) in held.enumerated() {
                    let heldOutcome = await job.value
                    #expect(heldOutcome == "ok \(value)" || heldOutcome == "workerCrashed", "\(heldOutcome)")
                }
                try await expectNothingLeftAndServing(pool)
            }
        }

        /// Large arguments and large answers through a worker holding 8 jobs: the worker's
        /// answers fill the channel to the pool while the pool's dispatches fill the other way.
        /// When the hold timer's flush ran on the worker's reader thread, it blocked there, the
        /// reader stopped reading, the pool's reader blocked sending, and neither side read again.
        @Test func largeFramesBothWaysNeverDeadlock() async throws {
            try await withPool(.processes(1).prefetch(8)) { pool in
                let sizes = try await withThrowingTaskGroup(of: Int.self) { group in
                    for value in 0..<150 {
                        group.addTask {
                            let bytes = [UInt8](repeating: UInt8(value & 0xff), count: 256 << 10)
                            let echoed = try await pool.run(EchoBytes(bytes: bytes, microseconds: 1_000))
                            return echoed == bytes ? echoed.count : -1
                        }
                    }
                    return try await group.reduce(into: [Int]()) { $0.append($1) }
                }
                #expect(sizes == Array(repeating: 256 << 10, count: 150))
            }
        }

        /// A released worker answers every job it received before it exits, also while the
        /// hold thread is in the middle of a flush (the pool reads slowly, so the channel fills):
        /// a last answer that only queued behind that flush used to let the worker exit under it.
        @Test func aReleasedWorkerAnswersEverythingWhileTheHoldThreadFlushes() async throws {
            let answered = Mutex(0)
            let problems = Mutex<[String]>([])
            let exited = Mutex<String?>(nil)
            let worker = try await spawnTestWorker()
            worker.start(ProcessWorker.Callbacks(
                hello: { _ in },
                messages: { messages in
                    for message in messages {
                        if case .result = message { answered.withLock { $0 += 1 } }
                    }
                    usleep(20_000)  // a slow pool
                },
                violation: { problem in problems.withLock { $0.append(problem) } },
                exited: { termination, _ in exited.withLock { $0 = "\(termination)" } }))
            let total = 8
            let arguments = try BinaryEncoder().encode(EchoBytes(bytes: [UInt8](repeating: 7, count: 1 << 20), microseconds: 5_000))
            for jobID in 0..<UInt64(total) {
                worker.enqueue(DispatchedJob(
                    jobID: jobID, name: EchoBytes.jobName, payload: JobPayload(encoded: arguments), announceStart: false))
            }
            worker.sendEnqueued()
            worker.release()
            #expect(await eventually(within: .seconds(20)) { exited.withLock { $0 } != nil })
            #expect(answered.withLock { $0 } == total)
            #expect(problems.withLock { $0 }.isEmpty)
            #expect(exited.withLock { $0 } == "exited with status 0")
        }

        /// Many quick jobs through a worker that holds many: every answer arrives, once.
        @Test func everyAnswerArrivesThroughADeepPrefetch() async throws {
            try await withPool(.processes(2).prefetch(16)) { pool in
                let outputs = try await withThrowingTaskGroup(of: Int.self) { group in
                    for value in 0..<2_000 { group.addTask { try await pool.run(Add(value, 1)) } }
                    return try await group.reduce(into: [Int]()) { $0.append($1) }
                }
                #expect(outputs.sorted() == (1...2_000).map { $0 })
            }
        }
    }
}
