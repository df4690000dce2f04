import ArgumentParser
import Crew

@main
struct CrewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crew",
        abstract: "Crew: supervised worker pools for Swift.",
        subcommands: [MandelbrotCommand.self, BenchCommand.self]
    )

    static func main() async {
        // A worker started by one of this binary's pools serves here and never returns.
        await Crew.serveIfWorker(CrewJobs.catalog)
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
