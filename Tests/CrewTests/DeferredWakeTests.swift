@testable import Crew
import CrewTestJobs
import Glibc
import Synchronization
import Testing

/// A `map` consumer woken once per few outputs rather than per output (``BulkMailbox``,
/// ``DeferredWakes``): what may wait, what may not, and that nothing is lost or left waiting.
@Suite(.timeLimit(.minutes(1))) struct DeferredWakeTests {
    /// A mailbox whose consumer waits for `wanting` arrivals, and the task that waits.
    private func waitingMailbox(wanting: Int) async -> (BulkMailbox<Int>, Task<Void, Never>) {
        let mailbox = BulkMailbox<Int>()
        let consumer = Task { await mailbox.wait(wanting: wanting) }
        #expect(await eventually { mailbox.arrived.withLock { $0.wanted == wanting } })
        return (mailbox, consumer)
    }

    /// On a thread that can put wake-ups off, a one-job output leaves the consumer asleep, and
    /// the thread wakes it when its deferring ends; the waiting task returns only because of that.
    @Test func aDeferredWakeUpIsMadeWhenTheDeferringThreadStops() async {
        let (mailbox, consumer) = await waitingMailbox(wanting: 3)
        DeferredWakes.withCurrent { wakes in
            mailbox.deliver(0, count: 1, .success(10))
            mailbox.deliver(1, count: 1, .success(11))
            #expect(wakes.timeUntilDue != nil)
            #expect(mailbox.arrived.withLock { $0.owed })
        }
        #expect(!mailbox.arrived.withLock { $0.owed })
        await consumer.value
        #expect(mailbox.take().map(\.index) == [0, 1])
    }

    /// The wanted count wakes the consumer at once, and leaves nothing owed.
    @Test func theWantedCountWakesAtOnce() async {
        let (mailbox, consumer) = await waitingMailbox(wanting: 2)
        DeferredWakes.withCurrent { wakes in
            mailbox.deliver(0, count: 1, .success(10))
            mailbox.deliver(1, count: 1, .success(11))
            #expect(!mailbox.arrived.withLock { $0.owed })
        }
        await consumer.value
    }

    /// A failure (nothing more may start) and a batch wake at once, on any thread; so does a
    /// one-job output delivered by a thread that cannot put wake-ups off.
    @Test(arguments: [DeliveryKind.failure, .batch, .elsewhere])
    func whatCannotWaitWakesAtOnce(_ kind: DeliveryKind) async {
        let (mailbox, consumer) = await waitingMailbox(wanting: 5)
        switch kind {
        case .failure:
            DeferredWakes.withCurrent { wakes in
                mailbox.deliver(0, count: 1, .failure(CrewError(.cancelled, "test")))
                #expect(wakes.timeUntilDue == nil)
            }
        case .batch:
            DeferredWakes.withCurrent { wakes in
                mailbox.deliver(0, count: 4, .success(10))
                #expect(wakes.timeUntilDue == nil)
            }
        case .elsewhere:
            mailbox.deliver(0, count: 1, .success(10))
        }
        #expect(!mailbox.arrived.withLock { $0.owed })
        await consumer.value
    }

    enum DeliveryKind: Sendable { case failure, batch, elsewhere }

    /// A reader held up while it owes a wake-up (in a send to its worker, say) does not hold up
    /// the outputs another reader delivers: that one owes the wake-up too, and makes it.
    @Test func aHeldUpReaderDoesNotHoldUpAnotherReadersOutputs() async {
        let (mailbox, consumer) = await waitingMailbox(wanting: 3)
        let release = Atomic(false)
        let first = PosixThread.start(name: "reader-1") {
            DeferredWakes.withCurrent { _ in
                mailbox.deliver(0, count: 1, .success(10))
                while !release.load(ordering: .acquiring) { usleep(1_000) }
            }
        }
        #expect(await eventually { mailbox.arrived.withLock { $0.list.count == 1 } })
        PosixThread.start(name: "reader-2") {
            DeferredWakes.withCurrent { _ in mailbox.deliver(1, count: 1, .success(11)) }
        }.join()
        await consumer.value
        release.store(true, ordering: .releasing)
        first.join()
    }

    /// The consumer's wait is satisfied by what arrived before it began to wait.
    @Test func arrivalsBeforeTheWaitCount() async {
        let mailbox = BulkMailbox<Int>()
        DeferredWakes.withCurrent { _ in
            mailbox.deliver(0, count: 1, .success(10))
            mailbox.deliver(1, count: 1, .success(11))
        }
        await mailbox.wait(wanting: 2)
        #expect(mailbox.take().count == 2)
    }
}

extension ProcessTests {
    /// `map` over process workers, whose reader threads put the consumer's wake-ups off.
    @Suite struct OutputBatching {
        /// The first output must reach the consumer while every other job waits for it to arrive:
        /// the reader thread that put the wake-up off makes it within its delay even though its
        /// channel stays silent. Without that, the map would wait for ever.
        @Test(arguments: [true, false])
        func anOutputReachesItsConsumerWhileTheOthersWaitForIt(ordered: Bool) async throws {
            try await withPool(.processes(2)) { pool in
                let open = temporaryPath("open")
                openGate(open)
                defer { unlink(open) }
                let later = temporaryPath("later")
                defer { unlink(later) }
                // A window of 16 lets the consumer wait for up to 4 outputs (3 here, every job).
                let jobs = [WaitForFile(path: open), WaitForFile(path: later), WaitForFile(path: later)]
                var count = 0
                if ordered {
                    for try await _ in pool.map(jobs, maxInFlight: 16) {
                        if count == 0 { openGate(later) }
                        count += 1
                    }
                } else {
                    for try await _ in pool.mapUnordered(jobs, maxInFlight: 16) {
                        if count == 0 { openGate(later) }
                        count += 1
                    }
                }
                #expect(count == 3)
            }
        }

        /// Many quick outputs under a wide window, most of them delivered without a wake-up:
        /// every one arrives once, in order where order is promised.
        @Test(arguments: [true, false], [1, 3])
        func everyOutputArrivesOnceUnderAWideWindow(ordered: Bool, chunkSize: Int) async throws {
            try await withPool(.processes(2)) { pool in
                let jobs = (0..<3_000).map { Add($0, 1) }
                var outputs: [Int] = []
                if ordered {
                    for try await output in pool.map(jobs, maxInFlight: 64, chunkSize: chunkSize) { outputs.append(output) }
                    #expect(outputs == (1...3_000).map { $0 })
                } else {
                    for try await (_, output) in pool.mapUnordered(jobs, maxInFlight: 64, chunkSize: chunkSize) { outputs.append(output) }
                    #expect(outputs.sorted() == (1...3_000).map { $0 })
                }
            }
        }
    }
}
