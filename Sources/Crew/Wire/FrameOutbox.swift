#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// The sending side of a channel, shared by any number of threads.
///
/// Senders append frames under a lock; the first one to find nobody sending becomes the sender
/// and writes everything queued, in one `send` per batch, until the queue is empty. Frames that
/// several threads produce at once thus leave in one system call, in the order they were
/// queued. The descriptor is only shut down or closed when no send is in progress.
final class FrameOutbox: Sendable {
    private let fd: Int32

    private struct State: ~Copyable {
        var writer = FrameWriter(capacity: 4096)
        var spare: [UInt8] = []
        /// A thread is sending outside the lock; others only append.
        var flushing = false
        /// No more frames are accepted.
        var closed = false
        var shutdownWhenFlushed = false
        var closeWhenFlushed = false
    }
    private let state = Mutex(State())

    init(fd: Int32) {
        self.fd = fd
    }

    /// Queues the frames `build` writes and sends everything queued, unless another thread is
    /// sending already (it sends these too). Returns false if the outbox is closed or the peer
    /// is gone.
    @discardableResult
    func send(_ build: (inout FrameWriter) -> Void) -> Bool {
        let first = state.withLock { state -> [UInt8]? in
            guard !state.closed else { return nil }
            build(&state.writer)
            // Another thread sends what is queued, or nothing is (`build` may write nothing).
            guard !state.flushing, !state.writer.bytes.isEmpty else { return [] }
            state.flushing = true
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
                swap(&state.writer.bytes, &state.spare)
                return state.spare
            }
            guard let more else { return delivered }
            batch = more
        }
    }

    /// Accepts no more frames and shuts down the sending side once the frames already accepted
    /// have left: the peer reads them, then end-of-file.
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
