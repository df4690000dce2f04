#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCrewSystem
import Synchronization

/// The sending side of a channel, shared by any number of threads.
///
/// Senders append frames under a lock; the first one to find nobody sending becomes the sender
/// and writes everything queued, in one `send` per batch, until the queue is empty. Frames that
/// several threads produce at once thus leave in one system call, in the order they were
/// queued. The descriptor is only shut down or closed when no send is in progress.
///
/// With a ``HoldTimer``, a sender may also hold its frames back for company (see
/// ``send(holdingWhileUnder:_:)``): they leave with the next send that does not hold, or when
/// the timer, armed for ``maxHold`` as the first of them is held, tells the thread that waits on
/// it to ``flush()`` (a thread that never reads the channel: a flush may block).
final class FrameOutbox: Sendable {
    /// The longest frames are held back.
    static let maxHold: Duration = .milliseconds(2)

    private let fd: Int32
    private let holdTimer: HoldTimer?

    private struct State: ~Copyable {
        var writer = FrameWriter(capacity: 4096)
        var spare: [UInt8] = []
        /// A thread is sending outside the lock; others only append.
        var flushing = false
        /// No more frames are accepted.
        var closed = false
        var shutdownWhenFlushed = false
        var closeWhenFlushed = false
        /// Sends whose frames are queued and held back (none while a thread is sending).
        var held = 0
    }
    private let state = Mutex(State())

    init(fd: Int32, holdTimer: HoldTimer? = nil) {
        self.fd = fd
        self.holdTimer = holdTimer
    }

    /// Queues the frames `build` writes and sends everything queued, unless another thread is
    /// sending already (it sends these too). Returns false if the outbox is closed or the peer
    /// is gone.
    ///
    /// With a hold timer and a `limit` above 1, the frames stay queued instead while this send
    /// and those held before it number fewer than `limit` and no thread is sending. A worker
    /// holds an answer back this way while more prefetched jobs wait in it than answers are held:
    /// the pool, which has work for it anyway, then reads several answers per wake-up.
    @discardableResult
    func send(holdingWhileUnder limit: Int = 0, _ build: (inout FrameWriter) -> Void) -> Bool {
        var startHolding = false
        var releaseHeld = false
        let first = state.withLock { state -> [UInt8]? in
            guard !state.closed else { return nil }
            build(&state.writer)
            if holdTimer != nil, !state.flushing, !state.writer.bytes.isEmpty, state.held + 1 < limit {
                state.held += 1
                startHolding = state.held == 1
                return []
            }
            releaseHeld = state.held > 0
            state.held = 0
            // Another thread sends what is queued, or nothing is (`build` may write nothing).
            guard !state.flushing, !state.writer.bytes.isEmpty else { return [] }
            state.flushing = true
            swap(&state.writer.bytes, &state.spare)
            return state.spare
        }
        // Outside the lock: a timer armed late, or disarmed early, only makes the watcher flush
        // an empty queue.
        if startHolding { holdTimer?.arm(after: Self.maxHold) }
        if releaseHeld { holdTimer?.disarm() }
        guard var batch = first else { return false }
        if batch.isEmpty { return true }
        var delivered = true
        while true {
            delivered = batch.withUnsafeBytes { SystemIO.sendAll(fd, $0) } && delivered
            let more = state.withLock { state -> [UInt8]? in
                state.spare = batch
                state.spare.removeAll(keepingCapacity: true)
                // Frames queued before the outbox closed were accepted: they leave too (to a
                // peer that is gone, the send just fails).
                if state.writer.bytes.isEmpty {
                    state.flushing = false
                    if state.shutdownWhenFlushed { Glibc.shutdown(fd, Int32(SHUT_WR)) }
                    if state.closeWhenFlushed { close(fd) }
                    return nil
                }
                swap(&state.writer.bytes, &state.spare)
                return state.spare
            }
            guard let more else { return delivered }
            batch = more
        }
    }

    /// Sends the frames held back (and anything else queued). Returns false if the outbox is
    /// closed or the peer is gone.
    @discardableResult
    func flush() -> Bool {
        send { _ in }
    }

    /// Sends everything queued, held frames included, and returns once no thread is sending:
    /// what a process does before it exits. Returns at once if the peer is gone (a send to it
    /// fails and ends); blocks while a peer that is alive does not read.
    func sendEverything() {
        while true {
            flush()
            if state.withLock({ $0.closed || (!$0.flushing && $0.writer.bytes.isEmpty) }) { return }
            // Another thread is sending (what it found, and what came after): let it finish.
            usleep(200)
        }
    }

    /// Accepts no more frames and shuts down the sending side once the frames already accepted
    /// have left: the peer reads them, then end-of-file. Frames held back are not sent: flush
    /// them first.
    func shutdownWriting() {
        state.withLock { state in
            guard !state.closed else { return }
            state.closed = true
            if state.flushing {
                state.shutdownWhenFlushed = true
            } else {
                Glibc.shutdown(fd, Int32(SHUT_WR))
            }
        }
    }

    /// Accepts no more frames and closes the descriptor, now or when a send in progress ends.
    /// Call once, when nothing reads from the descriptor any more.
    func closeDescriptor() {
        state.withLock { state in
            state.closed = true
            if state.flushing {
                state.closeWhenFlushed = true
            } else {
                close(fd)
            }
        }
    }
}

/// A one-shot timer (a timerfd) that a thread waits on: what bounds how long a ``FrameOutbox``
/// holds frames back.
final class HoldTimer: Sendable {
    /// Readable once the timer has expired, until ``wait()`` consumes the expiry.
    let fd: Int32

    /// A new, disarmed timer; nil if the system has none to give.
    init?() {
        fd = ccrew_timer_create()
        guard fd >= 0 else { return nil }
    }

    deinit { close(fd) }

    func arm(after delay: Duration) {
        _ = ccrew_timer_arm(fd, max(1, delay.clampedNanoseconds))
    }

    func disarm() {
        _ = ccrew_timer_arm(fd, 0)
    }

    /// Blocks until the timer expires (at once if it has since the last wait), and consumes the
    /// expiry.
    func wait() {
        var expiries: UInt64 = 0
        while read(fd, &expiries, MemoryLayout<UInt64>.size) < 0 && errno == EINTR {}
    }
}
