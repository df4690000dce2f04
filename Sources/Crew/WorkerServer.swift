#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCrewSystem
public import Logging
import DequeModule
import Synchronization

/// Entry points for worker processes.
public enum Crew {
    /// Environment variables a pool sets for the workers it spawns.
    enum Environment {
        static let workerID = "CREW_WORKER_ID"
        static let parentPID = "CREW_PARENT_PID"
        static let maxFrameSize = "CREW_MAX_FRAME_SIZE"
        static let concurrency = "CREW_JOBS_PER_WORKER"
    }

    /// The descriptor of a worker's channel to its pool.
    static let channelFD: Int32 = 3

    /// Whether this process was started by a ``WorkerPool`` as one of its workers (also while it
    /// serves, when its jobs ask).
    public static var isWorker: Bool { serving.load(ordering: .relaxed) || getenv(Environment.workerID) != nil }

    /// Set once ``serveIfWorker(_:logger:)`` serves (it clears the environment it was started with).
    private static let serving = Atomic<Bool>(false)

    /// Serves jobs from `catalog` if this process is a worker a pool started, and never returns;
    /// does nothing and returns at once otherwise.
    ///
    /// Call it first thing in `main`, with the same catalog the parent's pool uses. A pool whose
    /// ``WorkerPool/Configuration/executable`` is ``WorkerExecutable/current`` re-executes the
    /// running binary, which then serves here.
    ///
    /// ```swift
    /// @main struct App {
    ///     static func main() async throws {
    ///         await Crew.serveIfWorker([Square.self])
    ///         // only the parent gets here
    ///     }
    /// }
    /// ```
    ///
    /// A worker ends when its pool dies (even by SIGKILL: the kernel's parent-death signal ends
    /// it) or closes the channel (it answers the jobs it holds first; the pool terminates one
    /// that lingers), ignores the terminal's SIGINT (the pool coordinates shutdown), and shows
    /// as `crew-worker <n>` in `ps`.
    ///
    /// - Parameters:
    ///   - catalog: the job types this worker can run.
    ///   - logger: the base logger for jobs; by default one labelled `crew.worker`.
    public static func serveIfWorker(_ catalog: JobCatalog, logger: Logger? = nil) async {
        guard let idText = getenv(Environment.workerID), let workerID = Int(String(cString: idText)) else { return }
        let parentPID = getenv(Environment.parentPID).flatMap { Int32(String(cString: $0)) } ?? 0
        let maxFrameSize = getenv(Environment.maxFrameSize).flatMap { Int(String(cString: $0)) }
            ?? WireProtocol.defaultMaxFrameSize
        let concurrency = max(1, getenv(Environment.concurrency).flatMap { Int(String(cString: $0)) } ?? 1)
        serving.store(true, ordering: .relaxed)
        // Children this worker starts (a nested pool, a shell command) are not workers of ours.
        unsetenv(Environment.workerID)
        unsetenv(Environment.parentPID)
        unsetenv(Environment.maxFrameSize)
        unsetenv(Environment.concurrency)

        // Die with the parent, even by SIGKILL. The kernel sends the signal when the parent's
        // spawning thread exits; if the parent died before prctl, we have been re-parented.
        _ = ccrew_set_parent_death_signal(SIGKILL)
        if parentPID != 0 && getppid() != parentPID { _exit(70) }
        signal(SIGINT, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        // Keep our channel out of anything this worker spawns.
        _ = fcntl(channelFD, F_SETFD, FD_CLOEXEC)
        // The process's name (what `ps`, `top` and `pgrep` show) is its main thread's, and this
        // runs on a thread of the cooperative pool: name the main thread through /proc.
        setProcessName("crew-worker \(workerID)")

        var base = logger ?? Logger(label: "crew.worker")
        base[metadataKey: "crew.worker"] = "\(workerID)"
        let server = WorkerServer(
            workerID: workerID, catalog: catalog, logger: base, maxFrameSize: maxFrameSize, concurrency: concurrency)
        server.start()
        // The reader thread ends the process; this task parks for good.
        while true {
            try? await Task.sleep(for: .seconds(86_400))
        }
    }
}

/// The worker side of the wire: reads run, cancel and recall frames on a dedicated thread, runs
/// jobs in at most `concurrency` slots (the pool may send more, which wait here highest priority
/// first and then in order, are announced with a `started` frame when they start, and go back to
/// the pool unstarted when it recalls them), writes results back.
///
/// Each busy slot is a runner: one task that runs its job, then the next held one, and so on
/// until none is left, so a stream of small jobs costs no task creation and one lock per job.
/// A runner whose job is cancelled ends with that job (a cancelled task stays cancelled), and a
/// fresh runner takes the slot's next job.
final class WorkerServer: Sendable {
    private let workerID: Int
    private let catalog: JobCatalog
    private let logger: Logger
    private let maxFrameSize: Int
    private let concurrency: Int
    private let processID = getpid()
    /// Tells the hold thread when answers held back must leave (see `runJobs`, `holdLoop`).
    private let holdTimer: HoldTimer?
    private let output: FrameOutbox

    private struct Pending {
        var jobID: UInt64
        var name: String
        var arguments: [UInt8]
        var entry: JobEntry
        /// The pool arms the job's timeout when it starts.
        var announceStart: Bool
        /// The job has a timeout: its answer is never held back (see `runJobs`).
        var timed: Bool
        /// ``JobPriority/rawValue``: held jobs run highest first.
        var priority: Int
    }

    /// One slot's task. Its fields are only touched with the jobs lock held.
    private final class Runner: @unchecked Sendable {
        var task: Task<Void, Never>?
        /// The pool cancelled the runner's current job: cancel the task, and run nothing more on it.
        var cancelRequested = false
    }

    private struct Jobs: ~Copyable {
        /// The runner of every job that runs, by job id.
        var running: [UInt64: Runner] = [:]
        /// Jobs the pool sent beyond `concurrency`, highest priority first, then in the order it
        /// sent them.
        var pending: Deque<Pending> = []
        /// Slots in use (a slot passes straight from a finished job to a held one).
        var active = 0
        /// Answers owed for jobs that no longer hold a slot or a place in `pending`, not sent yet:
        /// a draining worker that exited before they leave would lose them.
        var unanswered = 0
        var draining = false
        /// Cancels for jobs this worker has not been sent (yet).
        var earlyCancels = EarlyCancels()

        var isIdle: Bool { active == 0 && pending.isEmpty && unanswered == 0 }

        /// Holds a job until a slot is free: behind every job of its priority or higher, ahead of
        /// any of lower priority. (Jobs of one priority, the common case, are only appended.)
        mutating func hold(_ job: Pending) {
            guard let last = pending.last, last.priority < job.priority else { return pending.append(job) }
            pending.insert(job, at: pending.firstIndex { $0.priority < job.priority }!)
        }

        /// Takes a held job out of `pending` (cancelled, or called back by the pool), owing its
        /// answer; false if the job is not waiting here (it started, ended, or never came).
        mutating func dropHeld(_ jobID: UInt64) -> Bool {
            guard let index = pending.firstIndex(where: { $0.jobID == jobID }) else { return false }
            pending.remove(at: index)
            unanswered += 1
            return true
        }
    }
    private let jobs = Mutex(Jobs())

    init(workerID: Int, catalog: JobCatalog, logger: Logger, maxFrameSize: Int, concurrency: Int) {
        self.workerID = workerID
        self.catalog = catalog
        self.logger = logger
        self.maxFrameSize = maxFrameSize
        self.concurrency = concurrency
        holdTimer = HoldTimer()
        output = FrameOutbox(fd: Crew.channelFD, holdTimer: holdTimer)
    }

    func start() {
        send(.hello(Hello(
            version: WireProtocol.version, processID: processID, workerID: UInt64(workerID),
            jobNames: catalog.names, jobLayouts: catalog.names.map { catalog.entries[$0]?.layoutDigest ?? "" }
        )))
        PosixThread.start(name: "crew-reader") { [self] in readLoop() }.detach()
        if let holdTimer { PosixThread.start(name: "crew-hold") { [self] in holdLoop(holdTimer) }.detach() }
    }

    /// Sends the answers held back (see `runJobs`) each time the hold timer expires. A thread of
    /// its own: a flush may block on a full channel, and the reader thread must go on reading
    /// meanwhile, or the pool, blocked sending to this worker, would never read our answers.
    /// The reader does not wait on the timer either: a blocking read on the channel alone makes
    /// round trips faster here (see BENCHMARKS.md).
    private func holdLoop(_ timer: HoldTimer) {
        while true {
            timer.wait()
            if !output.flush() { exitWorker(0) }
        }
    }

    private func readLoop() {
        var reader = FrameReader(maxFrameSize: maxFrameSize)
        while true {
            let n = reader.append(from: Crew.channelFD)
            // End of stream: the pool has let us go. Answer what was accepted (running and held
            // jobs), then exit; the pool terminates a worker that lingers.
            if n == 0 {
                if beginDraining() { exitAnswered() }
                return
            }
            // A read error: the channel is broken, nothing more can be answered.
            if n < 0 { exitWorker(0) }
            do {
                while let message = try reader.nextPoolMessage() {
                    handle(message)
                }
            } catch {
                // The pool broke the protocol; nothing it sends can be trusted now.
                logger.error("crew worker: bad frame from the pool: \(error)")
                exitWorker(65)
            }
        }
    }

    private func handle(_ message: PoolMessage) {
        switch message {
        case .run(let jobID, let name, let arguments, let announceStart, let timed, let priority):
            guard let entry = catalog.entries[name] else {
                post(.failure(
                    jobID: jobID, kind: .unknownJobType, errorType: "",
                    message: "worker \(workerID) has no job type named \(name) in its catalog"
                ))
                return
            }
            let job = Pending(
                jobID: jobID, name: name, arguments: arguments, entry: entry, announceStart: announceStart, timed: timed, priority: priority)
            let (runner, cancelledAlready) = jobs.withLock { state -> (Runner?, Bool) in
                if state.earlyCancels.take(jobID) { return (nil, true) }
                guard state.active < concurrency else {
                    state.hold(job)
                    return (nil, false)
                }
                state.active += 1
                let runner = Runner()
                state.running[jobID] = runner
                return (runner, false)
            }
            if cancelledAlready {
                post(.failure(jobID: jobID, kind: .cancelled, errorType: "", message: "cancelled before it started"))
            }
            if let runner { launch(runner, job) }
        case .cancel(let jobID):
            let (task, heldJob) = jobs.withLock { state -> (Task<Void, Never>?, Bool) in
                if let runner = state.running[jobID] {
                    // A runner still being launched is cancelled as soon as its task exists.
                    runner.cancelRequested = true
                    return (runner.task, false)
                }
                guard state.dropHeld(jobID) else {
                    state.earlyCancels.remember(jobID)
                    return (nil, false)
                }
                return (nil, true)
            }
            task?.cancel()
            if heldJob { answerDropped(.failure(jobID: jobID, kind: .cancelled, errorType: "", message: "cancelled before it started")) }
        case .recall(let jobID):
            // Only a job still waiting here goes back; one that started (or ended) answers as usual.
            if jobs.withLock({ $0.dropHeld(jobID) }) { answerDropped(.recalled(jobID: jobID)) }
        case .shutdown:
            if beginDraining() { exitAnswered() }
        }
    }

    /// Answers for a held job the reader dropped (see `Jobs.dropHeld`), then exits if a draining
    /// worker has nothing left to answer.
    private func answerDropped(_ message: WorkerMessage) {
        post(message)
        if answerSent() { exitAnswered() }
    }

    /// Notes that an answer counted in `unanswered` has been sent; returns whether a draining
    /// worker may exit now.
    private func answerSent() -> Bool {
        jobs.withLock { state -> Bool in
            state.unanswered -= 1
            return state.draining && state.isIdle
        }
    }

    /// Takes no more jobs; returns whether the worker may exit now (nothing left to answer).
    private func beginDraining() -> Bool {
        jobs.withLock { state -> Bool in
            state.draining = true
            return state.isIdle
        }
    }

    /// Starts a runner's task with its first job; the runner is already registered as that
    /// job's. Called without the lock: task creation is the slowest step here.
    private func launch(_ runner: Runner, _ first: Pending) {
        let task = Task { [self] in await runJobs(runner, first) }
        let cancelNow = jobs.withLock { _ in
            runner.task = task
            return runner.cancelRequested
        }
        if cancelNow { task.cancel() }
    }

    /// What a runner does after a job.
    private enum Next {
        case run(Pending)
        case handOff(Runner, Pending)
        case stop
    }

    /// How many answers a worker may hold back per job still waiting in it, less one: see
    /// `runJobs`. At 3, a worker that had 8 jobs answers 6 at a time and keeps 2 to run while
    /// the pool sends it more. In the demo's render, against 1 (4 answers at a time, and a
    /// `maxHold` of 2 ms), this cut the parent's CPU per render from 48 to 38 ms (medians of
    /// five alternating runs) and the render's time over the `TaskGroup`'s from 1.16 to 1.11.
    static let holdRatio = 3

    /// A runner's life: its first job, then held ones, until none is left or a job is cancelled.
    ///
    /// A job's answer leaves with the next job's start announcement, and while the answers held
    /// back (this one included) number fewer than `holdRatio` times the jobs still waiting here,
    /// it may wait for company, up to `FrameOutbox.maxHold`: with a deep prefetch the pool then
    /// reads several answers (and sends as many jobs) per wake-up instead of one. With a
    /// prefetch under 2, every answer leaves at once, and so does the answer of a job with a
    /// timeout (with the answers held before it).
    private func runJobs(_ runner: Runner, _ first: Pending) async {
        var job = first
        // Announce it before it can finish, so the pool arms its timeout first.
        if job.announceStart { send(.started(jobID: job.jobID)) }
        while true {
            let context = JobContext(
                workerID: workerID, jobID: job.jobID, processID: processID, workerLogger: logger, answerFrameSize: maxFrameSize)
            var result = await job.entry.run(job.arguments, context)
            if case .success(let bytes) = result, bytes.count + 64 > maxFrameSize {
                result = .failure(.unencodableOutput(FrameTooLarge(size: bytes.count, limit: maxFrameSize)))
            }
            // Hand the slot to the next held job, or free it, before answering: the pool sends
            // the next job as soon as it reads the answer.
            let (next, stillHeld) = jobs.withLock { state -> (Next, Int) in
                state.running[job.jobID] = nil
                guard let held = state.pending.popFirst() else {
                    state.active -= 1
                    // Until it is sent, the answer keeps a draining worker alive.
                    state.unanswered += 1
                    return (.stop, 0)
                }
                if runner.cancelRequested {
                    let fresh = Runner()
                    state.running[held.jobID] = fresh
                    return (.handOff(fresh, held), 0)
                }
                state.running[held.jobID] = runner
                return (.run(held), state.pending.count)
            }
            let answer = Self.reply(jobID: job.jobID, name: job.name, result: result, cancelled: Task.isCancelled, maxFrameSize: maxFrameSize)
            let announced: UInt64? = if case .run(let held) = next, held.announceStart { held.jobID } else { nil }
            // A timed job's answer leaves now: held, it could reach the pool after the job's
            // timeout although the job ended in time, and the pool would kill this worker.
            let sent = output.send(holdingWhileUnder: job.timed ? 0 : Self.holdRatio * stillHeld) { writer in
                writer.write(answer)
                if let announced { writer.write(WorkerMessage.started(jobID: announced)) }
            }
            if !sent { exitWorker(0) }
            switch next {
            case .run(let held):
                job = held
            case .handOff(let fresh, let held):
                launch(fresh, held)
                return
            case .stop:
                if answerSent() { exitAnswered() }
                return
            }
        }
    }

    private static func reply(
        jobID: UInt64, name: String, result: Result<[UInt8], JobEntry.Failure>, cancelled: Bool, maxFrameSize: Int
    ) -> WorkerMessage {
        func failure(_ kind: FailureKind, _ error: any Error, _ message: String) -> WorkerMessage {
            let (errorType, text) = fittedFailure(error, message, within: maxFrameSize)
            return .failure(jobID: jobID, kind: kind, errorType: errorType, message: text)
        }
        switch result {
        case .success(let bytes):
            return .result(jobID: jobID, output: bytes)
        case .failure(.threw(let error)):
            // A CancellationError is a cancellation only if the pool cancelled the job.
            return failure(error is CancellationError && cancelled ? .cancelled : .jobFailed, error, String(describing: error))
        case .failure(.undecodableArguments(let error)):
            return failure(.undecodableArguments, error, "cannot decode the arguments of \(name): \(error)")
        case .failure(.unencodableOutput(let error)):
            return failure(.unencodableOutput, error, "cannot encode the output of \(name): \(error)")
        }
    }

    /// An error's type name and `message`, cut to leave room in a frame of `frameSize` bytes: an
    /// error may describe itself at any length, and the pool takes an oversized frame for a
    /// broken protocol and kills the worker.
    static func fittedFailure(_ error: any Error, _ message: String, within frameSize: Int) -> (type: String, message: String) {
        let type = fitted(String(reflecting: Swift.type(of: error)), within: 4_096)
        let room = max(256, min(1 << 20, frameSize - 512 - type.utf8.count))
        return (type, fitted(message, within: room))
    }

    /// `text`, or its beginning and a note of its length if it takes more than `limit` bytes.
    static func fitted(_ text: String, within limit: Int) -> String {
        let length = text.utf8.count
        guard length > limit else { return text }
        let note = "… (cut: \(length) bytes in all)"
        // Whole characters only: a cut in the middle of one would make invalid UTF-8.
        var kept = 0
        var end = text.startIndex
        for index in text.indices {
            let size = text[index].utf8.count
            if kept + size > limit - note.utf8.count { break }
            kept += size
            end = text.index(after: index)
        }
        return String(text[..<end]) + note
    }

    /// Sends a message; results that several jobs produce at once leave in one write.
    private func send(_ message: WorkerMessage) {
        if !output.send({ $0.write(message) }) { exitWorker(0) }
    }

    /// What the reader thread answers itself: the hold thread sends it, so that the reader never
    /// blocks on a full channel and always goes on reading (see ``FrameOutbox/post(_:)``).
    private func post(_ message: WorkerMessage) {
        if !output.post({ $0.write(message) }) { exitWorker(0) }
    }

    /// Exits once every answer has left: a send that found another thread sending only queued
    /// its frames, and that thread (the hold thread, say) may still be writing them.
    private func exitAnswered() -> Never {
        output.sendEverything()
        exitWorker(0)
    }

    private func exitWorker(_ status: Int32) -> Never {
        fflush(nil)
        _exit(status)
    }
}

/// Names the process (its main thread; at most 15 bytes are kept).
private func setProcessName(_ name: String) {
    let fd = open("/proc/self/comm", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    defer { close(fd) }
    _ = name.withCString { write(fd, $0, min(strlen($0), 15)) }
}

/// An output too large for one frame.
struct FrameTooLarge: Error, CustomStringConvertible {
    var size: Int
    var limit: Int
    var description: String { "\(size) bytes exceed the maximum frame size of \(limit) bytes" }
}
