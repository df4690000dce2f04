@testable import Crew
import Glibc
import Synchronization
import Testing

/// Linux keeps 15 bytes of a thread's name; `top -H`, `perf` and `/proc/<pid>/task/*/comm` tell
/// a pool's threads apart by it. With `crew-thread-<id>`, workers 1000 and 1001 both showed as
/// `crew-thread-100`.
@Suite struct ThreadNameTests {
    static let ids = [
        1, 2, 9, 10, 99, 100, 999, 1000, 1001, 1010, 9999, 10_000, 99_999, 100_000, 100_001, 1_000_000,
        123_456_789, 999_999_999, 1_000_000_000, 1_000_000_001, 1_234_567_890, 10_000_000_100,
        Int.max - 1, Int.max,
    ]
    static let roles: [PosixThread.WorkerRole] = [.jobs, .channel, .stderr]

    /// Ids a billion or more apart may share a name (only the last nine digits fit); these are not.
    @Test func namesFitLinuxAndDifferForEveryWorkerAndRole() {
        var seen: [String: (PosixThread.WorkerRole, Int)] = [:]
        // The listed ids, and runs of consecutive ones around where digits are added or dropped.
        let windows = [1...2_000, 99_990...100_010, 999_999_990...1_000_000_010, (Int.max - 20)...Int.max]
        let ids = Set(Self.ids + windows.flatMap { Array($0) })
        for role in Self.roles {
            for id in ids {
                let name = PosixThread.name(role, worker: id)
                #expect(name.utf8.count <= 15, "\(name) for worker \(id)")
                // What the kernel keeps of it.
                let kept = String(decoding: name.utf8.prefix(15), as: UTF8.self)
                if let other = seen.updateValue((role, id), forKey: kept) {
                    Issue.record("\(kept): worker \(id) (\(role)) and worker \(other.1) (\(other.0))")
                }
            }
        }
    }

    @Test func namesAreReadable() {
        #expect(PosixThread.name(.jobs, worker: 42) == "crew-t42")
        #expect(PosixThread.name(.channel, worker: 1000) == "crew-r1000")
        #expect(PosixThread.name(.stderr, worker: 999_999_999) == "crew-e999999999")
        #expect(PosixThread.name(.jobs, worker: 1_000_000_001) == "crew-t000000001")
    }

    /// What the kernel keeps of the name, read back from the thread itself.
    @Test func aThreadReadsItsWholeNameBack() {
        for id in [1000, 1001, 100_000, Int.max] {
            let name = PosixThread.name(.jobs, worker: id)
            let seen = Mutex("")
            PosixThread.start(name: name) {
                let comm = readFile("/proc/thread-self/comm")[...].trimmed()
                seen.withLock { $0 = comm }
            }.join()
            #expect(seen.withLock { $0 } == name)
        }
    }
}
