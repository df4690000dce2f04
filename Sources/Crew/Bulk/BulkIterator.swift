public import Synchronization

/// The engine behind `map` and `mapUnordered`: pulls input lazily, keeps at most
/// `maxInFlight` chunks running (submitted with a callback, see ``BulkRunner/start(_:completion:)``),
/// and hands out finished chunks in input or completion order. Dropping it cancels whatever
/// still runs.
///
/// Chunks arrive in a ``BulkMailbox``; the consumer decodes their outputs (outside the run's lock)
/// and moves them into the run's state, so the threads that end chunks never take the run's lock
/// (held while the caller's input sequence is pulled) and never run the caller's code. Decoding
/// on arrival rather than on hand-out makes a failure inside a chunk known at once: from then on
/// nothing more starts, and in input order the chunks after the failed one are cancelled (their
/// outputs would never be handed out) once those before it, which run on, have ended.
///
/// The input is a `Sequence`, pulled by whoever starts chunks, or an `AsyncSequence`, pulled by
/// a feeder task that waits while the pool has no room: either way, at most `maxInFlight` chunks
/// run or wait to be handed out, plus one chunk's worth of jobs read ahead. Either way nothing is
/// pulled before the first ``nextChunk()``: the feeder starts then.
///
/// It hands out whole chunks, not single outputs: the public iterators walk a chunk's outputs
/// themselves, inlined into the caller's module, so an output costs an array read rather than a
/// lock, a cancellation handler and the runtime's generic metadata look-ups.
///
/// Its per-chunk work is inlinable too, so it is specialised for the caller's job type: compiled
/// once here, generic over `J`, every dictionary operation on its chunk tables asked the runtime
/// for generic metadata (tuples of `[J]` and handles), and with one job per chunk that made `map`
/// run at under half the rate of `pool.run` calls in a `TaskGroup`. Only the feeder's entry
/// points, `deinit` and the pool's side (``BulkRunner``) stay compiled here.
@usableFromInline
final class BulkIterator<J: Job>: Sendable {
    /// A finished chunk: its jobs and their outputs, at the same positions, up to the first job
    /// that failed, and that job's failure (which ends the run).
    @usableFromInline
    struct Chunk: Sendable {
        @usableFromInline var jobs: [J]
        @usableFromInline var outputs: [J.Output]
        @usableFromInline var failure: CrewError?

        @usableFromInline
        init(jobs: [J], outputs: [J.Output], failure: CrewError?) {
            self.jobs = jobs
            self.outputs = outputs
            self.failure = failure
        }
    }

    /// Where jobs come from.
    @usableFromInline
    enum Input {
        /// Pulls up to so many jobs from a sequence's iterator; called under the lock only.
        case iterator(@Sendable (Int) -> [J])
        /// An async sequence, read by the feeder task into `buffered`; `ended` once it
        /// has delivered its last job.
        case stream(ended: Bool)
        /// Every job has been taken.
        case exhausted
    }

    @usableFromInline
    struct State: ~Copyable {
        @usableFromInline var input: Input
        /// What the feeder read and no chunk took yet (at most about a chunk's worth, so an array
        /// is cheap to take from the front). Kept out of `input` so that it changes in place: an
        /// array copied out of an enum payload would be copied whole on every job.
        @usableFromInline var buffered: [J] = []
        @usableFromInline var nextChunk = 0
        /// The chunks started and not yet taken from the mailbox, with their jobs; the handle is
        /// `.ended` while the chunk is being submitted.
        @usableFromInline var running: [Int: (handle: BulkRunner<J>.Handle, jobs: [J])] = [:]
        /// Finished chunks not yet handed out, by chunk index; their outputs are decoded when
        /// they are handed out.
        @usableFromInline var finished: [Int: Result<(jobs: [J], outcome: BulkRunner<J>.Outcome), any Error>] = [:]
        /// In unordered mode, the finished chunks' indices in the order they arrived, from
        /// `arrivalHead` on (the dictionary above keeps no order).
        @usableFromInline var arrivals: [Int] = []
        @usableFromInline var arrivalHead = 0
        /// In ordered mode, the chunk whose items come next.
        @usableFromInline var nextToYield = 0
        @usableFromInline var feeder: Task<Void, Never>?
        /// The async input's own error: thrown once everything it delivered has been handed out.
        @usableFromInline var inputError: (any Error)?
        /// A failed chunk was handed out, the consumer was cancelled, or the run was dropped:
        /// nothing more starts, and nothing still runs.
        @usableFromInline var failed = false
        /// The chunk known to have failed that the consumer will meet first (the lowest index in
        /// input order, the first to arrive in completion order): nothing more starts, and the
        /// chunks running that would be handed out after it are cancelled (see `mayCancelDoomed`).
        @usableFromInline var failedChunk: Int?
        /// The consumer got the end or an error: further calls return nil.
        @usableFromInline var ended = false
    }

    @usableFromInline let runner: BulkRunner<J>
    @usableFromInline let ordered: Bool
    @usableFromInline let state: Mutex<State>
    /// Where chunks arrive and the consumer waits.
    @usableFromInline let mailbox = BulkMailbox<BulkRunner<J>.Outcome>()
    /// Where the feeder waits for room. It holds the iterator only weakly meanwhile, so dropping
    /// the iterator ends everything even while the feeder waits.
    @usableFromInline let gate = WakeGate()
    /// Starts the feeder of an async input (nil for a sequence); called by the first
    /// ``pullChunk(_:)``, under the lock, so that nothing is read before the first `nextChunk`.
    @usableFromInline let makeFeeder: (@Sendable (BulkIterator<J>) -> Task<Void, Never>)?

    /// Runs the jobs that `pull` returns: up to so many at a time, fewer only at the end.
    /// `pull` is called under the run's lock only.
    @usableFromInline
    init(pull: @escaping @Sendable (Int) -> [J], runner: BulkRunner<J>, ordered: Bool) {
        self.runner = runner
        self.ordered = ordered
        state = Mutex(State(input: .iterator(pull)))
        makeFeeder = nil
    }

    /// Runs the jobs of an async sequence, read by a feeder task that the first `nextChunk`
    /// starts (so an iterator dropped unused reads nothing and leaves no task).
    init<Jobs: AsyncSequence & Sendable>(_ jobs: Jobs, runner: BulkRunner<J>, ordered: Bool) where Jobs.Element == J {
        self.runner = runner
        self.ordered = ordered
        state = Mutex(State(input: .stream(ended: false)))
        makeFeeder = { run in
            let gate = run.gate
            return Task { [weak run] in
                do {
                    for try await job in jobs {
                        while true {
                            // Only a weak reference across the wait below.
                            guard let outcome = run?.offer(job), outcome != .stop else { return }
                            if outcome == .accepted { break }
                            await gate.wait()
                        }
                    }
                    run?.inputEnded(nil)
                } catch {
                    run?.inputEnded(error)
                }
            }
        }
    }

    deinit {
        let running = state.withLock { state in
            state.feeder?.cancel()
            return state.running.values.map(\.handle)
        }
        // Outside the lock: a cancelled job calls back at once (into the mailbox only).
        for handle in running { runner.cancel(handle) }
        gate.open()
    }


    /// The next finished chunk (in input order, or in completion order), or nil at the end.
    @inlinable
    func nextChunk() async throws -> Chunk? {
        try await withTaskCancellationHandler {
            while true {
                startChunks()
                var arrivals = mailbox.take()
                // Batches are decoded here, on the consumer's thread, outside the lock, so that a
                // failure inside one is known at once. A one-job chunk's failure comes as an error
                // already: its output is decoded when it is handed out, which keeps the generic
                // (unspecialised) calls per chunk to one on the one-job-per-message path.
                for position in arrivals.indices where arrivals[position].count > 1 {
                    arrivals[position].result = runner.decoded(arrivals[position].result, count: arrivals[position].count)
                }
                var cancelled: [BulkRunner<J>.Handle] = []
                let (taken, error, done) = state.withLock { state -> ((jobs: [J], outcome: BulkRunner<J>.Outcome)?, (any Error)?, Bool) in
                    let couldCancel = mayCancelDoomed(state)
                    for (index, _, result) in arrivals {
                        guard let entry = state.running.removeValue(forKey: index) else { continue }
                        state.finished[index] = result.map { (entry.jobs, $0) }
                        if !ordered { state.arrivals.append(index) }
                        if Self.isFailure(result) { stopStarting(failed: index, &state) }
                    }
                    // A failure arrived, or the last chunk before it ended: cancel the doomed ones.
                    if !couldCancel && mayCancelDoomed(state) {
                        for (running, entry) in state.running where isDoomed(running, state) { cancelled.append(entry.handle) }
                    }
                    if state.ended { return (nil, nil, true) }
                    if let (index, result) = takeFinished(&state) {
                        state.finished[index] = nil
                        switch result {
                        case .success(let chunk):
                            gate.open()  // room for the feeder
                            return (chunk, nil, false)
                        case .failure(let error):
                            state.ended = true
                            cancelled = fail(&state)
                            return (nil, error, true)
                        }
                    }
                    if state.failed {
                        // Cancelled (a failed chunk was handed out above).
                        state.ended = true
                        return (nil, CrewError(.cancelled, "the map was cancelled", jobName: J.jobName), true)
                    }
                    let inputDone = if case .exhausted = state.input { true } else { false }
                    guard inputDone && state.running.isEmpty && state.finished.isEmpty else { return (nil, nil, false) }
                    state.ended = true
                    return (nil, state.inputError, true)
                }
                for handle in cancelled { runner.cancel(handle) }
                if let error { throw error }
                if let taken {
                    // Decoded on arrival already (a batch) or now (one job).
                    let yield: BulkRunner<J>.Yield
                    do {
                        yield = try runner.outputs(count: taken.jobs.count, taken.outcome)
                    } catch {
                        failAndCancel(ending: true)
                        throw error
                    }
                    guard let failure = yield.failure else {
                        return Chunk(jobs: taken.jobs, outputs: yield.outputs, failure: nil)
                    }
                    // The outputs before the failed job go out first; nothing after it does.
                    failAndCancel(ending: true)
                    return Chunk(jobs: Array(taken.jobs.prefix(yield.outputs.count)), outputs: yield.outputs, failure: failure)
                }
                if done { return nil }
                let wanting = state.withLock { state -> Int? in
                    guard !(state.failed || hasFinished(state) || (state.running.isEmpty && !isAwaitingInput(state))) else { return nil }
                    return max(1, min(runner.outputsPerWake, state.running.count))
                }
                if let wanting { await mailbox.wait(wanting: wanting) }
            }
        } onCancel: {
            failAndCancel(ending: false)
            mailbox.signal()
        }
    }

    /// Fails the run and cancels its running chunks, outside the lock; `ending` also marks the
    /// consumer as having had its last answer.
    @inlinable
    func failAndCancel(ending: Bool) {
        let running = state.withLock { state in
            if ending { state.ended = true }
            return fail(&state)
        }
        for handle in running { runner.cancel(handle) }
    }

    /// Stops everything: nothing more starts, and the feeder stops. Returns the running chunks,
    /// for the caller to cancel after unlocking (a cancelled chunk may call back at once).
    @inlinable
    func fail(_ state: inout State) -> [BulkRunner<J>.Handle] {
        state.failed = true
        state.feeder?.cancel()
        gate.open()
        return state.running.values.map(\.handle)
    }

    /// Whether a chunk (decoded) failed, whole or at one of its jobs.
    @inlinable
    static func isFailure(_ result: Result<BulkRunner<J>.Outcome, any Error>) -> Bool {
        switch result {
        case .failure: true
        case .success(.decoded(let yield)): yield.failure != nil
        case .success(.answer): false
        }
    }

    /// A chunk is known to have failed: the run will end with the first such failure the consumer
    /// meets, so nothing more starts (nor is read), and the chunks that would be handed out after
    /// it are doomed (see ``isDoomed(_:_:)``), to be cancelled once ``mayCancelDoomed(_:)``.
    @inlinable
    func stopStarting(failed index: Int, _ state: inout State) {
        if let known = state.failedChunk, !ordered || known <= index { return }
        state.failedChunk = index
        state.feeder?.cancel()
        gate.open()
    }

    /// Whether the doomed chunks may be cancelled now: in input order, only once no chunk before
    /// the failed one runs. A cancelled job that ignores cancellation gets its worker killed after
    /// the grace period, and with several jobs per worker that would kill an earlier chunk too,
    /// losing outputs that still come out and throwing its crash in place of the failure.
    @inlinable
    func mayCancelDoomed(_ state: borrowing State) -> Bool {
        if state.failed { return true }
        guard let failedChunk = state.failedChunk else { return false }
        return !ordered || !state.running.keys.contains { $0 < failedChunk }
    }

    /// Whether chunk `index` will never be handed out, so that it should not run.
    @inlinable
    func isDoomed(_ index: Int, _ state: borrowing State) -> Bool {
        if state.failed { return true }
        guard let failedChunk = state.failedChunk else { return false }
        return !ordered || index > failedChunk
    }

    /// Whether the feeder may still deliver jobs (so an empty pool is not the end).
    @inlinable
    func isAwaitingInput(_ state: borrowing State) -> Bool {
        if case .stream(ended: false) = state.input { true } else { false }
    }

    /// Whether a finished chunk may be handed out now.
    @inlinable
    func hasFinished(_ state: borrowing State) -> Bool {
        ordered ? state.finished[state.nextToYield] != nil : !state.finished.isEmpty
    }

    /// Takes the next finished chunk that may be handed out: the next in input order, or the one
    /// that arrived first.
    @inlinable
    func takeFinished(_ state: inout State) -> (Int, Result<(jobs: [J], outcome: BulkRunner<J>.Outcome), any Error>)? {
        if ordered {
            guard let result = state.finished[state.nextToYield] else { return nil }
            defer { state.nextToYield += 1 }
            return (state.nextToYield, result)
        }
        // The oldest arrival: completion order, and a failure never jumps ahead of the outputs
        // that finished before it.
        guard state.arrivalHead < state.arrivals.count else { return nil }
        let index = state.arrivals[state.arrivalHead]
        state.arrivalHead += 1
        if state.arrivalHead == state.arrivals.count {
            state.arrivals.removeAll(keepingCapacity: true)
            state.arrivalHead = 0
        } else if state.arrivalHead >= 64 && state.arrivalHead * 2 >= state.arrivals.count {
            state.arrivals.removeFirst(state.arrivalHead)
            state.arrivalHead = 0
        }
        return state.finished[index].map { (index, $0) }
    }

    /// Pulls input and starts chunks until `maxInFlight` run (finished but unconsumed ones count).
    /// Both the consumer and the feeder call it.
    @inlinable
    func startChunks() {
        while launchChunk() {}
    }

    /// Pulls one chunk, registered as running in the same critical section (a chunk is never
    /// between the input and `running`, where the end of the run could be declared without it,
    /// or room counted twice), then starts it outside the lock, since it may end at once.
    /// Returns false if there was nothing to start.
    @inlinable
    func launchChunk() -> Bool {
        guard let (index, chunk) = state.withLock({ (state: inout State) -> (Int, [J])? in
            guard let pulled = pullChunk(&state) else { return nil }
            state.running[pulled.0] = (BulkRunner<J>.Handle.ended, pulled.1)
            return pulled
        }) else { return false }
        // The callback holds the mailbox, not this object: a reader thread never ends the run.
        let mailbox = self.mailbox
        let count = chunk.count
        let handle = runner.start(chunk) { outcome in mailbox.deliver(index, count: count, outcome) }
        let cancelNow = state.withLock { state -> Bool in
            guard state.running[index] != nil else { return false }  // it has ended already
            state.running[index]!.handle = handle
            return isDoomed(index, state) && mayCancelDoomed(state)
        }
        // The run failed or was cancelled, or a chunk before this one failed, while this one was
        // being submitted.
        if cancelNow { runner.cancel(handle) }
        return true
    }

    /// Whether another chunk may start.
    @inlinable
    func hasRoom(_ state: borrowing State) -> Bool {
        state.running.count + state.finished.count < runner.maxInFlight
    }

    /// The next chunk of input, if there is room for it.
    @inlinable
    func pullChunk(_ state: inout State) -> (Int, [J])? {
        let size = runner.chunkSize
        guard !state.failed, state.failedChunk == nil, hasRoom(state) else { return nil }
        var chunk: [J] = []
        switch state.input {
        case .exhausted:
            return nil
        case .iterator(let pull):
            chunk = pull(size)
            if chunk.count < size { state.input = .exhausted }
        case .stream(let ended):
            // The first pull starts the feeder.
            if state.feeder == nil, let makeFeeder { state.feeder = makeFeeder(self) }
            // Whatever has arrived goes now (a slow input never waits for a full chunk);
            // under load, jobs pile up while there is no room and leave in full chunks.
            chunk.append(contentsOf: state.buffered.prefix(size))
            state.buffered.removeFirst(chunk.count)
            if ended && state.buffered.isEmpty { state.input = .exhausted }
            // There is room for more input now.
            gate.open()
        }
        if chunk.isEmpty { return nil }
        let index = state.nextChunk
        state.nextChunk += 1
        return (index, chunk)
    }

    enum Offer { case accepted, full, stop }

    /// The feeder hands over a job: accepted, or `full` while a chunk's worth waits and no chunk
    /// may start (wait at the gate, then offer again), or `stop` when the run has ended.
    private func offer(_ job: J) -> Offer {
        let outcome = state.withLock { state -> Offer in
            guard !state.failed, state.failedChunk == nil, case .stream = state.input else { return .stop }
            guard state.buffered.count < runner.chunkSize || hasRoom(state) else { return .full }
            state.buffered.append(job)
            return .accepted
        }
        if outcome == .accepted {
            startChunks()
            mailbox.signal()
        }
        return outcome
    }

    /// The async input ended, normally or by throwing: what it fed runs on; its error, if any,
    /// comes after the outputs of everything it fed.
    private func inputEnded(_ error: (any Error)?) {
        state.withLock { state in
            // After a failure or cancellation, an input that stops (an AsyncStream ends when its
            // reader is cancelled) is no news.
            guard !state.failed, state.failedChunk == nil, case .stream = state.input else { return }
            state.inputError = error
            state.input = state.buffered.isEmpty ? .exhausted : .stream(ended: true)
        }
        startChunks()
        mailbox.signal()
    }
}

/// A sequence's iterator. Only the bulk run's lock serialises access to it, hence unchecked
/// (and no exclusivity checks, which would cost a runtime call per job).
///
/// Inlinable, so that `map`, inlined into the caller's module, pulls jobs with code specialised
/// for the caller's sequence rather than through the generic witnesses of `Sequence` and `Array`.
@usableFromInline
final class SequenceSource<Jobs: Sequence>: @unchecked Sendable {
    @usableFromInline @exclusivity(unchecked) var iterator: Jobs.Iterator

    @inlinable
    init(_ jobs: Jobs) { iterator = jobs.makeIterator() }

    /// Up to `count` jobs; fewer only at the end of the sequence.
    @inlinable
    func pull(_ count: Int) -> [Jobs.Element] {
        var jobs: [Jobs.Element] = []
        // Capped: a chunk size far beyond the input ("all in one message") must not reserve
        // room for that many jobs; past the cap the array grows as it fills.
        jobs.reserveCapacity(Swift.min(count, 4_096))
        while jobs.count < count, let job = iterator.next() { jobs.append(job) }
        return jobs
    }
}
