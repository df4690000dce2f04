import Foundation
import Glibc
import Testing

extension ProcessTests {
    @Suite struct ReadmeAndDemo {
        /// The package root, found from this source file's path.
        static let root: String = {
            let file = "\(#filePath)"
            let marker = "/Tests/CrewTests/"
            return String(file[..<file.range(of: marker)!.lowerBound])
        }()

        @Test func theReadmeQuickStartIsTheCompiledOne() throws {
            let readme = readFile("\(Self.root)/README.md")
            let source = readFile("\(Self.root)/Sources/QuickStart/main.swift")
            #expect(!source.isEmpty)
            let start = try #require(readme.range(of: "## Quick start\n\n```swift\n"))
            let rest = readme[start.upperBound...]
            let end = try #require(rest.range(of: "```\n"))
            #expect(String(rest[..<end.lowerBound]) == source)
        }

        @Test func theQuickStartRuns() throws {
            let (status, output) = try runProgram("QuickStart", [])
            #expect(status == 0)
            #expect(output.contains("fib(90) = 2880067194370816120"))
            #expect(output.contains("the pool carries on"))
            #expect(output.contains("fib(10) = 55"))
        }

        @Test func theDemoWritesAPNG() throws {
            let path = temporaryPath("demo-test", extension: ".png")
            defer { unlink(path) }
            let (status, output) = try runProgram(
                "crew", ["mandelbrot", "--width", "96", "--height", "64", "--iterations", "64", "--workers", "2", "--output", path])
            #expect(status == 0, "\(output)")
            #expect(output.contains("Wrote \(path)"))
            let png = [UInt8](readFile(path).utf8.prefix(8))
            #expect(png.count == 8)
            let header = readBytes(path, count: 24)
            #expect(Array(header.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
            // IHDR: width and height, big-endian.
            #expect(Array(header[16..<24]) == [0, 0, 0, 96, 0, 0, 0, 64])
        }

        @Test func severalRowsPerMessageRenderTheSameImage() throws {
            let paths = [temporaryPath("demo-one", extension: ".png"), temporaryPath("demo-five", extension: ".png")]
            defer { paths.forEach { unlink($0) } }
            for (path, rows) in zip(paths, ["1", "5"]) {
                let (status, output) = try runProgram("crew", [
                    "mandelbrot", "--width", "80", "--height", "61", "--iterations", "64", "--workers", "2",
                    "--rows-per-message", rows, "--output", path,
                ])
                #expect(status == 0, "\(output)")
            }
            let one = readBytes(paths[0], count: 1 << 20)
            #expect(one.count > 100)
            #expect(one == readBytes(paths[1], count: 1 << 20))
            let (status, output) = try runProgram("crew", ["mandelbrot", "--rows-per-message", "0"])
            #expect(status != 0)
            #expect(output.contains("--rows-per-message must be at least 1"))
        }
    }
}

/// Runs a program built beside the test runner; returns its exit status and stdout+stderr.
func runProgram(_ name: String, _ arguments: [String]) throws -> (Int32, String) {
    let path = testWorkerPath.replacingLastComponent(with: name)
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw SpawnError(message: "pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    let argv: [UnsafeMutablePointer<CChar>?] = ([name] + arguments).map { (word: String) in word.withCString { strdup($0) } } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
    close(fds[1])
    guard rc == 0 else {
        close(fds[0])
        throw SpawnError(message: "cannot spawn \(path): \(rc)")
    }
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fds[0], &buffer, buffer.count)
        if n <= 0 { break }
        output += buffer[..<n]
    }
    close(fds[0])
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return ((status >> 8) & 0xff, String(decoding: output, as: UTF8.self))
}

struct SpawnError: Error {
    var message: String
}

func readBytes(_ path: String, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: count)
    let n = read(fd, &buffer, count)
    return Array(buffer.prefix(max(0, n)))
}

extension String {
    func replacingLastComponent(with name: String) -> String {
        guard let slash = lastIndex(of: "/") else { return name }
        return String(self[...slash]) + name
    }
}
