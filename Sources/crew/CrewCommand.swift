import ArgumentParser
import Crew

@main
struct CrewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crew",
        abstract: "Crew: supervised worker pools for Swift.",
        subcommands: []
    )

    static func main() async {
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

enum CrewJobs {
    static let catalog: JobCatalog = []
}
