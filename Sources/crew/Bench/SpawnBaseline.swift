import ArgumentParser
import Crew
import Glibc

/// What users without a pool do today: start one process per job. Each job spawns this binary
/// as `crew bench one-shot`, writes an Int to its stdin, reads it back from its stdout and waits
/// for the process to exit. One spawning thread per core, so the baseline uses the machine as
/// fully as the pool does.
enum SpawnBaseline {
    /// Jobs per second, one value per repetition.
    static func jobsPerSecond(_ settings: BenchSettings) async throws -> [String: [Double]] {
        let threads = max(1, System.coreCount)
        _ = try await spawnJobs(threads * 2, threads: threads)  // warm-up: page cache, dynamic linker
        var rates: [Double] = []
        for _ in 0..<settings.repetitions {
            let start = monotonicNanoseconds()
            let jobs = try await spawnJobs(settings.spawnsPerRepetition, threads: threads)
            rates.append(Double(jobs) / seconds(since: start))
        }
        return ["spawn_per_job_jobs_per_s": rates]
    }

    /// Runs `count` one-process jobs spread over `threads` threads; returns how many ran.
    private static func spawnJobs(_ count: Int, threads: Int) async throws -> Int {
        let results = await onThreads(threads) { thread -> Result<Int, BenchError> in
            let mine = count / threads + (thread < count % threads ? 1 : 0)
            for job in 0..<mine {
                do {
                    try runOneShot(job)
                } catch let error as BenchError {
                    return .failure(error)
                } catch {
                    return .failure(BenchError("\(error)"))
                }
            }
            return .success(mine)
        }
        return try results.reduce(0) { $0 + (try $1.get()) }
    }

    /// One job in its own process: spawn, send `value`, read it back, reap.
    private static func runOneShot(_ value: Int) throws {
        let input = try benchPipe()
        let output: (read: Int32, write: Int32)
        do { output = try benchPipe() } catch { close(input.read); close(input.write); throw error }
        let child: BenchChild
        do {
            child = try BenchChild.spawn(["bench", OneShotCommand.name], descriptors: [(input.read, 0), (output.write, 1)])
        } catch {
            [input.read, input.write, output.read, output.write].forEach { close($0) }
            throw error
        }
        close(input.read)
        close(output.write)
        var sent = value
        var received = -1
        let ok = writeFully(input.write, &sent, MemoryLayout<Int>.size) && readFully(output.read, &received, MemoryLayout<Int>.size)
        close(input.write)
        close(output.read)
        let status = child.wait()
        guard ok, received == value, status == 0 else {
            throw BenchError("a one-shot job process failed (sent \(value), got \(received), exit status \(status))")
        }
    }
}

/// `crew bench one-shot` (hidden): the spawn-per-job baseline's job. Reads an Int from stdin,
/// writes it back to stdout, exits.
struct OneShotCommand: ParsableCommand {
    static let name = "one-shot"
    static let configuration = CommandConfiguration(
        commandName: name,
        abstract: "Echo one Int from stdin to stdout (the spawn-per-job baseline's job).",
        shouldDisplay: false
    )

    func run() throws {
        var value = 0
        guard readFully(0, &value, MemoryLayout<Int>.size), writeFully(1, &value, MemoryLayout<Int>.size) else {
            throw ExitCode(1)
        }
    }
}
