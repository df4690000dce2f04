import CrewTestJobs
import Testing
@testable import Crew

/// `PlainData` in the codec: values and arrays copied as blocks, the layout check, and
/// adversarial blocks.
@Suite struct PlainDataCodecTests {
    struct Pair: PlainData, Equatable {
        var a: Int32
        var b: Int32
    }

    /// A nested struct and a tuple (which needs hand-written `Codable`).
    struct Nested: PlainData, Equatable {
        var pair: Pair
        var scale: Double
        var tuple: (UInt8, Int16)

        init(pair: Pair, scale: Double, tuple: (UInt8, Int16)) {
            self.pair = pair
            self.scale = scale
            self.tuple = tuple
        }

        init(from decoder: any Decoder) throws {
            var container = try decoder.unkeyedContainer()
            pair = try container.decode(Pair.self)
            scale = try container.decode(Double.self)
            tuple = (try container.decode(UInt8.self), try container.decode(Int16.self))
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(pair)
            try container.encode(scale)
            try container.encode(tuple.0)
            try container.encode(tuple.1)
        }

        static func == (l: Nested, r: Nested) -> Bool { l.pair == r.pair && l.scale == r.scale && l.tuple == r.tuple }
    }

    /// The same fields as `Pair`, through `Codable` only.
    struct CodablePair: Codable, Equatable {
        var a: Int32
        var b: Int32
    }

    /// Declares `PlainData` but holds a `Bool`, which not every byte is a valid value of.
    struct Flagged: PlainData, Equatable {
        var value: Int
        var flag: Bool
    }

    struct WithOptional: PlainData { var value: Int; var maybe: Int? }
    struct WithPointer: PlainData, @unchecked Sendable {
        var pointer: UnsafeRawPointer
        init(from decoder: any Decoder) throws { throw DecodingError.valueNotFound(Self.self, .init(codingPath: [], debugDescription: "")) }
        func encode(to encoder: any Encoder) throws {}
    }
    struct WithVector: PlainData { var vector: SIMD4<Float> }
    struct WithNestedBool: PlainData { var pair: Pair; var inner: Flagged }
    enum Mode: Int, PlainData { case fast, slow }
    struct Empty: PlainData, Equatable {}

    struct Holder: Codable, Equatable {
        var name: String
        var samples: [Sample]
        var pair: Pair
    }

    func encode<T: Encodable>(_ value: T) throws -> [UInt8] { try BinaryEncoder().encode(value) }
    func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T { try BinaryDecoder().decode(type, from: bytes) }

    @Test func valuesAndArraysTravelAsBlocks() throws {
        let pair = Pair(a: -7, b: 1 << 30)
        let bytes = try encode(pair)
        #expect(bytes == [BinaryFormat.tagPlain, 1, 8, 0xF9, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0x40])
        #expect(try decode(Pair.self, bytes) == pair)

        let pairs = (0..<1000).map { Pair(a: Int32($0), b: -Int32($0)) }
        let block = try encode(pairs)
        #expect(block.first == BinaryFormat.tagPlain)
        #expect(block.count == 1 + 2 + 1 + 8000)
        #expect(try decode([Pair].self, block) == pairs)
        #expect(try decode([Pair].self, try encode([Pair]())) == [])
    }

    @Test func nestedStructsTuplesAndPaddedArrays() throws {
        let nested = Nested(pair: Pair(a: 1, b: 2), scale: -0.5, tuple: (255, -300))
        #expect(try decode(Nested.self, try encode(nested)) == nested)
        // 12 bytes of data in a stride of 16: copied value by value, without the padding.
        let samples = (0..<100).map { Sample(value: Int64($0) << 40, weight: Int32(-$0)) }
        let block = try encode(samples)
        #expect(block.count == 1 + 1 + 1 + 100 * 12)
        #expect(try decode([Sample].self, block) == samples)
        let holder = Holder(name: "h", samples: samples, pair: Pair(a: 3, b: 4))
        #expect(try decode(Holder.self, try encode(holder)) == holder)
    }

    @Test func aPlainTypeAlsoReadsItsCodableEncoding() throws {
        let bytes = try encode(CodablePair(a: 5, b: 6))
        #expect(bytes.first == BinaryFormat.tagKeyed)
        #expect(try decode(Pair.self, bytes) == Pair(a: 5, b: 6))
        let array = try encode([CodablePair(a: 1, b: 2), CodablePair(a: 3, b: 4)])
        #expect(try decode([Pair].self, array) == [Pair(a: 1, b: 2), Pair(a: 3, b: 4)])
    }

    @Test func anOrdinaryTypeGetsATypeMismatchForABlock() throws {
        let error = BinaryCodecTests.decodingError { _ = try decode(CodablePair.self, try encode(Pair(a: 1, b: 2))) }
        guard case .typeMismatch? = error else {
            Issue.record("expected a type mismatch, got \(String(describing: error))")
            return
        }
        #expect("\(error!)".contains("a block of plain data"))
    }

    @Test func layoutsNameEveryFieldInOrder() throws {
        #expect(try PlainDataLayout.of(Pair.self).get().signature == "{a:Int32,b:Int32}")
        #expect(try PlainDataLayout.of(Nested.self).get().signature
                == "{pair:{a:Int32,b:Int32},scale:Float64,tuple:{.0:UInt8,.1:Int16}}")
        #expect(try PlainDataLayout.of(Sample.self).get().size == 12)
        let entry = JobEntry(PlainPoint.self)
        #expect(entry.layout == "job 16 {x:Float64,y:Float64}; output 20 {sum:Float64,product:Float64,count:Int32}")
        #expect(JobEntry(Echo.self).layout == "")
        #expect(JobEntry(PlainJobOnly.self).layout == "job 8 {a:Int32,b:Int32}")
        #expect(JobEntry(PlainOutputOnly.self).layout == "output 8 {a:Int32,b:Int32}")
    }

    struct PlainJobOnly: Job, PlainData {
        var a: Int32
        var b: Int32
        func run(in context: JobContext) async throws -> String { "" }
    }

    struct PlainOutputOnly: Job {
        var label: String
        func run(in context: JobContext) async throws -> Pair { Pair(a: 1, b: 2) }
    }

    @Test func aTypeWithAFieldThatIsNotANumberIsRefusedAndUsesCodable() throws {
        guard case .failure(let problem) = PlainDataLayout.of(Flagged.self) else {
            Issue.record("a PlainData type holding a Bool was accepted")
            return
        }
        #expect(problem.message.contains("flag"), "\(problem.message)")
        #expect(problem.message.contains("Bool"), "\(problem.message)")
        let value = Flagged(value: 9, flag: true)
        let bytes = try encode(value)
        #expect(bytes.first == BinaryFormat.tagKeyed, "refused types travel through Codable")
        #expect(try decode(Flagged.self, bytes) == value)
        #expect(try decode([Flagged].self, try encode([value, value])) == [value, value])
    }

    @Test func everyKindOfFieldThatIsNotANumberIsRefused() throws {
        let refusals: [(String, Result<PlainDataLayout, PlainDataLayout.Problem>, String)] = [
            ("optional", PlainDataLayout.of(WithOptional.self), "maybe"),
            ("pointer", PlainDataLayout.of(WithPointer.self), "UnsafeRawPointer"),
            ("SIMD vector", PlainDataLayout.of(WithVector.self), "SIMD4"),
            ("nested Bool", PlainDataLayout.of(WithNestedBool.self), "inner.flag"),
            ("enum", PlainDataLayout.of(Mode.self), "Mode"),
        ]
        for (what, result, mention) in refusals {
            guard case .failure(let problem) = result else {
                Issue.record("a PlainData type with a \(what) was accepted")
                continue
            }
            #expect(problem.message.contains(mention), "\(what): \(problem.message)")
        }
        // An optional or enum is still fine through Codable.
        #expect(try decode(Mode.self, try encode(Mode.slow)) == .slow)
    }

    @Test func emptyValuesAndArraysOfThem() throws {
        #expect(try PlainDataLayout.of(Empty.self).get().signature == "{}")
        #expect(try decode(Empty.self, try encode(Empty())) == Empty())
        let many = [Empty](repeating: Empty(), count: 1000)
        let bytes = try encode(many)
        #expect(bytes.count < 10)
        #expect(try decode([Empty].self, bytes) == many)
        // A count of empty values far beyond any real array is refused, not allocated.
        let huge: [UInt8] = [BinaryFormat.tagPlain, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0]
        #expect(BinaryCodecTests.decodingError { _ = try decode([Empty].self, huge) } != nil)
    }

    @Test func malformedBlocksAreDecodingErrors() throws {
        let good = try encode([Pair(a: 1, b: 2), Pair(a: 3, b: 4)])
        // Every truncation.
        for length in 0..<good.count {
            #expect(BinaryCodecTests.decodingError { _ = try decode([Pair].self, Array(good[..<length])) } != nil, "prefix \(length)")
        }
        // (What, the bytes, and whether the block is malformed even to a reader that skips it.)
        let cases: [(String, [UInt8], Bool)] = [
            ("another value size", [BinaryFormat.tagPlain, 1, 4, 1, 2, 3, 4], false),
            ("two values for one", [BinaryFormat.tagPlain, 2, 8] + [UInt8](repeating: 0, count: 16), false),
            ("a count beyond the input", [BinaryFormat.tagPlain, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 8, 0], true),
            ("a huge value size", [BinaryFormat.tagPlain, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], true),
            ("no values of a size beyond Int", [BinaryFormat.tagPlain, 0] + [UInt8](repeating: 0xFF, count: 9) + [0x01], true),
        ]
        let goodPair = try encode(Pair(a: 1, b: 2))
        for (what, bytes, unskippable) in cases {
            #expect(BinaryCodecTests.decodingError { _ = try decode(Pair.self, bytes) } != nil, "\(what)")
            if what == "two values for one" {
                #expect(try decode([Pair].self, bytes).count == 2, "a well-formed array")
            } else {
                #expect(BinaryCodecTests.decodingError { _ = try decode([Pair].self, bytes) } != nil, "\(what) (array)")
            }
            #expect(BinaryCodecTests.decodingError { _ = try decode(CodablePair.self, bytes) } != nil, "\(what) (ordinary)")
            // Under a key the decoder steps over to reach "pair".
            let entries = [1] + Array("x".utf8) + bytes + [4] + Array("pair".utf8) + goodPair
            let container = [BinaryFormat.tagKeyed, UInt8(entries.count)] + entries
            let error = BinaryCodecTests.decodingError { _ = try decode(PairHolder.self, container) }
            if unskippable {
                guard case .dataCorrupted? = error else {
                    Issue.record("\(what) (skipped): expected dataCorrupted, got \(String(describing: error))")
                    continue
                }
            } else {
                #expect(error == nil, "\(what) (skipped): a well-formed block is stepped over")
            }
        }
    }

    struct PairHolder: Codable {
        var pair: Pair
    }

    @Test func aReaderStepsOverBlocksToFindItsKeys() throws {
        let samples = (0..<10).map { Sample(value: Int64($0), weight: 1) }
        let holder = Holder(name: "n", samples: samples, pair: Pair(a: 8, b: 9))
        #expect(try decode(PairHolder.self, try encode(holder)).pair == Pair(a: 8, b: 9))
    }

    @Test func randomBytesInABlockAreJustNumbers() throws {
        var generator = BinaryCodecTests.SeededGenerator(seed: 7)
        for _ in 0..<200 {
            let payload = (0..<24).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let value = try decode([Pair].self, [BinaryFormat.tagPlain, 3, 8] + payload)
            #expect(value.count == 3)
        }
    }
}

extension ProcessTests {
    /// `PlainData` jobs on real worker processes.
    @Suite struct PlainDataJobs {
        /// `PlainPoint`'s wire name with another field order: a build whose layout differs.
        struct ReorderedPoint: Job, PlainData {
            static var jobName: String { PlainPoint.jobName }
            var y: Double
            var x: Double
            func run(in context: JobContext) async throws -> Moments { Moments(sum: 0, product: 0, count: 0) }
        }

        @Test func plainJobsAndOutputsRunOneByOneAndInChunks() async throws {
            try await withTestPool(2) { pool in
                #expect(try await pool.run(PlainPoint(x: 3, y: 4)) == Moments(sum: 7, product: 12, count: 2))
                let points = (0..<10_000).map { PlainPoint(x: Double($0), y: 2) }
                var index = 0
                for try await moments in pool.map(points, chunkSize: 1000) {
                    #expect(moments == Moments(sum: Double(index) + 2, product: Double(index) * 2, count: 2))
                    index += 1
                }
                #expect(index == points.count)
                let samples = (1...50).map { Sample(value: Int64($0), weight: 2) }
                #expect(try await pool.run(WeightedTotal(label: "w", samples: samples)) == "w=2550")
            }
        }

        @Test func aWorkerWithAnotherLayoutIsRefusedAtTheHandshake() async throws {
            let error = await expectCrewError(.workerStartFailed) {
                try await WorkerPool.withPool(.processes(1), jobs: [Echo.self, ReorderedPoint.self], configuration: testConfiguration()) { pool in
                    try await pool.run(Echo(1))
                }
            }
            #expect(error?.message.contains("{y:Float64,x:Float64}") == true, "\(String(describing: error))")
        }
    }
}
