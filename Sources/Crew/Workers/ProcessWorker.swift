#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCrewSystem
import Synchronization

/// The pool's side of one worker process: its pid, its channel (a Unix socket on the worker's
/// fd 3) and its stderr pipe, each read by a dedicated thread.
///
/// Ownership: the reader thread owns the channel and closes it after reaping the process; the
/// stderr thread owns the stderr pipe and closes it at end-of-file. Sends go through an outbox
/// that batches whatever several threads enqueue at once into one `send`.
final class ProcessWorker: Sendable {
    /// What the worker's threads report to the pool.
    struct Callbacks: Sendable {
        var hello: @Sendable (Hello) -> Void
        var messages: @Sendable ([WorkerMessage]) -> Void
        var violation: @Sendable (String) -> Void
        var exited: @Sendable (CrewError.Termination, String?) -> Void
    }

    /// How to start a worker process.
    struct LaunchSpec: Sendable {
        var executablePath: String
        var arguments: [String]
        var environment: [String: String]
        var maxFrameSize: Int
        var forwardStderr: Bool
        /// How many jobs the worker runs at once.
        var concurrency: Int = 1
    }

    let id: Int
    let pid: pid_t
    private let channel: Int32
    private let stderrFD: Int32
    /// A pipe whose write end tells the stderr thread to stop waiting for end-of-file (a process
    /// the job left behind may hold the stderr pipe open for ever). Owned by the reader thread,
    /// which closes both ends.
    private let stderrAbandon: (read: Int32, write: Int32)
    private let maxFrameSize: Int
    private let forwardStderr: Bool

    private let outbox: FrameOutbox
    private let pending = PendingDispatches()
    private struct ProcessState: ~Copyable {
        var reaped = false
        var stderrTail = StderrTail()
        var stderrClosed = false
    }
    private let process = Mutex(ProcessState())

    private init(
        id: Int, pid: pid_t, channel: Int32, stderrFD: Int32, stderrAbandon: (read: Int32, write: Int32), maxFrameSize: Int,
        forwardStderr: Bool
    ) {
        self.stderrAbandon = stderrAbandon
        self.id = id
        self.pid = pid
        self.channel = channel
        self.outbox = FrameOutbox(fd: channel)
        self.stderrFD = stderrFD
        self.maxFrameSize = maxFrameSize
        self.forwardStderr = forwardStderr
    }

    /// Spawns a worker process. Call on the ``Supervisor`` thread only (see there why).
    static func spawn(id: Int, _ spec: LaunchSpec) throws(CrewError) -> ProcessWorker {
        let channel: (parent: Int32, child: Int32)
        let stderrPipe: (read: Int32, write: Int32)
        let abandon: (read: Int32, write: Int32)
        do {
            channel = try SystemIO.socketPair()
            do {
                stderrPipe = try SystemIO.pipe()
            } catch {
                close(channel.parent)
                close(channel.child)
                throw error
            }
            do {
                abandon = try SystemIO.pipe()
            } catch {
                for fd in [channel.parent, channel.child, stderrPipe.read, stderrPipe.write] { close(fd) }
                throw error
            }
        } catch {
            throw CrewError(.workerStartFailed, "cannot create the worker's channel: \(error)", workerID: id, underlying: error)
        }
        defer {
            close(channel.child)
            close(stderrPipe.write)
        }

        var environment = currentEnvironment()
        for (key, value) in spec.environment { environment[key] = value }
        environment[Crew.Environment.workerID] = "\(id)"
        environment[Crew.Environment.parentPID] = "\(getpid())"
        environment[Crew.Environment.maxFrameSize] = "\(spec.maxFrameSize)"
        environment[Crew.Environment.concurrency] = "\(spec.concurrency)"
        let argv = ["crew-worker \(id)"] + spec.arguments
        let envp = environment.map { "\($0.key)=\($0.value)" }

        var pid: pid_t = 0
        let rc = withCStrings(argv) { argv in
            withCStrings(envp) { envp in
                ccrew_spawn_worker(&pid, spec.executablePath, argv, envp, channel.child, stderrPipe.write)
            }
        }
        guard rc == 0 else {
            close(channel.parent)
            close(stderrPipe.read)
            close(abandon.read)
            close(abandon.write)
            throw CrewError(
                .workerStartFailed,
                "cannot spawn \(spec.executablePath): \(String(cString: strerror(rc))) (errno \(rc))", workerID: id)
        }
        return ProcessWorker(
            id: id, pid: pid, channel: channel.parent, stderrFD: stderrPipe.read, stderrAbandon: abandon,
            maxFrameSize: spec.maxFrameSize, forwardStderr: spec.forwardStderr)
    }

    /// Starts the reader and stderr threads.
    func start(_ callbacks: Callbacks) {
        PosixThread.start(name: PosixThread.name(.stderr, worker: id)) { [self] in stderrLoop() }.detach()
        PosixThread.start(name: PosixThread.name(.channel, worker: id)) { [self] in readLoop(callbacks) }.detach()
    }

    // MARK: Sending

    /// Queues a message and sends everything queued, unless another thread is sending already
    /// (it will send this too). Returns false if the channel is closed.
    @discardableResult
    func send(_ message: PoolMessage) -> Bool {
        outbox.send { $0.write(message) }
    }

    /// Sends bytes as they are, framed or not (for tests of the worker's defences).
    func sendRaw(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { SystemIO.sendAll(channel, $0) }
    }

    /// Closes the pool's sending side: the worker reads end-of-file and exits once it has
    /// answered what it already received.
    func release() {
        outbox.shutdownWriting()
    }

    /// Sends `signal` to the worker process unless it has been reaped already (so a recycled
    /// pid is never hit).
    func signal(_ signal: Int32) {
        process.withLock { state in
            if !state.reaped { Glibc.kill(pid, signal) }
        }
    }

    // MARK: Threads

    private func readLoop(_ callbacks: Callbacks) {
        // Outputs of `map` may wait a little here for company (see `DeferredWakes`).
        DeferredWakes.withCurrent { wakes in readMessages(callbacks, deferring: wakes) }
        // End of stream: the worker exited, closed its channel, or we stopped listening after
        // a violation. Make sure it is gone, then collect its status without racing `signal`.
        signal(SIGKILL)
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        let termination: CrewError.Termination = process.withLock { state in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            state.reaped = true
            return decodeWaitStatus(status)
        }
        // Close the channel now, or as soon as a send in progress ends (never under its feet).
        outbox.closeDescriptor()
        callbacks.exited(termination, awaitStderrTail())
    }

    /// Reads and reports messages until the channel ends or the worker breaks the protocol.
    /// Wake-ups owed to consumers are made before any wait on the channel that could outlast them.
    private func readMessages(_ callbacks: Callbacks, deferring wakes: DeferredWakes) {
        var reader = FrameReader(maxFrameSize: maxFrameSize)
        var greeted = false
        var messages: [WorkerMessage] = []
        reading: while true {
            if let due = wakes.timeUntilDue, due == .zero || !SystemIO.waitReadable(channel, within: due) {
                wakes.wakeOwed()
            }
            guard reader.append(from: channel) > 0 else { break }
            do throws(WireError) {
                while let message = try reader.nextWorkerMessage() {
                    if case .hello(let hello) = message {
                        guard !greeted else { throw WireError(description: "a second hello") }
                        greeted = true
                        callbacks.hello(hello)
                    } else {
                        guard greeted else { throw WireError(description: "a message before the hello") }
                        messages.append(message)
                    }
                }
                if !messages.isEmpty {
                    callbacks.messages(messages)
                    // Answers that came several at once were held back by the worker for
                    // company already: waiting for more would rarely find any before the
                    // deadline, and would cost this thread a timer wake-up on top of the
                    // consumer's.
                    if messages.count(where: { if case .result = $0 { true } else { false } }) >= 2 { wakes.wakeOwed() }
                    messages.removeAll(keepingCapacity: true)
                }
            } catch {
                if !messages.isEmpty { callbacks.messages(messages) }
                callbacks.violation(error.description)
                break reading
            }
        }
    }

    private func stderrLoop() {
        var buffer = [UInt8](repeating: 0, count: 8192)
        var watched = [
            pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: stderrAbandon.read, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            let ready = poll(&watched, 2, -1)
            if ready < 0 && errno == EINTR { continue }
            // Told to stop (the worker is gone, and something else holds the pipe), or poll failed.
            if ready < 0 || watched[1].revents != 0 { break }
            let n = buffer.withUnsafeMutableBytes { SystemIO.readSome(stderrFD, $0) }
            guard n > 0 else { break }
            buffer.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[..<n])
                if forwardStderr { _ = SystemIO.writeAll(2, chunk) }
                process.withLock { $0.stderrTail.append(chunk) }
            }
        }
        close(stderrFD)
        process.withLock { $0.stderrClosed = true }
    }

    /// The tail of the worker's stderr, once the pipe has closed or 250 ms have passed (a
    /// grandchild may hold the pipe open).
    ///
    /// Past the deadline it tells the stderr thread to stop and waits for it to close the pipe,
    /// so that no descriptor outlives the worker; then it closes the pipe it used to tell it.
    private func awaitStderrTail() -> String? {
        let deadline = MonotonicTime.now() + .milliseconds(250)
        var told = false
        while true {
            let (closed, text) = process.withLock { ($0.stderrClosed, $0.stderrTail.text) }
            if closed {
                close(stderrAbandon.read)
                close(stderrAbandon.write)
                return text.isEmpty ? nil : text
            }
            if !told && MonotonicTime.now() >= deadline {
                var one: UInt8 = 1
                _ = write(stderrAbandon.write, &one, 1)
                told = true
            }
            usleep(2_000)
        }
    }
}

/// The last few KiB a worker wrote to stderr.
struct StderrTail {
    static let limit = 32 * 1024
    private var bytes: [UInt8] = []

    mutating func append(_ chunk: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: chunk)
        if bytes.count > 2 * Self.limit { bytes.removeFirst(bytes.count - Self.limit) }
    }

    var text: String {
        var tail = bytes.suffix(Self.limit)
        // Start at a line boundary when we cut.
        if bytes.count > Self.limit, let newline = tail.firstIndex(of: 10) { tail = tail[(newline + 1)...] }
        return String(decoding: tail, as: UTF8.self)
    }
}

func decodeWaitStatus(_ status: Int32) -> CrewError.Termination {
    let signal = status & 0x7f
    if signal == 0 { return .exited((status >> 8) & 0xff) }
    return .signaled(signal)
}

private func currentEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let eq = text.firstIndex(of: "=") {
            result[String(text[..<eq])] = String(text[text.index(after: eq)...])
        }
        pointer += 1
    }
    return result
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

extension ProcessWorker: WorkerHandle {
    var processID: Int32? { pid }

    func enqueue(_ job: DispatchedJob) {
        pending.append(job)
    }

    func sendEnqueued() {
        outbox.send { writeEnqueued(&$0) }
    }

    /// Writes the jobs enqueued so far. Called under the outbox's lock: jobs enqueued after these
    /// are written after them, whichever thread writes them.
    private func writeEnqueued(_ writer: inout FrameWriter) {
        let jobs = pending.take()
        for job in jobs {
            writer.write(PoolMessage.run(
                jobID: job.jobID, name: job.name, arguments: job.payload.encoded ?? [], announceStart: job.announceStart, timed: job.timed,
                priority: job.priority))
        }
        pending.recycle(consume jobs)
    }

    func cancel(jobID: UInt64) {
        send(.cancel(jobID: jobID))
    }

    func recall(jobIDs: [UInt64]) {
        // After the jobs enqueued so far: a recall that overtook its job's run frame would find
        // nothing to give back.
        outbox.send { writer in
            writeEnqueued(&writer)
            for jobID in jobIDs { writer.write(PoolMessage.recall(jobID: jobID)) }
        }
    }

    func kill() {
        signal(SIGKILL)
    }

    func terminate() {
        signal(SIGTERM)
    }
}
