import ArgumentParser
import Glibc
import Synchronization

/// The raw limit of the Mandelbrot figures: the same rows rendered by plain processes that a
/// parent feeds over socketpairs, one message per row each way, with no pool, framing, codec or
/// task machinery. Whatever separates these renders from the in-process `TaskGroup` is the
/// machine's cost of one message per row, which no pool can go below; whatever separates Crew's
/// renders from these is Crew's.
///
/// Each peer is this binary re-executed as `crew bench row-peer`, with its socket on fd 3. The
/// parent serves each peer from its own thread with blocking `read` and `write`: it keeps
/// ``window`` rows written ahead (so a peer finds its next row waiting, as a Crew worker does),
/// and for every answer writes the next row from a shared counter. The peers are started
/// before any clock runs and serve every render until end-of-file.
final class MandelbrotFloor: Sendable {
    /// Rows written ahead per peer: what the demo's `pool.map` keeps in flight per worker.
    static let window = 16

    private let geometry: MandelbrotGeometry
    private let peers: [(fd: Int32, child: BenchChild)]

    /// Starts `count` peers for `geometry`.
    init(_ geometry: MandelbrotGeometry, peers count: Int) throws {
        self.geometry = geometry
        var peers: [(fd: Int32, child: BenchChild)] = []
        do {
            for _ in 0..<count {
                let (mine, theirs) = try benchSocketPair()
                defer { close(theirs) }
                do {
                    let arguments = ["bench", RowPeerCommand.name, "\(geometry.width)", "\(geometry.height)", "\(geometry.iterations)"]
                    peers.append((mine, try BenchChild.spawn(arguments, descriptors: [(theirs, 3)])))
                } catch {
                    close(mine)
                    throw error
                }
            }
        } catch {
            Self.stop(peers)
            throw error
        }
        self.peers = peers
    }

    /// Ends the peers (they read end-of-file) and reaps them.
    func stop() { Self.stop(peers) }

    private static func stop(_ peers: [(fd: Int32, child: BenchChild)]) {
        for peer in peers { shutdown(peer.fd, Int32(SHUT_RDWR)) }
        for peer in peers {
            peer.child.wait()
            close(peer.fd)
        }
    }

    /// Renders every row once across the peers; the rows in order.
    func render() async throws -> [[UInt8]] {
        let next = RowCounter()
        let height = geometry.height
        let rowBytes = geometry.width * 3
        let peers = self.peers
        let served = await onThreads(peers.count) { index -> [(Int, [UInt8])]? in
            Self.serve(peers[index].fd, next: next, height: height, rowBytes: rowBytes)
        }
        var rows = [[UInt8]](repeating: [], count: height)
        for case let answers? in served {
            for (row, pixels) in answers { rows[row] = pixels }
        }
        guard !served.contains(where: { $0 == nil }), !rows.contains(where: \.isEmpty) else {
            throw BenchError("a Mandelbrot row peer stopped answering")
        }
        return rows
    }

    /// Feeds one peer rows from `next` until none are left and every row it took has come back;
    /// the rows it rendered, or nil if it went away.
    private static func serve(_ fd: Int32, next: RowCounter, height: Int, rowBytes: Int) -> [(Int, [UInt8])]? {
        var answers: [(Int, [UInt8])] = []
        var outstanding = 0
        func sendNext() -> Bool {
            var row = Int32(next.value.wrappingAdd(1, ordering: .relaxed).oldValue)
            guard row < height else { return true }
            outstanding += 1
            return writeFully(fd, &row, 4)
        }
        for _ in 0..<window { guard sendNext() else { return nil } }
        var row: Int32 = 0
        while outstanding > 0 {
            var pixels = [UInt8](repeating: 0, count: rowBytes)
            let ok = readFully(fd, &row, 4) && pixels.withUnsafeMutableBytes { readFully(fd, $0.baseAddress!, rowBytes) }
            guard ok, (0..<height).contains(Int(row)) else { return nil }
            answers.append((Int(row), pixels))
            outstanding -= 1
            guard sendNext() else { return nil }
        }
        return answers
    }
}

/// The next row to hand out, shared by the threads that feed the peers.
private final class RowCounter: Sendable {
    let value = Atomic<Int>(0)
}

/// `crew bench row-peer WIDTH HEIGHT ITERATIONS` (hidden): a Mandelbrot floor peer. Reads row
/// numbers (4 bytes each) on fd 3 and answers each with the number and the row's pixels, until
/// end-of-file.
struct RowPeerCommand: ParsableCommand {
    static let name = "row-peer"
    static let configuration = CommandConfiguration(
        commandName: name,
        abstract: "Render Mandelbrot rows asked for on fd 3 (the Mandelbrot floor's peer).",
        shouldDisplay: false
    )

    @Argument var width: Int
    @Argument var height: Int
    @Argument var iterations: Int

    func run() throws {
        let geometry = MandelbrotGeometry(width: width, height: height, iterations: iterations)
        var row: Int32 = 0
        while readFully(3, &row, 4) {
            let pixels = geometry.renderRow(Int(row))
            guard writeFully(3, &row, 4), pixels.withUnsafeBytes({ writeFully(3, $0.baseAddress!, $0.count) }) else { return }
        }
    }
}
