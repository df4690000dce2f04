import CZlib

/// Writes 8-bit RGB images as PNG files (zlib-compressed, filter 0), readable by any viewer.
enum PNGWriter {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Encodes `rows` (each `width * 3` bytes of RGB) as a PNG.
    static func encode(width: Int, rows: [[UInt8]]) throws -> [UInt8] {
        var raw: [UInt8] = []
        raw.reserveCapacity(rows.count * (width * 3 + 1))
        for row in rows {
            guard row.count == width * 3 else { throw Failure(description: "a row of \(row.count) bytes in an image \(width) pixels wide") }
            raw.append(0)  // filter type: none
            raw.append(contentsOf: row)
        }
        var compressedSize = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedSize))
        let status = compress2(&compressed, &compressedSize, raw, uLong(raw.count), 6)
        guard status == Z_OK else { throw Failure(description: "zlib compress2 failed with status \(status)") }
        compressed.removeSubrange(Int(compressedSize)...)

        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var header: [UInt8] = []
        header.appendBigEndian(UInt32(width))
        header.appendBigEndian(UInt32(rows.count))
        header += [8, 2, 0, 0, 0]  // 8 bits per channel, RGB, deflate, adaptive filtering, no interlace
        appendChunk("IHDR", header, to: &png)
        appendChunk("IDAT", compressed, to: &png)
        appendChunk("IEND", [], to: &png)
        return png
    }

    private static func appendChunk(_ type: String, _ data: [UInt8], to png: inout [UInt8]) {
        png.appendBigEndian(UInt32(data.count))
        let typeAndData = Array(type.utf8) + data
        png += typeAndData
        let crc = typeAndData.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) }
        png.appendBigEndian(UInt32(crc))
    }
}

extension [UInt8] {
    mutating func appendBigEndian(_ value: UInt32) {
        append(UInt8(value >> 24))
        append(UInt8((value >> 16) & 0xff))
        append(UInt8((value >> 8) & 0xff))
        append(UInt8(value & 0xff))
    }
}
