import Crew
import Glibc

/// The jobs the `crew` binary's workers run: the demo's and the benchmark's.
enum CrewJobs {
    static let catalog: JobCatalog = [
        MandelbrotRow.self, Noop.self, CodableNoop.self, Pause.self, Spin.self,
    ]
}

/// One row of the Mandelbrot demo, as RGB bytes.
struct MandelbrotRow: Job, PlainData {
    static var jobName: String { "crew.MandelbrotRow" }
    var geometry: MandelbrotGeometry
    var row: Int
    func run(in context: JobContext) async throws -> [UInt8] { geometry.renderRow(row) }
}

/// Returns its argument: the smallest possible job, for round-trip measurements. `PlainData`,
/// so it travels as its 8 bytes.
struct Noop: Job, PlainData {
    static var jobName: String { "crew.Noop" }
    var value: Int
    func run(in context: JobContext) async throws -> Int { value }
}

/// `Noop` without `PlainData`: it travels through its `Codable` conformance (a keyed container
/// per job), for the cost of the general path.
struct CodableNoop: Job {
    static var jobName: String { "crew.CodableNoop" }
    var value: Int
    func run(in context: JobContext) async throws -> Int { value }
}

/// Sleeps (cooperatively) and returns its worker's pid.
struct Pause: Job {
    static var jobName: String { "crew.Pause" }
    var milliseconds: Int
    func run(in context: JobContext) async throws -> Int32 {
        try await Task.sleep(for: .milliseconds(milliseconds))
        return context.processID
    }
}

/// Burns CPU until killed; never checks for cancellation.
struct Spin: Job {
    static var jobName: String { "crew.Spin" }
    func run(in context: JobContext) async throws -> Int {
        var x: UInt64 = 1
        while x != 0 { x = x &* 6364136223846793005 &+ 1442695040888963407 }
        return Int(truncatingIfNeeded: x)
    }
}
