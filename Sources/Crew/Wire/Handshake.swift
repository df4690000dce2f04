extension JobCatalog {
    /// Why a worker that says `hello` cannot serve a pool with this catalog, or nil if it can:
    /// another protocol version, a job type missing, or a `PlainData` layout that differs.
    func handshakeProblem(_ hello: Hello) -> String? {
        guard hello.version == WireProtocol.version else {
            return "the worker speaks protocol version \(hello.version), this pool \(WireProtocol.version) (mismatched builds)"
        }
        let offered = Dictionary(zip(hello.jobNames, hello.jobLayouts), uniquingKeysWith: { first, _ in first })
        let missing = names.filter { offered[$0] == nil }
        guard missing.isEmpty else {
            return "the worker's catalog lacks \(missing.joined(separator: ", ")) (mismatched builds, or a worker executable with another catalog)"
        }
        for name in names {
            let layout = entries[name]?.layout ?? ""
            if let theirs = offered[name], theirs != entries[name]?.layoutDigest ?? "" {
                let ours = layout.isEmpty ? "no plain data" : "\"\(layout.prefix(500))\""
                return "the worker lays out the plain data of \(name) differently from this pool's \(ours) (mismatched builds)"
            }
        }
        return nil
    }
}
