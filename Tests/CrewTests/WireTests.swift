@testable import Crew
import CrewTestJobs
import Glibc
import Testing

@Suite struct WireTests {
    @Test func poolMessagesRoundTripInAnyChunking() throws {
        var writer = FrameWriter()
        let messages: [PoolMessage] = [
            .run(jobID: 1, name: "A.Job", arguments: [1, 2, 3]),
            .cancel(jobID: 1),
            .run(jobID: UInt64.max, name: "", arguments: []),
            .run(jobID: 7, name: "ünïcode", arguments: [UInt8](repeating: 9, count: 100_000), announceStart: true),
            .run(jobID: 8, name: "Timed", arguments: [4], timed: true),
            .run(jobID: 9, name: "Both", arguments: [], announceStart: true, timed: true),
            .run(jobID: 10, name: "Urgent", arguments: [5], priority: 20),
            .run(jobID: 11, name: "Lowest", arguments: [], announceStart: true, timed: true, priority: Int(Int64.min)),
            .recall(jobID: 9),
            .shutdown,
        ]
        for message in messages { writer.write(message) }
        for chunk in [1, 3, 7, 4096, writer.bytes.count] {
            var reader = FrameReader(initialCapacity: 16)
            var decoded: [String] = []
            var offset = 0
            while offset < writer.bytes.count {
                reader.append(writer.bytes[offset..<min(offset + chunk, writer.bytes.count)])
                offset += chunk
                while let message = try reader.nextPoolMessage() { decoded.append("\(message)") }
            }
            #expect(decoded == messages.map { "\($0)" })
            #expect(reader.bufferedCount == 0)
        }
    }

    /// A run frame with a flag this build does not know, or a priority cut short, is a broken
    /// protocol: the worker refuses it rather than read the fields after it wrongly.
    @Test(arguments: [
        [12, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0xF8, 0, 0] as [UInt8],  // unknown flags
        [13, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 4, 10, 0, 0],  // a priority of 3 bytes
    ])
    func malformedRunFramesThrow(bytes: [UInt8]) {
        var reader = FrameReader()
        reader.append(bytes)
        #expect(throws: WireError.self) { try reader.nextPoolMessage() }
    }

    @Test func workerMessagesRoundTrip() throws {
        var writer = FrameWriter()
        let hello = Hello(
            version: WireProtocol.version, processID: 42, workerID: UInt64(UInt32.max) + 3, jobNames: ["A", "B.C"],
            jobLayouts: ["", "job 8 {value:Int64}"])
        writer.write(WorkerMessage.hello(hello))
        writer.write(WorkerMessage.result(jobID: 5, output: [4, 5]))
        writer.write(WorkerMessage.recalled(jobID: 6))
        writer.write(WorkerMessage.failure(jobID: 6, kind: .undecodableArguments, errorType: "E", message: "bad"))
        var reader = FrameReader()
        reader.append(writer.bytes)
        guard case .hello(let decoded)? = try reader.nextWorkerMessage() else { Issue.record("no hello"); return }
        #expect(decoded == hello)
        guard case .result(5, [4, 5])? = try reader.nextWorkerMessage() else { Issue.record("no result"); return }
        guard case .recalled(6)? = try reader.nextWorkerMessage() else { Issue.record("no recalled"); return }
        guard case .failure(6, .undecodableArguments, "E", "bad")? = try reader.nextWorkerMessage() else {
            Issue.record("no failure")
            return
        }
        #expect(try reader.nextWorkerMessage() == nil)
    }

    @Test(arguments: [
        [0xff, 0xff, 0xff, 0xff, 1] as [UInt8],  // over the maximum size
        [0, 0, 0, 0, 1],  // zero length
        [1, 0, 0, 0, 99],  // unknown type
        [1, 0, 0, 0, 2],  // a run frame, which workers may not send
        [3, 0, 0, 0, 3, 1, 2],  // a result shorter than its job id
        [9, 0, 0, 0, 1, 67, 82, 69, 88, 1, 0, 0, 0],  // a hello with a bad magic
        [8, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0],  // a failure without its fields
        [5, 0, 0, 0, 14, 1, 0, 0, 0],  // a recalled job id cut short
        [1, 0, 0, 0, 13],  // a recall, which workers may not send
    ])
    func malformedFramesFromAWorkerThrow(bytes: [UInt8]) {
        var reader = FrameReader(maxFrameSize: 1 << 20)
        reader.append(bytes)
        #expect(throws: WireError.self) { _ = try reader.nextWorkerMessage() }
    }

    @Test func randomGarbageNeverCrashesTheReader() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var reader = FrameReader(maxFrameSize: 4096)
            let bytes = (0..<Int.random(in: 0..<64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            reader.append(bytes)
            while true {
                guard let message = try? reader.nextWorkerMessage() else { break }
                _ = message
            }
        }
    }
}

extension ProcessTests {
    /// The worker side of the protocol, spoken to directly.
    @Suite struct WorkerProtocol {
        /// Spawns a test worker on the supervisor thread and collects what it sends.
        final class Probe: Sendable {
            let worker: ProcessWorker
            let inbox = Recorder()
            let events = Mutex<[String]>([])

            init(concurrency: Int = 1) throws {
                let spec = ProcessWorker.LaunchSpec(
                    executablePath: testWorkerPath, arguments: [], environment: [:],
                    maxFrameSize: WireProtocol.defaultMaxFrameSize, forwardStderr: false, concurrency: concurrency)
                let spawned = Mutex<Result<ProcessWorker, CrewError>?>(nil)
                Supervisor.shared.submit {
                    let result = Result { () throws(CrewError) in try ProcessWorker.spawn(id: 99, spec) }
                    spawned.withLock { $0 = result }
                }
                while spawned.withLock({ $0 == nil }) { usleep(1000) }
                worker = try spawned.withLock { $0! }.get()
            }

            func start() {
                worker.start(ProcessWorker.Callbacks(
                    hello: { [self] hello in events.withLock { $0.append("hello \(hello.jobNames.count)") } },
                    messages: { [self] messages in events.withLock { $0 += messages.map { "\($0)" } } },
                    violation: { [self] text in events.withLock { $0.append("violation \(text)") } },
                    exited: { [self] termination, _ in events.withLock { $0.append("exited \(termination)") } }
                ))
            }

            var log: [String] { events.withLock { $0 } }

            /// A new worker, started, that has said hello.
            static func greeted(concurrency: Int = 1, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Probe {
                let probe = try Probe(concurrency: concurrency)
                probe.start()
                #expect(await eventually { probe.log.first?.hasPrefix("hello") == true }, sourceLocation: sourceLocation)
                return probe
            }

            /// Lets the worker go; it must exit with status 0 (it served on until then).
            func expectCleanExit(sourceLocation: SourceLocation = #_sourceLocation) async {
                worker.release()
                #expect(await eventually { log.last == "exited exited with status 0" }, sourceLocation: sourceLocation)
            }
        }

        @Test func aWorkerAnswersAnUnknownJobTypeAndGarbageArgumentsAndServesOn() async throws {
            let probe = try await Probe.greeted()
            probe.worker.send(.run(jobID: 1, name: "No.Such.Job", arguments: []))
            probe.worker.send(.run(jobID: 2, name: Echo.jobName, arguments: [0xff, 0xfe, 0x00]))
            probe.worker.send(.run(jobID: 3, name: Echo.jobName, arguments: try BinaryEncoder().encode(Echo(41)), announceStart: true))
            #expect(await eventually { probe.log.count >= 4 })
            // Job 3 may arrive while job 2 runs (one at a time): then it is held, and announced as
            // started because its frame asks for it.
            #expect(await eventually { probe.log.contains { $0.hasPrefix("result(jobID: 3") } })
            let started = probe.log.firstIndex { $0 == "started(jobID: 3)" }
            let answered = probe.log.firstIndex { $0.hasPrefix("result(jobID: 3") }
            if let started, let answered { #expect(started < answered) }
            let log = probe.log.filter { !$0.hasPrefix("started") }
            #expect(log.count == 4, "\(log)")
            #expect(log.contains { $0.contains("jobID: 1, kind: Crew.FailureKind.unknownJobType") }, "\(log)")
            #expect(log.contains { $0.contains("jobID: 2, kind: Crew.FailureKind.undecodableArguments") }, "\(log)")
            #expect(log.contains { $0.hasPrefix("result(jobID: 3") }, "\(log)")
            await probe.expectCleanExit()
        }

        @Test func aMalformedPlainBlockIsUndecodableAndTheWorkerServesOn() async throws {
            let probe = try await Probe.greeted()
            // A block of 4-byte values where PlainPoint takes 16: another build's layout.
            probe.worker.send(.run(jobID: 1, name: PlainPoint.jobName, arguments: [BinaryFormat.tagPlain, 1, 4, 1, 2, 3, 4]))
            probe.worker.send(.run(jobID: 2, name: PlainPoint.jobName, arguments: try BinaryEncoder().encode(PlainPoint(x: 1, y: 2))))
            #expect(await eventually { probe.log.contains { $0.hasPrefix("result(jobID: 2") } })
            #expect(probe.log.contains { $0.contains("jobID: 1, kind: Crew.FailureKind.undecodableArguments") }, "\(probe.log)")
            await probe.expectCleanExit()
        }

        @Test func aCancelThatOvertakesItsRunFrameStillCancelsTheJob() async throws {
            // Two pool threads can send a job's run frame and its cancel in either order.
            let probe = try await Probe.greeted()
            probe.worker.send(.cancel(jobID: 7))
            probe.worker.send(.run(jobID: 7, name: Sleep.jobName, arguments: try BinaryEncoder().encode(Sleep(milliseconds: 60_000))))
            probe.worker.send(.run(jobID: 8, name: Echo.jobName, arguments: try BinaryEncoder().encode(Echo(5))))
            #expect(await eventually { probe.log.contains { $0.hasPrefix("result(jobID: 8") } })
            #expect(probe.log.contains { $0.contains("jobID: 7, kind: Crew.FailureKind.cancelled") }, "\(probe.log)")
            await probe.expectCleanExit()
        }

        @Test func aReleasedWorkerAnswersWhatItHoldsBeforeItExits() async throws {
            // `release()` promises that the worker exits once it has answered what it already
            // received: end-of-file drains, it does not drop the running and held jobs.
            let probe = try await Probe.greeted()
            let gate = "/tmp/crew-release-gate-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            defer { unlink(gate) }
            probe.worker.send(.run(jobID: 1, name: WaitForFile.jobName, arguments: try BinaryEncoder().encode(WaitForFile(path: gate))))
            probe.worker.send(.run(jobID: 2, name: Echo.jobName, arguments: try BinaryEncoder().encode(Echo(5)), announceStart: true))
            probe.worker.release()
            // Give the worker time to read its end-of-file while job 1 waits (a worker that took
            // it for "exit now" is gone by then; one that drains passes however long this is).
            try await Task.sleep(for: .milliseconds(300))
            close(open(gate, O_WRONLY | O_CREAT, 0o600))
            #expect(await eventually { probe.log.last?.hasPrefix("exited") == true })
            let log = probe.log
            #expect(log.contains { $0.hasPrefix("result(jobID: 1") }, "\(log)")
            #expect(log.contains { $0.hasPrefix("result(jobID: 2") }, "\(log)")
            #expect(log.last == "exited exited with status 0", "\(log)")
        }

        @Test func aDrainingWorkerSendsEveryAnswerBeforeItExits() async throws {
            // Two slots: job 1 ends first but is slow to describe its error (its answer is not
            // sent yet when job 2 ends); job 2, the last to end, must not take the worker down
            // with job 1's answer unsent.
            let probe = try await Probe.greeted(concurrency: 2)
            let base = "/tmp/crew-drain-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            let described = base + "-described", answered = base + "-answered"
            defer { unlink(described); unlink(answered) }
            probe.worker.send(.run(jobID: 1, name: FailWhileDescribed.jobName, arguments: try BinaryEncoder().encode(
                FailWhileDescribed(opens: described, waitsFor: answered))))
            probe.worker.send(.run(jobID: 2, name: WaitForFile.jobName, arguments: try BinaryEncoder().encode(WaitForFile(path: described))))
            probe.worker.send(.shutdown)
            #expect(await eventually { probe.log.contains { $0.hasPrefix("result(jobID: 2") } })
            close(open(answered, O_WRONLY | O_CREAT, 0o600))
            #expect(await eventually { probe.log.last?.hasPrefix("exited") == true })
            let log = probe.log
            #expect(log.contains { $0.hasPrefix("failure(jobID: 1") }, "\(log)")
            #expect(log.last == "exited exited with status 0", "\(log)")
        }

        @Test func aWorkerEndsWhenThePoolSendsGarbage() async throws {
            let probe = try await Probe.greeted()
            var writer = FrameWriter()
            _ = writer.beginFrame(.result)  // a frame type the pool may not send, length 0
            probe.worker.sendRaw(writer.bytes)
            #expect(await eventually { probe.log.last?.hasPrefix("exited") == true })
            #expect(probe.log.last == "exited exited with status 65")
        }
    }
}

import Synchronization

/// The outbox shared by a channel's senders.
@Suite struct FrameOutboxTests {
    /// A frame queued while another thread is sending was accepted (its sender was told so): a
    /// `shutdownWriting` before the flush ends must not drop it. Deterministic: the socket's
    /// buffer is full first, so whichever sender comes first stays blocked until the reader
    /// drains, and the other one's frame waits in the outbox.
    @Test func framesQueuedBeforeAShutdownStillLeave() async throws {
        let (near, far) = try SystemIO.socketPair()
        defer { close(far) }
        var filler = FrameWriter(capacity: 64)
        filler.write(PoolMessage.run(jobID: 100, name: "Fill", arguments: [], announceStart: false))
        let frame = filler.bytes
        while frame.withUnsafeBytes({ send(near, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) == frame.count {}
        let outbox = FrameOutbox(fd: near)
        let big = [UInt8](repeating: 7, count: 1 << 20)
        let returned = Mutex(0)
        let senders = [big, [1, 2, 3]].enumerated().map { index, arguments in
            PosixThread.start(name: "sender-\(index)") {
                _ = outbox.send { $0.write(PoolMessage.run(jobID: UInt64(index), name: "Job", arguments: arguments, announceStart: false)) }
                returned.withLock { $0 += 1 }
            }
        }
        // One sender is stuck in the big send, the other has queued its frame behind it.
        #expect(await eventually(within: .seconds(20)) { returned.withLock { $0 } == 1 })
        outbox.shutdownWriting()
        let jobs = try Self.runFrameJobIDs(from: far, maxFrameSize: 4 << 20)
        for sender in senders { sender.join() }
        #expect(jobs.filter { $0 != 100 }.sorted() == [0, 1])
        outbox.closeDescriptor()
    }

    /// A send that writes nothing (its jobs were sent by another thread already) must not
    /// leave the outbox believing a send is in progress: every later frame would wait for it.
    @Test(.timeLimit(.minutes(1))) func aSendThatWritesNothingLeavesTheOutboxUsable() throws {
        let (near, far) = try SystemIO.socketPair()
        defer { close(far) }
        let outbox = FrameOutbox(fd: near)
        #expect(outbox.send { _ in })
        #expect(outbox.send { $0.write(PoolMessage.run(jobID: 1, name: "Job", arguments: [], announceStart: false)) })
        outbox.shutdownWriting()
        #expect(try Self.runFrameJobIDs(from: far, maxFrameSize: 1 << 16) == [1])
        outbox.closeDescriptor()
    }

    /// The job ids of the run frames read from `fd` until end-of-file, in order.
    static func runFrameJobIDs(from fd: Int32, maxFrameSize: Int) throws -> [UInt64] {
        var reader = FrameReader(maxFrameSize: maxFrameSize)
        var jobs: [UInt64] = []
        while reader.append(from: fd) > 0 {
            while let message = try reader.nextPoolMessage() {
                if case .run(let jobID, _, _, _, _, _) = message { jobs.append(jobID) }
            }
        }
        return jobs
    }
}
