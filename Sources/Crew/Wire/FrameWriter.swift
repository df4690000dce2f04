/// Appends frames to a byte buffer. Messages are built in place: one allocation per batch.
struct FrameWriter {
    var bytes: [UInt8]

    init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Starts a frame; returns the offset of its length field, for ``finishFrame(at:)``.
    mutating func beginFrame(_ type: MessageType) -> Int {
        let start = bytes.count
        bytes.append(contentsOf: [0, 0, 0, 0, type.rawValue])
        return start
    }

    /// Fills in the length of the frame started at `start`.
    mutating func finishFrame(at start: Int) {
        let length = UInt32(bytes.count - start - 4)
        bytes[start] = UInt8(truncatingIfNeeded: length)
        bytes[start + 1] = UInt8(truncatingIfNeeded: length >> 8)
        bytes[start + 2] = UInt8(truncatingIfNeeded: length >> 16)
        bytes[start + 3] = UInt8(truncatingIfNeeded: length >> 24)
    }

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func appendString16(_ string: String) {
        var string = string
        string.withUTF8 { utf8 in
            let count = min(utf8.count, Int(UInt16.max))
            append(UInt16(count))
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[..<count]))
        }
    }

    mutating func appendString32(_ string: String) {
        var string = string
        string.withUTF8 { utf8 in
            append(UInt32(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    mutating func write(_ message: PoolMessage) {
        switch message {
        case .run(let jobID, let name, let arguments, let announceStart, let timed, let priority):
            let start = beginFrame(.run)
            append(jobID)
            append(UInt8(announceStart ? 1 : 0) | UInt8(timed ? 2 : 0) | UInt8(priority != 0 ? 4 : 0))
            if priority != 0 { append(Int64(priority)) }
            appendString16(name)
            bytes.append(contentsOf: arguments)
            finishFrame(at: start)
        case .cancel(let jobID):
            let start = beginFrame(.cancel)
            append(jobID)
            finishFrame(at: start)
        case .recall(let jobID):
            let start = beginFrame(.recall)
            append(jobID)
            finishFrame(at: start)
        case .shutdown:
            finishFrame(at: beginFrame(.shutdown))
        }
    }

    mutating func write(_ message: WorkerMessage) {
        switch message {
        case .hello(let hello):
            let start = beginFrame(.hello)
            bytes.append(contentsOf: WireProtocol.magic)
            append(hello.version)
            append(hello.processID)
            append(hello.workerID)
            append(UInt32(hello.jobNames.count))
            precondition(hello.jobNames.count == hello.jobLayouts.count, "a layout per job name")
            for (name, layout) in zip(hello.jobNames, hello.jobLayouts) {
                appendString16(name)
                appendString16(layout)
            }
            finishFrame(at: start)
        case .result(let jobID, let output):
            let start = beginFrame(.result)
            append(jobID)
            bytes.append(contentsOf: output)
            finishFrame(at: start)
        case .started(let jobID):
            let start = beginFrame(.started)
            append(jobID)
            finishFrame(at: start)
        case .recalled(let jobID):
            let start = beginFrame(.recalled)
            append(jobID)
            finishFrame(at: start)
        case .failure(let jobID, let kind, let errorType, let message):
            let start = beginFrame(.failure)
            append(jobID)
            append(kind.rawValue)
            appendString16(errorType)
            appendString32(message)
            finishFrame(at: start)
        }
    }
}
