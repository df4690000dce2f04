@testable import Crew
import Testing

/// The bounded memory of cancels that overtook their jobs, shared by every kind of worker.
@Suite struct EarlyCancelsTests {
    @Test func aCancelIsTakenOnceByItsJob() {
        var cancels = EarlyCancels()
        cancels.remember(7)
        let first = cancels.take(7), second = cancels.take(7), other = cancels.take(8)
        #expect(first && !second && !other)
    }

    /// Beyond the limit the oldest cancel is forgotten; one its job took no longer counts, so
    /// the limit is the number of cancels still waiting for their jobs.
    @Test func theLimitCountsOnlyCancelsStillWaiting() {
        var cancels = EarlyCancels()
        for jobID in 1...UInt64(EarlyCancels.limit) { cancels.remember(jobID) }
        let arrived = cancels.take(UInt64(EarlyCancels.limit))  // its job arrived
        cancels.remember(10_000)
        let kept = cancels.take(1)  // still within the limit: nothing was forgotten
        cancels.remember(10_001)
        cancels.remember(10_002)  // one more than the limit now: the oldest goes
        let forgotten = !cancels.take(2)
        let others = cancels.take(3) && cancels.take(10_002)
        #expect(arrived && kept && forgotten && others)
    }
}
