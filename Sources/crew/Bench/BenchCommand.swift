import ArgumentParser
import Crew
import Glibc

/// `crew bench`: measures Crew's process workers against the raw limit of this machine (a
/// socketpair ping-pong between two processes) and against spawning a process per job, and
/// judges the figures against the project's goals.
///
/// Each figure is the median of several repetitions after a warm-up; the table shows the
/// spread, `--json PATH` writes everything as one object. Run it from a release build.
/// The hidden subcommands are the processes the benchmarks spawn besides pool workers.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure Crew against the raw limit.",
        // The subcommands are hidden helpers; without this the usage line would promise one.
        usage: "crew bench [--quick] [--json <path>] [--only <text>]",
        discussion: "Run from a release build (swift build -c release). Each figure is the median of 5 repetitions (3 with --quick) after a warm-up.",
        subcommands: [EchoPeerCommand.self, OneShotCommand.self, RowPeerCommand.self]
    )

    @Flag(help: "Less work per figure (3 repetitions, smaller counts): a smoke test, not a measurement.")
    var quick = false

    @Option(name: .customLong("json"), help: ArgumentHelp("Also write the results as one JSON object to this file.", valueName: "path"))
    var jsonPath: String?

    @Option(help: ArgumentHelp(
        "Measure only the figures whose key contains this text (e.g. process_jobs); the rest are reported as skipped.",
        valueName: "text"))
    var only: String?

    func validate() throws {
        if let jsonPath { try validateWritable(jsonPath, option: "--json") }
        if let only, !BenchSuite.all.contains(where: { $0.figures.contains { $0.key.contains(only) } }) {
            let keys = BenchSuite.all.flatMap { $0.figures.map(\.key) }
            throw ValidationError("no figure's key contains \"\(only)\"; the keys are \(keys.joined(separator: ", "))")
        }
    }

    func run() async throws {
        let settings = quick ? BenchSettings.quickRun : BenchSettings.full
        let environment = BenchEnvironment()
        print("crew bench: \(environment.buildConfiguration) build, Swift \(environment.swiftVersion), \(environment.cores) cores, "
              + "\(settings.repetitions) repetitions per figure\(quick ? " (--quick: smoke test)" : "")")
        if environment.buildConfiguration == "debug" {
            print("warning: a debug build; these figures say little about Crew's speed.")
        }
        let ticksAtStart = BenchEnvironment.CPUTicks.now()
        let showProgress = isatty(2) != 0
        let results = await BenchResults.measure(BenchSuite.all, settings, only: only) { title in
            if showProgress { printProgress("  measuring \(title)…") }
        }
        if showProgress { printProgress("", final: true) }
        let othersPercent = ticksAtStart.flatMap { start in
            BenchEnvironment.CPUTicks.now().map { BenchEnvironment.CPUTicks.othersPercent(from: start, to: $0) }
        }
        let report = BenchReport(environment: environment, settings: settings, results: results, othersCPUPercent: othersPercent)
        print("")
        print(report.table, terminator: "")
        if let othersPercent {
            print("\nOther processes used \(String(othersPercent, decimals: 1))% of the machine's CPU during the run"
                  + (othersPercent > 5 ? ": the figures are disturbed." : "."))
        }
        if let jsonPath {
            try writeFile(jsonPath, Array(report.json.utf8))
            print("\nWrote \(jsonPath).")
        }
        if !results.failures.isEmpty { throw ExitCode(1) }
    }
}
