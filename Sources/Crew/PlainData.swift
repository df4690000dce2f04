import Synchronization

/// A `Codable` type made only of numbers, which crosses to and from process workers as its bytes
/// in memory instead of through its `Codable` conformance.
///
/// Adopt it for small jobs and outputs sent in large numbers, such as the inputs of a chunked
/// ``WorkerPool/map(_:maxInFlight:chunkSize:priority:timeout:)-wk5y``: a value, or an array of them,
/// is then copied as one block, so a chunk of thousands of jobs costs about as much to send as
/// an array of numbers.
///
/// ```swift
/// struct Pixel: Job, PlainData {
///     var x: Int32
///     var y: Int32
///     func run(in context: JobContext) async throws -> Double { shade(x, y) }
/// }
/// ```
///
/// The type must be a struct (or tuple) whose stored properties are, at any depth, only `Int`,
/// `UInt`, their fixed-width forms (`Int8` … `UInt64`), `Float` and `Double`, so that every bit
/// pattern is a valid value and no byte that arrives can make an invalid one. A type with
/// anything else (a `Bool`, an enum, an optional, a pointer, a custom mirror) is refused the
/// first time it is encoded or decoded, with an `EncodingError` or `DecodingError`, and a job
/// type is refused when a ``JobCatalog`` is created. Its `Codable` conformance still serves
/// every other encoder, and thread and inline workers, which never encode jobs.
///
/// Both ends must agree on the layout: the worker's handshake sends the layout of every job type
/// (and output type) that is `PlainData`, field names and types in order, and a pool refuses a
/// worker whose layouts differ from its own (``CrewError/Code-swift.struct/handshakeFailed``).
/// A `PlainData` type nested inside another job is checked by its size only.
public protocol PlainData: BitwiseCopyable, Codable, Sendable {}

/// The layout of a ``PlainData`` type, as checked once per type: its size, and a description of
/// its fields (names and types in order) that the handshake compares.
struct PlainDataLayout: Sendable, Equatable {
    /// `MemoryLayout<T>.size`: the bytes one value takes on the wire.
    let size: Int
    let stride: Int
    /// For example `{x:Int32,y:Int32}`.
    let signature: String

    /// Why a `PlainData` type cannot travel as its bytes.
    struct Problem: Error, Sendable {
        let message: String
    }

    private static let cache = Mutex<[ObjectIdentifier: Result<PlainDataLayout, Problem>]>([:])

    /// The layout of `type`, checked the first time and remembered.
    static func of<T: PlainData>(_ type: T.Type) -> Result<PlainDataLayout, Problem> {
        let id = ObjectIdentifier(type)
        if let known = cache.withLock({ $0[id] }) { return known }
        let result = inspect(type)
        cache.withLock { $0[id] = result }
        return result
    }

    /// The layout of `type` if it is `PlainData`; nil for every other type.
    static func ofAny(_ type: Any.Type) -> Result<PlainDataLayout, Problem>? {
        guard let plain = type as? any PlainData.Type else { return nil }
        return of(plain)
    }

    private static func inspect<T: PlainData>(_ type: T.Type) -> Result<PlainDataLayout, Problem> {
        // A value with every byte zero: valid for a type of numbers, and harmless to reflect for
        // the other bitwise-copyable types this refuses.
        let zero = withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { buffer in
            let raw = UnsafeMutableRawPointer(buffer.baseAddress!)
            raw.initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<T>.size)
            return raw.load(as: T.self)
        }
        do {
            let signature = try describe(zero, path: String(reflecting: type))
            return .success(PlainDataLayout(size: MemoryLayout<T>.size, stride: MemoryLayout<T>.stride, signature: signature))
        } catch {
            return .failure(error)
        }
    }

    /// The names of the types a plain value may hold, with their identities.
    private static let leaves: [ObjectIdentifier: String] = [
        ObjectIdentifier(Int.self): "Int\(Int.bitWidth)", ObjectIdentifier(UInt.self): "UInt\(UInt.bitWidth)",
        ObjectIdentifier(Int8.self): "Int8", ObjectIdentifier(UInt8.self): "UInt8",
        ObjectIdentifier(Int16.self): "Int16", ObjectIdentifier(UInt16.self): "UInt16",
        ObjectIdentifier(Int32.self): "Int32", ObjectIdentifier(UInt32.self): "UInt32",
        ObjectIdentifier(Int64.self): "Int64", ObjectIdentifier(UInt64.self): "UInt64",
        ObjectIdentifier(Float.self): "Float32", ObjectIdentifier(Double.self): "Float64",
    ]

    /// `value`'s fields, recursively, or the first one that is not a number.
    private static func describe(_ value: Any, path: String) throws(Problem) -> String {
        let valueType = Swift.type(of: value)
        if let leaf = leaves[ObjectIdentifier(valueType)] { return leaf }
        let name = String(reflecting: valueType)
        guard !(value is any CustomReflectable) else {
            throw Problem(message: "\(path) is a \(name), which customises its mirror, so its fields cannot be checked")
        }
        let mirror = Mirror(reflecting: value)
        guard mirror.displayStyle == .struct || mirror.displayStyle == .tuple else {
            throw Problem(message: "\(path) is a \(name), not a number or a struct of numbers (PlainData holds only integers and floats, so that any bytes are a valid value)")
        }
        var fields: [String] = []
        for (index, child) in mirror.children.enumerated() {
            let label = child.label ?? ".\(index)"
            fields.append(label + ":" + (try describe(child.value, path: path + "." + label)))
        }
        // Type names are left out: a private type's name differs between two builds.
        return "{" + fields.joined(separator: ",") + "}"
    }
}
