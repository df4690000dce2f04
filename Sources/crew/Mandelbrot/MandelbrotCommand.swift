import ArgumentParser
import Crew
import Glibc

/// `crew mandelbrot`: renders the Mandelbrot set into a PNG, one job per row, across process workers.
struct MandelbrotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mandelbrot",
        abstract: "Render the Mandelbrot set into a PNG, one job per row, on process workers."
    )

    @Option(help: "Worker processes (default: one per core).")
    var workers: Int = System.coreCount

    @Option(help: "Image width in pixels.")
    var width: Int = 1600

    @Option(help: "Image height in pixels.")
    var height: Int = 1200

    @Option(help: "Maximum iterations per pixel.")
    var iterations: Int = 256

    @Option(name: .shortAndLong, help: "Where to write the PNG.")
    var output: String = "mandelbrot.png"

    @Flag(help: "Render again with 1 worker and print the speedup.")
    var compare = false

    @Option(help: "Rows sent to a worker per message (each row stays its own job): fewer messages, less work for this process.")
    var rowsPerMessage: Int = 1

    func validate() throws {
        guard (1...512).contains(workers) else { throw ValidationError("--workers must be between 1 and 512") }
        guard (1...20_000).contains(width), (1...20_000).contains(height) else {
            throw ValidationError("--width and --height must be between 1 and 20000")
        }
        guard iterations >= 1 else { throw ValidationError("--iterations must be at least 1") }
        guard rowsPerMessage >= 1 else { throw ValidationError("--rows-per-message must be at least 1") }
        try validateWritable(output, option: "--output")
    }

    func run() async throws {
        let geometry = MandelbrotGeometry(width: width, height: height, iterations: iterations)
        print("Rendering \(width)×\(height), \(iterations) iterations, one job per row on \(workers) worker process\(workers == 1 ? "" : "es")…")
        let (rows, elapsed) = try await Self.render(geometry, workers: workers, rowsPerMessage: rowsPerMessage, progress: true)
        let png = try PNGWriter.encode(width: width, rows: rows)
        try writeFile(output, png)
        print("Wrote \(output) (\(png.count / 1024) KiB) in \(format(elapsed)).")

        if compare {
            print("Rendering again on 1 worker process…")
            let (_, single) = try await Self.render(geometry, workers: 1, rowsPerMessage: rowsPerMessage, progress: true)
            let speedup = single.seconds / elapsed.seconds
            print("1 worker: \(format(single)); \(workers) workers: \(format(elapsed)); speedup \(String(speedup, decimals: 2))×")
        }
    }

    /// The demo's workers: each holds its next 8 rows while it renders one (prefetch), so it never
    /// waits for the parent between rows, and answers about 6 rows at a time (a worker holds
    /// answers back, for at most 6 ms, until it holds three per row still waiting in it): the
    /// parent then wakes once per few rows, which more than halved its CPU per render against
    /// holding one row.
    static func workers(_ count: Int) -> Workers { Workers.processes(count).prefetch(8) }

    /// Renders every row on a fresh pool; returns the rows in order and the wall time.
    static func render(
        _ geometry: MandelbrotGeometry, workers: Int, rowsPerMessage: Int = 1, progress: Bool
    ) async throws -> ([[UInt8]], Duration) {
        let clock = ContinuousClock()
        let start = clock.now
        var lastReport = clock.now
        let rows = try await WorkerPool.withPool(Self.workers(workers), jobs: CrewJobs.catalog) { pool in
            try await renderRows(on: pool, geometry, workers: workers, rowsPerMessage: rowsPerMessage) { done in
                if progress && (clock.now - lastReport > .milliseconds(100) || done == geometry.height) {
                    lastReport = clock.now
                    printProgress("  rows \(done)/\(geometry.height)")
                }
            }
        }
        if progress { printProgress("", final: true) }
        return (rows, clock.now - start)
    }

    /// Renders every row as one `MandelbrotRow` job through `pool.map`: rows come back in order,
    /// with 16 per worker in flight, few enough that memory stays flat for any image size, and
    /// enough that a worker never waits for the parent: rows outside the set take a few
    /// microseconds, less than the parent takes to wake up for a finished row, so with a short
    /// window a worker ran dry in the bands at the top and bottom of the image. The pool queues
    /// what its workers do not hold and hands a worker its next row as soon as it answers.
    /// With `rowsPerMessage` > 1, rows travel in chunks (still one job each).
    static func renderRows(
        on pool: WorkerPool, _ geometry: MandelbrotGeometry, workers: Int, rowsPerMessage: Int = 1,
        rowDone: (Int) -> Void = { _ in }
    ) async throws -> [[UInt8]] {
        var rows: [[UInt8]] = []
        rows.reserveCapacity(geometry.height)
        let jobs = (0..<geometry.height).map { MandelbrotRow(geometry: geometry, row: $0) }
        for try await pixels in pool.map(jobs, maxInFlight: workers * 16, chunkSize: rowsPerMessage) {
            rows.append(pixels)
            rowDone(rows.count)
        }
        return rows
    }
}

func printProgress(_ text: String, final: Bool = false) {
    let line = final ? "\r\u{1B}[K" : "\r\u{1B}[K\(text)"
    _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
}

/// A file the command was asked to write cannot be written (not a usage error: exit status 1).
struct OutputError: Error, CustomStringConvertible {
    var description: String
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw OutputError(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw OutputError(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
        offset += n
    }
}

/// Fails at once if `path` could not be written later, so a long run does not end in an error
/// it could have reported first: its directory must exist and be writable, and so must the
/// file if it exists.
func validateWritable(_ path: String, option: String) throws {
    let directory = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    if access(path, F_OK) == 0 {
        guard access(path, W_OK) == 0 else { throw ValidationError("\(option) \(path) is not writable") }
    } else {
        guard access(directory, W_OK) == 0 else {
            throw ValidationError("\(option) \(path): cannot create a file in \(directory): \(String(cString: strerror(errno)))")
        }
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

func format(_ duration: Duration) -> String {
    let seconds = duration.seconds
    return seconds < 1 ? "\(String(seconds * 1000, decimals: 1)) ms" : "\(String(seconds, decimals: 2)) s"
}

extension String {
    /// `value` with a fixed number of decimals, without Foundation.
    init(_ value: Double, decimals: Int) {
        guard value.isFinite else { self = "\(value)"; return }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = Int(scaled / scale)
        var fraction = String(Int(scaled.truncatingRemainder(dividingBy: scale)))
        while fraction.count < decimals { fraction = "0" + fraction }
        self = (value < 0 && scaled != 0 ? "-" : "") + "\(whole)" + (decimals > 0 ? ".\(fraction)" : "")
    }
}
