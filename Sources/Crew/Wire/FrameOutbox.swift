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
/// it to ``flush()`` (a thread that never reads the channel: a flush may block). That thread also
/// sends what a thread that must not block ``post(_:)``s.
final class FrameOutbox: Sendable {
    /// The longest frames are held back.
    static let maxHold: Duration = .milliseconds(6)
    /// Frames are not held back once this many bytes are queued: large answers gain nothing from
    /// company (the peer reads them in several reads anyway), and a worker's held answers should
    /// not pile up in its memory.
    static let maxHeldBytes = 256 * 1024

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
        /// Frames were posted (see ``post(_:)``): nothing is held until they have left.
        var posted = false
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
    /// and those held before it number fewer than `limit`, no thread is sending, nothing posted
    /// waits, and fewer than ``maxHeldBytes`` are queued. A worker
    /// holds an answer back this way while the answers held number fewer than
    /// `WorkerServer.holdRatio` times the prefetched jobs still waiting in it (never the answer
    /// of a job with a timeout): the pool, which has work for it anyway, then reads several
    /// answers per wake-up.
    @discardableResult
    func send(holdingWhileUnder limit: Int = 0, _ build: (inout FrameWriter) -> Void) -> Bool {
        // The timer is armed and disarmed under the lock, so that its last setting always
        // matches what is queued: a disarm that came late could strand a posted frame.
        let first = state.withLock { state -> [UInt8]? in
            guard !state.closed else { return nil }
            build(&state.writer)
            if let holdTimer, !state.flushing, !state.posted, !state.writer.bytes.isEmpty, state.held + 1 < limit,
               state.writer.bytes.count < Self.maxHeldBytes {
                state.held += 1
                if state.held == 1 { holdTimer.arm(after: Self.maxHold) }
                return []
            }
            if state.held > 0 { holdTimer?.disarm() }
            state.held = 0
            // Another thread sends what is queued, or nothing is (`build` may write nothing).
            guard !state.flushing, !state.writer.bytes.isEmpty else { return [] }
            state.flushing = true
            state.posted = false
            swap(&state.writer.bytes, &state.spare)
            return state.spare
        }
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
                state.posted = false
                swap(&state.writer.bytes, &state.spare)
                return state.spare
            }
            guard let more else { return delivered }
            batch = more
        }
    }

    /// Queues frames for the thread that waits on the hold timer to send, and returns without
    /// writing: for a thread that must never block on the channel. A worker's reader posts the
    /// failures it answers itself (an unknown job type, a job cancelled before it started): if
    /// it sent them and the channel were full, it would stop reading, and a pool blocked sending
    /// to it would never read the answers that fill the channel. Frames posted leave at once
    /// (the timer fires now; nothing is held back meanwhile), or with a send in progress.
    /// Returns false if the outbox is closed. Without a hold timer, sends like ``send(holdingWhileUnder:_:)``.
    ///
    /// A thread must flush whenever the hold timer fires.
    func post(_ build: (inout FrameWriter) -> Void) -> Bool {
        guard let holdTimer else { return send(build) }
        return state.withLock { state -> Bool in
            guard !state.closed else { return false }
            build(&state.writer)
            state.posted = true
            // A thread sending now takes these frames too before it stops.
            if !state.flushing { holdTimer.arm(after: .nanoseconds(1)) }
            return true
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
