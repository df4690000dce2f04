#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Decodes `Decodable` values from Crew's compact binary format (see BinaryFormat.swift).
///
/// Decoding never reads outside the input, checks every length against the bytes that remain
/// before allocating, never recurses to skip a value, and refuses values nested more than
/// `BinaryFormat.maxDepth` deep; every failure is a `DecodingError` with its coding path.
struct BinaryDecoder: Sendable {
    init() {}

    func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        // `bytes.withUnsafeBytes { try decode(type, from: $0) }` would be the textbook form, but
        // with T unknown (as at Crew's call sites, which are generic) it runs the standard
        // library's unspecialized `withUnsafeBytes`, which looks up the metadata of [UInt8] at
        // every call: a sizable part of a small decode. The pointer used past the closure stays
        // valid: `bytes` is a parameter, so the caller keeps its storage (native and contiguous,
        // and not mutated while shared) alive until this function returns.
        let buffer = bytes.withUnsafeBytes { $0 }
        return try decode(type, from: buffer)
    }

    func decode<T: Decodable>(_ type: T.Type, from buffer: UnsafeRawBufferPointer) throws -> T {
        let reader = BinaryReader(buffer)
        do throws(BinaryReadFailure) {
            var position = 0
            let value = try reader.decodeFast(T.self, &position, reader.count, 0)
            try reader.checkEnd(position)
            return value
        } catch .notHandled {
            // Decoded below.
        } catch {
            throw error.decodingError([])
        }
        do throws(BinaryReadFailure) {
            try reader.checkEnd(try reader.skipValue(0, reader.count))
        } catch {
            throw error.decodingError([])
        }
        let state = BinaryDecodingState.acquire(reader)
        defer { BinaryDecodingState.release(state) }
        return try T(from: state)
    }
}

/// Reads values from the input. Every read takes the position to read at and a limit it may
/// not read past (the end of the enclosing container, or of the input).
///
/// `kind` says what is at the position: 0 for a tagged value, or the bulk tag of the array the
/// position is an element of.
struct BinaryReader {
    let base: UnsafePointer<UInt8>
    let count: Int

    /// A valid address for an empty input (never read: every read checks the count first).
    static var empty: UnsafePointer<UInt8> { UnsafeRawPointer(bitPattern: 0x10)!.assumingMemoryBound(to: UInt8.self) }

    init(_ buffer: UnsafeRawBufferPointer) {
        count = buffer.count
        base = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? Self.empty
    }

    init(base: UnsafePointer<UInt8>, count: Int) {
        self.base = base
        self.count = count
    }

    typealias Failure = BinaryReadFailure

    func checkEnd(_ position: Int) throws(Failure) {
        if position != count {
            throw .corrupt("Unexpected trailing bytes: the value ends at offset \(position) of \(count).")
        }
    }

    // MARK: Structure

    @inline(__always)
    func readVarint(_ position: inout Int, _ limit: Int) throws(Failure) -> UInt64 {
        guard position < limit else { throw .truncated }
        let byte = base[position]
        if byte < 0x80 {
            position += 1
            return UInt64(byte)
        }
        return try readLongVarint(&position, limit)
    }

    @inline(never)
    func readLongVarint(_ position: inout Int, _ limit: Int) throws(Failure) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        var p = position
        while true {
            guard p < limit else { throw .truncated }
            let byte = base[p]
            p += 1
            if shift == 63 && byte > 1 { throw .corrupt("A varint overflows 64 bits.") }
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 {
                position = p
                return result
            }
            shift += 7
        }
    }

    /// Reads a byte count and checks that that many bytes remain before `limit`.
    @inline(__always)
    func readLength(_ position: inout Int, _ limit: Int) throws(Failure) -> Int {
        let length = try readVarint(&position, limit)
        guard length <= UInt64(limit - position) else {
            throw .corrupt("A length of \(length) bytes exceeds the \(limit - position) bytes that remain.")
        }
        return Int(length)
    }

    /// The position just past the value at `position`, in O(1).
    func skipValue(_ position: Int, _ limit: Int) throws(Failure) -> Int {
        guard position < limit else { throw .truncated }
        let tag = base[position]
        var p = position + 1
        switch tag {
        case BinaryFormat.tagNil, BinaryFormat.tagFalse, BinaryFormat.tagTrue:
            return p
        case BinaryFormat.tagUInt, BinaryFormat.tagSInt:
            _ = try readVarint(&p, limit)
            return p
        case BinaryFormat.tagFloat32:
            guard limit - p >= 4 else { throw .truncated }
            return p + 4
        case BinaryFormat.tagFloat64:
            guard limit - p >= 8 else { throw .truncated }
            return p + 8
        case BinaryFormat.tagString, BinaryFormat.tagKeyed, BinaryFormat.tagUnkeyed:
            let length = try readLength(&p, limit)
            return p + length
        case _ where BinaryFormat.isBulk(tag):
            let (start, count) = try readBulkHeader(&p, limit, tag)
            return start + count * BinaryFormat.bulkWidth(tag)
        case BinaryFormat.tagPlain:
            let (count, size) = try readPlainHeader(&p, limit)
            return p + count * size
        default:
            throw .corrupt("Unknown tag 0x\(String(tag, radix: 16)) at offset \(position).")
        }
    }

    /// Reads a bulk array's element count after its tag; checks the elements fit before `limit`.
    @inline(__always)
    func readBulkHeader(_ position: inout Int, _ limit: Int, _ tag: UInt8) throws(Failure) -> (start: Int, count: Int) {
        let count = try readVarint(&position, limit)
        let width = BinaryFormat.bulkWidth(tag)
        guard count <= UInt64((limit - position) / width) else {
            throw .corrupt("An array of \(count) elements of \(width) bytes exceeds the \(limit - position) bytes that remain.")
        }
        return (position, Int(count))
    }

    /// The bounds of the contents of the keyed container at `position`.
    func openKeyed(_ position: Int, _ kind: UInt8) throws(Failure) -> (start: Int, end: Int) {
        guard kind == 0 else { throw .typeMismatch([String: Any].self, found: BinaryReadFailure.bulkElement) }
        guard position < count else { throw .truncated }
        let tag = base[position]
        guard tag == BinaryFormat.tagKeyed else {
            throw tag == BinaryFormat.tagNil ? .valueNotFound([String: Any].self) : .typeMismatch([String: Any].self, found: UInt16(tag))
        }
        var p = position + 1
        let length = try readLength(&p, count)
        return (p, p + length)
    }

    /// The elements of the unkeyed container or bulk array at `position`.
    func openUnkeyed(_ position: Int, _ kind: UInt8) throws(Failure) -> (start: Int, end: Int, count: Int, kind: UInt8) {
        guard kind == 0 else { throw .typeMismatch([Any].self, found: BinaryReadFailure.bulkElement) }
        guard position < count else { throw .truncated }
        let tag = base[position]
        var p = position + 1
        if tag == BinaryFormat.tagUnkeyed {
            let length = try readLength(&p, count)
            let end = p + length
            let elements = try readVarint(&p, end)
            guard elements <= UInt64(end - p) else {
                throw .corrupt("An unkeyed container claims \(elements) elements in \(end - p) bytes.")
            }
            return (p, end, Int(elements), 0)
        }
        if BinaryFormat.isBulk(tag) {
            let (start, elements) = try readBulkHeader(&p, count, tag)
            return (start, start + elements * BinaryFormat.bulkWidth(tag), elements, tag)
        }
        throw tag == BinaryFormat.tagNil ? .valueNotFound([Any].self) : .typeMismatch([Any].self, found: UInt16(tag))
    }

    /// Finds `key` among the entries of the keyed container contents `start ..< end`, looking
    /// first at `hint` (an entry boundary). Returns the position of its value, -1 when the key
    /// is absent, -2 when the container is corrupt.
    @inline(__always)
    func find(_ key: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, hint: Int) -> Int {
        // The common case: the entry at the hint, with a one-byte key length, is the one.
        if hint < end, let k = key.baseAddress {
            let length = Int(base[hint])
            if length == key.count && length < 0x80 && end - (hint + 1) >= length
                && memcmp(base + hint + 1, k, length) == 0 {
                return hint + 1 + length
            }
        }
        return findSlow(key, start, end, hint: hint)
    }

    @inline(never)
    func findSlow(_ key: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, hint: Int) -> Int {
        var p = hint
        while p < end {
            let found = matchEntry(&p, end, key)
            if found != -1 { return found }
        }
        p = start
        while p < hint {
            let found = matchEntry(&p, end, key)
            if found != -1 { return found }
        }
        return -1
    }

    /// Compares the key of the entry at `p` with `key`: on a match returns its value's position;
    /// otherwise moves `p` to the next entry and returns -1 (or -2 when the entry is corrupt).
    @inline(__always)
    func matchEntry(_ p: inout Int, _ end: Int, _ key: UnsafeBufferPointer<UInt8>) -> Int {
        var q = p
        guard let length = try? readLength(&q, end) else { return -2 }
        if length == key.count && equal(q, key) { return q + length }
        guard let next = try? skipValue(q + length, end) else { return -2 }
        p = next
        return -1
    }

    @inline(__always)
    func equal(_ position: Int, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let k = key.baseAddress else { return true }
        return memcmp(base + position, k, key.count) == 0
    }

    /// The keys of a keyed container's entries, in order.
    func keys(_ start: Int, _ end: Int) -> [String] {
        var keys: [String] = []
        var p = start
        while p < end {
            guard let length = try? readLength(&p, end) else { break }
            keys.append(String(decoding: UnsafeBufferPointer(start: base + p, count: length), as: UTF8.self))
            p += length
            guard let next = try? skipValue(p, end) else { break }
            p = next
        }
        return keys
    }

    // MARK: Scalars

    @inline(__always)
    func load<I: FixedWidthInteger>(_ position: Int, as type: I.Type) -> I {
        I(littleEndian: UnsafeRawPointer(base + position).loadUnaligned(as: I.self))
    }

    /// The error for finding `tag` where a `type` was expected.
    func mismatch(_ type: any Any.Type, _ tag: UInt8) -> Failure {
        tag == BinaryFormat.tagNil ? .valueNotFound(type) : .typeMismatch(type, found: UInt16(tag))
    }

    @inline(__always)
    func isNil(_ position: Int, _ limit: Int, _ kind: UInt8) -> Bool {
        kind == 0 && position < limit && base[position] == BinaryFormat.tagNil
    }

    @inline(__always)
    func readSigned(_ position: inout Int, _ limit: Int, _ kind: UInt8, _ type: any Any.Type) throws(Failure) -> Int64 {
        guard kind == 0 else { return try readBulkSigned(&position, limit, kind, type) }
        guard position < limit else { throw .truncated }
        let tag = base[position]
        var p = position + 1
        if tag == BinaryFormat.tagSInt {
            let value = BinaryFormat.unzigzag(try readVarint(&p, limit))
            position = p
            return value
        }
        if tag == BinaryFormat.tagUInt {
            let value = try readVarint(&p, limit)
            guard value <= UInt64(Int64.max) else { throw .corrupt("Number \(value) does not fit in \(type).") }
            position = p
            return Int64(value)
        }
        throw mismatch(type, tag)
    }

    @inline(__always)
    func readUnsigned(_ position: inout Int, _ limit: Int, _ kind: UInt8, _ type: any Any.Type) throws(Failure) -> UInt64 {
        guard kind == 0 else { return try readBulkUnsigned(&position, limit, kind, type) }
        guard position < limit else { throw .truncated }
        let tag = base[position]
        var p = position + 1
        if tag == BinaryFormat.tagUInt {
            let value = try readVarint(&p, limit)
            position = p
            return value
        }
        if tag == BinaryFormat.tagSInt {
            let value = BinaryFormat.unzigzag(try readVarint(&p, limit))
            guard value >= 0 else { throw .corrupt("Number \(value) does not fit in \(type).") }
            position = p
            return UInt64(value)
        }
        throw mismatch(type, tag)
    }

    @inline(__always)
    func readInteger<I: FixedWidthInteger>(_ type: I.Type, _ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> I {
        if I.isSigned {
            let value = try readSigned(&position, limit, kind, type)
            guard let result = I(exactly: value) else { throw .corrupt("Number \(value) does not fit in \(type).") }
            return result
        } else {
            let value = try readUnsigned(&position, limit, kind, type)
            guard let result = I(exactly: value) else { throw .corrupt("Number \(value) does not fit in \(type).") }
            return result
        }
    }

    /// Steps over one element of a bulk array, returning its position.
    @inline(__always)
    func bulkElement(_ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> Int {
        let width = BinaryFormat.bulkWidth(kind)
        guard limit - position >= width else { throw .truncated }
        defer { position += width }
        return position
    }

    @inline(never)
    func readBulkSigned(_ position: inout Int, _ limit: Int, _ kind: UInt8, _ type: any Any.Type) throws(Failure) -> Int64 {
        let p = try bulkElement(&position, limit, kind)
        switch kind {
        case BinaryFormat.tagBulkUInt8: return Int64(load(p, as: UInt8.self))
        case BinaryFormat.tagBulkInt8: return Int64(load(p, as: Int8.self))
        case BinaryFormat.tagBulkUInt16: return Int64(load(p, as: UInt16.self))
        case BinaryFormat.tagBulkInt16: return Int64(load(p, as: Int16.self))
        case BinaryFormat.tagBulkUInt32: return Int64(load(p, as: UInt32.self))
        case BinaryFormat.tagBulkInt32: return Int64(load(p, as: Int32.self))
        case BinaryFormat.tagBulkInt64: return load(p, as: Int64.self)
        case BinaryFormat.tagBulkUInt64:
            let value = load(p, as: UInt64.self)
            guard value <= UInt64(Int64.max) else { throw .corrupt("Number \(value) does not fit in \(type).") }
            return Int64(value)
        default: throw .typeMismatch(type, found: UInt16(BinaryFormat.tagFloat64))
        }
    }

    @inline(never)
    func readBulkUnsigned(_ position: inout Int, _ limit: Int, _ kind: UInt8, _ type: any Any.Type) throws(Failure) -> UInt64 {
        if kind == BinaryFormat.tagBulkUInt64 {
            return load(try bulkElement(&position, limit, kind), as: UInt64.self)
        }
        let value = try readBulkSigned(&position, limit, kind, type)
        guard value >= 0 else { throw .corrupt("Number \(value) does not fit in \(type).") }
        return UInt64(value)
    }

    @inline(__always)
    func readDouble(_ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> Double {
        if kind == 0 && position < limit && base[position] == BinaryFormat.tagFloat64 {
            guard limit - position >= 9 else { throw .truncated }
            let value = Double(bitPattern: load(position + 1, as: UInt64.self))
            position += 9
            return value
        }
        return try readOtherDouble(&position, limit, kind)
    }

    @inline(never)
    func readOtherDouble(_ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> Double {
        var p = position
        let tag: UInt8
        if kind == 0 {
            guard p < limit else { throw .truncated }
            tag = base[p]
            p += 1
        } else {
            tag = kind
        }
        let value: Double
        switch tag {
        case BinaryFormat.tagFloat32, BinaryFormat.tagBulkFloat32:
            guard limit - p >= 4 else { throw .truncated }
            value = Double(Float(bitPattern: load(p, as: UInt32.self)))
            p += 4
        case BinaryFormat.tagFloat64, BinaryFormat.tagBulkFloat64:
            guard limit - p >= 8 else { throw .truncated }
            value = Double(bitPattern: load(p, as: UInt64.self))
            p += 8
        case BinaryFormat.tagUInt, BinaryFormat.tagBulkUInt64:
            p = position
            let integer = try readUnsigned(&p, limit, kind, Double.self)
            guard let exact = Double(exactly: integer) else { throw .corrupt("Number \(integer) does not fit in Double.") }
            value = exact
        case let other where other == BinaryFormat.tagSInt || BinaryFormat.isBulk(other):
            p = position
            let integer = try readSigned(&p, limit, kind, Double.self)
            guard let exact = Double(exactly: integer) else { throw .corrupt("Number \(integer) does not fit in Double.") }
            value = exact
        default:
            throw mismatch(Double.self, tag)
        }
        position = p
        return value
    }

    func readFloat(_ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> Float {
        if kind == 0 && position < limit && base[position] == BinaryFormat.tagFloat32 {
            guard limit - position >= 5 else { throw .truncated }
            let value = Float(bitPattern: load(position + 1, as: UInt32.self))
            position += 5
            return value
        }
        if kind == BinaryFormat.tagBulkFloat32 {
            return Float(bitPattern: load(try bulkElement(&position, limit, kind), as: UInt32.self))
        }
        var p = position
        let double: Double
        do throws(Failure) {
            double = try readOtherDouble(&p, limit, kind)
        } catch {
            if case .typeMismatch(_, let tag) = error { throw .typeMismatch(Float.self, found: tag) }
            if case .valueNotFound = error { throw .valueNotFound(Float.self) }
            throw error
        }
        let float = Float(double)
        guard Double(float) == double || double.isNaN else { throw .corrupt("Number \(double) does not fit in Float.") }
        position = p
        return float
    }

    @inline(__always)
    func readBool(_ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> Bool {
        guard kind == 0 else { throw .typeMismatch(Bool.self, found: BinaryReadFailure.bulkElement) }
        guard position < limit else { throw .truncated }
        switch base[position] {
        case BinaryFormat.tagTrue:
            position += 1
            return true
        case BinaryFormat.tagFalse:
            position += 1
            return false
        case let tag:
            throw mismatch(Bool.self, tag)
        }
    }

    @inline(__always)
    func readString(_ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> String {
        guard kind == 0 else { throw .typeMismatch(String.self, found: BinaryReadFailure.bulkElement) }
        guard position < limit else { throw .truncated }
        let tag = base[position]
        guard tag == BinaryFormat.tagString else { throw mismatch(String.self, tag) }
        var p = position + 1
        let length = try readLength(&p, limit)
        let utf8 = UnsafeBufferPointer(start: base + p, count: length)
        // (`String(validating:)` is several times slower: generic, unspecialized.)
        guard BinaryFormat.isValidUTF8(utf8) else { throw .corrupt("A string is not valid UTF-8.") }
        position = p + length
        return String(decoding: utf8, as: UTF8.self)
    }

    /// Reads a bulk array of `tag` as `[E]`; throws `.notHandled` when the value is anything else.
    @inline(__always)
    func readBulk<E: Numeric>(_ type: E.Type, _ tag: UInt8, _ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> [E] {
        #if _endian(little)
        guard kind == 0, position < limit, base[position] == tag else { throw .notHandled }
        var p = position + 1
        let (start, count) = try readBulkHeader(&p, limit, tag)
        let bytes = UnsafeRawBufferPointer(start: base + start, count: count * MemoryLayout<E>.size)
        // (Not `Array(unsafeUninitializedCapacity:)`: unspecialized inside the standard library,
        // it looks up the array's metadata at every call; `reserveCapacity` and `append` are
        // specialized here.)
        var array: [E] = []
        array.reserveCapacity(count)
        array.append(contentsOf: repeatElement(E.zero, count: count))
        array.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
        position = start + bytes.count
        return array
        #else
        throw .notHandled
        #endif
    }

    /// Reads a bulk array of bytes as `[UInt8]`; throws `.notHandled` when the value is anything else.
    @inline(__always)
    func readBulkBytes(_ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> [UInt8] {
        guard kind == 0, position < limit, base[position] == BinaryFormat.tagBulkUInt8 else { throw .notHandled }
        var p = position + 1
        let (start, count) = try readBulkHeader(&p, limit, BinaryFormat.tagBulkUInt8)
        var array: [UInt8] = []
        array.reserveCapacity(count)
        array.append(contentsOf: UnsafeRawBufferPointer(start: base + start, count: count))
        position = start + count
        return array
    }

    /// Decodes primitives and bulk arrays directly; throws `.notHandled` for every other type
    /// (and for arrays not stored as a bulk block of their own element type).
    /// (Not returning `T?`: that would look up the metadata of `Optional<T>` at every call.)
    func decodeFast<T: Decodable>(_ type: T.Type, _ position: inout Int, _ limit: Int, _ kind: UInt8) throws(Failure) -> T {
        // Every fast type is at most 16 bytes (a String); most structs are larger.
        if MemoryLayout<T>.size > 16 { return try decodePlain(T.self, &position, limit, kind) }
        let id = ObjectIdentifier(T.self)
        let types = BinaryFastTypes.shared
        if id == types.string {
            return unsafeBitCast(try readString(&position, limit, kind), to: T.self)
        } else if id == types.int {
            return unsafeBitCast(try readInteger(Int.self, &position, limit, kind), to: T.self)
        } else if id == types.double {
            return unsafeBitCast(try readDouble(&position, limit, kind), to: T.self)
        } else if id == types.bool {
            return unsafeBitCast(try readBool(&position, limit, kind), to: T.self)
        } else if id == types.uint8Array {
            return unsafeBitCast(try readBulkBytes(&position, limit, kind), to: T.self)
        } else if id == types.doubleArray {
            return unsafeBitCast(try readBulk(Double.self, BinaryFormat.tagBulkFloat64, &position, limit, kind), to: T.self)
        } else if id == types.intArray {
            return unsafeBitCast(try readBulk(Int.self, BinaryFormat.bulkTag(for: Int.self), &position, limit, kind), to: T.self)
        } else if id == types.int64 {
            return unsafeBitCast(try readInteger(Int64.self, &position, limit, kind), to: T.self)
        } else if id == types.uint64 {
            return unsafeBitCast(try readInteger(UInt64.self, &position, limit, kind), to: T.self)
        } else if id == types.uint {
            return unsafeBitCast(try readInteger(UInt.self, &position, limit, kind), to: T.self)
        } else if id == types.int32 {
            return unsafeBitCast(try readInteger(Int32.self, &position, limit, kind), to: T.self)
        } else if id == types.uint32 {
            return unsafeBitCast(try readInteger(UInt32.self, &position, limit, kind), to: T.self)
        } else if id == types.float {
            return unsafeBitCast(try readFloat(&position, limit, kind), to: T.self)
        } else if id == types.uint8 {
            return unsafeBitCast(try readInteger(UInt8.self, &position, limit, kind), to: T.self)
        } else if id == types.int8 {
            return unsafeBitCast(try readInteger(Int8.self, &position, limit, kind), to: T.self)
        } else if id == types.int16 {
            return unsafeBitCast(try readInteger(Int16.self, &position, limit, kind), to: T.self)
        } else if id == types.uint16 {
            return unsafeBitCast(try readInteger(UInt16.self, &position, limit, kind), to: T.self)
        } else if id == types.floatArray {
            return unsafeBitCast(try readBulk(Float.self, BinaryFormat.tagBulkFloat32, &position, limit, kind), to: T.self)
        } else if id == types.int8Array {
            return unsafeBitCast(try readBulk(Int8.self, BinaryFormat.tagBulkInt8, &position, limit, kind), to: T.self)
        } else if id == types.uintArray {
            return unsafeBitCast(try readBulk(UInt.self, BinaryFormat.bulkTag(for: UInt.self), &position, limit, kind), to: T.self)
        } else if id == types.int64Array {
            return unsafeBitCast(try readBulk(Int64.self, BinaryFormat.tagBulkInt64, &position, limit, kind), to: T.self)
        } else if id == types.uint64Array {
            return unsafeBitCast(try readBulk(UInt64.self, BinaryFormat.tagBulkUInt64, &position, limit, kind), to: T.self)
        } else if id == types.int32Array {
            return unsafeBitCast(try readBulk(Int32.self, BinaryFormat.tagBulkInt32, &position, limit, kind), to: T.self)
        } else if id == types.uint32Array {
            return unsafeBitCast(try readBulk(UInt32.self, BinaryFormat.tagBulkUInt32, &position, limit, kind), to: T.self)
        } else if id == types.int16Array {
            return unsafeBitCast(try readBulk(Int16.self, BinaryFormat.tagBulkInt16, &position, limit, kind), to: T.self)
        } else if id == types.uint16Array {
            return unsafeBitCast(try readBulk(UInt16.self, BinaryFormat.tagBulkUInt16, &position, limit, kind), to: T.self)
        } else if id == types.uint8ContiguousArray {
            return unsafeBitCast(ContiguousArray(try readBulkBytes(&position, limit, kind)), to: T.self)
        }
        return try decodePlain(T.self, &position, limit, kind)
    }
}

/// Where a container's coding path comes from: the first `depth` keys of the decoder's `path`,
/// or, when `node` is not -1, the path `pathNodes[node]` stands for (containers nested with
/// `nestedContainer`, whose keys are not on the decoder's path).
struct BinaryPathRef {
    var depth: Int
    var node: Int

    static func prefix(_ depth: Int) -> BinaryPathRef { BinaryPathRef(depth: depth, node: -1) }
}

/// The state of one decode, and the `Decoder` of the value being decoded at the moment.
///
/// Containers refer to the state without retaining it (`Unmanaged`): states are never freed
/// while their thread lives (see `BinaryStatePool`), and every read is bounded by the state's
/// current input, which it forgets when the decode ends: a container kept past its decode fails
/// (or reads a later decode's input) instead of reading freed memory.
final class BinaryDecodingState: Decoder {
    /// Where a keyed container expects its next key: where the previous value it decoded ended.
    struct Cursor {
        /// The start of the container's contents, which identifies it.
        var owner: Int
        var position: Int
    }

    /// A path in the making: `parent`'s path followed by `key`; `length` keys in all.
    struct PathNode {
        var parent: BinaryPathRef
        var key: any CodingKey
        var length: Int
    }

    @exclusivity(unchecked) var reader = BinaryReader(base: BinaryReader.empty, count: 0)
    @exclusivity(unchecked) var path: [any CodingKey] = []
    /// The value this object decodes, as a `Decoder`: its position and kind (see `BinaryReader`).
    @exclusivity(unchecked) var current = 0
    @exclusivity(unchecked) var currentKind: UInt8 = 0
    @exclusivity(unchecked) var depth = 1
    /// Cursors of the keyed containers open at the moment: the first `cursorCount` entries.
    @exclusivity(unchecked) var cursors: [Cursor] = []
    @exclusivity(unchecked) var cursorCount = 0
    /// Paths of nested containers: the first `pathNodeCount` entries.
    @exclusivity(unchecked) var pathNodes: [PathNode] = []
    @exclusivity(unchecked) var pathNodeCount = 0

    private init() {}

    private static let pool = BinaryThreadLocal<BinaryStatePool<BinaryDecodingState>>()

    /// A state for decoding from `reader`.
    static func acquire(_ reader: BinaryReader) -> BinaryDecodingState {
        let state = pool.get(orMake: BinaryStatePool.init)._withUnsafeGuaranteedRef { pool in
            pool.free.popLast() ?? BinaryDecodingState()
        }
        state.reader = reader
        return state
    }

    /// Puts `state` back in this thread's pool. Its input is forgotten, so a container kept past
    /// the decode reads nothing.
    static func release(_ state: BinaryDecodingState) {
        state.reader = BinaryReader(base: BinaryReader.empty, count: 0)
        if !state.path.isEmpty { state.path = [] }
        if state.cursors.capacity > 256 { state.cursors = [] }
        if state.pathNodes.capacity > 256 { state.pathNodes = [] }
        state.cursorCount = 0
        state.pathNodeCount = 0
        state.current = 0
        state.currentKind = 0
        state.depth = 1
        pool.get(orMake: BinaryStatePool.init)._withUnsafeGuaranteedRef { $0.free.append(state) }
    }

    var codingPath: [any CodingKey] { path }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        let bounds: (start: Int, end: Int)
        do throws(BinaryReadFailure) {
            bounds = try reader.openKeyed(current, currentKind)
        } catch {
            throw error.decodingError(path)
        }
        return keyedContainer(bounds, path: .prefix(path.count))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try unkeyedContainer(at: current, kind: currentKind, path: .prefix(path.count))
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        BinarySingleValueDecodingContainer(state: Unmanaged.passUnretained(self), position: current, kind: currentKind, path: .prefix(path.count))
    }

    // MARK: Support

    func codingPath(_ ref: BinaryPathRef) -> [any CodingKey] {
        var keys: [any CodingKey] = []
        var ref = ref
        while ref.node >= 0 && ref.node < pathNodeCount {
            keys.append(pathNodes[ref.node].key)
            ref = pathNodes[ref.node].parent
        }
        let base = ref.depth == path.count ? path : Array(path.prefix(ref.depth))
        return keys.isEmpty ? base : base + keys.reversed()
    }

    /// The number of keys in the path `ref` stands for.
    func pathLength(_ ref: BinaryPathRef) -> Int {
        ref.node >= 0 && ref.node < pathNodeCount ? pathNodes[ref.node].length : ref.depth
    }

    /// A reference to the path of `ref` followed by `key`, for a nested container.
    func nestedPath(_ ref: BinaryPathRef, _ key: any CodingKey) -> BinaryPathRef {
        let node = PathNode(parent: ref, key: key, length: pathLength(ref) + 1)
        if pathNodeCount < pathNodes.count {
            pathNodes[pathNodeCount] = node
        } else {
            pathNodes.append(node)
        }
        pathNodeCount += 1
        return BinaryPathRef(depth: 0, node: pathNodeCount - 1)
    }

    /// A keyed container over the contents `bounds`, nested under `path`.
    func keyedContainer<Key: CodingKey>(_ bounds: (start: Int, end: Int), path: BinaryPathRef) -> KeyedDecodingContainer<Key> {
        let slot = cursorCount
        let cursor = Cursor(owner: bounds.start, position: bounds.start)
        if slot < cursors.count {
            cursors[slot] = cursor
        } else {
            cursors.append(cursor)
        }
        cursorCount = slot + 1
        return KeyedDecodingContainer(BinaryKeyedDecodingContainer<Key>(
            state: Unmanaged.passUnretained(self), start: bounds.start, end: bounds.end, slot: slot, path: path))
    }

    /// Where the container with contents from `owner` and cursor `slot` expects its next key.
    @inline(__always)
    func cursor(_ slot: Int, _ owner: Int) -> Int {
        slot < cursorCount && cursors[slot].owner == owner ? cursors[slot].position : owner
    }

    /// Moves a container's cursor. (A slot reused by a later container, once the first one's
    /// value is done, has another owner: it is left alone.)
    @inline(__always)
    func setCursor(_ slot: Int, _ owner: Int, _ position: Int) {
        if slot < cursorCount && cursors[slot].owner == owner { cursors[slot].position = position }
    }

    func unkeyedContainer(at position: Int, kind: UInt8, path ref: BinaryPathRef) throws -> BinaryUnkeyedDecodingContainer {
        let elements: (start: Int, end: Int, count: Int, kind: UInt8)
        do throws(BinaryReadFailure) {
            elements = try reader.openUnkeyed(position, kind)
        } catch {
            throw error.decodingError(codingPath(ref))
        }
        return BinaryUnkeyedDecodingContainer(
            state: Unmanaged.passUnretained(self), position: elements.start, end: elements.end,
            elementCount: elements.count, kind: elements.kind, path: ref)
    }

    /// The error for input nested past a bound: values past `maxDepth`, or containers past theirs.
    func tooDeep(_ path: [any CodingKey], _ what: String = "Values", limit: Int = BinaryFormat.maxDepth) -> DecodingError {
        .dataCorrupted(.init(codingPath: path, debugDescription: "\(what) nest more than \(limit) deep."))
    }

    /// Decodes the value at `position` (of `kind`) as a `T`, nested under `key` in a container
    /// whose path is `ref`.
    func decodeNested<T: Decodable>(_ type: T.Type, at position: Int, kind: UInt8, key: any CodingKey, path ref: BinaryPathRef) throws -> T {
        let simplePath = ref.node < 0 && ref.depth == path.count
        var savedPath: [any CodingKey] = []
        if simplePath {
            path.append(key)
        } else {
            savedPath = path
            path = codingPath(ref) + [key]
        }
        let savedCurrent = current
        let savedKind = currentKind
        let mark = cursorCount
        let nodeMark = pathNodeCount
        current = position
        currentKind = kind
        depth += 1
        defer {
            if simplePath { path.removeLast() } else { path = savedPath }
            current = savedCurrent
            currentKind = savedKind
            depth -= 1
            cursorCount = mark
            pathNodeCount = nodeMark
        }
        guard depth <= BinaryFormat.maxDepth else { throw tooDeep(path) }
        return try T(from: self)
    }

    /// Decodes the value at `position` again as a `T` (a single value container's generic
    /// `decode`): same path, one level deeper.
    func decodeInPlace<T: Decodable>(_ type: T.Type, at position: Int, kind: UInt8, path ref: BinaryPathRef) throws -> T {
        let simplePath = ref.node < 0 && ref.depth == path.count
        var savedPath: [any CodingKey] = []
        if !simplePath {
            savedPath = path
            path = codingPath(ref)
        }
        let savedCurrent = current
        let savedKind = currentKind
        let mark = cursorCount
        let nodeMark = pathNodeCount
        current = position
        currentKind = kind
        depth += 1
        defer {
            if !simplePath { path = savedPath }
            current = savedCurrent
            currentKind = savedKind
            depth -= 1
            cursorCount = mark
            pathNodeCount = nodeMark
        }
        guard depth <= BinaryFormat.maxDepth else { throw tooDeep(path) }
        return try T(from: self)
    }

    /// Nested containers recurse without `decodeNested` (a type's `init(from:)` can open them
    /// level after level): bound them by the path, as the encoder does, at 2 × maxDepth (the
    /// encoder's bound on open containers, each a key of the path), so that every value the
    /// encoder writes decodes (a recursive enum takes two keys a level: its case and its field).
    func checkNestingDepth(_ ref: BinaryPathRef, _ key: any CodingKey) throws {
        guard pathLength(ref) < 2 * BinaryFormat.maxDepth else { throw tooDeep(codingPath(ref) + [key], "Containers", limit: 2 * BinaryFormat.maxDepth) }
    }

    /// A decoder for the value at `position`, under `key` in a container whose path is `ref`,
    /// for `superDecoder()`.
    func superDecoder(at position: Int, kind: UInt8, key: any CodingKey, path ref: BinaryPathRef) throws -> any Decoder {
        // Decoding through super decoders recurses without `decodeNested`: bound it by the path,
        // as the encoder bounds super encoders (see `checkNestingDepth`).
        guard pathLength(ref) < 2 * BinaryFormat.maxDepth else { throw tooDeep(codingPath(ref) + [key], "Containers", limit: 2 * BinaryFormat.maxDepth) }
        return BinarySuperDecoder(state: Unmanaged.passUnretained(self), position: position, kind: kind, path: nestedPath(ref, key))
    }
}

// MARK: - Containers

struct BinaryKeyedDecodingContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let state: Unmanaged<BinaryDecodingState>
    /// The contents: entries from `start` to `end`.
    let start: Int
    let end: Int
    /// This container's cursor in `state.cursors`.
    let slot: Int
    let path: BinaryPathRef

    var codingPath: [any CodingKey] {
        state.takeUnretainedValue().codingPath(path)
    }

    var allKeys: [Key] {
        let s = state.takeUnretainedValue()
        return s.reader.keys(start, min(end, s.reader.count)).compactMap { Key(stringValue: $0) }
    }

    func contains(_ key: Key) -> Bool {
        find(key.stringValue, state.takeUnretainedValue()) >= 0
    }

    /// The position of the value for `key`, -1 when absent, -2 when the container is corrupt.
    @inline(__always)
    private func find(_ key: String, _ s: BinaryDecodingState) -> Int {
        let limit = min(end, s.reader.count)
        let hint = min(s.cursor(slot, start), limit)
        if let found = key.utf8.withContiguousStorageIfAvailable({ s.reader.find($0, start, limit, hint: hint) }) {
            return found
        }
        var key = key
        return key.withUTF8 { s.reader.find($0, start, limit, hint: hint) }
    }

    private func corrupt(_ s: BinaryDecodingState) -> DecodingError {
        .dataCorrupted(.init(codingPath: s.codingPath(path), debugDescription: "A keyed container is corrupt."))
    }

    @inline(never)
    private func missing(_ key: Key, _ position: Int, _ s: BinaryDecodingState) -> DecodingError {
        if position == -2 { return corrupt(s) }
        return DecodingError.keyNotFound(key, .init(codingPath: s.codingPath(path), debugDescription: "No value associated with key \(key) (\"\(key.stringValue)\")."))
    }

    /// The position of the value for `key`; throws when it is absent.
    @inline(__always)
    private func locate(_ key: Key, _ s: BinaryDecodingState) throws -> Int {
        let position = find(key.stringValue, s)
        guard position >= 0 else { throw missing(key, position, s) }
        return position
    }

    /// The position of the value for `key`, or nil when it is absent or nil (stepping over it).
    @inline(__always)
    private func locateIfPresent(_ key: Key, _ s: BinaryDecodingState) throws -> Int? {
        let position = find(key.stringValue, s)
        guard position >= 0 else {
            if position == -2 { throw corrupt(s) }
            return nil
        }
        if s.reader.isNil(position, min(end, s.reader.count), 0) {
            s.setCursor(slot, start, position + 1)
            return nil
        }
        return position
    }

    /// Reads the value for `key` with `body`.
    @inline(__always)
    private func read<V>(_ key: Key, _ body: (BinaryReader, inout Int, Int) throws(BinaryReadFailure) -> V) throws -> V {
        let s = state.takeUnretainedValue()
        return try read(key, at: try locate(key, s), s, body)
    }

    /// Reads the value for `key`, if present and not nil, with `body`.
    @inline(__always)
    private func readIfPresent<V>(_ key: Key, _ body: (BinaryReader, inout Int, Int) throws(BinaryReadFailure) -> V) throws -> V? {
        let s = state.takeUnretainedValue()
        guard let position = try locateIfPresent(key, s) else { return nil }
        return try read(key, at: position, s, body)
    }

    @inline(__always)
    private func read<V>(_ key: Key, at position: Int, _ s: BinaryDecodingState, _ body: (BinaryReader, inout Int, Int) throws(BinaryReadFailure) -> V) throws -> V {
        var p = position
        do throws(BinaryReadFailure) {
            let value = try body(s.reader, &p, min(end, s.reader.count))
            s.setCursor(slot, start, p)
            return value
        } catch {
            throw error.decodingError(s.codingPath(path) + [key])
        }
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        let s = state.takeUnretainedValue()
        let position = try locate(key, s)
        guard s.reader.isNil(position, min(end, s.reader.count), 0) else { return false }
        s.setCursor(slot, start, position + 1)
        return true
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readBool(&p, l, 0) }
    }

    func decode(_ type: String.Type, forKey key: Key) throws -> String {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readString(&p, l, 0) }
    }

    func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readDouble(&p, l, 0) }
    }

    func decode(_ type: Float.Type, forKey key: Key) throws -> Float {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readFloat(&p, l, 0) }
    }

    func decode(_ type: Int.Type, forKey key: Key) throws -> Int {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int.self, &p, l, 0) }
    }

    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int8.self, &p, l, 0) }
    }

    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int16.self, &p, l, 0) }
    }

    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int32.self, &p, l, 0) }
    }

    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int64.self, &p, l, 0) }
    }

    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt.self, &p, l, 0) }
    }

    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt8.self, &p, l, 0) }
    }

    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt16.self, &p, l, 0) }
    }

    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt32.self, &p, l, 0) }
    }

    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 {
        try read(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt64.self, &p, l, 0) }
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        let s = state.takeUnretainedValue()
        return try decodeValue(type, key, at: try locate(key, s), s)
    }

    private func decodeValue<T: Decodable>(_ type: T.Type, _ key: Key, at position: Int, _ s: BinaryDecodingState) throws -> T {
        let limit = min(end, s.reader.count)
        var p = position
        do throws(BinaryReadFailure) {
            let value = try s.reader.decodeFast(T.self, &p, limit, 0)
            s.setCursor(slot, start, p)
            return value
        } catch .notHandled {
            // Decoded below.
        } catch {
            throw error.decodingError(s.codingPath(path) + [key])
        }
        do throws(BinaryReadFailure) {
            p = try s.reader.skipValue(position, limit)
        } catch {
            throw error.decodingError(s.codingPath(path) + [key])
        }
        let value = try s.decodeNested(T.self, at: position, kind: 0, key: key, path: path)
        s.setCursor(slot, start, p)
        return value
    }

    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readBool(&p, l, 0) }
    }

    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readString(&p, l, 0) }
    }

    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readDouble(&p, l, 0) }
    }

    func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readFloat(&p, l, 0) }
    }

    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: Int8.Type, forKey key: Key) throws -> Int8? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int8.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: Int16.Type, forKey key: Key) throws -> Int16? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int16.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int32.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(Int64.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: UInt.Type, forKey key: Key) throws -> UInt? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: UInt8.Type, forKey key: Key) throws -> UInt8? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt8.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: UInt16.Type, forKey key: Key) throws -> UInt16? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt16.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt32.self, &p, l, 0) }
    }

    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? {
        try readIfPresent(key) { r, p, l throws(BinaryReadFailure) in try r.readInteger(UInt64.self, &p, l, 0) }
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        let s = state.takeUnretainedValue()
        guard let position = try locateIfPresent(key, s) else { return nil }
        return try decodeValue(type, key, at: position, s)
    }

    /// The position of `key`'s value and of what follows it; the cursor moves past it.
    private func entry(_ key: Key, _ s: BinaryDecodingState) throws -> (value: Int, next: Int) {
        let position = try locate(key, s)
        do throws(BinaryReadFailure) {
            let next = try s.reader.skipValue(position, min(end, s.reader.count))
            s.setCursor(slot, start, next)
            return (position, next)
        } catch {
            throw error.decodingError(s.codingPath(path) + [key])
        }
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        let s = state.takeUnretainedValue()
        try s.checkNestingDepth(path, key)
        let position = try entry(key, s).value
        let bounds: (start: Int, end: Int)
        do throws(BinaryReadFailure) {
            bounds = try s.reader.openKeyed(position, 0)
        } catch {
            throw error.decodingError(s.codingPath(path) + [key])
        }
        return s.keyedContainer(bounds, path: s.nestedPath(path, key))
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        let s = state.takeUnretainedValue()
        try s.checkNestingDepth(path, key)
        let position = try entry(key, s).value
        return try s.unkeyedContainer(at: position, kind: 0, path: s.nestedPath(path, key))
    }

    func superDecoder() throws -> any Decoder {
        let s = state.takeUnretainedValue()
        let position = find("super", s)
        guard position >= 0 else {
            if position == -2 { throw corrupt(s) }
            throw DecodingError.keyNotFound(BinaryStringKey.super, .init(codingPath: s.codingPath(path), debugDescription: "No value associated with key \"super\"."))
        }
        return try superDecoder(at: position, key: BinaryStringKey.super, s)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        let s = state.takeUnretainedValue()
        return try superDecoder(at: try locate(key, s), key: key, s)
    }

    private func superDecoder(at position: Int, key: any CodingKey, _ s: BinaryDecodingState) throws -> any Decoder {
        let next: Int
        do throws(BinaryReadFailure) {
            next = try s.reader.skipValue(position, min(end, s.reader.count))
        } catch {
            throw error.decodingError(s.codingPath(path) + [key])
        }
        let decoder = try s.superDecoder(at: position, kind: 0, key: key, path: path)
        s.setCursor(slot, start, next)
        return decoder
    }
}

struct BinaryUnkeyedDecodingContainer: UnkeyedDecodingContainer {
    let state: Unmanaged<BinaryDecodingState>
    /// The position of the next element.
    var position: Int
    let end: Int
    let elementCount: Int
    /// 0 when the elements are tagged values; the bulk tag when they are a bulk array's.
    let kind: UInt8
    let path: BinaryPathRef
    private(set) var currentIndex = 0

    init(state: Unmanaged<BinaryDecodingState>, position: Int, end: Int, elementCount: Int, kind: UInt8, path: BinaryPathRef) {
        self.state = state
        self.position = position
        self.end = end
        self.elementCount = elementCount
        self.kind = kind
        self.path = path
    }

    var codingPath: [any CodingKey] {
        state.takeUnretainedValue().codingPath(path)
    }

    var count: Int? { elementCount }
    var isAtEnd: Bool { currentIndex >= elementCount }

    private func atEnd(_ type: any Any.Type, _ s: BinaryDecodingState) -> DecodingError {
        .valueNotFound(type, .init(codingPath: s.codingPath(path) + [BinaryIndexKey(currentIndex)], debugDescription: "Unkeyed container is at end."))
    }

    @inline(__always)
    private mutating func read<V>(_ type: V.Type, _ body: (BinaryReader, inout Int, Int, UInt8) throws(BinaryReadFailure) -> V) throws -> V {
        let s = state.takeUnretainedValue()
        guard currentIndex < elementCount else { throw atEnd(type, s) }
        var p = position
        do throws(BinaryReadFailure) {
            let value = try body(s.reader, &p, min(end, s.reader.count), kind)
            position = p
            currentIndex += 1
            return value
        } catch {
            throw error.decodingError(s.codingPath(path) + [BinaryIndexKey(currentIndex)])
        }
    }

    /// The position after the current element.
    private func next(_ s: BinaryDecodingState) throws -> Int {
        do throws(BinaryReadFailure) {
            let limit = min(end, s.reader.count)
            if kind == 0 { return try s.reader.skipValue(position, limit) }
            var p = position
            _ = try s.reader.bulkElement(&p, limit, kind)
            return p
        } catch {
            throw error.decodingError(s.codingPath(path) + [BinaryIndexKey(currentIndex)])
        }
    }

    mutating func decodeNil() throws -> Bool {
        let s = state.takeUnretainedValue()
        guard currentIndex < elementCount else { throw atEnd(Optional<Any>.self, s) }
        guard s.reader.isNil(position, min(end, s.reader.count), kind) else { return false }
        position += 1
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readBool(&p, l, k) }
    }

    mutating func decode(_ type: String.Type) throws -> String {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readString(&p, l, k) }
    }

    mutating func decode(_ type: Double.Type) throws -> Double {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readDouble(&p, l, k) }
    }

    mutating func decode(_ type: Float.Type) throws -> Float {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readFloat(&p, l, k) }
    }

    mutating func decode(_ type: Int.Type) throws -> Int {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int.self, &p, l, k) }
    }

    mutating func decode(_ type: Int8.Type) throws -> Int8 {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int8.self, &p, l, k) }
    }

    mutating func decode(_ type: Int16.Type) throws -> Int16 {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int16.self, &p, l, k) }
    }

    mutating func decode(_ type: Int32.Type) throws -> Int32 {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int32.self, &p, l, k) }
    }

    mutating func decode(_ type: Int64.Type) throws -> Int64 {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int64.self, &p, l, k) }
    }

    mutating func decode(_ type: UInt.Type) throws -> UInt {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt.self, &p, l, k) }
    }

    mutating func decode(_ type: UInt8.Type) throws -> UInt8 {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt8.self, &p, l, k) }
    }

    mutating func decode(_ type: UInt16.Type) throws -> UInt16 {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt16.self, &p, l, k) }
    }

    mutating func decode(_ type: UInt32.Type) throws -> UInt32 {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt32.self, &p, l, k) }
    }

    mutating func decode(_ type: UInt64.Type) throws -> UInt64 {
        try read(type) { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt64.self, &p, l, k) }
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let s = state.takeUnretainedValue()
        guard currentIndex < elementCount else { throw atEnd(type, s) }
        var p = position
        do throws(BinaryReadFailure) {
            let value = try s.reader.decodeFast(T.self, &p, min(end, s.reader.count), kind)
            position = p
            currentIndex += 1
            return value
        } catch .notHandled {
            // Decoded below.
        } catch {
            throw error.decodingError(s.codingPath(path) + [BinaryIndexKey(currentIndex)])
        }
        let next = try next(s)
        let value = try s.decodeNested(T.self, at: position, kind: kind, key: BinaryIndexKey(currentIndex), path: path)
        position = next
        currentIndex += 1
        return value
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let s = state.takeUnretainedValue()
        guard currentIndex < elementCount else { throw atEnd(KeyedDecodingContainer<NestedKey>.self, s) }
        let key = BinaryIndexKey(currentIndex)
        try s.checkNestingDepth(path, key)
        let next = try next(s)
        let bounds: (start: Int, end: Int)
        do throws(BinaryReadFailure) {
            bounds = try s.reader.openKeyed(position, kind)
        } catch {
            throw error.decodingError(s.codingPath(path) + [key])
        }
        position = next
        currentIndex += 1
        return s.keyedContainer(bounds, path: s.nestedPath(path, key))
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let s = state.takeUnretainedValue()
        guard currentIndex < elementCount else { throw atEnd((any UnkeyedDecodingContainer).self, s) }
        try s.checkNestingDepth(path, BinaryIndexKey(currentIndex))
        let next = try next(s)
        let container = try s.unkeyedContainer(at: position, kind: kind, path: s.nestedPath(path, BinaryIndexKey(currentIndex)))
        position = next
        currentIndex += 1
        return container
    }

    mutating func superDecoder() throws -> any Decoder {
        let s = state.takeUnretainedValue()
        guard currentIndex < elementCount else { throw atEnd((any Decoder).self, s) }
        let next = try next(s)
        let decoder = try s.superDecoder(at: position, kind: kind, key: BinaryIndexKey(currentIndex), path: path)
        position = next
        currentIndex += 1
        return decoder
    }
}

struct BinarySingleValueDecodingContainer: SingleValueDecodingContainer {
    let state: Unmanaged<BinaryDecodingState>
    let position: Int
    /// The kind of the value and its path, packed in one word so that the container fits an
    /// existential's inline storage: the kind in the low 8 bits, then the path's node + 1
    /// (0 for none) in 24 bits, then its depth.
    let packed: Int

    init(state: Unmanaged<BinaryDecodingState>, position: Int, kind: UInt8, path: BinaryPathRef) {
        self.state = state
        self.position = position
        let node = path.node + 1 <= 0xFF_FFFF ? path.node + 1 : 0  // (past that, errors show a shorter path)
        self.packed = Int(kind) | node << 8 | path.depth << 32
    }

    private var kind: UInt8 { UInt8(truncatingIfNeeded: packed) }
    private var path: BinaryPathRef { BinaryPathRef(depth: packed >> 32, node: (packed >> 8 & 0xFF_FFFF) - 1) }

    var codingPath: [any CodingKey] {
        state.takeUnretainedValue().codingPath(path)
    }

    @inline(__always)
    private func read<V>(_ body: (BinaryReader, inout Int, Int, UInt8) throws(BinaryReadFailure) -> V) throws -> V {
        let s = state.takeUnretainedValue()
        var p = position
        do throws(BinaryReadFailure) {
            return try body(s.reader, &p, s.reader.count, kind)
        } catch {
            throw error.decodingError(s.codingPath(path))
        }
    }

    func decodeNil() -> Bool {
        let s = state.takeUnretainedValue()
        return s.reader.isNil(position, s.reader.count, kind)
    }

    func decode(_ type: Bool.Type) throws -> Bool {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readBool(&p, l, k) }
    }

    func decode(_ type: String.Type) throws -> String {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readString(&p, l, k) }
    }

    func decode(_ type: Double.Type) throws -> Double {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readDouble(&p, l, k) }
    }

    func decode(_ type: Float.Type) throws -> Float {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readFloat(&p, l, k) }
    }

    func decode(_ type: Int.Type) throws -> Int {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int.self, &p, l, k) }
    }

    func decode(_ type: Int8.Type) throws -> Int8 {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int8.self, &p, l, k) }
    }

    func decode(_ type: Int16.Type) throws -> Int16 {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int16.self, &p, l, k) }
    }

    func decode(_ type: Int32.Type) throws -> Int32 {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int32.self, &p, l, k) }
    }

    func decode(_ type: Int64.Type) throws -> Int64 {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(Int64.self, &p, l, k) }
    }

    func decode(_ type: UInt.Type) throws -> UInt {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt.self, &p, l, k) }
    }

    func decode(_ type: UInt8.Type) throws -> UInt8 {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt8.self, &p, l, k) }
    }

    func decode(_ type: UInt16.Type) throws -> UInt16 {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt16.self, &p, l, k) }
    }

    func decode(_ type: UInt32.Type) throws -> UInt32 {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt32.self, &p, l, k) }
    }

    func decode(_ type: UInt64.Type) throws -> UInt64 {
        try read { r, p, l, k throws(BinaryReadFailure) in try r.readInteger(UInt64.self, &p, l, k) }
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let s = state.takeUnretainedValue()
        var p = position
        do throws(BinaryReadFailure) {
            return try s.reader.decodeFast(T.self, &p, s.reader.count, kind)
        } catch .notHandled {
            // Decoded below.
        } catch {
            throw error.decodingError(s.codingPath(path))
        }
        return try s.decodeInPlace(T.self, at: position, kind: kind, path: path)
    }
}

/// The decoder `superDecoder()` returns: it decodes the value under "super" (or the given key)
/// with the same state as the container it came from. Use it while that container's value is
/// being decoded.
final class BinarySuperDecoder: Decoder {
    let state: Unmanaged<BinaryDecodingState>
    let position: Int
    let kind: UInt8
    let path: BinaryPathRef

    init(state: Unmanaged<BinaryDecodingState>, position: Int, kind: UInt8, path: BinaryPathRef) {
        self.state = state
        self.position = position
        self.kind = kind
        self.path = path
    }

    var codingPath: [any CodingKey] {
        state.takeUnretainedValue().codingPath(path)
    }

    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        let s = state.takeUnretainedValue()
        let bounds: (start: Int, end: Int)
        do throws(BinaryReadFailure) {
            bounds = try s.reader.openKeyed(position, kind)
        } catch {
            throw error.decodingError(s.codingPath(path))
        }
        return s.keyedContainer(bounds, path: path)
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try state.takeUnretainedValue().unkeyedContainer(at: position, kind: kind, path: path)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        BinarySingleValueDecodingContainer(state: state, position: position, kind: kind, path: path)
    }
}
