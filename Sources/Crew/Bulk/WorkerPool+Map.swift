extension WorkerPool {
    /// Runs every job of `jobs` and returns their outputs in input order, as an async sequence.
    ///
    /// The input is pulled lazily: at most `maxInFlight` jobs (or chunks) run or wait at once, so
    /// a huge or endless input never fills memory, and a slow consumer slows the pool down rather
    /// than piling up results. With `chunkSize` > 1, that many jobs travel as one message and run
    /// one after another on one worker: tiny jobs then cost one round trip per chunk.
    ///
    /// ```swift
    /// for try await row in pool.map((0..<1200).lazy.map { Render(row: $0) }, chunkSize: 4) {
    ///     image.append(row)
    /// }
    /// ```
    ///
    /// The sequence throws the first failure in input order (after yielding every output before
    /// it) and cancels the jobs still running; ending the iteration early cancels them too.
    ///
    /// - Parameters:
    ///   - jobs: the jobs; any sequence, consumed lazily.
    ///   - maxInFlight: how many jobs (or chunks) may run or wait at once. Default: twice the pool's
    ///     maximum number of workers.
    ///   - chunkSize: how many jobs travel together. Default: 1.
    ///   - priority: the priority of every job.
    ///   - timeout: the timeout of every job (of every chunk, with chunking).
    public func map<Jobs: Sequence & Sendable>(
        _ jobs: Jobs, maxInFlight: Int? = nil, chunkSize: Int = 1, priority: JobPriority = .normal, timeout: Duration? = nil
    ) -> MapSequence<Jobs> where Jobs.Element: Job {
        MapSequence(
            runner: BulkRunner(pool: self, jobs: jobs, maxInFlight: maxInFlight ?? defaultMaxInFlight, chunkSize: chunkSize,
                               priority: priority, timeout: timeout),
            ordered: true)
    }

    /// Runs every job of `jobs` and yields each job with its output as soon as it finishes
    /// (completion order), as an async sequence. Same lazy, bounded input as ``map(_:maxInFlight:chunkSize:priority:timeout:)``.
    public func mapUnordered<Jobs: Sequence & Sendable>(
        _ jobs: Jobs, maxInFlight: Int? = nil, chunkSize: Int = 1, priority: JobPriority = .normal, timeout: Duration? = nil
    ) -> MapUnorderedSequence<Jobs> where Jobs.Element: Job {
        MapUnorderedSequence(
            runner: BulkRunner(pool: self, jobs: jobs, maxInFlight: maxInFlight ?? defaultMaxInFlight, chunkSize: chunkSize,
                               priority: priority, timeout: timeout))
    }

    private var defaultMaxInFlight: Int {
        2 * core.workers.groups.reduce(0) { $0 + $1.maximum * $1.jobsPerWorker }
    }
}

/// The outputs of ``WorkerPool/map(_:maxInFlight:chunkSize:priority:timeout:)``, in input order.
public struct MapSequence<Jobs: Sequence & Sendable>: AsyncSequence, Sendable where Jobs.Element: Job {
    public typealias Element = Jobs.Element.Output
    let runner: BulkRunner<Jobs>
    let ordered: Bool

    public func makeAsyncIterator() -> Iterator { Iterator(state: BulkIterator(runner: runner, ordered: ordered)) }

    /// Pulls outputs; cancels what still runs when it goes away.
    public struct Iterator: AsyncIteratorProtocol {
        @usableFromInline let state: BulkIterator<Jobs>
        /// The chunk being handed out, and the position of its next output.
        @usableFromInline var outputs: [Element] = []
        @usableFromInline var position = 0

        init(state: BulkIterator<Jobs>) { self.state = state }

        @inlinable
        public mutating func next() async throws -> Element? {
            while position == outputs.count {
                guard let chunk = try await state.nextChunk() else { return nil }
                outputs = chunk.outputs
                position = 0
            }
            defer { position += 1 }
            return outputs[position]
        }
    }
}

/// The jobs and outputs of ``WorkerPool/mapUnordered(_:maxInFlight:chunkSize:priority:timeout:)``, in completion order.
public struct MapUnorderedSequence<Jobs: Sequence & Sendable>: AsyncSequence, Sendable where Jobs.Element: Job {
    public typealias Element = (job: Jobs.Element, output: Jobs.Element.Output)
    let runner: BulkRunner<Jobs>

    public func makeAsyncIterator() -> Iterator { Iterator(state: BulkIterator(runner: runner, ordered: false)) }

    /// Pulls outputs; cancels what still runs when it goes away.
    public struct Iterator: AsyncIteratorProtocol {
        @usableFromInline let state: BulkIterator<Jobs>
        /// The chunk being handed out (its jobs and outputs), and the position of its next item.
        @usableFromInline var jobs: [Jobs.Element] = []
        @usableFromInline var outputs: [Jobs.Element.Output] = []
        @usableFromInline var position = 0

        init(state: BulkIterator<Jobs>) { self.state = state }

        @inlinable
        public mutating func next() async throws -> Element? {
            while position == outputs.count {
                guard let chunk = try await state.nextChunk() else { return nil }
                jobs = chunk.jobs
                outputs = chunk.outputs
                position = 0
            }
            defer { position += 1 }
            return (jobs[position], outputs[position])
        }
    }
}

/// What a bulk run needs to start its chunks.
struct BulkRunner<Jobs: Sequence & Sendable>: Sendable where Jobs.Element: Job {
    let pool: WorkerPool
    let jobs: Jobs
    let maxInFlight: Int
    let chunkSize: Int
    let priority: JobPriority
    let timeout: Duration?

    init(pool: WorkerPool, jobs: Jobs, maxInFlight: Int, chunkSize: Int, priority: JobPriority, timeout: Duration?) {
        precondition(maxInFlight >= 1, "maxInFlight must be at least 1")
        precondition(chunkSize >= 1, "chunkSize must be at least 1")
        self.pool = pool
        self.jobs = jobs
        self.maxInFlight = maxInFlight
        self.chunkSize = chunkSize
        self.priority = priority
        self.timeout = timeout
    }

    /// Runs one chunk; one job alone goes as itself, several as a ``JobBatch``.
    func run(_ chunk: [Jobs.Element]) async throws -> [Jobs.Element.Output] {
        if chunk.count == 1 {
            return [try await pool.run(chunk[0], priority: priority, timeout: timeout)]
        }
        let result = try await pool.run(JobBatch(jobs: chunk), priority: priority, timeout: timeout)
        if result.failures.isEmpty && result.outputs.count == chunk.count { return result.outputs }
        guard let outcomes = result.outcomes(count: chunk.count) else {
            throw CrewError(.undecodableOutput, "a chunk of \(chunk.count) jobs returned \(result.outputs.count) outputs and \(result.failures.count) failures",
                            jobName: Jobs.Element.jobName)
        }
        return try outcomes.map { outcome in
            switch outcome {
            case .success(let output):
                return output
            case .failure(var error):
                error.jobName = Jobs.Element.jobName
                throw error
            }
        }
    }
}
