/// Encodes `Encodable` values in Crew's compact binary format (see BinaryFormat.swift).
///
/// Containers are small structs that append straight into the output bytes. The per-call state
/// comes from a per-thread pool, so a small encode allocates only its output and the boxes the
/// standard library puts around keyed containers.
struct BinaryEncoder: Sendable {
    init() {}

    func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        var bytes: [UInt8] = []
        if BinaryEncodingState.encodeFast(value, into: &bytes) { return bytes }
        bytes.reserveCapacity(128)
        try encodeWithState(value, into: &bytes)
        return bytes
    }

    /// Appends the encoding of `value` to `buffer` (used to build a frame in place, no extra copy).
    /// On error `buffer` is left as it was.
    func encode<T: Encodable>(_ value: T, into buffer: inout [UInt8]) throws {
        if BinaryEncodingState.encodeFast(value, into: &buffer) { return }
        try encodeWithState(value, into: &buffer)
    }

    private func encodeWithState<T: Encodable>(_ value: T, into buffer: inout [UInt8]) throws {
        let mark = buffer.count
        let state = BinaryEncodingState.acquire(root: mark)
        defer { BinaryEncodingState.release(state) }
        swap(&buffer, &state.bytes)
        do {
            try state.encodeRoot(value)
        } catch {
            swap(&buffer, &state.bytes)
            if buffer.count > mark { buffer.removeSubrange(mark...) }
            throw error
        }
        swap(&buffer, &state.bytes)
    }
}

/// The state of one encode, and the `Encoder` of the value being encoded at the moment.
///
/// Containers are written in place: a container's header reserves one byte for its length (two
/// for unkeyed containers: length and count), filled in when the container closes (moving the
/// contents in the rare case the varints need more room). Open containers form a stack of
/// frames; a value slot (the place one value goes) becomes a container's frame when the value
/// asks for one. Writing to a container closes every frame above it, so the usual nested use
/// works; writing to a container that was already closed is an error.
///
/// Containers refer to the state without retaining it (`Unmanaged`): states are never freed
/// while their thread lives (see `BinaryStatePool`), and a container kept past its encode finds
/// its frame gone, since frames carry the encode's generation.
final class BinaryEncodingState: Encoder {
    enum Kind: UInt8 {
        /// A value slot nothing has been written to yet.
        case empty
        case keyed
        case unkeyed
        /// A slot holding a single value, complete.
        case single
    }

    struct Frame {
        /// The offset of the frame's tag byte (for an empty slot: where its value will go).
        var start: Int
        /// `start` and the encode's generation: what containers know the frame by.
        var id: Int
        var kind: Kind
        /// Elements written, for unkeyed containers.
        var count: Int
        /// The frame's coding path: the first `pathDepth` keys of `path` when `key` is nil,
        /// otherwise the path of frame `parent` followed by `key` (a nested container's, or a
        /// super encoder's).
        var pathDepth: Int
        var parent: Int
        var key: (any CodingKey)?
    }

    /// A frame no container can name (containers made after a misuse use it).
    static let invalidFrame = Int.min

    @exclusivity(unchecked) var bytes: [UInt8] = []
    @exclusivity(unchecked) var frames: [Frame] = []
    @exclusivity(unchecked) var path: [any CodingKey] = []
    /// The frame of the value this object currently encodes, as an `Encoder`.
    @exclusivity(unchecked) var currentSlot = 0
    @exclusivity(unchecked) var depth = 0
    @exclusivity(unchecked) var generation = 0
    /// The first misuse of a container, thrown when the value ends; `failed` says there is one
    /// (checking an optional `EncodingError` costs more, it is a resilient type).
    @exclusivity(unchecked) var failure: EncodingError?
    @exclusivity(unchecked) var failed = false

    private init() {
        frames.reserveCapacity(8)
    }

    private static let pool = BinaryThreadLocal<BinaryStatePool<BinaryEncodingState>>()

    /// A state for a new encode whose value starts at offset `start`.
    static func acquire(root start: Int) -> BinaryEncodingState {
        let state = pool.get(orMake: BinaryStatePool.init)._withUnsafeGuaranteedRef { pool in
            pool.free.popLast() ?? BinaryEncodingState()
        }
        state.generation = (state.generation &+ 1) & 0x7FFF
        if state.failed {
            state.failed = false
            state.failure = nil
        }
        state.frames.append(state.slotFrame(start: start, pathDepth: 0))
        return state
    }

    /// Puts `state` back in this thread's pool.
    static func release(_ state: BinaryEncodingState) {
        if !state.frames.isEmpty || state.frames.capacity > 64 { state.frames = [] }
        if !state.path.isEmpty { state.path = [] }
        if state.bytes.capacity > 0 { state.bytes = [] }
        state.currentSlot = 0
        state.depth = 0
        pool.get(orMake: BinaryStatePool.init)._withUnsafeGuaranteedRef { $0.free.append(state) }
    }

    // MARK: Encoder

    var codingPath: [any CodingKey] { path }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        keyedContainer(slot: currentSlot, id: slotID(currentSlot))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        unkeyedContainer(slot: currentSlot, id: slotID(currentSlot))
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        BinarySingleValueEncodingContainer(state: Unmanaged.passUnretained(self), frame: currentSlot, id: slotID(currentSlot))
    }

    // MARK: Frames

    func frameID(_ start: Int) -> Int {
        start | generation << 48
    }

    func slotFrame(start: Int, pathDepth: Int) -> Frame {
        Frame(start: start, id: frameID(start), kind: .empty, count: 0, pathDepth: pathDepth, parent: -1, key: nil)
    }

    func slotID(_ slot: Int) -> Int {
        slot >= 0 && slot < frames.count ? frames[slot].id : -1
    }

    /// Whether frame `frame` is open and is the one a container knows as `id`.
    @inline(__always)
    func isOpen(_ frame: Int, _ id: Int) -> Bool {
        frame >= 0 && frame < frames.count && frames[frame].id == id
    }

    func keyedContainer<Key: CodingKey>(slot: Int, id: Int) -> KeyedEncodingContainer<Key> {
        let ok = open(slot: slot, id: id, as: .keyed)
        return KeyedEncodingContainer(BinaryKeyedEncodingContainer<Key>(
            state: Unmanaged.passUnretained(self), frame: ok ? slot : Self.invalidFrame, id: id))
    }

    func unkeyedContainer(slot: Int, id: Int) -> any UnkeyedEncodingContainer {
        let ok = open(slot: slot, id: id, as: .unkeyed)
        return BinaryUnkeyedEncodingContainer(state: Unmanaged.passUnretained(self), frame: ok ? slot : Self.invalidFrame, id: id)
    }

    /// Turns the value slot `slot` into a container of `kind` (or finds it already is one).
    func open(slot: Int, id: Int, as kind: Kind) -> Bool {
        guard isOpen(slot, id) else {
            fail("A container was requested from an encoder whose value is already complete.")
            return false
        }
        let existing = frames[slot].kind
        if existing == kind { return true }
        guard existing == .empty else {
            fail("Cannot encode a \(kind) container where a \(existing) value was already encoded.")
            return false
        }
        closeFrames(downTo: slot + 1)
        guard bytes.count == frames[slot].start else {
            fail("A container was requested from an encoder whose value is already complete.")
            return false
        }
        appendHeader(kind)
        frames[slot].kind = kind
        return true
    }

    @inline(__always)
    func appendHeader(_ kind: Kind) {
        switch kind {
        case .keyed:
            bytes.append(BinaryFormat.tagKeyed)
            bytes.append(0)
        case .unkeyed:
            bytes.append(BinaryFormat.tagUnkeyed)
            bytes.append(0)
            bytes.append(0)
        case .empty, .single:
            break
        }
    }

    /// Makes frame `frame` (known to its container as `id`) the innermost open one, closing any
    /// frame above it; false when that frame is no longer open.
    @inline(__always)
    func prepareWrite(_ frame: Int, _ id: Int) -> Bool {
        if frame == frames.count &- 1 && frames[frame].id == id { return true }
        return prepareWriteSlow(frame, id)
    }

    @inline(never)
    func prepareWriteSlow(_ frame: Int, _ id: Int) -> Bool {
        guard isOpen(frame, id) else {
            fail("A container was used after the value it belongs to was complete, or after a sibling container was used.")
            return false
        }
        closeFrames(downTo: frame + 1)
        return true
    }

    /// The error a container throws when `prepareWrite` fails.
    func misuseError() -> EncodingError {
        failure ?? EncodingError.invalidValue((), .init(codingPath: path, debugDescription: "Invalid use of an encoding container."))
    }

    func fail(_ message: String) {
        if !failed {
            failed = true
            failure = EncodingError.invalidValue((), .init(codingPath: path, debugDescription: message))
        }
    }

    /// Pushes a new frame nested in `parent` under `key`, writing its header.
    func pushFrame(_ kind: Kind, parent: Int, key: any CodingKey) -> (frame: Int, id: Int) {
        // Nested containers and super encoders do not go through `encodeNested`; bound them too
        // (encoding through super encoders recurses).
        guard frames.count < 2 * BinaryFormat.maxDepth else {
            fail("Containers nest more than \(2 * BinaryFormat.maxDepth) deep.")
            return (Self.invalidFrame, -1)
        }
        let start = bytes.count
        let id = frameID(start)
        frames.append(Frame(start: start, id: id, kind: kind, count: 0, pathDepth: 0, parent: parent, key: key))
        appendHeader(kind)
        return (frames.count - 1, id)
    }

    func closeFrames(downTo n: Int) {
        while frames.count > n {
            let frame = frames.removeLast()
            switch frame.kind {
            case .empty:
                // Nothing was encoded: an empty keyed container, like an empty struct.
                bytes.append(BinaryFormat.tagKeyed)
                bytes.append(0)
            case .keyed:
                let length = bytes.count - (frame.start + 2)
                if length < 0x80 {
                    bytes[frame.start + 1] = UInt8(truncatingIfNeeded: length)
                } else {
                    patchHeader(at: frame.start + 1, reserved: 1, length: length, count: nil)
                }
            case .unkeyed:
                let length = bytes.count - (frame.start + 3)
                if length < 0x7F && frame.count < 0x80 {
                    bytes[frame.start + 1] = UInt8(truncatingIfNeeded: length + 1)
                    bytes[frame.start + 2] = UInt8(truncatingIfNeeded: frame.count)
                } else {
                    patchHeader(at: frame.start + 1, reserved: 2, length: length, count: frame.count)
                }
            case .single:
                break
            }
        }
    }

    /// Writes a container header that did not fit its reserved bytes, moving the contents.
    @inline(never)
    func patchHeader(at offset: Int, reserved: Int, length contentLength: Int, count: Int?) {
        var header: [UInt8] = []
        var length = contentLength
        if let count {
            length += BinaryFormat.varintSize(UInt64(count))
        }
        header.binaryAppendVarint(UInt64(length))
        if let count { header.binaryAppendVarint(UInt64(count)) }
        let grow = header.count - reserved
        if grow > 0 {
            bytes.insert(contentsOf: repeatElement(0, count: grow), at: offset + reserved)
        }
        bytes.replaceSubrange(offset ..< offset + header.count, with: header)
    }

    func codingPath(frame: Int, id: Int) -> [any CodingKey] {
        isOpen(frame, id) ? codingPath(frame: frame) : path
    }

    /// The coding path of frame `frame` (which must exist).
    func codingPath(frame: Int) -> [any CodingKey] {
        var keys: [any CodingKey] = []
        var index = frame
        while let key = frames[index].key {
            keys.append(key)
            index = frames[index].parent
        }
        let base = frames[index].pathDepth == path.count ? path : Array(path.prefix(frames[index].pathDepth))
        return keys.isEmpty ? base : base + keys.reversed()
    }

    /// Whether the path of frame `frame` is exactly `path`, so a nested value's path is `path`
    /// plus its key.
    @inline(__always)
    func hasSimplePath(_ frame: Int) -> Bool {
        frames[frame].key == nil && frames[frame].pathDepth == path.count
    }

    // MARK: Values

    func encodeRoot<T: Encodable>(_ value: T) throws {
        depth = 1
        currentSlot = 0
        try value.encode(to: self)
        closeFrames(downTo: 0)
        if failed { throw misuseError() }
    }

    /// Encodes `value` as a new value nested in frame `parent` under `key`; `mark` is where
    /// the entry began, for cleaning up after an error.
    func encodeNested<T: Encodable>(_ value: T, key: any CodingKey, parent: Int, mark: Int) throws {
        let simplePath = hasSimplePath(parent)
        var savedPath: [any CodingKey] = []
        if simplePath {
            path.append(key)
        } else {
            savedPath = path
            path = codingPath(frame: parent) + [key]
        }
        defer {
            if simplePath { path.removeLast() } else { path = savedPath }
        }
        guard depth < BinaryFormat.maxDepth else {
            bytes.removeSubrange(mark...)
            throw EncodingError.invalidValue(value, .init(codingPath: path, debugDescription: "Values nest more than \(BinaryFormat.maxDepth) deep."))
        }
        let slot = frames.count
        frames.append(slotFrame(start: bytes.count, pathDepth: path.count))
        let savedSlot = currentSlot
        currentSlot = slot
        depth += 1
        defer {
            depth -= 1
            currentSlot = savedSlot
        }
        do {
            try value.encode(to: self)
        } catch {
            if frames.count > slot { frames.removeSubrange(slot...) }
            if bytes.count > mark { bytes.removeSubrange(mark...) }
            throw error
        }
        closeFrames(downTo: slot)
        if failed { throw misuseError() }
    }

    /// Encodes `value` into the existing, still empty slot `slot` (a single value container's
    /// generic `encode`, or a super encoder's).
    func encodeInSlot<T: Encodable>(_ value: T, slot: Int, id: Int) throws {
        guard isOpen(slot, id) else { throw misuseError() }
        let start = frames[slot].start
        // Containers in the slot find their path from the frame; make it plain `path` meanwhile.
        let simplePath = hasSimplePath(slot)
        var savedPath: [any CodingKey] = []
        let savedFrame = frames[slot]
        if !simplePath {
            savedPath = path
            path = codingPath(frame: slot)
            frames[slot].pathDepth = path.count
            frames[slot].key = nil
        }
        let savedSlot = currentSlot
        currentSlot = slot
        depth += 1
        defer {
            depth -= 1
            currentSlot = savedSlot
            if !simplePath {
                path = savedPath
                if isOpen(slot, id) {
                    frames[slot].pathDepth = savedFrame.pathDepth
                    frames[slot].key = savedFrame.key
                }
            }
        }
        guard depth <= BinaryFormat.maxDepth else {
            throw EncodingError.invalidValue(value, .init(codingPath: path, debugDescription: "Values nest more than \(BinaryFormat.maxDepth) deep."))
        }
        do {
            try value.encode(to: self)
        } catch {
            if frames.count > slot + 1 { frames.removeSubrange((slot + 1)...) }
            if isOpen(slot, id) { frames[slot].kind = .empty }
            if bytes.count > start { bytes.removeSubrange(start...) }
            throw error
        }
        if failed { throw misuseError() }
    }

    // MARK: Writing

    /// Starts an entry of the keyed container `frame`: makes it the innermost, writes `key`.
    @inline(__always)
    func beginEntry(_ frame: Int, _ id: Int, _ key: String) throws {
        guard prepareWrite(frame, id) else { throw misuseError() }
        appendKey(key)
    }

    @inline(__always)
    func appendKey(_ key: String) {
        let done: Void? = key.utf8.withContiguousStorageIfAvailable { utf8 in
            bytes.binaryAppendVarint(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
        if done == nil {
            var key = key
            key.withUTF8 { utf8 in
                bytes.binaryAppendVarint(UInt64(utf8.count))
                bytes.append(contentsOf: utf8)
            }
        }
    }

    /// Writes `value` directly when it is a primitive, a bulk array, or `PlainData` (or an
    /// array of it); false for everything else.
    static func encodeFast<T: Encodable>(_ value: borrowing T, into bytes: inout [UInt8]) -> Bool {
        // Every fast type is at most 16 bytes (a String); most structs are larger.
        if MemoryLayout<T>.size > 16 { return encodePlain(value, into: &bytes) }
        let id = ObjectIdentifier(T.self)
        let types = BinaryFastTypes.shared
        if id == types.string {
            reinterpret(value, as: String.self) { appendString($0, into: &bytes) }
        } else if id == types.int {
            appendSigned(Int64(unsafeBitCast(copy value, to: Int.self)), into: &bytes)
        } else if id == types.double {
            appendDouble(unsafeBitCast(copy value, to: Double.self), into: &bytes)
        } else if id == types.bool {
            bytes.append(unsafeBitCast(copy value, to: Bool.self) ? BinaryFormat.tagTrue : BinaryFormat.tagFalse)
        } else if id == types.uint8Array {
            reinterpret(value, as: [UInt8].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.doubleArray {
            reinterpret(value, as: [Double].self) { appendFloats($0, into: &bytes) }
        } else if id == types.intArray {
            reinterpret(value, as: [Int].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.int64 {
            appendSigned(unsafeBitCast(copy value, to: Int64.self), into: &bytes)
        } else if id == types.uint64 {
            appendUnsigned(unsafeBitCast(copy value, to: UInt64.self), into: &bytes)
        } else if id == types.uint {
            appendUnsigned(UInt64(unsafeBitCast(copy value, to: UInt.self)), into: &bytes)
        } else if id == types.int32 {
            appendSigned(Int64(unsafeBitCast(copy value, to: Int32.self)), into: &bytes)
        } else if id == types.uint32 {
            appendUnsigned(UInt64(unsafeBitCast(copy value, to: UInt32.self)), into: &bytes)
        } else if id == types.float {
            appendFloat(unsafeBitCast(copy value, to: Float.self), into: &bytes)
        } else if id == types.uint8 {
            appendUnsigned(UInt64(unsafeBitCast(copy value, to: UInt8.self)), into: &bytes)
        } else if id == types.int8 {
            appendSigned(Int64(unsafeBitCast(copy value, to: Int8.self)), into: &bytes)
        } else if id == types.int16 {
            appendSigned(Int64(unsafeBitCast(copy value, to: Int16.self)), into: &bytes)
        } else if id == types.uint16 {
            appendUnsigned(UInt64(unsafeBitCast(copy value, to: UInt16.self)), into: &bytes)
        } else if id == types.floatArray {
            reinterpret(value, as: [Float].self) { appendFloats($0, into: &bytes) }
        } else if id == types.int8Array {
            reinterpret(value, as: [Int8].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.uintArray {
            reinterpret(value, as: [UInt].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.int64Array {
            reinterpret(value, as: [Int64].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.uint64Array {
            reinterpret(value, as: [UInt64].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.int32Array {
            reinterpret(value, as: [Int32].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.uint32Array {
            reinterpret(value, as: [UInt32].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.int16Array {
            reinterpret(value, as: [Int16].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.uint16Array {
            reinterpret(value, as: [UInt16].self) { appendIntegers($0, into: &bytes) }
        } else if id == types.uint8ContiguousArray {
            reinterpret(value, as: ContiguousArray<UInt8>.self) { array in
                reserveForBulk(array.count, in: &bytes)
                bytes.append(BinaryFormat.tagBulkUInt8)
                bytes.binaryAppendVarint(UInt64(array.count))
                array.withUnsafeBytes { bytes.append(contentsOf: $0) }
            }
        } else {
            return encodePlain(value, into: &bytes)
        }
        return true
    }

    /// Calls `body` with `value`, which is a `U`, in place (`unsafeBitCast` would copy it: a
    /// retain and a release, for a string or an array).
    @inline(__always)
    static func reinterpret<T, U>(_ value: borrowing T, as type: U.Type, _ body: (borrowing U) -> Void) {
        withUnsafePointer(to: value) { pointer in
            UnsafeRawPointer(pointer).withMemoryRebound(to: U.self, capacity: 1) { body($0.pointee) }
        }
    }

    @inline(__always)
    static func appendSigned(_ value: Int64, into bytes: inout [UInt8]) {
        bytes.append(BinaryFormat.tagSInt)
        bytes.binaryAppendVarint(BinaryFormat.zigzag(value))
    }

    @inline(__always)
    static func appendUnsigned(_ value: UInt64, into bytes: inout [UInt8]) {
        bytes.append(BinaryFormat.tagUInt)
        bytes.binaryAppendVarint(value)
    }

    @inline(__always)
    static func appendDouble(_ value: Double, into bytes: inout [UInt8]) {
        bytes.append(BinaryFormat.tagFloat64)
        bytes.binaryAppendFixed(value.bitPattern)
    }

    @inline(__always)
    static func appendFloat(_ value: Float, into bytes: inout [UInt8]) {
        bytes.append(BinaryFormat.tagFloat32)
        bytes.binaryAppendFixed(value.bitPattern)
    }

    @inline(__always)
    static func appendString(_ value: borrowing String, into bytes: inout [UInt8]) {
        let done: Void? = value.utf8.withContiguousStorageIfAvailable { utf8 in
            bytes.append(BinaryFormat.tagString)
            bytes.binaryAppendVarint(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
        if done == nil {
            var value = copy value
            value.withUTF8 { utf8 in
                bytes.append(BinaryFormat.tagString)
                bytes.binaryAppendVarint(UInt64(utf8.count))
                bytes.append(contentsOf: utf8)
            }
        }
    }

    /// Reserves room for a bulk array when it is the whole encoding (so the output is allocated
    /// once, at its final size); inside containers the array grows as usual.
    @inline(__always)
    static func reserveForBulk(_ byteCount: Int, in bytes: inout [UInt8]) {
        if bytes.isEmpty { bytes.reserveCapacity(byteCount + 11) }
    }

    static func appendIntegers<I: FixedWidthInteger>(_ array: borrowing [I], into bytes: inout [UInt8]) {
        reserveForBulk(array.count * MemoryLayout<I>.size, in: &bytes)
        bytes.append(BinaryFormat.bulkTag(for: I.self))
        bytes.binaryAppendVarint(UInt64(array.count))
        #if _endian(little)
        array.withUnsafeBytes { bytes.append(contentsOf: $0) }
        #else
        for element in array { bytes.binaryAppendFixed(element) }
        #endif
    }

    static func appendFloats<F: BinaryFloatingPoint>(_ array: borrowing [F], into bytes: inout [UInt8]) {
        reserveForBulk(array.count * MemoryLayout<F>.size, in: &bytes)
        bytes.append(MemoryLayout<F>.size == 4 ? BinaryFormat.tagBulkFloat32 : BinaryFormat.tagBulkFloat64)
        bytes.binaryAppendVarint(UInt64(array.count))
        #if _endian(little)
        array.withUnsafeBytes { bytes.append(contentsOf: $0) }
        #else
        for element in array {
            if let d = element as? Double { bytes.binaryAppendFixed(d.bitPattern) }
            else if let f = element as? Float { bytes.binaryAppendFixed(f.bitPattern) }
        }
        #endif
    }
}

// MARK: - Containers

struct BinaryKeyedEncodingContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let state: Unmanaged<BinaryEncodingState>
    let frame: Int
    let id: Int

    var codingPath: [any CodingKey] {
        state.takeUnretainedValue().codingPath(frame: frame, id: id)
    }

    mutating func encodeNil(forKey key: Key) throws {
        let s = state.takeUnretainedValue()
        try s.beginEntry(frame, id, key.stringValue)
        s.bytes.append(BinaryFormat.tagNil)
    }

    mutating func encode(_ value: Bool, forKey key: Key) throws {
        let s = state.takeUnretainedValue()
        try s.beginEntry(frame, id, key.stringValue)
        s.bytes.append(value ? BinaryFormat.tagTrue : BinaryFormat.tagFalse)
    }

    mutating func encode(_ value: String, forKey key: Key) throws {
        let s = state.takeUnretainedValue()
        try s.beginEntry(frame, id, key.stringValue)
        BinaryEncodingState.appendString(value, into: &s.bytes)
    }

    mutating func encode(_ value: Double, forKey key: Key) throws {
        let s = state.takeUnretainedValue()
        try s.beginEntry(frame, id, key.stringValue)
        BinaryEncodingState.appendDouble(value, into: &s.bytes)
    }

    mutating func encode(_ value: Float, forKey key: Key) throws {
        let s = state.takeUnretainedValue()
        try s.beginEntry(frame, id, key.stringValue)
        BinaryEncodingState.appendFloat(value, into: &s.bytes)
    }

    mutating func encode(_ value: Int, forKey key: Key) throws {
        try encodeSigned(Int64(value), key)
    }

    mutating func encode(_ value: Int8, forKey key: Key) throws {
        try encodeSigned(Int64(value), key)
    }

    mutating func encode(_ value: Int16, forKey key: Key) throws {
        try encodeSigned(Int64(value), key)
    }

    mutating func encode(_ value: Int32, forKey key: Key) throws {
        try encodeSigned(Int64(value), key)
    }

    mutating func encode(_ value: Int64, forKey key: Key) throws {
        try encodeSigned(value, key)
    }

    mutating func encode(_ value: UInt, forKey key: Key) throws {
        try encodeUnsigned(UInt64(value), key)
    }

    mutating func encode(_ value: UInt8, forKey key: Key) throws {
        try encodeUnsigned(UInt64(value), key)
    }

    mutating func encode(_ value: UInt16, forKey key: Key) throws {
        try encodeUnsigned(UInt64(value), key)
    }

    mutating func encode(_ value: UInt32, forKey key: Key) throws {
        try encodeUnsigned(UInt64(value), key)
    }

    mutating func encode(_ value: UInt64, forKey key: Key) throws {
        try encodeUnsigned(value, key)
    }

    @inline(__always)
    private func encodeSigned(_ value: Int64, _ key: Key) throws {
        let s = state.takeUnretainedValue()
        try s.beginEntry(frame, id, key.stringValue)
        BinaryEncodingState.appendSigned(value, into: &s.bytes)
    }

    @inline(__always)
    private func encodeUnsigned(_ value: UInt64, _ key: Key) throws {
        let s = state.takeUnretainedValue()
        try s.beginEntry(frame, id, key.stringValue)
        BinaryEncodingState.appendUnsigned(value, into: &s.bytes)
    }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        let s = state.takeUnretainedValue()
        guard s.prepareWrite(frame, id) else { throw s.misuseError() }
        let mark = s.bytes.count
        s.appendKey(key.stringValue)
        if BinaryEncodingState.encodeFast(value, into: &s.bytes) { return }
        try s.encodeNested(value, key: key, parent: frame, mark: mark)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        let nested = push(.keyed, key: key, keyString: key.stringValue)
        return KeyedEncodingContainer(BinaryKeyedEncodingContainer<NestedKey>(state: state, frame: nested.frame, id: nested.id))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let nested = push(.unkeyed, key: key, keyString: key.stringValue)
        return BinaryUnkeyedEncodingContainer(state: state, frame: nested.frame, id: nested.id)
    }

    mutating func superEncoder() -> any Encoder {
        let slot = push(.empty, key: BinaryStringKey.super, keyString: "super")
        return BinarySuperEncoder(state: state, slot: slot.frame, id: slot.id)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let slot = push(.empty, key: key, keyString: key.stringValue)
        return BinarySuperEncoder(state: state, slot: slot.frame, id: slot.id)
    }

    /// Writes `keyString` and pushes a frame of `kind` for its value.
    private func push(_ kind: BinaryEncodingState.Kind, key: any CodingKey, keyString: String) -> (frame: Int, id: Int) {
        let s = state.takeUnretainedValue()
        guard s.prepareWrite(frame, id) else { return (BinaryEncodingState.invalidFrame, -1) }
        s.appendKey(keyString)
        return s.pushFrame(kind, parent: frame, key: key)
    }
}

struct BinaryUnkeyedEncodingContainer: UnkeyedEncodingContainer {
    let state: Unmanaged<BinaryEncodingState>
    let frame: Int
    let id: Int

    var codingPath: [any CodingKey] {
        state.takeUnretainedValue().codingPath(frame: frame, id: id)
    }

    var count: Int {
        let s = state.takeUnretainedValue()
        return s.isOpen(frame, id) ? s.frames[frame].count : 0
    }

    /// Makes this container the innermost open one, counts the element about to be written, and
    /// gives `body` the output.
    @inline(__always)
    private func write(_ body: (inout [UInt8]) -> Void) throws {
        let s = state.takeUnretainedValue()
        guard s.prepareWrite(frame, id) else { throw s.misuseError() }
        s.frames[frame].count += 1
        body(&s.bytes)
    }

    mutating func encodeNil() throws {
        try write { $0.append(BinaryFormat.tagNil) }
    }

    mutating func encode(_ value: Bool) throws {
        try write { $0.append(value ? BinaryFormat.tagTrue : BinaryFormat.tagFalse) }
    }

    mutating func encode(_ value: String) throws {
        try write { BinaryEncodingState.appendString(value, into: &$0) }
    }

    mutating func encode(_ value: Double) throws {
        try write { BinaryEncodingState.appendDouble(value, into: &$0) }
    }

    mutating func encode(_ value: Float) throws {
        try write { BinaryEncodingState.appendFloat(value, into: &$0) }
    }

    mutating func encode(_ value: Int) throws {
        try write { BinaryEncodingState.appendSigned(Int64(value), into: &$0) }
    }

    mutating func encode(_ value: Int8) throws {
        try write { BinaryEncodingState.appendSigned(Int64(value), into: &$0) }
    }

    mutating func encode(_ value: Int16) throws {
        try write { BinaryEncodingState.appendSigned(Int64(value), into: &$0) }
    }

    mutating func encode(_ value: Int32) throws {
        try write { BinaryEncodingState.appendSigned(Int64(value), into: &$0) }
    }

    mutating func encode(_ value: Int64) throws {
        try write { BinaryEncodingState.appendSigned(value, into: &$0) }
    }

    mutating func encode(_ value: UInt) throws {
        try write { BinaryEncodingState.appendUnsigned(UInt64(value), into: &$0) }
    }

    mutating func encode(_ value: UInt8) throws {
        try write { BinaryEncodingState.appendUnsigned(UInt64(value), into: &$0) }
    }

    mutating func encode(_ value: UInt16) throws {
        try write { BinaryEncodingState.appendUnsigned(UInt64(value), into: &$0) }
    }

    mutating func encode(_ value: UInt32) throws {
        try write { BinaryEncodingState.appendUnsigned(UInt64(value), into: &$0) }
    }

    mutating func encode(_ value: UInt64) throws {
        try write { BinaryEncodingState.appendUnsigned(value, into: &$0) }
    }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let s = state.takeUnretainedValue()
        guard s.prepareWrite(frame, id) else { throw s.misuseError() }
        if BinaryEncodingState.encodeFast(value, into: &s.bytes) {
            s.frames[frame].count += 1
            return
        }
        let index = s.frames[frame].count
        try s.encodeNested(value, key: BinaryIndexKey(index), parent: frame, mark: s.bytes.count)
        s.frames[frame].count += 1
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let nested = push(.keyed)
        return KeyedEncodingContainer(BinaryKeyedEncodingContainer<NestedKey>(state: state, frame: nested.frame, id: nested.id))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let nested = push(.unkeyed)
        return BinaryUnkeyedEncodingContainer(state: state, frame: nested.frame, id: nested.id)
    }

    mutating func superEncoder() -> any Encoder {
        let slot = push(.empty)
        return BinarySuperEncoder(state: state, slot: slot.frame, id: slot.id)
    }

    /// Counts a new element and pushes a frame of `kind` for it.
    private func push(_ kind: BinaryEncodingState.Kind) -> (frame: Int, id: Int) {
        let s = state.takeUnretainedValue()
        guard s.prepareWrite(frame, id) else { return (BinaryEncodingState.invalidFrame, -1) }
        let index = s.frames[frame].count
        s.frames[frame].count += 1
        return s.pushFrame(kind, parent: frame, key: BinaryIndexKey(index))
    }
}

struct BinarySingleValueEncodingContainer: SingleValueEncodingContainer {
    let state: Unmanaged<BinaryEncodingState>
    let frame: Int
    let id: Int

    var codingPath: [any CodingKey] {
        state.takeUnretainedValue().codingPath(frame: frame, id: id)
    }

    /// Checks that this slot is open and still empty.
    @inline(__always)
    private func check(_ s: BinaryEncodingState) throws {
        guard s.prepareWrite(frame, id) else { throw s.misuseError() }
        guard s.frames[frame].kind == .empty, s.bytes.count == s.frames[frame].start else {
            throw EncodingError.invalidValue((), .init(codingPath: s.codingPath(frame: frame), debugDescription: "A single value container already holds a value."))
        }
    }

    /// Writes the slot's value with `body`.
    @inline(__always)
    private func write(_ body: (inout [UInt8]) -> Void) throws {
        let s = state.takeUnretainedValue()
        try check(s)
        s.frames[frame].kind = .single
        body(&s.bytes)
    }

    mutating func encodeNil() throws {
        try write { $0.append(BinaryFormat.tagNil) }
    }

    mutating func encode(_ value: Bool) throws {
        try write { $0.append(value ? BinaryFormat.tagTrue : BinaryFormat.tagFalse) }
    }

    mutating func encode(_ value: String) throws {
        try write { BinaryEncodingState.appendString(value, into: &$0) }
    }

    mutating func encode(_ value: Double) throws {
        try write { BinaryEncodingState.appendDouble(value, into: &$0) }
    }

    mutating func encode(_ value: Float) throws {
        try write { BinaryEncodingState.appendFloat(value, into: &$0) }
    }

    mutating func encode(_ value: Int) throws {
        try write { BinaryEncodingState.appendSigned(Int64(value), into: &$0) }
    }

    mutating func encode(_ value: Int8) throws {
        try write { BinaryEncodingState.appendSigned(Int64(value), into: &$0) }
    }

    mutating func encode(_ value: Int16) throws {
        try write { BinaryEncodingState.appendSigned(Int64(value), into: &$0) }
    }

    mutating func encode(_ value: Int32) throws {
        try write { BinaryEncodingState.appendSigned(Int64(value), into: &$0) }
    }

    mutating func encode(_ value: Int64) throws {
        try write { BinaryEncodingState.appendSigned(value, into: &$0) }
    }

    mutating func encode(_ value: UInt) throws {
        try write { BinaryEncodingState.appendUnsigned(UInt64(value), into: &$0) }
    }

    mutating func encode(_ value: UInt8) throws {
        try write { BinaryEncodingState.appendUnsigned(UInt64(value), into: &$0) }
    }

    mutating func encode(_ value: UInt16) throws {
        try write { BinaryEncodingState.appendUnsigned(UInt64(value), into: &$0) }
    }

    mutating func encode(_ value: UInt32) throws {
        try write { BinaryEncodingState.appendUnsigned(UInt64(value), into: &$0) }
    }

    mutating func encode(_ value: UInt64) throws {
        try write { BinaryEncodingState.appendUnsigned(value, into: &$0) }
    }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let s = state.takeUnretainedValue()
        try check(s)
        if BinaryEncodingState.encodeFast(value, into: &s.bytes) {
            s.frames[frame].kind = .single
            return
        }
        try s.encodeInSlot(value, slot: frame, id: id)
    }
}

/// The encoder `superEncoder()` returns: it encodes into a slot reserved in its container.
/// Use it before writing anything else to that container.
final class BinarySuperEncoder: Encoder {
    let state: Unmanaged<BinaryEncodingState>
    let slot: Int
    let id: Int

    init(state: Unmanaged<BinaryEncodingState>, slot: Int, id: Int) {
        self.state = state
        self.slot = slot
        self.id = id
    }

    var codingPath: [any CodingKey] {
        state.takeUnretainedValue().codingPath(frame: slot, id: id)
    }

    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        state.takeUnretainedValue().keyedContainer(slot: slot, id: id)
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        state.takeUnretainedValue().unkeyedContainer(slot: slot, id: id)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        BinarySingleValueEncodingContainer(state: state, frame: slot, id: id)
    }
}
