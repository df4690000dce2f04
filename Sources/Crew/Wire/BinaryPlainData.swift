#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// `PlainData` values and arrays of them, copied as one block of bytes (tag 0x1A, see
// BinaryFormat.swift): varint element count, varint element size, then the elements' bytes.
// The decoder of a `PlainData` type also reads its ordinary `Codable` encoding.

/// How the codec treats a type: an ordinary `Codable` one, a `PlainData` value, or an array of
/// `PlainData` values (with the function that copies it).
enum BinaryPlainKind {
    case ordinary
    case value(size: Int)
    case array(any BinaryPlainArray.Type, elementSize: Int)

    /// What `type` is, from this thread's cache (a type is looked at once per thread).
    @inline(__always)
    static func of(_ type: Any.Type) -> BinaryPlainKind {
        let id = ObjectIdentifier(type)
        return cache.get(orMake: BinaryPlainKindCache.init)._withUnsafeGuaranteedRef { cache in
            if cache.lastType == id { return cache.lastKind }
            let kind = cache.kinds[id] ?? cache.insert(id, inspect(type))
            cache.lastType = id
            cache.lastKind = kind
            return kind
        }
    }

    private static let cache = BinaryThreadLocal<BinaryPlainKindCache>()

    /// A type whose `PlainData` layout is refused (see ``PlainDataLayout``) is ordinary: it
    /// travels through its `Codable` conformance.
    private static func inspect(_ type: Any.Type) -> BinaryPlainKind {
        #if _endian(little)
        if case .success(let layout)? = PlainDataLayout.ofAny(type) {
            return .value(size: layout.size)
        }
        if let array = type as? any BinaryPlainArray.Type, let size = array.elementSize {
            return .array(array, elementSize: size)
        }
        #endif
        return .ordinary
    }
}

final class BinaryPlainKindCache {
    var kinds: [ObjectIdentifier: BinaryPlainKind] = [:]
    var lastType: ObjectIdentifier?
    var lastKind = BinaryPlainKind.ordinary

    func insert(_ id: ObjectIdentifier, _ kind: BinaryPlainKind) -> BinaryPlainKind {
        kinds[id] = kind
        return kind
    }
}

/// Arrays of `PlainData` values, copied as one block.
protocol BinaryPlainArray {
    /// The size of one element, or nil if the element type's layout is refused.
    static var elementSize: Int? { get }
    /// Appends the block of the array at `pointer` (a `Self`).
    static func appendPlain(_ pointer: UnsafeRawPointer, into bytes: inout [UInt8])
    /// Initializes `destination` (room for a `Self`) with `count` elements from `source`.
    static func initializePlain(_ destination: UnsafeMutableRawPointer, count: Int, from source: UnsafeRawPointer)
}

extension Array: BinaryPlainArray where Element: PlainData {
    static var elementSize: Int? {
        guard case .success(let layout) = PlainDataLayout.of(Element.self) else { return nil }
        return layout.size
    }

    static func appendPlain(_ pointer: UnsafeRawPointer, into bytes: inout [UInt8]) {
        let array = pointer.assumingMemoryBound(to: [Element].self)
        let size = MemoryLayout<Element>.size
        BinaryEncodingState.reserveForBulk(array.pointee.count * size, in: &bytes)
        bytes.append(BinaryFormat.tagPlain)
        bytes.binaryAppendVarint(UInt64(array.pointee.count))
        bytes.binaryAppendVarint(UInt64(size))
        array.pointee.withUnsafeBytes { elements in
            if size == MemoryLayout<Element>.stride {
                bytes.append(contentsOf: elements)
            } else {
                for index in 0..<array.pointee.count {
                    let start = index * MemoryLayout<Element>.stride
                    bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: elements[start..<start + size]))
                }
            }
        }
    }

    static func initializePlain(_ destination: UnsafeMutableRawPointer, count: Int, from source: UnsafeRawPointer) {
        let array = [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
            let raw = UnsafeMutableRawPointer(buffer.baseAddress!)
            let size = MemoryLayout<Element>.size
            if size == MemoryLayout<Element>.stride {
                raw.copyMemory(from: source, byteCount: count * size)
            } else {
                for index in 0..<count {
                    (raw + index * MemoryLayout<Element>.stride).copyMemory(from: source + index * size, byteCount: size)
                }
            }
            initialized = count
        }
        destination.initializeMemory(as: [Element].self, repeating: array, count: 1)
    }
}

extension BinaryEncodingState {
    /// Writes `value` as a block if its type is `PlainData` or an array of it; false otherwise.
    @inline(__always)
    static func encodePlain<T: Encodable>(_ value: borrowing T, into bytes: inout [UInt8]) -> Bool {
        switch BinaryPlainKind.of(T.self) {
        case .ordinary:
            return false
        case .value(let size):
            bytes.append(BinaryFormat.tagPlain)
            bytes.append(1)
            bytes.binaryAppendVarint(UInt64(size))
            withUnsafeBytes(of: value) { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[..<size])) }
            return true
        case .array(let array, _):
            withUnsafePointer(to: value) { array.appendPlain(UnsafeRawPointer($0), into: &bytes) }
            return true
        }
    }
}

extension BinaryReader {
    /// Reads a block's value count and value size after its tag; checks that the values fit
    /// before `limit` (values of no bytes always fit).
    func readPlainHeader(_ position: inout Int, _ limit: Int) throws(Failure) -> (count: Int, size: Int) {
        let count = try readVarint(&position, limit)
        let size = try readVarint(&position, limit)
        guard size <= UInt64(Int.max), size == 0 ? count <= UInt64(Int.max) : count <= UInt64(limit - position) / size else {
            throw .corrupt("A block of \(count) values of \(size) bytes exceeds the \(limit - position) bytes that remain.")
        }
        return (Int(count), Int(size))
    }

    /// Reads a block as a `T` (a `PlainData` type or an array of one); `.notHandled` for any
    /// other type, or when the value at `position` is not a block (it is then decoded through
    /// `T`'s `Codable` conformance).
    func decodePlain<T: Decodable>(_ type: T.Type, _ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> T {
        let plain = BinaryPlainKind.of(T.self)
        let expectedSize: Int
        switch plain {
        case .ordinary: throw .notHandled
        case .value(let size): expectedSize = size
        case .array(_, let elementSize): expectedSize = elementSize
        }
        guard kind == 0, position < limit, base[position] == BinaryFormat.tagPlain else { throw .notHandled }
        var p = position + 1
        let (count, size) = try readPlainHeader(&p, limit)
        guard size == expectedSize else {
            throw .corrupt("A block of \(size)-byte values, where \(T.self) needs \(expectedSize) bytes each (mismatched builds).")
        }
        // Values of no bytes take no input, but an array of them still takes memory (a stride of
        // one byte each): their count is capped instead.
        guard size > 0 || count <= BinaryFormat.maxEmptyValues else {
            throw .corrupt("A block of \(count) values of no bytes, more than the \(BinaryFormat.maxEmptyValues) a block may hold.")
        }
        if case .value = plain, count != 1 {
            throw .corrupt("A block of \(count) values, where one \(T.self) was expected.")
        }
        let source = UnsafeRawPointer(base + p)
        let value = withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { buffer -> T in
            let destination = UnsafeMutableRawPointer(buffer.baseAddress!)
            switch plain {
            case .value:
                destination.copyMemory(from: source, byteCount: expectedSize)
            case .array(let array, _):
                array.initializePlain(destination, count: count, from: source)
            case .ordinary:
                preconditionFailure()
            }
            return buffer.baseAddress!.move()
        }
        position = p + count * expectedSize
        return value
    }
}
