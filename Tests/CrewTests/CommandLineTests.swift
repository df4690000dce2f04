import Crew
import CrewTestJobs
import Foundation
import Glibc
import Testing

extension ProcessTests {
    /// The `crew` command against what its help, README.md and BENCHMARKS.md promise.
    @Suite(.timeLimit(.minutes(3))) struct CrewCommandLine {
        /// `crew bench --help`: "--only <text>  Measure only the figures whose key contains this
        /// text (e.g. process_jobs); the rest are reported as skipped." BENCHMARKS.md: "`crew bench
        /// --only mandelbrot`  # just the figures whose key contains the text".
        /// `floor_rtt_us_p50` does not contain `floor_rtt_us_p99`, so it must be skipped (JSON null).
        @Test func onlyReportsAFigureWhoseKeyDoesNotContainTheTextAsSkipped() throws {
            let path = temporaryPath("cli-review-only", extension: ".json")
            defer { unlink(path) }
            let (status, output) = try runProgram("crew", ["bench", "--quick", "--only", "floor_rtt_us_p99", "--json", path])
            #expect(status == 0, "\(output)")
            let data = try #require(FileManager.default.contents(atPath: path), "no JSON at \(path)\n\(output)")
            let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            #expect(object["floor_rtt_us_p99"] is NSNumber, "the asked-for figure is measured")
            #expect(object["floor_rtt_us_p50"] is NSNull,
                    "floor_rtt_us_p50 does not contain the text, so it should be skipped: \(String(describing: object["floor_rtt_us_p50"]))")
        }

        /// `--only` with a text no key contains measures nothing at all, and still exits 0 with a
        /// table of "skipped": a typo gives a silent, empty run instead of an error.
        /// An output that cannot be written is refused before any work, not after it: a long
        /// render or benchmark run does not end in an error it could have reported first.
        @Test func anUnwritableOutputIsRefusedBeforeTheWork() throws {
            let (status, output) = try runProgram("crew", ["mandelbrot", "--output", "/nonexistent-dir/x.png"])
            #expect(status != 0)
            #expect(output.contains("cannot create a file in /nonexistent-dir"), "\(output)")
            #expect(!output.contains("Rendering"), "it rendered first:\n\(output)")
            let (benchStatus, benchOutput) = try runProgram("crew", ["bench", "--quick", "--json", "/nonexistent-dir/x.json"])
            #expect(benchStatus != 0)
            #expect(!benchOutput.contains("figure"), "it measured first:\n\(benchOutput)")
        }

        @Test func onlyWithATextNoKeyContainsIsAnError() throws {
            let (status, output) = try runProgram("crew", ["bench", "--quick", "--only", "no_such_figure"])
            #expect(status != 0, "an --only that matches no figure should fail:\n\(output)")
        }

        /// README.md: workers "show as `crew-worker <n>` in `ps`" (and `WorkerServer.swift`'s
        /// doc comment; `Package.swift`: CCrewSystem is for "the variadic prctl, process naming").
        /// `ps`, `top` and `pgrep` show the process name, `/proc/PID/comm`: it stays the
        /// executable's name, because `prctl(PR_SET_NAME)` renames only the calling thread, which
        /// is one of Swift's cooperative threads, not the main thread.
        @Test func aWorkerProcessIsNamedCrewWorker() async throws {
            try await withTestPool(1) { pool in
                let me = try await pool.run(WhoAmI())
                let comm = readFile("/proc/\(me.pid)/comm").trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(comm == "crew-worker \(me.workerID)", "the worker's process name (ps, top, pgrep) is \(comm)")
            }
        }
    }
}
