/// The job types a worker can run, by wire name.
///
/// Parent and workers build the same catalog (usually one array literal in `main`), and the
/// handshake between them checks that every type the parent knows, the worker knows too.
///
/// ```swift
/// let jobs: JobCatalog = [Square.self, Render.self]
/// ```
public struct JobCatalog: Sendable, ExpressibleByArrayLiteral {
    let entries: [String: JobEntry]
    /// The wire names, in the order the types were listed.
    public let names: [String]

    /// A catalog of the given job types.
    /// - Precondition: no two types share a ``Job/jobName``, no name ends in `#batch` (reserved for
    ///   `map`'s chunks), and every job and output type that
    ///   is ``PlainData`` holds only numbers.
    public init(_ types: [any Job.Type]) {
        var entries: [String: JobEntry] = [:]
        var names: [String] = []
        for type in types {
            let entry = JobEntry(type)
            precondition(entries[entry.name] == nil, "two job types share the wire name \(entry.name)")
            precondition(!entry.name.hasSuffix("#batch"), "\(entry.name): job names ending in #batch are reserved for map's chunks")
            entries[entry.name] = entry
            names.append(entry.name)
            // Every type can also run in chunks (see WorkerPool.map(_:maxInFlight:chunkSize:priority:timeout:)).
            let batch = JobEntry.batch(of: type)
            entries[batch.name] = batch
        }
        self.entries = entries
        self.names = names
    }

    public init(arrayLiteral types: any Job.Type...) {
        self.init(types)
    }

    /// Whether the catalog lists a job type with this wire name (or its chunked form).
    public func contains(_ name: String) -> Bool { entries[name] != nil }
}

/// A job type, erased: decodes arguments, runs, encodes the output.
struct JobEntry: Sendable {
    /// Why a job did not produce an encoded output.
    enum Failure: Error {
        case undecodableArguments(any Error)
        case unencodableOutput(any Error)
        case threw(any Error)
    }

    let name: String
    /// The layouts of the job and output types that are ``PlainData``, which the handshake
    /// compares; empty if neither is.
    let layout: String
    /// What the handshake carries of `layout` (``PlainDataLayout/digest(_:)``), made once.
    let layoutDigest: String
    let run: @Sendable ([UInt8], JobContext) async -> Result<[UInt8], Failure>

    static func batch<J: Job>(of type: J.Type) -> JobEntry { JobEntry(JobBatch<J>.self) }

    init<J: Job>(_ type: J.Type) {
        name = J.jobName
        layout = J._plainDataLayouts
        layoutDigest = PlainDataLayout.digest(layout)
        run = { arguments, context in
            let job: J
            do {
                job = try BinaryDecoder().decode(J.self, from: arguments)
            } catch {
                return .failure(.undecodableArguments(error))
            }
            let output: J.Output
            do {
                output = try await job.run(in: context)
            } catch {
                return .failure(.threw(error))
            }
            do {
                return .success(try BinaryEncoder().encode(output))
            } catch {
                return .failure(.unencodableOutput(error))
            }
        }
    }
}
