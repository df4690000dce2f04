// `_forEachField(of:)` lists a type's stored fields, with their offsets, from its metadata,
// without a value (Mirror needs one, and a zero-filled value is not valid for every type).
@_spi(Reflection) import Swift
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
/// The type must be a struct whose stored properties are, at any depth (nested structs and
/// tuples), only `Int`, `UInt`, their fixed-width forms (`Int8` … `UInt64`), `Float` and
/// `Double`, so that every bit pattern is a valid value and no byte that arrives can make an
/// invalid one. This is checked once per type, from its type metadata. A type with anything
/// else (a `Bool`, an enum, an optional, a pointer, a SIMD vector, or any other standard
/// library struct, even one made of numbers, such as `Unicode.Scalar` or `Range<Int>`, whose
/// values have rules that raw bytes could break) is not copied: it travels
/// through its `Codable` conformance like any other type, except that a job or output type in
/// a ``JobCatalog`` is refused when the catalog is created (a precondition failure that names
/// the field). Its `Codable` conformance also serves every other encoder, and thread and
/// inline workers, which never encode jobs.
///
/// Adopting `PlainData` states that any combination of field values is acceptable: a block is
/// decoded without calling `init(from:)`, so checks made there do not run. Padding bytes between
/// fields travel as they are in memory. Not for imported C structs with bitfields or unions,
/// whose fields Swift's metadata does not show one by one.
///
/// Both ends must agree on the layout: the worker's handshake carries a digest of the layout of
/// every job type (and output type) that is `PlainData`, field names and types in order, and a
/// pool refuses a worker whose layouts differ from its own, as for any mismatched build (its
/// jobs fail with ``CrewError/Code-swift.struct/workerStartFailed``). A `PlainData` type nested inside another
/// job is checked by its size only. The first check in a process costs about a millisecond
/// (Swift's reflection metadata is indexed on first use); later types, tens of microseconds.
public protocol PlainData: BitwiseCopyable, Codable, Sendable {}

/// The layout of a ``PlainData`` type, as checked once per type: its size, and a description of
/// its fields (names and types in order) that the handshake compares.
struct PlainDataLayout: Sendable, Equatable {
    /// `MemoryLayout<T>.size`: the bytes one value takes on the wire.
    let size: Int
    let stride: Int
    /// For example `{x:Int32,y:Int32}`.
    let signature: String

    /// What the handshake carries for a job's layouts: a 64-bit FNV-1a digest in hex, so that
    /// a layout of any length fits the hello's 16-bit strings; empty for no layout.
    static func digest(_ layout: String) -> String {
        guard !layout.isEmpty else { return "" }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in layout.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

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

    /// What a catalog entry's handshake compares: the layouts of a job type and its output type,
    /// those that are `PlainData`.
    /// - Precondition: every type given holds only numbers (the message names the field).
    static func describe(job: (any PlainData.Type)?, output: (any PlainData.Type)?) -> String {
        [("job", job), ("output", output)].compactMap { role, type -> String? in
            guard let type else { return nil }
            switch of(type) {
            case .success(let layout): return "\(role) \(layout.size) \(layout.signature)"
            case .failure(let problem): preconditionFailure(problem.message)
            }
        }.joined(separator: "; ")
    }

    /// The layout of `type` if it is `PlainData`; nil for every other type.
    static func ofAny(_ type: Any.Type) -> Result<PlainDataLayout, Problem>? {
        guard let plain = type as? any PlainData.Type else { return nil }
        return of(plain)
    }

    private static func inspect<T: PlainData>(_ type: T.Type) -> Result<PlainDataLayout, Problem> {
        do throws(Problem) {
            let layout = try describe(T.self, path: { String(reflecting: T.self) })
            // Every byte of the type accounted for by the fields found: a type whose fields are
            // hidden (built without reflection metadata), or an enum, shows fewer.
            guard layout.size == MemoryLayout<T>.size else {
                throw Problem(message: "\(String(reflecting: T.self)) takes \(MemoryLayout<T>.size) bytes, but its visible fields "
                              + "only \(layout.size) (an enum, or a type built without reflection metadata)")
            }
            return .success(PlainDataLayout(size: MemoryLayout<T>.size, stride: MemoryLayout<T>.stride, signature: layout.signature))
        } catch {
            return .failure(error)
        }
    }

    /// The types a plain value may hold: names, and size (which is also the alignment).
    private static let leaves: [ObjectIdentifier: (name: String, size: Int)] = [
        ObjectIdentifier(Int.self): ("Int\(Int.bitWidth)", MemoryLayout<Int>.size),
        ObjectIdentifier(UInt.self): ("UInt\(UInt.bitWidth)", MemoryLayout<UInt>.size),
        ObjectIdentifier(Int8.self): ("Int8", 1), ObjectIdentifier(UInt8.self): ("UInt8", 1),
        ObjectIdentifier(Int16.self): ("Int16", 2), ObjectIdentifier(UInt16.self): ("UInt16", 2),
        ObjectIdentifier(Int32.self): ("Int32", 4), ObjectIdentifier(UInt32.self): ("UInt32", 4),
        ObjectIdentifier(Int64.self): ("Int64", 8), ObjectIdentifier(UInt64.self): ("UInt64", 8),
        ObjectIdentifier(Float.self): ("Float32", 4), ObjectIdentifier(Double.self): ("Float64", 8),
    ]

    /// The fields of `type`, recursively, from its type metadata (no value is made), or the first
    /// one that is not a number. Each field must sit where Swift's layout rules put it after the
    /// fields before it, so no byte can belong to a field that reflection does not show. Type
    /// names are demangled only for messages: `path` makes the field's path when one is needed.
    private static func describe(_ type: any Any.Type, path: () -> String) throws(Problem) -> (signature: String, size: Int, alignment: Int) {
        if let leaf = leaves[ObjectIdentifier(type)] { return (leaf.name, leaf.size, leaf.size) }
        var fields: [String] = []
        var end = 0
        var alignment = 1
        var problem: Problem?
        var index = 0
        _forEachField(of: type) { name, offset, fieldType, kind in
            let label = name.pointee == 0 ? ".\(index)" : String(cString: name)
            index += 1
            func fieldPath() -> String { path() + "." + label }
            func notANumber() -> Problem {
                Problem(message: "\(fieldPath()) is a \(String(reflecting: fieldType)), not a number or a struct of numbers "
                        + "(PlainData holds only integers and floats, so that any bytes are a valid value)")
            }
            do throws(Problem) {
                let isLeaf = leaves[ObjectIdentifier(fieldType)] != nil
                guard isLeaf || kind == .struct || kind == .tuple else { throw notANumber() }
                // The standard library's other structs are refused whatever they hold: some are
                // numbers with an invariant (Unicode.Scalar excludes surrogates, Range orders its
                // bounds, String.Index packs bits), which bytes from the wire could break; the
                // rest (Bool, pointers, SIMD vectors) have builtin storage.
                if !isLeaf && kind == .struct && String(reflecting: fieldType).hasPrefix("Swift.") { throw notANumber() }
                let field = try describe(fieldType, path: fieldPath)
                let expected = (end + field.alignment - 1) / field.alignment * field.alignment
                guard offset == expected else {
                    throw Problem(message: "\(fieldPath()) sits at byte \(offset), not \(expected): the type has fields reflection does not show")
                }
                fields.append(label + ":" + field.signature)
                end = offset + field.size
                alignment = max(alignment, field.alignment)
                return true
            } catch {
                problem = error
                return false
            }
        }
        if let problem { throw problem }
        // Type names are left out: a private type's name differs between two builds.
        return ("{" + fields.joined(separator: ",") + "}", end, alignment)
    }
}
