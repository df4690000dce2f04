// TEMPORARY: replaced by the binary codec; lets the pool compile meanwhile.
import Foundation

struct BinaryEncoder: Sendable {
    init() {}
    func encode<T: Encodable>(_ value: T) throws -> [UInt8] { [UInt8](try JSONEncoder().encode([value])) }
    func encode<T: Encodable>(_ value: T, into buffer: inout [UInt8]) throws { buffer += try encode(value) }
}
struct BinaryDecoder: Sendable {
    init() {}
    func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode([T].self, from: Data(bytes))[0]
    }
    func decode<T: Decodable>(_ type: T.Type, from buffer: UnsafeRawBufferPointer) throws -> T {
        try decode(type, from: [UInt8](buffer))
    }
}
