import Synchronization

/// The engine behind `map` and `mapUnordered`: pulls input lazily, keeps at most
/// `maxInFlight` chunks running as tasks, and hands out finished chunks in input or completion
/// order. Dropping it cancels whatever still runs.
///
/// It hands out whole chunks, not single outputs: the public iterators walk a chunk's outputs
/// themselves, inlined into the caller's module, so an output costs an array read rather than a
/// lock, a cancellation handler and the runtime's generic metadata look-ups.
@usableFromInline
final class BulkIterator<Jobs: Sequence & Sendable>: Sendable where Jobs.Element: Job {
    @usableFromInline typealias Job = Jobs.Element

    /// A finished chunk: its jobs and their outputs, at the same positions.
    @usableFromInline
    struct Chunk: Sendable {
        @usableFromInline var jobs: [Job]
        @usableFromInline var outputs: [Job.Output]
    }

    private struct State: ~Copyable {
        var input: Jobs.Iterator?
        var nextChunk = 0
        var running: [Int: Task<Void, Never>] = [:]
        /// Finished chunks not yet handed out, by chunk index.
        var finished: [Int: Result<Chunk, any Error>] = [:]
        /// In ordered mode, the chunk whose items come next.
        var nextToYield = 0
        var waiter: CheckedContinuation<Void, Never>?
        var failed = false
    }

    private let runner: BulkRunner<Jobs>
    private let ordered: Bool
    private let state: Mutex<State>

    init(runner: BulkRunner<Jobs>, ordered: Bool) {
        self.runner = runner
        self.ordered = ordered
        state = Mutex(State(input: runner.jobs.makeIterator()))
    }

    deinit {
        state.withLock { state in
            for task in state.running.values { task.cancel() }
        }
    }

    /// The next finished chunk (in input order, or in completion order), or nil at the end.
    @usableFromInline
    func nextChunk() async throws -> Chunk? {
        try await withTaskCancellationHandler {
            while true {
                startChunks()
                let (chunk, error, done): (Chunk?, (any Error)?, Bool) = state.withLock { state in
                    if let (index, result) = takeFinished(&state) {
                        state.finished[index] = nil
                        switch result {
                        case .success(let chunk):
                            return (chunk, nil, false)
                        case .failure(let error):
                            state.failed = true
                            for task in state.running.values { task.cancel() }
                            return (nil, error, true)
                        }
                    }
                    return (nil, nil, state.input == nil && state.running.isEmpty && state.finished.isEmpty)
                }
                if let error { throw error }
                if let chunk { return chunk }
                if done { return nil }
                await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if hasFinished(state) || state.running.isEmpty { return true }
                        state.waiter = waiter
                        return false
                    }
                    if resumeNow { waiter.resume() }
                }
            }
        } onCancel: {
            state.withLock { state in
                for task in state.running.values { task.cancel() }
            }
        }
    }

    /// Whether a finished chunk may be handed out now.
    private func hasFinished(_ state: borrowing State) -> Bool {
        ordered ? state.finished[state.nextToYield] != nil : !state.finished.isEmpty
    }

    /// Takes the next finished chunk that may be handed out: the next in input order, or any.
    private func takeFinished(_ state: inout State) -> (Int, Result<Chunk, any Error>)? {
        if ordered {
            guard let result = state.finished[state.nextToYield] else { return nil }
            defer { state.nextToYield += 1 }
            return (state.nextToYield, result)
        }
        return state.finished.first.map { ($0.key, $0.value) }
    }

    /// Pulls input and starts chunks until `maxInFlight` run (finished but unconsumed ones count).
    private func startChunks() {
        while let (index, chunk) = pullChunk() {
            let runner = self.runner
            let task = Task { [weak self] in
                let result: Result<Chunk, any Error>
                do {
                    result = .success(Chunk(jobs: chunk, outputs: try await runner.run(chunk)))
                } catch {
                    result = .failure(error)
                }
                self?.finish(index, result)
            }
            track(task, index)
        }
    }

    private func track(_ task: Task<Void, Never>, _ index: Int) {
        state.withLock { (state: inout State) in
            // The task may have finished already; only track it while it runs.
            if state.finished[index] == nil { state.running[index] = task }
        }
    }

    /// The next chunk of input, if there is room for it.
    private func pullChunk() -> (Int, [Job])? {
        let limit = runner.maxInFlight
        let size = runner.chunkSize
        return state.withLock { (state: inout State) -> (Int, [Job])? in
            if state.failed || state.input == nil { return nil }
            if state.running.count + state.finished.count >= limit { return nil }
            var chunk: [Job] = []
            chunk.reserveCapacity(size)
            while chunk.count < size {
                guard let job = state.input!.next() else {
                    state.input = nil
                    break
                }
                chunk.append(job)
            }
            if chunk.isEmpty { return nil }
            let index = state.nextChunk
            state.nextChunk += 1
            return (index, chunk)
        }
    }

    private func finish(_ index: Int, _ result: Result<Chunk, any Error>) {
        let waiter = state.withLock { state in
            state.running[index] = nil
            state.finished[index] = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}
