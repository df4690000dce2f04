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
    /// it, including those of the failed job's chunk) and cancels the jobs still running (the
    /// failed job's chunk runs none of its jobs after it); ending the iteration early cancels
    /// them too. As soon as a failure is known, even while earlier jobs still run, no further job
    /// starts, and the jobs after it in input order are cancelled once those before it have ended
    /// (a cancelled job that ignores cancellation has its worker killed, which would take an
    /// earlier job on that worker with it). A failure of a whole chunk (its worker dies, it times
    /// out, it cannot be encoded, one of its jobs cannot be decoded in the worker, or its outputs
    /// exceed the maximum frame size) takes the outputs of the chunk's jobs with it.
    ///
    /// Outputs that process workers return close together are handed over together: while the
    /// consumer waits, it is woken once a quarter of `maxInFlight` outputs have arrived, or about
    /// 2 ms after the first of them, rather than for each (a thread wake-up costs the caller's
    /// process more CPU than the output it delivers). A failure, a chunk of several jobs, a read
    /// that brings two or more answers from one worker, and an output of a thread or inline
    /// worker wake it at once; with a `maxInFlight` under 8 every output does.
    ///
    /// - Parameters:
    ///   - jobs: the jobs; any sequence, consumed lazily.
    ///   - maxInFlight: how many jobs (or chunks) may run or wait at once. Default: twice the pool's
    ///     most jobs at once (each group's maximum of workers times its jobs per worker).
    ///   - chunkSize: how many jobs travel together. Default: 1.
    ///   - priority: the priority of every job.
    ///   - timeout: the timeout of every job (of every chunk, with chunking).
    @inlinable
    public func map<Jobs: Sequence & Sendable>(
        _ jobs: Jobs, maxInFlight: Int? = nil, chunkSize: Int = 1, priority: JobPriority = .normal, timeout: Duration? = nil
    ) -> MapSequence<Jobs.Element> where Jobs.Element: Job {
        let runner = bulkRunner(Jobs.Element.self, maxInFlight, chunkSize, priority, timeout)
        return MapSequence {
            let source = SequenceSource(jobs)
            return BulkIterator(pull: { source.pull($0) }, runner: runner, ordered: true)
        }
    }

    /// Runs every job an async sequence delivers and returns their outputs in input order, as an
    /// async sequence: for jobs that arrive over time (from a socket, a queue, another pipeline).
    ///
    /// From the first `next()` on (nothing is read before), a feeder task reads the input while
    /// the pool has room, and waits while it has none, so a fast input never fills memory either. A chunk goes as soon as the pool has room, with the
    /// jobs that have arrived by then (at most `chunkSize`): a slow input never waits for a full
    /// chunk, and under load jobs leave in full chunks. If the input throws, its error comes after
    /// the outputs of every job it delivered.
    ///
    /// ```swift
    /// for try await thumbnail in pool.map(uploads.map { Thumbnail(of: $0) }) {
    ///     try await store.save(thumbnail)
    /// }
    /// ```
    public func map<Jobs: AsyncSequence & Sendable>(
        _ jobs: Jobs, maxInFlight: Int? = nil, chunkSize: Int = 1, priority: JobPriority = .normal, timeout: Duration? = nil
    ) -> MapSequence<Jobs.Element> where Jobs.Element: Job {
        let runner = bulkRunner(Jobs.Element.self, maxInFlight, chunkSize, priority, timeout)
        return MapSequence { BulkIterator(jobs, runner: runner, ordered: true) }
    }

    /// Runs every job of `jobs` and yields each job with its output as soon as it finishes
    /// (completion order), as an async sequence. Same lazy, bounded input as `map` over a sequence.
    ///
    /// The sequence throws the first failure it meets (after the outputs that finished before it,
    /// including those of the failed job's chunk) and cancels the jobs still running (the
    /// failed job's chunk runs none of its jobs after it). Since nothing that finishes after a
    /// failure is yielded, the jobs still running are cancelled, and no further job starts, as
    /// soon as the failure arrives, even before the outputs ahead of it have been taken.
    /// Outputs that come close together are handed over together, as in ``map(_:maxInFlight:chunkSize:priority:timeout:)-wk5y``.
    @inlinable
    public func mapUnordered<Jobs: Sequence & Sendable>(
        _ jobs: Jobs, maxInFlight: Int? = nil, chunkSize: Int = 1, priority: JobPriority = .normal, timeout: Duration? = nil
    ) -> MapUnorderedSequence<Jobs.Element> where Jobs.Element: Job {
        let runner = bulkRunner(Jobs.Element.self, maxInFlight, chunkSize, priority, timeout)
        return MapUnorderedSequence {
            let source = SequenceSource(jobs)
            return BulkIterator(pull: { source.pull($0) }, runner: runner, ordered: false)
        }
    }

    /// Runs every job an async sequence delivers and yields each job with its output as soon as
    /// it finishes (completion order). Same feeding as `map` over an async sequence.
    public func mapUnordered<Jobs: AsyncSequence & Sendable>(
        _ jobs: Jobs, maxInFlight: Int? = nil, chunkSize: Int = 1, priority: JobPriority = .normal, timeout: Duration? = nil
    ) -> MapUnorderedSequence<Jobs.Element> where Jobs.Element: Job {
        let runner = bulkRunner(Jobs.Element.self, maxInFlight, chunkSize, priority, timeout)
        return MapUnorderedSequence { BulkIterator(jobs, runner: runner, ordered: false) }
    }

    @usableFromInline
    func bulkRunner<J: Job>(
        _ type: J.Type, _ maxInFlight: Int?, _ chunkSize: Int, _ priority: JobPriority, _ timeout: Duration?
    ) -> BulkRunner<J> {
        BulkRunner(pool: self, maxInFlight: maxInFlight ?? defaultMaxInFlight, chunkSize: chunkSize, priority: priority, timeout: timeout)
    }

    private var defaultMaxInFlight: Int {
        2 * core.workers.groups.reduce(0) { $0 + $1.maximum * $1.jobsPerWorker }
    }
}

/// The outputs of a ``WorkerPool``'s `map`, in input order.
public struct MapSequence<J: Job>: AsyncSequence, Sendable {
    public typealias Element = J.Output
    let start: @Sendable () -> BulkIterator<J>

    @usableFromInline
    init(start: @escaping @Sendable () -> BulkIterator<J>) { self.start = start }

    public func makeAsyncIterator() -> Iterator { Iterator(state: start()) }

    /// Pulls outputs; cancels what still runs when it goes away.
    public struct Iterator: AsyncIteratorProtocol {
        @usableFromInline let state: BulkIterator<J>
        /// The chunk being handed out, and the position of its next output.
        @usableFromInline var outputs: [Element] = []
        @usableFromInline var position = 0
        /// A job of the chunk failed: thrown once the outputs before it are out.
        @usableFromInline var failure: CrewError?

        init(state: BulkIterator<J>) { self.state = state }

        @inlinable
        public mutating func next() async throws -> Element? {
            while position == outputs.count {
                if let failure {
                    self.failure = nil
                    throw failure
                }
                guard let chunk = try await state.nextChunk() else { return nil }
                outputs = chunk.outputs
                failure = chunk.failure
                position = 0
            }
            defer { position += 1 }
            return outputs[position]
        }
    }
}

/// The jobs and outputs of a ``WorkerPool``'s `mapUnordered`, in completion order.
public struct MapUnorderedSequence<J: Job>: AsyncSequence, Sendable {
    public typealias Element = (job: J, output: J.Output)
    let start: @Sendable () -> BulkIterator<J>

    @usableFromInline
    init(start: @escaping @Sendable () -> BulkIterator<J>) { self.start = start }

    public func makeAsyncIterator() -> Iterator { Iterator(state: start()) }

    /// Pulls outputs; cancels what still runs when it goes away.
    public struct Iterator: AsyncIteratorProtocol {
        @usableFromInline let state: BulkIterator<J>
        /// The chunk being handed out (its jobs and outputs), and the position of its next item.
        @usableFromInline var jobs: [J] = []
        @usableFromInline var outputs: [J.Output] = []
        @usableFromInline var position = 0
        /// A job of the chunk failed: thrown once the outputs before it are out.
        @usableFromInline var failure: CrewError?

        init(state: BulkIterator<J>) { self.state = state }

        @inlinable
        public mutating func next() async throws -> Element? {
            while position == outputs.count {
                if let failure {
                    self.failure = nil
                    throw failure
                }
                guard let chunk = try await state.nextChunk() else { return nil }
                jobs = chunk.jobs
                outputs = chunk.outputs
                failure = chunk.failure
                position = 0
            }
            defer { position += 1 }
            return (jobs[position], outputs[position])
        }
    }
}

/// What a bulk run needs to start its chunks.
@usableFromInline
struct BulkRunner<J: Job>: Sendable {
    @usableFromInline let pool: WorkerPool
    @usableFromInline let maxInFlight: Int
    @usableFromInline let chunkSize: Int
    @usableFromInline let priority: JobPriority
    @usableFromInline let timeout: Duration?

    init(pool: WorkerPool, maxInFlight: Int, chunkSize: Int, priority: JobPriority, timeout: Duration?) {
        precondition(maxInFlight >= 1, "maxInFlight must be at least 1")
        precondition(chunkSize >= 1, "chunkSize must be at least 1")
        self.pool = pool
        self.maxInFlight = maxInFlight
        self.chunkSize = chunkSize
        self.priority = priority
        self.timeout = timeout
    }

    /// How many arrivals are worth waking the consumer for: a quarter of `maxInFlight`, so that
    /// the pool still holds work for its workers while the consumer wakes and starts more. Outputs
    /// that come quickly then cost one wake-up per few of them; see ``BulkMailbox``.
    @usableFromInline
    var outputsPerWake: Int { max(1, maxInFlight / 4) }

    /// How to stop a chunk that was started.
    @usableFromInline
    enum Handle: Sendable {
        /// A job submitted with a callback: cancelled through the pool.
        case job(UInt64)
        /// A task that runs the chunk with retries.
        case task(Task<Void, Never>)
        /// Nothing to stop: ended before it started (a job that cannot be encoded), or not
        /// submitted yet.
        case ended
    }

    /// How a chunk ended well: with its worker's answer still encoded (decoded by whoever takes
    /// the chunk from its mailbox, see ``decoded(_:count:)``), or decoded already.
    @usableFromInline
    enum Outcome: Sendable {
        case answer(JobOutput)
        case decoded(Yield)
    }

    /// What a chunk that ran yields: the outputs of its jobs up to the first one that failed, in
    /// order, and that job's failure. A job's failure does not take its chunk's earlier outputs
    /// with it (a failure of the whole chunk, such as its worker's death, does).
    @usableFromInline
    struct Yield: Sendable {
        @usableFromInline var outputs: [J.Output]
        @usableFromInline var failure: CrewError?
    }

    /// Starts one chunk; one job alone goes as itself, several as a ``JobBatch``. `completion`
    /// gets the outcome on the thread that ends the chunk (often a worker's reader thread),
    /// possibly before this returns; it must not block.
    ///
    /// No task runs per chunk: the pool calls back when the job ends, which saves a task and a
    /// thread wake-up per chunk. A chunk of a type with a retry policy runs in a task, which can
    /// wait out the backoff (a batch is retried whole).
    @usableFromInline
    func start(_ chunk: [J], completion: @escaping @Sendable (Result<Outcome, any Error>) -> Void) -> Handle {
        if J.retryPolicy != nil {
            return .task(Task {
                do {
                    if chunk.count == 1 {
                        let output = try await pool.run(chunk[0], priority: priority, timeout: timeout)
                        completion(.success(.decoded(Yield(outputs: [output], failure: nil))))
                    } else {
                        let result = try await pool.run(JobBatch(jobs: chunk), priority: priority, timeout: timeout)
                        completion(.success(.decoded(try yield(count: chunk.count, result))))
                    }
                } catch {
                    completion(.failure(Self.underJobName(error)))
                }
            })
        }
        do {
            let payload = chunk.count == 1 ? try pool.payload(for: chunk[0]) : try pool.payload(for: JobBatch(jobs: chunk))
            let name = chunk.count == 1 ? J.jobName : JobBatch<J>.jobName
            return .job(pool.core.submit(name: name, payload: payload, priority: priority, timeout: timeout) { result in
                completion(result.map { .answer($0) }.mapError { Self.underJobName($0) })
            })
        } catch {
            completion(.failure(Self.underJobName(error)))
            return .ended
        }
    }

    /// A failure of a whole chunk, named for the job type the caller knows rather than for the
    /// internal batch that carried the chunk.
    static func underJobName(_ error: any Error) -> any Error {
        guard var error = error as? CrewError, error.jobName == JobBatch<J>.jobName else { return error }
        error.jobName = J.jobName
        // The message may name the batch too ("… is not in the pool's job catalog").
        error.message = error.message.replacing(JobBatch<J>.jobName, with: J.jobName)
        return error
    }

    /// What a chunk of `count` jobs that ended well yields; throws if its answer cannot be decoded
    /// (which fails the chunk whole).
    @usableFromInline
    func outputs(count: Int, _ outcome: Outcome) throws -> Yield {
        switch outcome {
        case .decoded(let yield):
            return yield
        case .answer(let answer) where count == 1:
            return Yield(outputs: [try WorkerPool.decode(answer, as: J.self)], failure: nil)
        case .answer(let answer):
            do {
                return try yield(count: count, try WorkerPool.decode(answer, as: JobBatch<J>.self))
            } catch {
                throw Self.underJobName(error)
            }
        }
    }

    /// How a chunk of `count` jobs ended, with its answer decoded: `.decoded`, or the error that
    /// decoding it threw.
    @usableFromInline
    func decoded(_ result: Result<Outcome, any Error>, count: Int) -> Result<Outcome, any Error> {
        guard case .success(let outcome) = result, case .answer = outcome else { return result }
        return Result { .decoded(try outputs(count: count, outcome)) }
    }

    /// Stops a started chunk; it then ends with a ``CrewError/Code/cancelled`` error (if it had
    /// not ended already).
    @usableFromInline
    func cancel(_ handle: Handle) {
        switch handle {
        case .job(let jobID): pool.core.cancel(jobID)
        case .task(let task): task.cancel()
        case .ended: break
        }
    }

    /// What a chunk's batch yields: its outputs up to its first failure, and that failure.
    /// Throws if the batch's answer does not fit its jobs.
    private func yield(count: Int, _ result: BatchResult<J.Output>) throws -> Yield {
        guard let (outputs, failure) = result.outcome(count: count) else {
            throw CrewError(
                .undecodableOutput,
                "a chunk of \(count) jobs returned \(result.outputs.count) outputs and \(result.failure.map { "a failure at \($0.index)" } ?? "no failure")",
                jobName: J.jobName)
        }
        var named = failure
        named?.jobName = J.jobName
        return Yield(outputs: outputs, failure: named)
    }
}
