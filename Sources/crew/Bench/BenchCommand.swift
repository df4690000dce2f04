import ArgumentParser

/// `crew bench`: the performance suite (being written).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Measure Crew against the raw limit.")
    func run() async throws {
        throw ValidationError("not built yet")
    }
}
