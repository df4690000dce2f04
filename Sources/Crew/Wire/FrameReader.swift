/// Reassembles frames from a byte stream and parses them into messages.
///
/// Bytes arrive in arbitrary pieces; ``append(from:)`` reads what is available and
/// ``nextPoolMessage()``/``nextWorkerMessage()`` return whole messages until none is complete.
/// Any malformed input (a length over the limit, an unknown type, a body that does not parse)
/// throws ``WireError``: the peer cannot be trusted any more.
struct FrameReader {
    private var storage: [UInt8]
    private var start = 0
    private var end = 0
    let maxFrameSize: Int

    init(maxFrameSize: Int = WireProtocol.defaultMaxFrameSize, initialCapacity: Int = 64 * 1024) {
        self.maxFrameSize = maxFrameSize
        storage = [UInt8](repeating: 0, count: initialCapacity)
    }

    /// Reads once from `fd`. Returns the byte count, 0 at end of stream, or -1 on error.
    mutating func append(from fd: Int32) -> Int {
        reserveSpace()
        let n = storage.withUnsafeMutableBytes { raw in
            SystemIO.readSome(fd, UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
        }
        if n > 0 { end += n }
        return n
    }

    /// Appends bytes directly (for tests and in-memory streams).
    mutating func append(_ bytes: some Collection<UInt8>) {
        reserveSpace(bytes.count)
        storage.replaceSubrange(end..<(end + bytes.count), with: bytes)
        end += bytes.count
    }

    /// Bytes received that do not yet form a whole frame.
    var bufferedCount: Int { end - start }

    private mutating func reserveSpace(_ minimum: Int = 4096) {
        if start == end {
            start = 0
            end = 0
        }
        if storage.count - end >= minimum { return }
        if start > 0 {
            storage.withUnsafeMutableBytes { raw in
                raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: end - start)
            }
            end -= start
            start = 0
        }
        // Grow for a frame whose header says it is larger than what is buffered.
        var wanted = storage.count
        if let length = pendingFrameLength() { wanted = max(wanted, WireProtocol.headerSize - 1 + length) }
        wanted = max(wanted, end + minimum)
        if wanted > storage.count {
            storage.append(contentsOf: repeatElement(0, count: wanted - storage.count))
        }
    }

    private func pendingFrameLength() -> Int? {
        guard end - start >= 4 else { return nil }
        return storage.withUnsafeBytes { raw in
            Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: start, as: UInt32.self)))
        }
    }

    /// The next whole frame's type and body, or nil if none is complete.
    private mutating func nextFrame<R>(_ parse: (MessageType, inout ByteCursor) throws(WireError) -> R) throws(WireError) -> R? {
        guard let length = pendingFrameLength() else { return nil }
        guard length >= 1 else { throw WireError(description: "frame with length 0") }
        guard length <= maxFrameSize else {
            throw WireError(description: "frame of \(length) bytes exceeds the maximum of \(maxFrameSize)")
        }
        guard end - start >= 4 + length else { return nil }
        let typeByte = storage[start + 4]
        guard let type = MessageType(rawValue: typeByte) else {
            throw WireError(description: "unknown message type \(typeByte)")
        }
        let bodyStart = start + 5
        let bodyEnd = start + 4 + length
        start = bodyEnd
        let parsed: Result<R, WireError> = storage.withUnsafeBytes { raw in
            var cursor = ByteCursor(UnsafeRawBufferPointer(rebasing: raw[bodyStart..<bodyEnd]))
            do throws(WireError) {
                return .success(try parse(type, &cursor))
            } catch {
                return .failure(error)
            }
        }
        return try parsed.get()
    }

    /// The next message from a worker, or nil if no whole frame is buffered.
    mutating func nextWorkerMessage() throws(WireError) -> WorkerMessage? {
        try nextFrame { type, body throws(WireError) in
            switch type {
            case .hello:
                guard try body.bytes(4).elementsEqual(WireProtocol.magic) else {
                    throw WireError(description: "hello without the CREW magic")
                }
                let version: UInt16 = try body.integer()
                let pid: Int32 = try body.integer()
                let workerID: UInt64 = try body.integer()
                // Another version's catalog may have another form: the pool refuses it by version.
                guard version == WireProtocol.version else {
                    return .hello(Hello(version: version, processID: pid, workerID: workerID, jobNames: [], jobLayouts: []))
                }
                let count: UInt32 = try body.integer()
                guard Int(count) <= body.remaining / 4 else { throw WireError(description: "hello lists too many jobs") }
                var names: [String] = []
                var layouts: [String] = []
                names.reserveCapacity(Int(count))
                layouts.reserveCapacity(Int(count))
                for _ in 0..<count {
                    names.append(try body.string16())
                    layouts.append(try body.string16())
                }
                try body.expectEnd()
                return .hello(Hello(version: version, processID: pid, workerID: workerID, jobNames: names, jobLayouts: layouts))
            case .result:
                let jobID: UInt64 = try body.integer()
                return .result(jobID: jobID, output: body.rest())
            case .started:
                let jobID: UInt64 = try body.integer()
                try body.expectEnd()
                return .started(jobID: jobID)
            case .recalled:
                let jobID: UInt64 = try body.integer()
                try body.expectEnd()
                return .recalled(jobID: jobID)
            case .failure:
                let jobID: UInt64 = try body.integer()
                let rawKind: UInt8 = try body.integer()
                guard let kind = FailureKind(rawValue: rawKind) else {
                    throw WireError(description: "unknown failure kind \(rawKind)")
                }
                let errorType = try body.string16()
                let message = try body.string32()
                try body.expectEnd()
                return .failure(jobID: jobID, kind: kind, errorType: errorType, message: message)
            default:
                throw WireError(description: "a worker may not send message type \(type)")
            }
        }
    }

    /// The next message from a pool, or nil if no whole frame is buffered.
    mutating func nextPoolMessage() throws(WireError) -> PoolMessage? {
        try nextFrame { type, body throws(WireError) in
            switch type {
            case .run:
                let jobID: UInt64 = try body.integer()
                let flags: UInt8 = try body.integer()
                guard flags & ~7 == 0 else { throw WireError(description: "a run frame with unknown flags \(flags)") }
                let priority: Int64 = flags & 4 != 0 ? try body.integer() : 0
                let name = try body.string16()
                return .run(
                    jobID: jobID, name: name, arguments: body.rest(), announceStart: flags & 1 != 0, timed: flags & 2 != 0,
                    priority: Int(truncatingIfNeeded: priority))
            case .cancel:
                let jobID: UInt64 = try body.integer()
                try body.expectEnd()
                return .cancel(jobID: jobID)
            case .recall:
                let jobID: UInt64 = try body.integer()
                try body.expectEnd()
                return .recall(jobID: jobID)
            case .shutdown:
                try body.expectEnd()
                return .shutdown
            default:
                throw WireError(description: "a pool may not send message type \(type)")
            }
        }
    }
}

/// Bounds-checked reads from a frame body.
struct ByteCursor {
    private let buffer: UnsafeRawBufferPointer
    private var offset = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var remaining: Int { buffer.count - offset }

    mutating func integer<T: FixedWidthInteger>() throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw WireError(description: "frame body too short") }
        let value = T(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += size
        return value
    }

    mutating func bytes(_ count: Int) throws(WireError) -> UnsafeRawBufferPointer {
        guard count >= 0, remaining >= count else { throw WireError(description: "frame body too short") }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + count)])
    }

    mutating func string16() throws(WireError) -> String {
        let count: UInt16 = try integer()
        return String(decoding: try bytes(Int(count)), as: UTF8.self)
    }

    mutating func string32() throws(WireError) -> String {
        let count: UInt32 = try integer()
        return String(decoding: try bytes(Int(count)), as: UTF8.self)
    }

    mutating func rest() -> [UInt8] {
        defer { offset = buffer.count }
        return [UInt8](UnsafeRawBufferPointer(rebasing: buffer[offset...]))
    }

    func expectEnd() throws(WireError) {
        guard remaining == 0 else { throw WireError(description: "\(remaining) unexpected bytes at the end of a frame") }
    }
}
