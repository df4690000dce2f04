import Foundation
import CrewTestJobs
import Testing
@testable import Crew

/// Tests of `BinaryEncoder` and `BinaryDecoder`; fixtures are nested here to keep their names
/// out of the module namespace.
@Suite enum BinaryCodecTests {
    // MARK: - Helpers

    static func roundTrip<T: Codable>(_ value: T, as type: T.Type = T.self) throws -> T {
        let bytes = try BinaryEncoder().encode(value)
        return try BinaryDecoder().decode(T.self, from: bytes)
    }

    static func expectRoundTrip<T: Codable & Equatable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let decoded = try roundTrip(value)
        #expect(decoded == value, sourceLocation: sourceLocation)
    }

    /// A small deterministic generator (SplitMix64), so failures reproduce.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func decodingError(_ body: () throws -> Void) -> DecodingError? {
        do {
            try body()
            return nil
        } catch let error as DecodingError {
            return error
        } catch {
            Issue.record("Expected a DecodingError, got \(error)")
            return nil
        }
    }

    static func pathDescription(_ path: [any CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }

    static func context(of error: DecodingError) -> DecodingError.Context? {
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .keyNotFound(_, let c), .dataCorrupted(let c): c
        @unknown default: nil
        }
    }

    // MARK: - Fixtures

    struct Small: Codable, Equatable {
        var id: Int
        var name: String
        var values: [Double]
    }

    struct Empty: Codable, Equatable {}

    struct AllScalars: Codable, Equatable {
        var int: Int, int8: Int8, int16: Int16, int32: Int32, int64: Int64
        var uint: UInt, uint8: UInt8, uint16: UInt16, uint32: UInt32, uint64: UInt64
        var float: Float, double: Double, bool: Bool, string: String

        static let minimum = AllScalars(
            int: .min, int8: .min, int16: .min, int32: .min, int64: .min,
            uint: .min, uint8: .min, uint16: .min, uint32: .min, uint64: .min,
            float: -.greatestFiniteMagnitude, double: -.infinity, bool: false, string: "")
        static let maximum = AllScalars(
            int: .max, int8: .max, int16: .max, int32: .max, int64: .max,
            uint: .max, uint8: .max, uint16: .max, uint32: .max, uint64: .max,
            float: .infinity, double: .greatestFiniteMagnitude, bool: true, string: "max")
    }

    struct Optionals: Codable, Equatable {
        var a: Int?
        var b: String?
        var c: [Int]?
        var d: Small?
        var e: Double?
        var f: Bool?
    }

    struct Generic<T: Codable & Equatable, U: Codable & Equatable>: Codable, Equatable {
        var first: T
        var second: [U]
        var nested: [String: Generic<U, T>]?
    }

    /// A linked list as a recursive enum: each level is a nested keyed container (the case)
    /// holding a nested value (its `next`).
    indirect enum Chain: Codable, Equatable {
        case end
        case link(Int, next: Chain)

        static func make(_ length: Int) -> Chain {
            (0..<length).reduce(Chain.end) { .link($1, next: $0) }
        }
    }

    indirect enum Shape: Codable, Equatable {
        case circle(radius: Double)
        case rectangle(width: Double, height: Double)
        case polygon([Double], closed: Bool)
        case point
        case labeled(String, inner: Shape?)
    }

    enum Color: String, Codable, Equatable {
        case red, green, blue
    }

    enum Level: UInt8, Codable, Equatable {
        case low = 1, high = 200
    }

    struct Wrapper<T: Codable & Equatable>: Codable, Equatable {
        var value: T
        init(_ value: T) { self.value = value }
        init(from decoder: any Decoder) throws { value = try decoder.singleValueContainer().decode(T.self) }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(value)
        }
    }

    class Animal: Codable, Equatable {
        var name: String
        var legs: Int
        init(name: String, legs: Int) {
            self.name = name
            self.legs = legs
        }
        static func == (a: Animal, b: Animal) -> Bool { a.isEqual(to: b) }
        func isEqual(to other: Animal) -> Bool { type(of: self) == type(of: other) && name == other.name && legs == other.legs }
    }

    /// Inheritance through `superEncoder()` / `superDecoder()`.
    final class Dog: Animal {
        var breed: String
        var goodBoy: Bool
        init(name: String, breed: String) {
            self.breed = breed
            self.goodBoy = true
            super.init(name: name, legs: 4)
        }
        enum CodingKeys: String, CodingKey { case breed, goodBoy }
        required init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            breed = try container.decode(String.self, forKey: .breed)
            goodBoy = try container.decode(Bool.self, forKey: .goodBoy)
            try super.init(from: container.superDecoder())
        }
        override func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(breed, forKey: .breed)
            try container.encode(goodBoy, forKey: .goodBoy)
            try super.encode(to: container.superEncoder())
        }
        override func isEqual(to other: Animal) -> Bool {
            guard let other = other as? Dog else { return false }
            return super.isEqual(to: other) && breed == other.breed && goodBoy == other.goodBoy
        }
    }

    /// Inheritance sharing one container (`super.encode(to: encoder)`).
    final class Cat: Animal {
        var lives: Int
        init(name: String, lives: Int) {
            self.lives = lives
            super.init(name: name, legs: 4)
        }
        enum CodingKeys: String, CodingKey { case lives }
        required init(from decoder: any Decoder) throws {
            lives = try decoder.container(keyedBy: CodingKeys.self).decode(Int.self, forKey: .lives)
            try super.init(from: decoder)
        }
        override func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(lives, forKey: .lives)
            try super.encode(to: encoder)
        }
        override func isEqual(to other: Animal) -> Bool {
            guard let other = other as? Cat else { return false }
            return super.isEqual(to: other) && lives == other.lives
        }
    }

    /// Reads its keys in the reverse of the order it writes them.
    struct Reversed: Codable, Equatable {
        var a: Int
        var b: String
        var c: [UInt8]
        var d: Small
        var e: Double
        enum CodingKeys: String, CodingKey { case a, b, c, d, e }
        init(a: Int, b: String, c: [UInt8], d: Small, e: Double) {
            (self.a, self.b, self.c, self.d, self.e) = (a, b, c, d, e)
        }
        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            e = try container.decode(Double.self, forKey: .e)
            d = try container.decode(Small.self, forKey: .d)
            c = try container.decode([UInt8].self, forKey: .c)
            b = try container.decode(String.self, forKey: .b)
            a = try container.decode(Int.self, forKey: .a)
        }
    }

    /// Exercises every container operation by hand.
    struct Manual: Codable, Equatable {
        var keyed: [String: Int]
        var list: [Int?]
        var pair: (String, Double)
        var flag: Bool?

        init(keyed: [String: Int], list: [Int?], pair: (String, Double), flag: Bool?) {
            self.keyed = keyed
            self.list = list
            self.pair = pair
            self.flag = flag
        }

        static func == (a: Manual, b: Manual) -> Bool {
            a.keyed == b.keyed && a.list == b.list && a.pair == b.pair && a.flag == b.flag
        }

        enum Keys: String, CodingKey { case keyed, list, pair, flag, nothing }
        struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            var nested = container.nestedContainer(keyedBy: AnyKey.self, forKey: .keyed)
            for (key, value) in keyed.sorted(by: { $0.key < $1.key }) {
                try nested.encode(value, forKey: AnyKey(stringValue: key))
            }
            var list = container.nestedUnkeyedContainer(forKey: .list)
            for element in self.list {
                if let element { try list.encode(element) } else { try list.encodeNil() }
            }
            var pair = container.nestedUnkeyedContainer(forKey: .pair)
            try pair.encode(self.pair.0)
            var inner = pair.nestedUnkeyedContainer()
            try inner.encode(self.pair.1)
            try container.encodeIfPresent(flag, forKey: .flag)
            try container.encodeNil(forKey: .nothing)
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Keys.self)
            guard container.contains(.nothing), try container.decodeNil(forKey: .nothing) else {
                throw DecodingError.dataCorruptedError(forKey: .nothing, in: container, debugDescription: "expected nil")
            }
            flag = try container.decodeIfPresent(Bool.self, forKey: .flag)
            let nested = try container.nestedContainer(keyedBy: AnyKey.self, forKey: .keyed)
            var keyed: [String: Int] = [:]
            for key in nested.allKeys {
                keyed[key.stringValue] = try nested.decode(Int.self, forKey: key)
            }
            self.keyed = keyed
            var list = try container.nestedUnkeyedContainer(forKey: .list)
            var values: [Int?] = []
            if let count = list.count { values.reserveCapacity(count) }
            while !list.isAtEnd {
                if try list.decodeNil() { values.append(nil) } else { values.append(try list.decode(Int.self)) }
            }
            self.list = values
            var pair = try container.nestedUnkeyedContainer(forKey: .pair)
            let first = try pair.decode(String.self)
            var inner = try pair.nestedUnkeyedContainer()
            self.pair = (first, try inner.decode(Double.self))
        }
    }

    /// Reads an array of numbers element by element, whatever the writer did.
    struct ElementWise<T: Decodable & Equatable>: Decodable, Equatable {
        var elements: [T]
        init(from decoder: any Decoder) throws {
            var container = try decoder.unkeyedContainer()
            var elements: [T] = []
            while !container.isAtEnd { elements.append(try container.decode(T.self)) }
            self.elements = elements
        }
    }

    final class Node: Codable {
        var child: Node?
        init(child: Node?) { self.child = child }

        static func chain(_ depth: Int) -> Node {
            var node = Node(child: nil)
            for _ in 1..<depth { node = Node(child: node) }
            return node
        }

        var depth: Int {
            var depth = 1
            var node = self
            while let next = node.child {
                depth += 1
                node = next
            }
            return depth
        }
    }

    /// A value whose encoding itself runs another encode and decode (re-entrancy).
    struct Reentrant: Codable, Equatable {
        var inner: Small
        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            let innerBytes = try BinaryEncoder().encode(inner)
            let check = try BinaryDecoder().decode(Small.self, from: innerBytes)
            precondition(check == inner)
            try container.encode(innerBytes)
        }
        init(inner: Small) { self.inner = inner }
        init(from decoder: any Decoder) throws {
            let bytes = try decoder.singleValueContainer().decode([UInt8].self)
            inner = try BinaryDecoder().decode(Small.self, from: bytes)
        }
    }

    static let sampleSmall = Small(id: 42, name: "abcdefghijklmnopqrst", values: [1, 2, 3, 4, 5, 6, 7, 8.5])

    /// A value touching most of the format, for the fuzz-style tests.
    struct Composite: Codable, Equatable {
        var small: Small
        var shapes: [Shape]
        var map: [String: [Int]]
        var intMap: [Int: String]
        var optional: Optionals
        var bytes: [UInt8]
        var colors: [Color]
        var nested: [[Int16]]

        static let sample = Composite(
            small: sampleSmall,
            shapes: [.circle(radius: 1.5), .rectangle(width: 2, height: 3), .polygon([1, 2, 3], closed: true), .point,
                     .labeled("x", inner: .circle(radius: -1))],
            map: ["a": [1, 2, 3], "bb": [], "ccc": [Int.min, Int.max]],
            intMap: [1: "one", -2: "minus two", 300: ""],
            optional: Optionals(a: 1, b: nil, c: [1], d: nil, e: .nan, f: false),
            bytes: Array(0...255),
            colors: [.red, .blue],
            nested: [[1, -1], [], [Int16.max]])

        static func == (a: Composite, b: Composite) -> Bool {
            // `Optionals.e` holds NaN: compare its bit pattern.
            a.small == b.small && a.shapes == b.shapes && a.map == b.map && a.intMap == b.intMap
                && a.optional.a == b.optional.a && a.optional.b == b.optional.b && a.optional.c == b.optional.c
                && a.optional.d == b.optional.d && a.optional.e?.bitPattern == b.optional.e?.bitPattern
                && a.optional.f == b.optional.f && a.bytes == b.bytes && a.colors == b.colors && a.nested == b.nested
        }
    }

    /// A chain linked through `superEncoder()` / `superDecoder()`: recursion without nested values.
    final class SuperChain: Codable {
        var next: SuperChain?
        enum Keys: CodingKey { case flag }
        init(length: Int) { next = length > 1 ? SuperChain(length: length - 1) : nil }
        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Keys.self)
            _ = try container.decode(Bool.self, forKey: .flag)
            do {
                next = try SuperChain(from: container.superDecoder())
            } catch DecodingError.keyNotFound {
                next = nil
            }
        }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(true, forKey: .flag)
            if let next { try next.encode(to: container.superEncoder()) }
        }
        var length: Int { 1 + (next?.length ?? 0) }
    }

    /// Keeps its containers past the call that made them (which Codable does not allow).
    struct Keeper: Codable, Equatable {
        nonisolated(unsafe) static var decoding: KeyedDecodingContainer<Keys>?
        nonisolated(unsafe) static var encoding: KeyedEncodingContainer<Keys>?
        enum Keys: CodingKey { case a }
        var a: Int
        init(a: Int) { self.a = a }
        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Keys.self)
            a = try container.decode(Int.self, forKey: .a)
            Keeper.decoding = container
        }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(a, forKey: .a)
            Keeper.encoding = container
        }
    }

    /// Records the coding path it is encoded and decoded at.
    struct Probe: Codable {
        nonisolated(unsafe) static var seen: [String] = []
        init() {}
        func encode(to encoder: any Encoder) throws {
            Probe.seen.append(pathDescription(encoder.codingPath))
            var container = encoder.singleValueContainer()
            try container.encode(1)
        }
        init(from decoder: any Decoder) throws {
            Probe.seen.append(pathDescription(decoder.codingPath))
            _ = try decoder.singleValueContainer().decode(Int.self)
        }
    }

    // MARK: - Round trips

    @Suite struct RoundTrips {
        let small = sampleSmall

        @Test func smallStruct() throws {
            try expectRoundTrip(small)
            let bytes = try BinaryEncoder().encode(small)
            #expect(bytes.count < 120)
        }

        @Test func scalarsAtTheirLimits() throws {
            try expectRoundTrip(AllScalars.minimum)
            try expectRoundTrip(AllScalars.maximum)
            try expectRoundTrip(Int.min)
            try expectRoundTrip(Int.max)
            try expectRoundTrip(UInt64.max)
            try expectRoundTrip(Int64.min)
            try expectRoundTrip(Int8.min)
            try expectRoundTrip(UInt8.max)
            try expectRoundTrip(0)
            try expectRoundTrip(-1)
            for shift in 0..<64 {
                try expectRoundTrip(UInt64(1) << shift)
                try expectRoundTrip(Int64(1) << shift)
                try expectRoundTrip(~(Int64(1) << shift))
            }
        }

        @Test func floatingPointSpecials() throws {
            for value in [0.0, -0.0, .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude, .pi] {
                let decoded = try roundTrip(value)
                #expect(decoded.bitPattern == value.bitPattern)
            }
            #expect(try roundTrip(Double.nan).isNaN)
            #expect(try roundTrip(Double.signalingNaN).bitPattern == Double.signalingNaN.bitPattern)
            #expect(try roundTrip(Float.nan).isNaN)
            #expect(try roundTrip(-Float.infinity) == -.infinity)
            let nans = try roundTrip([Double.nan, 1, .infinity])
            #expect(nans[0].isNaN && nans[1] == 1 && nans[2] == .infinity)
        }

        @Test func strings() throws {
            try expectRoundTrip("")
            try expectRoundTrip("a")
            try expectRoundTrip("héllo wörld — ✓ 日本語 🇺🇳👩‍👩‍👧‍👦 \u{0} \u{10FFFF}")
            try expectRoundTrip(String(repeating: "long string ", count: 10_000))
            try expectRoundTrip(["", "x", "ÿ", "🙂"])
            try expectRoundTrip(Wrapper("wrapped"))
        }

        @Test func emptyValues() throws {
            try expectRoundTrip(Empty())
            try expectRoundTrip([Empty(), Empty()])
            try expectRoundTrip([Int]())
            try expectRoundTrip([String]())
            try expectRoundTrip([String: Int]())
            try expectRoundTrip([UInt8]())
            try expectRoundTrip(Generic<Empty, Empty>(first: Empty(), second: [], nested: [:]))
        }

        @Test func optionals() throws {
            try expectRoundTrip(Optionals())
            try expectRoundTrip(Optionals(a: 1, b: "b", c: [1, 2], d: small, e: 2.5, f: true))
            try expectRoundTrip(Optionals(a: nil, b: "", c: [], d: nil, e: nil, f: false))
            try expectRoundTrip(Int?.none)
            try expectRoundTrip(Int?.some(5))
            try expectRoundTrip([Int?]([1, nil, 3]))
            try expectRoundTrip([Small?]([small, nil]))
            try expectRoundTrip(Wrapper<String?>(nil))
            // Optionals of optionals: Codable itself flattens `.some(nil)` to nil.
            try expectRoundTrip(Int??.some(.some(3)))
            try expectRoundTrip(Int??.none)
            #expect(try roundTrip(Int??.some(.none)) == .none)
            try expectRoundTrip([Int??]([1, nil]))
        }

        @Test func bulkArrays() throws {
            try expectRoundTrip([UInt8](0...255))
            try expectRoundTrip([Int8](-128...127))
            try expectRoundTrip(ContiguousArray<UInt8>([1, 2, 3]))
            try expectRoundTrip([UInt16]([0, 1, .max]))
            try expectRoundTrip([Int16]([.min, -1, 0, .max]))
            try expectRoundTrip([UInt32]([0, .max]))
            try expectRoundTrip([Int32]([.min, .max]))
            try expectRoundTrip([UInt64]([0, .max]))
            try expectRoundTrip([Int64]([.min, .max]))
            try expectRoundTrip([UInt]([0, .max]))
            try expectRoundTrip([Int]([.min, -1, 0, 1, .max]))
            try expectRoundTrip([Float]([0, -1.5, .infinity]))
            try expectRoundTrip([Double]([0, -1.5, .infinity, .greatestFiniteMagnitude]))
            // One block: a tag, a varint count, the raw bytes.
            let bytes = try BinaryEncoder().encode([UInt8](repeating: 7, count: 1600))
            #expect(bytes.count == 1 + 2 + 1600)
            #expect(try BinaryEncoder().encode([Double](repeating: 1, count: 8)).count == 1 + 1 + 64)
        }

        @Test func largeValues() throws {
            let bytes = (0..<1_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            try expectRoundTrip(bytes)
            try expectRoundTrip(Array(0..<100_000))
            try expectRoundTrip((0..<5_000).map { "element \($0)" })
            try expectRoundTrip((0..<2_000).map { Small(id: $0, name: "n\($0)", values: [Double($0)]) })
            try expectRoundTrip(Dictionary(uniqueKeysWithValues: (0..<3_000).map { ("key\($0)", $0) }))
            // Containers longer than 127 bytes and with more than 127 elements: multi-byte headers.
            try expectRoundTrip((0..<300).map { Optional($0) })
            try expectRoundTrip([[String]](repeating: (0..<40).map { "\($0)" }, count: 200))
            try expectRoundTrip(Generic<String, Int>(first: String(repeating: "x", count: 200), second: Array(0..<200), nested: nil))
        }

        @Test func nestedGenericsAndDictionaries() throws {
            let inner = Generic<Int, String>(first: 1, second: ["a", "b"], nested: nil)
            let value = Generic<String, Int>(first: "outer", second: [1, 2, 3], nested: ["x": inner, "y": inner])
            try expectRoundTrip(value)
            try expectRoundTrip(["a": 1, "b": 2, "": 3])
            try expectRoundTrip([1: "one", -1: "minus one", Int.max: "max"])
            try expectRoundTrip([UInt8(1): ["x"], UInt8(2): [String]()])
            try expectRoundTrip(["a": ["b": ["c": [1.5]]]])
            try expectRoundTrip([[1, 2], [], [3]])
            try expectRoundTrip([Set([1, 2, 3])])
            try expectRoundTrip([Color.red: 1, .blue: 2])
        }

        @Test func enums() throws {
            try expectRoundTrip(Shape.circle(radius: 2))
            try expectRoundTrip(Shape.rectangle(width: 1, height: 2))
            try expectRoundTrip(Shape.polygon([1, 2], closed: false))
            try expectRoundTrip(Shape.point)
            try expectRoundTrip(Shape.labeled("nested", inner: .labeled("deeper", inner: nil)))
            try expectRoundTrip([Color.red, .green, .blue])
            try expectRoundTrip([Level.low, .high])
            try expectRoundTrip(Wrapper(Level.high))
        }

        @Test func classesWithInheritance() throws {
            let dog = Dog(name: "Rex", breed: "collie")
            let decodedDog = try roundTrip(dog)
            #expect(decodedDog == dog)
            let cat = Cat(name: "Tom", lives: 9)
            let decodedCat = try roundTrip(cat)
            #expect(decodedCat == cat)
            try expectRoundTrip([Animal(name: "generic", legs: 2)])
        }

        @Test func manualContainers() throws {
            try expectRoundTrip(Manual(keyed: ["one": 1, "two": 2], list: [1, nil, 3], pair: ("pi", 3.14), flag: true))
            try expectRoundTrip(Manual(keyed: [:], list: [], pair: ("", 0), flag: nil))
        }

        @Test func composite() throws {
            try expectRoundTrip(Composite.sample)
        }

        @Test func singleValueWrappersNest() throws {
            try expectRoundTrip(Wrapper(Wrapper(Wrapper(5))))
            try expectRoundTrip(Wrapper(small))
            try expectRoundTrip([Wrapper([1, 2]), Wrapper([])])
        }

        @Test func keyOrderIndependence() throws {
            let value = Reversed(a: 1, b: "two", c: [3], d: small, e: 5)
            try expectRoundTrip(value)
            try expectRoundTrip([value, value])
            // A type that skips keys decodes too.
            struct Partial: Decodable, Equatable { var d: Small; var b: String }
            let partial = try BinaryDecoder().decode(Partial.self, from: try BinaryEncoder().encode(value))
            #expect(partial == Partial(d: small, b: "two"))
        }

        @Test func crossTypeDecoding() throws {
            // Bulk arrays read element by element, or as another element type.
            let bytes: [UInt8] = [0, 1, 2, 255]
            let encoded = try BinaryEncoder().encode(bytes)
            #expect(try BinaryDecoder().decode([Int].self, from: encoded) == [0, 1, 2, 255])
            #expect(try BinaryDecoder().decode([UInt16].self, from: encoded) == [0, 1, 2, 255])
            #expect(try BinaryDecoder().decode([Double].self, from: encoded) == [0, 1, 2, 255])
            #expect(try BinaryDecoder().decode(ElementWise<UInt8>.self, from: encoded).elements == bytes)
            #expect(try BinaryDecoder().decode(Data.self, from: encoded) == Data(bytes))
            #expect(try BinaryDecoder().decode([UInt8].self, from: try BinaryEncoder().encode(Data(bytes))) == bytes)
            #expect(try BinaryDecoder().decode([Level].self, from: try BinaryEncoder().encode([UInt8]([1, 200]))) == [.low, .high])
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode([Int8].self, from: encoded) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode([String].self, from: encoded) }
            // Integers of any width read as any other that holds the value.
            #expect(try BinaryDecoder().decode(UInt8.self, from: try BinaryEncoder().encode(Int64(200))) == 200)
            #expect(try BinaryDecoder().decode(Int.self, from: try BinaryEncoder().encode(UInt16(7))) == 7)
            #expect(try BinaryDecoder().decode(Double.self, from: try BinaryEncoder().encode(3)) == 3)
            #expect(try BinaryDecoder().decode(Double.self, from: try BinaryEncoder().encode(Float(1.5))) == 1.5)
            #expect(try BinaryDecoder().decode(Float.self, from: try BinaryEncoder().encode(2.5)) == 2.5)
            #expect(try BinaryDecoder().decode([Int64].self, from: try BinaryEncoder().encode([Int32]([-1, 5]))) == [-1, 5])
            // Element-wise encodings read by the bulk fast path's types.
            #expect(try BinaryDecoder().decode([UInt8].self, from: try BinaryEncoder().encode(Data([9, 8]))) == [9, 8])
            #expect(try BinaryDecoder().decode([Int].self, from: try BinaryEncoder().encode([Int?]([1, 2]))) == [1, 2])
        }

        @Test func encodeIntoAppends() throws {
            var buffer: [UInt8] = [0xAA, 0xBB]
            try BinaryEncoder().encode(small, into: &buffer)
            try BinaryEncoder().encode(7, into: &buffer)
            let first = try BinaryEncoder().encode(small)
            #expect(Array(buffer[..<2]) == [0xAA, 0xBB])
            #expect(Array(buffer[2..<(2 + first.count)]) == first)
            let decoded = try buffer.withUnsafeBytes { raw in
                try BinaryDecoder().decode(Small.self, from: UnsafeRawBufferPointer(rebasing: raw[2..<(2 + first.count)]))
            }
            #expect(decoded == small)
            // A failing encode leaves the buffer as it was.
            let before = buffer
            #expect(throws: EncodingError.self) { try BinaryEncoder().encode(Node.chain(BinaryFormat.maxDepth + 10), into: &buffer) }
            #expect(buffer == before)
        }

        @Test func reentrantAndConcurrentUse() async throws {
            try expectRoundTrip(Reentrant(inner: small))
            try expectRoundTrip([Reentrant(inner: small), Reentrant(inner: Small(id: 1, name: "", values: []))])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<8 {
                    group.addTask {
                        for i in 0..<2_000 {
                            let value = Small(id: task * 10_000 + i, name: "task \(task)", values: [Double(i)])
                            let decoded = try BinaryDecoder().decode(Small.self, from: try BinaryEncoder().encode(value))
                            guard decoded == value else { throw CancellationError() }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }

        @Test func documentedExample() throws {
            let bytes = try BinaryEncoder().encode(Small(id: 42, name: "abc", values: [1.5]))
            let expected: [UInt8] = [0x08, 0x20]
                + [2] + Array("id".utf8) + [0x04, 0x54]
                + [4] + Array("name".utf8) + [0x07, 3] + Array("abc".utf8)
                + [6] + Array("values".utf8) + [0x19, 1] + withUnsafeBytes(of: (1.5).bitPattern.littleEndian) { Array($0) }
            #expect(bytes == expected)
        }

        @Test func encodingIsDeterministicForOrderedValues() throws {
            #expect(try BinaryEncoder().encode(small) == BinaryEncoder().encode(small))
            #expect(try BinaryEncoder().encode(5) == [BinaryFormat.tagSInt, 10])
            #expect(try BinaryEncoder().encode(UInt8(5)) == [BinaryFormat.tagUInt, 5])
            #expect(try BinaryEncoder().encode(true) == [BinaryFormat.tagTrue])
            #expect(try BinaryEncoder().encode("hi") == [BinaryFormat.tagString, 2, 0x68, 0x69])
            #expect(try BinaryEncoder().encode(Empty()) == [BinaryFormat.tagKeyed, 0])
            #expect(try BinaryEncoder().encode(Int?.none) == [BinaryFormat.tagNil])
        }
    }

    // MARK: - Errors

    @Suite struct Errors {
        let small = sampleSmall

        @Test func missingKey() throws {
            struct Fewer: Codable { var id: Int }
            let bytes = try BinaryEncoder().encode(Fewer(id: 1))
            let error = decodingError { _ = try BinaryDecoder().decode(Small.self, from: bytes) }
            guard case .keyNotFound(let key, _) = error else {
                Issue.record("Expected keyNotFound, got \(String(describing: error))")
                return
            }
            #expect(key.stringValue == "name")
        }

        @Test func missingKeyInNestedValueHasItsPath() throws {
            struct Outer: Codable { var inner: [Inner] }
            struct Inner: Codable { var x: Int }
            struct OuterWrong: Codable { var inner: [InnerWrong] }
            struct InnerWrong: Codable { var y: Int }
            let bytes = try BinaryEncoder().encode(OuterWrong(inner: [InnerWrong(y: 1), InnerWrong(y: 2)]))
            let error = decodingError { _ = try BinaryDecoder().decode(Outer.self, from: bytes) }
            guard case .keyNotFound(let key, let context) = error else {
                Issue.record("Expected keyNotFound, got \(String(describing: error))")
                return
            }
            #expect(key.stringValue == "x")
            #expect(pathDescription(context.codingPath) == "inner.[0]")
        }

        @Test func typeMismatch() throws {
            struct StringID: Codable { var id: String; var name: String; var values: [Double] }
            let bytes = try BinaryEncoder().encode(StringID(id: "x", name: "y", values: []))
            let error = decodingError { _ = try BinaryDecoder().decode(Small.self, from: bytes) }
            guard case .typeMismatch(_, let context) = error else {
                Issue.record("Expected typeMismatch, got \(String(describing: error))")
                return
            }
            #expect(pathDescription(context.codingPath) == "id")

            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(String.self, from: try BinaryEncoder().encode(1)) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Int.self, from: try BinaryEncoder().encode(1.5)) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Bool.self, from: try BinaryEncoder().encode(1)) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode([Int].self, from: try BinaryEncoder().encode(small)) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Small.self, from: try BinaryEncoder().encode([1])) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Float.self, from: try BinaryEncoder().encode(0.1)) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Double.self, from: try BinaryEncoder().encode(Int.max)) }
        }

        @Test func nilWhereAValueIsRequired() throws {
            let error = decodingError { _ = try BinaryDecoder().decode(Int.self, from: try BinaryEncoder().encode(Int?.none)) }
            guard case .valueNotFound = error else {
                Issue.record("Expected valueNotFound, got \(String(describing: error))")
                return
            }
            struct Required: Codable { var small: Small }
            let nilError = decodingError {
                _ = try BinaryDecoder().decode([Required].self, from: try BinaryEncoder().encode([[Small?.none]]))
            }
            #expect(nilError != nil)
        }

        @Test func integerOverflowOnNarrowing() throws {
            for (value, type) in [(300, Int8.self), (-1, UInt8.self)] as [(Int, any Decodable.Type)] {
                let bytes = try BinaryEncoder().encode(value)
                #expect(throws: DecodingError.self) { _ = try BinaryDecoder().decode(type, from: bytes) }
            }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Int64.self, from: try BinaryEncoder().encode(UInt64.max)) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(UInt.self, from: try BinaryEncoder().encode(Int.min)) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Int16.self, from: try BinaryEncoder().encode(Int32.max)) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode([Int8].self, from: try BinaryEncoder().encode([Int]([1, 1000]))) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode([UInt32].self, from: try BinaryEncoder().encode([Int32]([-1]))) }
            let error = decodingError { _ = try BinaryDecoder().decode(Small.self, from: try BinaryEncoder().encode(Reversed(a: 1, b: "", c: [], d: small, e: 0))) }
            #expect(error != nil)
        }

        @Test func trailingBytes() throws {
            var bytes = try BinaryEncoder().encode(small)
            bytes.append(0)
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Small.self, from: bytes) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Int.self, from: [BinaryFormat.tagSInt, 2, 0]) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Int.self, from: []) }
        }

        @Test func truncatedInputAtEveryLength() throws {
            let full = try BinaryEncoder().encode(Composite.sample)
            #expect(try BinaryDecoder().decode(Composite.self, from: full) == Composite.sample)
            for length in 0..<full.count {
                let prefix = Array(full[..<length])
                #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Composite.self, from: prefix) }
            }
            let smallBytes = try BinaryEncoder().encode(small)
            for length in 0..<smallBytes.count {
                #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Small.self, from: Array(smallBytes[..<length])) }
            }
        }

        @Test func randomGarbage() throws {
            var generator = SeededGenerator(seed: 0x5EED)
            var decoded = 0
            for _ in 0..<4_000 {
                let count = Int.random(in: 0...64, using: &generator)
                let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if (try? BinaryDecoder().decode(Composite.self, from: bytes)) != nil { decoded += 1 }
                if (try? BinaryDecoder().decode(Small.self, from: bytes)) != nil { decoded += 1 }
                _ = try? BinaryDecoder().decode([String: [Shape]].self, from: bytes)
                _ = try? BinaryDecoder().decode(Manual.self, from: bytes)
                _ = try? BinaryDecoder().decode(Node.self, from: bytes)
                _ = try? BinaryDecoder().decode([Int?].self, from: bytes)
            }
            // Mutations of valid encodings reach deeper than pure noise.
            let valid = try BinaryEncoder().encode(Composite.sample)
            for _ in 0..<3_000 {
                var bytes = valid
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    let index = Int.random(in: 0..<bytes.count, using: &generator)
                    switch Int.random(in: 0..<3, using: &generator) {
                    case 0: bytes[index] = UInt8.random(in: 0...255, using: &generator)
                    case 1: bytes[index] ^= 1 << UInt8.random(in: 0..<8, using: &generator)
                    default: bytes.insert(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], at: index)
                    }
                }
                _ = try? BinaryDecoder().decode(Composite.self, from: bytes)
                _ = try? BinaryDecoder().decode(Manual.self, from: bytes)
            }
            #expect(decoded >= 0)
        }

        @Test func hugeLengthPrefixesFailFast() throws {
            let huge: [UInt8] = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]  // 2^60
            let start = ContinuousClock.now
            for tag in [BinaryFormat.tagString, BinaryFormat.tagKeyed, BinaryFormat.tagUnkeyed, BinaryFormat.tagBulkUInt8,
                        BinaryFormat.tagBulkFloat64, BinaryFormat.tagBulkInt32] {
                let bytes = [tag] + huge + [1, 2, 3]
                #expect(throws: DecodingError.self) { try BinaryDecoder().decode(String.self, from: bytes) }
                #expect(throws: DecodingError.self) { try BinaryDecoder().decode([UInt8].self, from: bytes) }
                #expect(throws: DecodingError.self) { try BinaryDecoder().decode([Double].self, from: bytes) }
                #expect(throws: DecodingError.self) { try BinaryDecoder().decode(Small.self, from: bytes) }
                #expect(throws: DecodingError.self) { try BinaryDecoder().decode([Int].self, from: bytes) }
            }
            // An unkeyed container that claims 2^60 elements in a few bytes.
            let claims: [UInt8] = [BinaryFormat.tagUnkeyed, 9] + huge
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode([Int].self, from: claims) }
            // An overlong varint.
            let overlong: [UInt8] = [BinaryFormat.tagUInt] + [UInt8](repeating: 0xFF, count: 11) + [0x01]
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(UInt64.self, from: overlong) }
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(UInt64.self, from: [BinaryFormat.tagUInt] + [UInt8](repeating: 0xFF, count: 9) + [0x02]) }
            #expect(ContinuousClock.now - start < .seconds(5))
        }

        @Test func invalidUTF8() throws {
            for bad in [[0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0x80], [0xFF]] as [[UInt8]] {
                let bytes = [BinaryFormat.tagString, UInt8(bad.count)] + bad
                #expect(throws: DecodingError.self) { try BinaryDecoder().decode(String.self, from: bytes) }
            }
            for good in ["é", "€", "𐍈", "\u{FFFF}", "\u{10000}"] {
                let bytes = [BinaryFormat.tagString, UInt8(good.utf8.count)] + Array(good.utf8)
                #expect(try BinaryDecoder().decode(String.self, from: bytes) == good)
            }
        }

        @Test func tooDeepNesting() throws {
            // Encoding refuses values nested deeper than the limit; decoding accepts what encoding allows.
            let deepest = Node.chain(BinaryFormat.maxDepth - 1)
            let bytes = try BinaryEncoder().encode(deepest)
            #expect(try BinaryDecoder().decode(Node.self, from: bytes).depth == BinaryFormat.maxDepth - 1)
            #expect(throws: EncodingError.self) { try BinaryEncoder().encode(Node.chain(BinaryFormat.maxDepth + 1)) }

            // Hand-made input nested far deeper: keyed containers { "child": { "child": ... } }.
            let levels = 100_000
            var lengths: [Int] = [0]  // content length of each level, innermost first
            for _ in 0..<levels {
                let inner = lengths[lengths.count - 1]
                lengths.append(1 + "child".utf8.count + 1 + BinaryFormat.varintSize(UInt64(inner)) + inner)
            }
            var deep: [UInt8] = []
            deep.reserveCapacity(levels * 12)
            for level in stride(from: levels, through: 1, by: -1) {
                deep.append(BinaryFormat.tagKeyed)
                deep.binaryAppendVarint(UInt64(lengths[level]))
                deep.append(5)
                deep.append(contentsOf: Array("child".utf8))
            }
            deep.append(contentsOf: [BinaryFormat.tagKeyed, 0])
            let error = decodingError { _ = try BinaryDecoder().decode(Node.self, from: deep) }
            guard case .dataCorrupted(let context) = error else {
                Issue.record("Expected dataCorrupted, got \(String(describing: error))")
                return
            }
            #expect(context.debugDescription.contains("nest"))
            // Skipping over it is fine: a reader that ignores the key never descends.
            struct Ignores: Decodable { var other: Int? }
            #expect(try BinaryDecoder().decode(Ignores.self, from: deep).other == nil)
        }

        /// "Decoding accepts what encoding allows": the encoder bounds nested containers and
        /// super encoders at 2 × maxDepth frames, and the decoder bounded them at maxDepth keys of
        /// path. A recursive enum with associated values (two keys per level: the case's nested
        /// container and its field) 300 deep, or a chain of 600 nested lists or super encoders,
        /// encoded fine and then failed to decode: a job the pool accepted came back as
        /// undecodable arguments.
        @Test func valuesAsDeepAsTheEncoderAllowsDecode() throws {
            let list = Chain.make(300)
            #expect(try roundTrip(list) == list)
            let lists = try BinaryEncoder().encode(ListDepth(depth: 600))
            #expect(try BinaryDecoder().decode(ListDepth.self, from: lists).depth == 600)
            #expect(try roundTrip(SuperChain(length: 600)).length == 600)
        }

        @Test func recursionThroughSuperCodersIsBounded() throws {
            #expect(try roundTrip(SuperChain(length: 200)).length == 200)
            #expect(throws: EncodingError.self) { try BinaryEncoder().encode(SuperChain(length: 3 * BinaryFormat.maxDepth)) }
            // Hand-made input: { "flag": true, "super": { "flag": true, "super": ... } }, far deeper.
            let levels = 100_000
            let entry: [UInt8] = [4] + Array("flag".utf8) + [BinaryFormat.tagTrue] + [5] + Array("super".utf8)
            var lengths: [Int] = [entry.count - 6]  // the innermost has only its flag
            for _ in 0..<levels {
                let inner = lengths[lengths.count - 1]
                lengths.append(entry.count + 1 + BinaryFormat.varintSize(UInt64(inner)) + inner)
            }
            var deep: [UInt8] = []
            for level in stride(from: levels, through: 1, by: -1) {
                deep.append(BinaryFormat.tagKeyed)
                deep.binaryAppendVarint(UInt64(lengths[level]))
                deep.append(contentsOf: entry)
            }
            deep.append(contentsOf: [BinaryFormat.tagKeyed, UInt8(lengths[0])] + entry.prefix(6))
            #expect(throws: DecodingError.self) { try BinaryDecoder().decode(SuperChain.self, from: deep) }
            // Many super decoders in one decode are fine.
            let dogs = (0..<5_000).map { Dog(name: "dog \($0)", breed: "mixed") }
            #expect(try roundTrip(dogs) == dogs)
        }

        @Test func misuseOfContainersIsAnEncodingError() throws {
            struct TwoValues: Encodable {
                func encode(to encoder: any Encoder) throws {
                    var container = encoder.singleValueContainer()
                    try container.encode(1)
                    try container.encode(2)
                }
            }
            #expect(throws: EncodingError.self) { try BinaryEncoder().encode(TwoValues()) }
            struct MixedContainers: Encodable {
                enum K: CodingKey { case a }
                func encode(to encoder: any Encoder) throws {
                    var keyed = encoder.container(keyedBy: K.self)
                    try keyed.encode(1, forKey: .a)
                    var unkeyed = encoder.unkeyedContainer()
                    try unkeyed.encode(2)
                }
            }
            #expect(throws: EncodingError.self) { try BinaryEncoder().encode(MixedContainers()) }
            struct StaleContainer: Encodable {
                enum K: CodingKey { case a, b }
                func encode(to encoder: any Encoder) throws {
                    var outer = encoder.container(keyedBy: K.self)
                    var nested = outer.nestedContainer(keyedBy: K.self, forKey: .a)
                    try nested.encode(1, forKey: .a)
                    try outer.encode(2, forKey: .b)
                    try nested.encode(3, forKey: .b)  // `nested` was closed by the write to `outer`
                }
            }
            #expect(throws: EncodingError.self) { try BinaryEncoder().encode(StaleContainer()) }
        }

        @Test func containersKeptPastTheirCallAreInert() throws {
            let bytes = try BinaryEncoder().encode(Keeper(a: 1))
            #expect(try BinaryDecoder().decode(Keeper.self, from: bytes) == Keeper(a: 1))
            #expect(throws: DecodingError.self) { try Keeper.decoding?.decode(Int.self, forKey: .a) }
            #expect(throws: EncodingError.self) { try Keeper.encoding?.encode(2, forKey: .a) }
            // Later calls are unaffected, and a stale container in the middle of one does no harm.
            #expect(try BinaryEncoder().encode(Keeper(a: 1)) == bytes)
            struct UsesStale: Decodable {
                init(from decoder: any Decoder) throws {
                    _ = try? Keeper.decoding?.decode(Int.self, forKey: .a)
                    _ = try decoder.container(keyedBy: Keeper.Keys.self).decode(Int.self, forKey: .a)
                }
            }
            _ = try BinaryDecoder().decode(UsesStale.self, from: bytes)
            #expect(try BinaryDecoder().decode(Keeper.self, from: bytes) == Keeper(a: 1))
        }

        @Test func codingPathsDuringEncodeAndDecode() throws {
            struct Holder: Codable { var list: [[String: Probe]] }
            Probe.seen = []
            let bytes = try BinaryEncoder().encode(Holder(list: [["k": Probe()]]))
            _ = try BinaryDecoder().decode(Holder.self, from: bytes)
            #expect(Probe.seen == ["list.[0].k", "list.[0].k"])
        }
    }
}
