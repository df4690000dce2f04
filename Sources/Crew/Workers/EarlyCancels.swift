import DequeModule

/// Cancels that reached a worker before the job they cancel: the pool's threads can send a
/// job's cancel before its dispatch (dispatches leave after the pool's lock is released).
///
/// Each is kept until its job arrives. The oldest are forgotten beyond ``limit``: most are for
/// jobs that ended while the cancel was on its way, and never arrive.
struct EarlyCancels {
    static let limit = 512
    private var jobIDs: Set<UInt64> = []
    private var order: Deque<UInt64> = []

    /// Notes a cancel for a job this worker has not been given.
    mutating func remember(_ jobID: UInt64) {
        guard jobIDs.insert(jobID).inserted else { return }
        order.append(jobID)
        if order.count > Self.limit { jobIDs.remove(order.removeFirst()) }
    }

    /// Whether the job was cancelled before it arrived (and forgets the cancel, so that it no
    /// longer counts toward the limit).
    mutating func take(_ jobID: UInt64) -> Bool {
        guard jobIDs.remove(jobID) != nil else { return false }
        if let index = order.firstIndex(of: jobID) { order.remove(at: index) }
        return true
    }
}
