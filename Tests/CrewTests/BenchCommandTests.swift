import Foundation
import Glibc
import Testing

extension ProcessTests {
    /// `crew bench --quick --json`: the report's shape, not its figures (those depend on the
    /// machine and the build).
    @Suite(.timeLimit(.minutes(3))) struct Bench {
        /// Keys that hold a measured figure: a positive number.
        static let measuredKeys = [
            "floor_rtt_us_p50", "floor_rtt_us_p99", "process_rtt_us_p50", "process_rtt_us_p99",
            "process_jobs_per_s", "process_map_unchunked_jobs_per_s", "spawn_per_job_jobs_per_s",
            "thread_rtt_us_p50", "inline_rtt_us_p50", "thread_jobs_per_s", "inline_jobs_per_s", "process_map_chunked_jobs_per_s",
            "process_map_chunked_codable_jobs_per_s", "mandelbrot_2_workers_parent_cpu_ms", "mandelbrot_2_workers_8_per_message_s",
            "mandelbrot_1_worker_s", "mandelbrot_2_workers_s", "mandelbrot_taskgroup_2_s", "mandelbrot_taskgroup_1_s",
            "mandelbrot_2_workers_workers_cpu_ms", "mandelbrot_taskgroup_2_cpu_ms",
            "mandelbrot_floor_1_process_s", "mandelbrot_floor_2_processes_s", "mandelbrot_floor_2_parent_cpu_ms",
            "spawn_to_first_result_ms", "idle_worker_rss_mb", "crash_recovery_ms", "timeout_overshoot_ms",
        ]

        @Test func quickRunWritesEveryFigureAndTheEnvironment() throws {
            let crew = testWorkerPath.replacingLastComponent(with: "crew")
            try #require(access(crew, X_OK) == 0, "no crew executable at \(crew): build it (swift build) before the tests")
            let path = temporaryPath("bench-test", extension: ".json")
            defer { unlink(path) }

            let (status, output) = try runProgram("crew", ["bench", "--quick", "--json", path])
            #expect(status == 0, "\(output)")
            #expect(output.contains("process_rtt_us_p50"), "the table lists the figures")

            let data = try #require(FileManager.default.contents(atPath: path), "no JSON at \(path)\n\(output)")
            let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "not a JSON object")

            for key in Self.measuredKeys {
                let value = object[key] as? NSNumber
                #expect(value != nil && !Self.isBool(value!), "\(key) should be a number: \(String(describing: object[key]))")
                #expect((value?.doubleValue ?? 0) > 0, "\(key) should be positive: \(String(describing: object[key]))")
            }

            let cores = object["cores"] as? NSNumber
            #expect((cores?.intValue ?? 0) >= 1, "cores: \(String(describing: object["cores"]))")
            #expect(!((object["swift_version"] as? String) ?? "").isEmpty, "swift_version")
            #expect(["release", "debug"].contains(object["build_configuration"] as? String ?? ""), "build_configuration")
            let date = object["date"] as? String ?? ""
            #expect(date.count == 20 && date.hasSuffix("Z") && date.dropFirst(10).hasPrefix("T"), "date should be ISO 8601 UTC: \(date)")
            let quick = object["quick"] as? NSNumber
            #expect(quick != nil && Self.isBool(quick!) && quick!.boolValue, "quick should be true")
        }

        /// Whether JSONSerialization produced this number from `true` or `false` (a C `char`
        /// NSNumber: JSON numbers never become one).
        static func isBool(_ number: NSNumber) -> Bool {
            String(cString: number.objCType) == "c"
        }
    }
}
