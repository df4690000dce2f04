public import Crew

/// Jobs the tests run in real worker processes, one per behaviour under test.
public enum TestJobs {
    /// Every test job type.
    public static let catalog: JobCatalog = [
        Echo.self, Add.self, Sleep.self,
    ]
}

/// Returns its input.
public struct Echo: Job {
    public var value: Int
    public init(_ value: Int) { self.value = value }
    public func run(in context: JobContext) async throws -> Int { value }
}

/// Adds two numbers.
public struct Add: Job {
    public var a: Int
    public var b: Int
    public init(_ a: Int, _ b: Int) { self.a = a; self.b = b }
    public func run(in context: JobContext) async throws -> Int { a + b }
}

/// Sleeps, cooperatively cancellable.
public struct Sleep: Job {
    public var milliseconds: Int
    public init(milliseconds: Int) { self.milliseconds = milliseconds }
    public func run(in context: JobContext) async throws -> Int32 {
        try await Task.sleep(for: .milliseconds(milliseconds))
        return context.processID
    }
}
