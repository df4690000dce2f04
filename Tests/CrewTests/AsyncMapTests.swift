import Crew
import CrewTestJobs
import Glibc
import Testing

/// An async sequence of `Add(n, 1000)` that counts how far it has been pulled, and records when
/// its iterator is released (the reader stopped for good).
struct CountingAsyncJobs: AsyncSequence, Sendable {
    let count: Int
    let pulled: Recorder
    var released = Recorder()

    /// Records into `released` when it goes away.
    final class Lifetime: Sendable {
        let released: Recorder
        init(_ released: Recorder) { self.released = released }
        deinit { released.append(1) }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var next = 0
        let count: Int
        let pulled: Recorder
        let lifetime: Lifetime

        mutating func next() async -> Add? {
            guard next < count else { return nil }
            defer { next += 1 }
            pulled.append(next)
            return Add(next, 1000)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(count: count, pulled: pulled, lifetime: Lifetime(released)) }
}

/// The error an input stream ends with.
struct InputBroke: Error {}

extension ProcessTests {
    @Suite struct AsyncMap {
        @Test(arguments: [1, 8])
        func mapOverAnAsyncSequenceKeepsInputOrder(chunkSize: Int) async throws {
            try await withPool(.processes(2)) { pool in
                let (jobs, input) = AsyncStream.makeStream(of: Add.self)
                let producer = Task {
                    for value in 0..<300 { input.yield(Add(value, 1)) }
                    input.finish()
                }
                var outputs: [Int] = []
                for try await output in pool.map(jobs, chunkSize: chunkSize) { outputs.append(output) }
                #expect(outputs == (0..<300).map { $0 + 1 })
                await producer.value
            }
        }

        @Test func anAsyncInputIsReadOnlyWhileThePoolHasRoom() async throws {
            try await withPool(.processes(1)) { pool in
                let pulled = Recorder()
                var iterator = pool.map(CountingAsyncJobs(count: 1_000_000, pulled: pulled), maxInFlight: 4).makeAsyncIterator()
                for expected in 0..<10 {
                    let output = try await iterator.next()
                    #expect(output == expected + 1000)
                }
                try await Task.sleep(for: .milliseconds(100))
                // Ten consumed, four running or done, one read ahead, one in the feeder's hand.
                #expect(pulled.values.count <= 16)
            }
        }

        @Test func aSlowInputDoesNotWaitForAFullChunk() async throws {
            try await withPool(.processes(1)) { pool in
                let (jobs, input) = AsyncStream.makeStream(of: Echo.self)
                var iterator = pool.map(jobs, chunkSize: 100).makeAsyncIterator()
                // Each job's output comes back before the next job exists.
                for value in 0..<5 {
                    input.yield(Echo(value))
                    let output = try await iterator.next()
                    #expect(output == value)
                }
                input.finish()
                let end = try await iterator.next()
                #expect(end == nil)
            }
        }

        @Test func anInputThatThrowsEndsTheMapAfterTheOutputsOfItsJobs() async throws {
            try await withPool(.processes(2)) { pool in
                let (jobs, input) = AsyncThrowingStream.makeStream(of: Echo.self)
                for value in 1...5 { input.yield(Echo(value)) }
                input.finish(throwing: InputBroke())
                var outputs: [Int] = []
                await #expect(throws: InputBroke.self) {
                    for try await output in pool.map(jobs, chunkSize: 2) { outputs.append(output) }
                }
                #expect(outputs == [1, 2, 3, 4, 5])
            }
        }

        @Test(arguments: [true, false])
        func anInputErrorComesAfterEveryOutputInEitherOrder(ordered: Bool) async throws {
            try await withPool(.processes(2)) { pool in
                let (jobs, input) = AsyncThrowingStream.makeStream(of: Sleep.self)
                for _ in 0..<5 { input.yield(Sleep(milliseconds: 100)) }
                input.finish(throwing: InputBroke())
                var count = 0
                await #expect(throws: InputBroke.self) {
                    if ordered {
                        for try await _ in pool.map(jobs) { count += 1 }
                    } else {
                        for try await _ in pool.mapUnordered(jobs) { count += 1 }
                    }
                }
                #expect(count == 5)
            }
        }

        @Test func anInputErrorWithOneChunkInFlightDoesNotStallTheMap() async throws {
            try await withPool(.processes(1)) { pool in
                let (jobs, input) = AsyncThrowingStream.makeStream(of: Echo.self)
                input.yield(Echo(1))
                input.yield(Echo(2))
                input.finish(throwing: InputBroke())
                var outputs: [Int] = []
                await #expect(throws: InputBroke.self) {
                    for try await output in pool.map(jobs, maxInFlight: 1) { outputs.append(output) }
                }
                #expect(outputs == [1, 2])
            }
        }

        @Test func aCancelledConsumerReturnsEvenIfItsInputIgnoresCancellation() async throws {
            try await withPool(.processes(1)) { pool in
                // An input that waits 300 ms per job whatever happens.
                let stubborn = AsyncStream<Echo>(unfolding: {
                    let clock = ContinuousClock()
                    let end = clock.now + .milliseconds(300)
                    while clock.now < end { try? await Task.sleep(until: end) }
                    return Echo(1)
                })
                let consumer = Task {
                    var count = 0
                    for try await _ in pool.map(stubborn) { count += 1 }
                    return count
                }
                try await Task.sleep(for: .milliseconds(100))
                consumer.cancel()
                await expectCrewError(.cancelled) { try await consumer.value }
            }
        }

        @Test func cancellingAMapOverAStreamIsNotANormalEnd() async throws {
            try await withPool(.processes(1)) { pool in
                let (jobs, input) = AsyncStream.makeStream(of: Echo.self)
                input.yield(Echo(1))
                let consumer = Task {
                    var outputs: [Int] = []
                    for try await output in pool.map(jobs) { outputs.append(output) }
                    return outputs
                }
                try await Task.sleep(for: .milliseconds(200))
                consumer.cancel()
                await expectCrewError(.cancelled) { try await consumer.value }
                input.finish()
            }
        }

        @Test func mapUnorderedOverAnAsyncSequenceYieldsInCompletionOrder() async throws {
            try await withPool(.processes(2)) { pool in
                let (jobs, input) = AsyncStream.makeStream(of: Sleep.self)
                for milliseconds in [400, 10, 10] { input.yield(Sleep(milliseconds: milliseconds)) }
                input.finish()
                var order: [Int] = []
                for try await (job, _) in pool.mapUnordered(jobs, maxInFlight: 2) { order.append(job.milliseconds) }
                #expect(order.count == 3)
                #expect(order.last == 400)
            }
        }

        /// As over a plain sequence, nothing is read and nothing runs until the first `next()`;
        /// an iterator dropped before it starts nothing and leaves no task behind.
        @Test func anAsyncInputIsNotReadBeforeTheFirstNext() async throws {
            try await withPool(.processes(1)) { pool in
                let input = CountingAsyncJobs(count: 100, pulled: Recorder())
                do {
                    let iterator = pool.map(input, maxInFlight: 4).makeAsyncIterator()
                    try await Task.sleep(for: .milliseconds(300))
                    #expect(input.pulled.values.isEmpty)
                    _ = iterator
                }
                try await Task.sleep(for: .milliseconds(300))
                // Never read, not even its iterator made (which a feeder would hold).
                #expect(input.pulled.values.isEmpty)
                #expect(input.released.values.isEmpty)
                #expect(pool.snapshot().workers.allSatisfy { $0.currentJobs.isEmpty })

                let used = CountingAsyncJobs(count: 100, pulled: Recorder())
                var iterator = pool.map(used, maxInFlight: 4).makeAsyncIterator()
                try await Task.sleep(for: .milliseconds(300))
                #expect(used.pulled.values.isEmpty)
                let first = try await iterator.next()
                #expect(first == 1000)
                #expect(!used.pulled.values.isEmpty)
            }
        }

        @Test func droppingTheIteratorStopsTheFeederAndTheJobs() async throws {
            try await withPool(.processes(2)) { pool in
                let input = CountingAsyncJobs(count: .max, pulled: Recorder())
                do {
                    var iterator = pool.map(input, maxInFlight: 4).makeAsyncIterator()
                    for _ in 0..<5 { _ = try await iterator.next() }
                }
                // The feeder ends and lets go of the endless input, and nothing of it runs any more.
                #expect(await eventually { input.released.values == [1] })
                #expect(await eventually { pool.snapshot().workers.allSatisfy { $0.currentJobs.isEmpty } })
                // Five consumed, four running or done, one read ahead, one in the feeder's hand.
                #expect(input.pulled.values.count <= 5 + 4 + 2)
            }
        }
    }
}
