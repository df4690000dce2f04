// The binary Codable format of `BinaryEncoder` and `BinaryDecoder`.
//
// An encoding is exactly one value (the decoder rejects trailing bytes). Every value starts
// with a one-byte tag:
//
// | tag         | value                 | payload                                                    |
// |-------------|-----------------------|------------------------------------------------------------|
// | 0x00        | nil                   | none                                                       |
// | 0x01 / 0x02 | false / true          | none                                                       |
// | 0x03        | unsigned integer      | varint                                                     |
// | 0x04        | signed integer        | zigzag varint                                              |
// | 0x05        | Float                 | 4 bytes: the IEEE 754 bits, little endian                  |
// | 0x06        | Double                | 8 bytes: the IEEE 754 bits, little endian                  |
// | 0x07        | String                | varint byte count, UTF-8 bytes                             |
// | 0x08        | keyed container       | varint byte count of the entries, then the entries, each:  |
// |             |                       | varint key byte count, key UTF-8 (its `stringValue`), value |
// | 0x09        | unkeyed container     | varint byte count of what follows, varint element count,   |
// |             |                       | the elements                                               |
// | 0x10 + k    | bulk array of numbers | varint element count, the elements' raw little-endian      |
// |             |                       | bytes back to back                                         |
// | 0x1A        | PlainData block       | varint value count, varint value size, the values' bytes   |
// |             |                       | (a `PlainData` value, or an array of them; see             |
// |             |                       | BinaryPlainData.swift)                                     |
//
// Bulk element kinds k: 0 UInt8, 1 Int8, 2 UInt16, 3 Int16, 4 UInt32, 5 Int32, 6 UInt64,
// 7 Int64, 8 Float, 9 Double (`Int` and `UInt` travel as their 64-bit kinds).
//
// Varints are LEB128: 7 bits per byte, least significant group first, the high bit set on every
// byte but the last; at most 10 bytes. Zigzag maps 0, -1, 1, -2, ... to 0, 1, 2, 3, ....
// The encoder writes Int, Int8 ... Int64 with tag 0x04 and UInt, UInt8 ... UInt64 with 0x03; the
// decoder reads either tag as any integer type and checks that the number fits (300 as an Int8
// is a `DecodingError`). A Double reads a Float or an integer that converts exactly; a Float
// reads a Double that converts exactly.
//
// For example `struct Small { var id = 42; var name = "abc"; var values = [1.5] }` is
//
//     08 20                     keyed container, 32 bytes of entries
//     02 "id"  04 54            "id": signed 42 (zigzag 84)
//     04 "name"  07 03 "abc"    "name": string of 3 bytes
//     06 "values"  19 01 <8>    "values": bulk of 1 Double, then its 8 bytes
//
// Containers carry their byte count, so any value is skipped in O(1), without recursion. That is
// what makes keyed containers independent of key order: the decoder keeps a cursor per keyed
// container and looks for each requested key first where the previous value ended (the usual,
// in-order case costs one key comparison and no allocation), and otherwise scans the entries.
// A key that `encodeIfPresent` left out is simply absent; `superEncoder()` writes an ordinary
// entry under the key "super"; a value whose `encode(to:)` writes nothing is an empty keyed
// container. (The encoder reserves one byte for a container's byte count, two for an unkeyed
// container's count and byte count, and moves the contents in the rare case the varints need
// more room.)
//
// Arrays of fixed-width numbers (`[UInt8]`, `[Int8]`, `[Double]`, `[Int]`, and the other integer
// and float arrays, and `ContiguousArray<UInt8>`) are written as one bulk block and decoded with
// one copy. Any other reader (another element type, or a type such as `Data` that reads element
// by element) sees a bulk block as an unkeyed container of numbers; and the bulk types decode
// element-wise encodings too.
//
// Adversarial input is harmless: every length and count is checked against the bytes that
// remain before anything is allocated or read, skipping never recurses, and values nest at most
// `BinaryFormat.maxDepth` deep (containers, which a type may open level after level without
// nesting values, 2 × `maxDepth`), on both sides (a 512-deep value needs about 1 MB of stack to
// encode or decode in a release build: fine on the 8 MB threads of Swift's cooperative pool).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Tags and helpers shared by ``BinaryEncoder`` and ``BinaryDecoder``.
enum BinaryFormat {
    /// The deepest nesting of values either side accepts.
    static let maxDepth = 512
    /// The most values of a zero-size `PlainData` type one block may hold.
    static let maxEmptyValues = 1 << 24

    static let tagNil: UInt8 = 0x00
    static let tagFalse: UInt8 = 0x01
    static let tagTrue: UInt8 = 0x02
    static let tagUInt: UInt8 = 0x03
    static let tagSInt: UInt8 = 0x04
    static let tagFloat32: UInt8 = 0x05
    static let tagFloat64: UInt8 = 0x06
    static let tagString: UInt8 = 0x07
    static let tagKeyed: UInt8 = 0x08
    static let tagUnkeyed: UInt8 = 0x09

    static let tagBulkUInt8: UInt8 = 0x10
    static let tagBulkInt8: UInt8 = 0x11
    static let tagBulkUInt16: UInt8 = 0x12
    static let tagBulkInt16: UInt8 = 0x13
    static let tagBulkUInt32: UInt8 = 0x14
    static let tagBulkInt32: UInt8 = 0x15
    static let tagBulkUInt64: UInt8 = 0x16
    static let tagBulkInt64: UInt8 = 0x17
    static let tagBulkFloat32: UInt8 = 0x18
    static let tagBulkFloat64: UInt8 = 0x19
    /// A `PlainData` value or an array of them (see BinaryPlainData.swift).
    static let tagPlain: UInt8 = 0x1A

    @inline(__always)
    static func isBulk(_ tag: UInt8) -> Bool { tag &- 0x10 < 10 }

    /// The byte width of one element of a bulk tag.
    @inline(__always)
    static func bulkWidth(_ tag: UInt8) -> Int {
        switch tag {
        case tagBulkUInt8, tagBulkInt8: 1
        case tagBulkUInt16, tagBulkInt16: 2
        case tagBulkUInt32, tagBulkInt32, tagBulkFloat32: 4
        default: 8
        }
    }

    /// The bulk tag for arrays of an integer type.
    @inline(__always)
    static func bulkTag<I: FixedWidthInteger>(for type: I.Type) -> UInt8 {
        let signed: UInt8 = I.isSigned ? 1 : 0
        switch I.bitWidth {
        case 8: return tagBulkUInt8 + signed
        case 16: return tagBulkUInt16 + signed
        case 32: return tagBulkUInt32 + signed
        default: return tagBulkUInt64 + signed
        }
    }

    @inline(__always)
    static func zigzag(_ value: Int64) -> UInt64 {
        UInt64(bitPattern: (value &<< 1) ^ (value >> 63))
    }

    @inline(__always)
    static func unzigzag(_ value: UInt64) -> Int64 {
        Int64(bitPattern: (value >> 1) ^ (0 &- (value & 1)))
    }

    @inline(__always)
    static func varintSize(_ value: UInt64) -> Int {
        // One byte per started group of 7 significant bits (at least one byte).
        let bits = 64 - (value | 1).leadingZeroBitCount
        return (bits + 6) / 7
    }

    /// Whether `bytes` is well-formed UTF-8 (no overlong forms, surrogates, or code points
    /// above U+10FFFF), per the Unicode standard's table 3-7.
    static func isValidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        let count = bytes.count
        var i = 0
        // ASCII, eight bytes at a time.
        while i + 8 <= count {
            if UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        while i < count {
            let b0 = base[i]
            if b0 < 0x80 {
                i += 1
                continue
            }
            let length: Int
            var lower: UInt8 = 0x80
            var upper: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lower = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; upper = 0x9F
            case 0xF0: length = 4; lower = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; upper = 0x8F
            default: return false
            }
            guard count - i >= length else { return false }
            let b1 = base[i + 1]
            guard b1 >= lower && b1 <= upper else { return false }
            var j = 2
            while j < length {
                guard base[i + j] & 0xC0 == 0x80 else { return false }
                j += 1
            }
            i += length
        }
        return true
    }

    /// A description of what a tag holds, for error messages.
    static func describe(_ tag: UInt8) -> String {
        switch tag {
        case tagNil: "nil"
        case tagFalse, tagTrue: "a Bool"
        case tagUInt, tagSInt: "an integer"
        case tagFloat32, tagFloat64: "a floating-point number"
        case tagString: "a string"
        case tagKeyed: "a keyed container"
        case tagUnkeyed: "an unkeyed container"
        case _ where isBulk(tag): "an array of numbers"
        case tagPlain: "a block of plain data"
        default: "an unknown tag (0x\(String(tag, radix: 16)))"
        }
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func binaryAppendVarint(_ value: UInt64) {
        if value < 0x80 {
            append(UInt8(truncatingIfNeeded: value))
        } else {
            binaryAppendLongVarint(value)
        }
    }

    @inline(never)
    mutating func binaryAppendLongVarint(_ value: UInt64) {
        var scratch: (UInt64, UInt64) = (0, 0)
        let n = Swift.withUnsafeMutableBytes(of: &scratch) { raw -> Int in
            var v = value
            var i = 0
            while v >= 0x80 {
                raw[i] = UInt8(truncatingIfNeeded: v) | 0x80
                v >>= 7
                i += 1
            }
            raw[i] = UInt8(truncatingIfNeeded: v)
            return i + 1
        }
        Swift.withUnsafeBytes(of: &scratch) { append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[..<n])) }
    }

    @inline(__always)
    mutating func binaryAppendFixed<I: FixedWidthInteger>(_ value: I) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

/// The key of an element of an unkeyed container, in coding paths.
struct BinaryIndexKey: CodingKey {
    let index: Int
    init(_ index: Int) { self.index = index }
    init?(stringValue: String) { nil }
    init?(intValue: Int) { index = intValue }
    var stringValue: String { "Index \(index)" }
    var intValue: Int? { index }
}

/// A key given by its string, such as "super".
struct BinaryStringKey: CodingKey {
    let stringValue: String
    init(_ stringValue: String) { self.stringValue = stringValue }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
    var intValue: Int? { nil }

    static let `super` = BinaryStringKey("super")
}

/// Why a read failed, before the decoder adds the coding path. Cheap to throw (typed throws).
enum BinaryReadFailure: Error, @unchecked Sendable {
    /// `found` is the tag found, or ``bulkElement``.
    case typeMismatch(any Any.Type, found: UInt16)
    case valueNotFound(any Any.Type)
    case corrupt(String)
    /// Not an error: the fast path does not handle this type (or this encoding of it), take the
    /// general one.
    case notHandled

    static let truncated = BinaryReadFailure.corrupt("Unexpected end of data.")
    /// What a type mismatch found when the value is an element of a bulk array.
    static let bulkElement: UInt16 = 0x100

    func decodingError(_ codingPath: [any CodingKey]) -> DecodingError {
        switch self {
        case .typeMismatch(let type, let tag):
            let found = tag == Self.bulkElement ? "an element of an array of numbers" : BinaryFormat.describe(UInt8(truncatingIfNeeded: tag))
            return .typeMismatch(type, .init(codingPath: codingPath, debugDescription: "Expected to decode \(type) but found \(found) instead."))
        case .valueNotFound(let type):
            return .valueNotFound(type, .init(codingPath: codingPath, debugDescription: "Expected \(type) value but found nil instead."))
        case .corrupt(let message):
            return .dataCorrupted(.init(codingPath: codingPath, debugDescription: message))
        case .notHandled:
            return .dataCorrupted(.init(codingPath: codingPath, debugDescription: "Internal error: unhandled fast path."))
        }
    }
}

/// The identities of the types ``BinaryEncoder`` and ``BinaryDecoder`` handle directly.
/// (Comparing against these is cheaper than asking for `[UInt8].self` and the like each time:
/// the metadata of a generic type is looked up at every use.)
struct BinaryFastTypes: Sendable {
    let string = ObjectIdentifier(String.self)
    let int = ObjectIdentifier(Int.self)
    let double = ObjectIdentifier(Double.self)
    let bool = ObjectIdentifier(Bool.self)
    let int64 = ObjectIdentifier(Int64.self)
    let uint64 = ObjectIdentifier(UInt64.self)
    let uint = ObjectIdentifier(UInt.self)
    let int32 = ObjectIdentifier(Int32.self)
    let uint32 = ObjectIdentifier(UInt32.self)
    let float = ObjectIdentifier(Float.self)
    let uint8 = ObjectIdentifier(UInt8.self)
    let int8 = ObjectIdentifier(Int8.self)
    let int16 = ObjectIdentifier(Int16.self)
    let uint16 = ObjectIdentifier(UInt16.self)
    let uint8Array = ObjectIdentifier([UInt8].self)
    let doubleArray = ObjectIdentifier([Double].self)
    let intArray = ObjectIdentifier([Int].self)
    let floatArray = ObjectIdentifier([Float].self)
    let int8Array = ObjectIdentifier([Int8].self)
    let uintArray = ObjectIdentifier([UInt].self)
    let int64Array = ObjectIdentifier([Int64].self)
    let uint64Array = ObjectIdentifier([UInt64].self)
    let int32Array = ObjectIdentifier([Int32].self)
    let uint32Array = ObjectIdentifier([UInt32].self)
    let int16Array = ObjectIdentifier([Int16].self)
    let uint16Array = ObjectIdentifier([UInt16].self)
    let uint8ContiguousArray = ObjectIdentifier(ContiguousArray<UInt8>.self)

    static let shared = BinaryFastTypes()
}

/// The states of one thread's encodes (or decodes), kept for reuse: a call takes one for its
/// length and puts it back, so a small encode allocates no state. A thread holds as many as its
/// deepest nesting of calls (a `Codable` type may encode or decode something itself), and frees
/// them when it exits; never before, so that a reference a `Codable` type wrongly keeps past its
/// call stays valid (generation numbers and an emptied input make such a reference inert).
final class BinaryStatePool<State: AnyObject> {
    @exclusivity(unchecked) var free: [State] = []
}

/// A per-thread object, created on first use.
struct BinaryThreadLocal<Value: AnyObject>: Sendable {
    private let key: pthread_key_t

    init() {
        var key = pthread_key_t()
        let status = pthread_key_create(&key) { object in
            if let object { Unmanaged<AnyObject>.fromOpaque(object).release() }
        }
        precondition(status == 0, "pthread_key_create failed")
        self.key = key
    }

    /// This thread's value (owned by the thread: use it only on this thread).
    @inline(__always)
    func get(orMake make: () -> Value) -> Unmanaged<Value> {
        if let object = pthread_getspecific(key) { return Unmanaged.fromOpaque(object) }
        let value = Unmanaged.passRetained(make())
        pthread_setspecific(key, value.toOpaque())
        return value
    }
}
