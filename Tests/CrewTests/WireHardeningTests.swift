import CrewTestJobs
import Glibc
import Testing
@testable import Crew

/// A review of the wire protocol, the codec and the worker side: each test shows a place where
/// the code does not do what its documentation promises.
@Suite struct WireHardening {
    /// `[[[...[]...]]]`, `levels` lists around an empty one (each `09 <length> 01`), built back
    /// to front so that a deep one costs linear time.
    static func nestedLists(_ levels: Int) -> [UInt8] {
        var reversed: [UInt8] = [0x00, 0x01, 0x09]  // the innermost list, reversed
        for _ in 0..<levels {
            var header: [UInt8] = [0x09]
            header.binaryAppendVarint(UInt64(reversed.count + 1))
            header.append(1)
            reversed.append(contentsOf: header.reversed())
        }
        return reversed.reversed()
    }

    /// BinaryFormat.swift: "values nest at most `BinaryFormat.maxDepth` deep, on both sides";
    /// BinaryDecoder: "refuses values nested more than `BinaryFormat.maxDepth` deep". The
    /// encoder bounds nested containers (2 × maxDepth frames) and the decoder bounds super
    /// decoders, but the decoder's nested containers are not bounded at all: a hand-written
    /// `init(from:)` that recurses through them reads hostile input of any depth (and, deep
    /// enough, overflows the stack: see `WireProcessReview`).
    @Test func nestedContainersDeeperThanTheLimitAreRefusedWhenDecoding() throws {
        let levels = 4 * BinaryFormat.maxDepth
        // The encoder refuses to write this value...
        #expect(throws: EncodingError.self) { try BinaryEncoder().encode(ListDepth(depth: levels)) }
        // ...but the decoder reads it.
        #expect(throws: DecodingError.self) {
            let decoded = try BinaryDecoder().decode(ListDepth.self, from: Self.nestedLists(levels))
            print("decoded lists \(decoded.depth) deep, past the limit of \(BinaryFormat.maxDepth)")
        }
    }

    /// A field that is a standard-library struct of one `UInt32` with an invariant of its own.
    struct Glyph: PlainData {
        var scalar: Unicode.Scalar
        var x: Float
        init(scalar: Unicode.Scalar, x: Float) { self.scalar = scalar; self.x = x }
        init(from decoder: any Decoder) throws {
            var container = try decoder.unkeyedContainer()
            guard let scalar = Unicode.Scalar(try container.decode(UInt32.self)) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a scalar")
            }
            self.scalar = scalar
            x = try container.decode(Float.self)
        }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(scalar.value)
            try container.encode(x)
        }
    }

    /// PlainData.swift: the type must hold only numbers "so that every bit pattern is a valid
    /// value and no byte that arrives can make an invalid one"; the standard library's other
    /// structs are refused (PlainData.swift's comment: "Bool, pointers, SIMD vectors fail on
    /// their builtin storage"). `Unicode.Scalar` stores a plain `UInt32`, so the check accepts
    /// it, and a block then makes a scalar that cannot exist (a surrogate), which its
    /// `init(from:)` would have refused.
    @Test func aFieldWithAnInvariantOfItsOwnIsNotAcceptedAsPlainData() throws {
        let layout = PlainDataLayout.of(Glyph.self)
        #expect(throws: PlainDataLayout.Problem.self) { try layout.get() }
        // What the acceptance allows: 8 bytes from the wire, the first four 0xD800.
        let block: [UInt8] = [BinaryFormat.tagPlain, 1, 8, 0x00, 0xD8, 0x00, 0x00, 0, 0, 0x80, 0x3F]
        let decoded = try? BinaryDecoder().decode(Glyph.self, from: block)
        #expect(decoded == nil, "decoded the scalar U+\(String(decoded?.scalar.value ?? 0, radix: 16, uppercase: true)), a surrogate")
    }
}

extension ProcessTests {
    @Suite struct WireProcessHardening {
        /// README, faults: "the job throws → `.jobFailed`, with the error's type name and
        /// description; the worker goes on". The worker bounds a result by `maxFrameSize` but
        /// not a failure: an error whose description is larger than a frame makes an oversized
        /// failure frame, which the pool takes for a protocol violation and kills the worker.
        @Test func aJobThatThrowsAnErrorWithAMessageLargerThanAFrameGetsJobFailed() async throws {
            try await withTestPool(1, { $0.maxFrameSize = 64 * 1024 }) { pool in
                let small = await expectCrewError(.jobFailed) { try await pool.run(FailWithLongMessage(length: 1000)) }
                #expect(small?.message.contains("xxxx") == true)
                let old = pool.workerProcessIDs
                await expectCrewError(.jobFailed) { try await pool.run(FailWithLongMessage(length: 100_000)) }
                #expect(pool.workerProcessIDs == old, "the worker goes on")
                let echoed = try await pool.run(Echo(5))
                #expect(echoed == 5)
            }
        }

        /// README, faults: "the worker cannot decode the arguments → `.undecodableArguments`;
        /// the worker goes on"; BinaryFormat.swift: "Adversarial input is harmless ... values
        /// nest at most `BinaryFormat.maxDepth` deep". Arguments nested a few hundred thousand
        /// lists deep, read by a job type whose `init(from:)` recurses through nested containers,
        /// are never refused by depth: the worker overflows its stack and dies instead.
        @Test func deeplyNestedArgumentsAreUndecodableAndTheWorkerServesOn() async throws {
            let probe = try await ProcessTests.WorkerProtocol.Probe.greeted()
            let arguments = WireHardening.nestedLists(300_000)
            probe.worker.send(.run(jobID: 1, name: ListDepth.jobName, arguments: arguments))
            probe.worker.send(.run(jobID: 2, name: Echo.jobName, arguments: try BinaryEncoder().encode(Echo(5))))
            #expect(await eventually(within: .seconds(60)) {
                probe.log.contains { $0.hasPrefix("result(jobID: 2") || $0.hasPrefix("exited") }
            })
            #expect(probe.log.contains { $0.contains("jobID: 1, kind: Crew.FailureKind.undecodableArguments") }, "\(probe.log)")
            #expect(probe.log.contains { $0.hasPrefix("result(jobID: 2") }, "\(probe.log)")
            if !probe.log.contains(where: { $0.hasPrefix("exited") }) { await probe.expectCleanExit() }
        }
    }
}
