/// The outcome of a `crew bench` run as a readable table and as one JSON object.
struct BenchReport: Sendable {
    var environment: BenchEnvironment
    var settings: BenchSettings
    var results: BenchResults
    /// The share of the machine's CPU that other processes used during the run, if known.
    var othersCPUPercent: Double?

    // MARK: Table

    /// The figures, then the goals, as aligned text.
    var table: String {
        var rows: [[String]] = [["figure", "median", "min", "max", "unit", "what"]]
        for (spec, result) in results.figures {
            switch result {
            case .measured(let summary):
                rows.append([spec.key, formatFigure(summary.median), formatFigure(summary.min), formatFigure(summary.max),
                             spec.unit, spec.explanation])
            case .notBuilt:
                rows.append([spec.key, "n/a (not built yet)", "", "", spec.unit, spec.explanation])
            case .skipped:
                rows.append([spec.key, "skipped", "", "", spec.unit, spec.explanation])
            case .failed:
                rows.append([spec.key, "FAILED", "", "", spec.unit, spec.explanation])
            }
        }
        var text = align(rows, rightAligned: [1, 2, 3])
        text += "\n"
        var goalRows: [[String]] = [["goal", "value", "target", ""]]
        for goal in Goal.all {
            if let value = goal.value(results) {
                goalRows.append([goal.label, formatFigure(value), goal.target, goal.isMet(by: value) ? "met" : "NOT MET"])
            } else {
                goalRows.append([goal.label, "—", goal.target, "not measured"])
            }
        }
        for goal in Goal.informational {
            goalRows.append([goal.label, goal.value(results).map(formatFigure) ?? "—", goal.target, ""])
        }
        text += align(goalRows, rightAligned: [1])
        for (key, message) in results.failures {
            text += "\n\(key) failed: \(message)"
        }
        return text
    }

    private func align(_ rows: [[String]], rightAligned: Set<Int>) -> String {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        var lines: [String] = []
        for (index, row) in rows.enumerated() {
            let cells = row.enumerated().map { i, cell in
                let padding = String(repeating: " ", count: widths[i] - cell.count)
                return rightAligned.contains(i) ? padding + cell : (i == row.count - 1 ? cell : cell + padding)
            }
            lines.append(cells.joined(separator: "  "))
            if index == 0 { lines.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: JSON

    /// One JSON object: the environment, each figure's median under its key (null if not built,
    /// skipped or failed), each figure's repetitions under `spread`, and the goals under `goals`.
    var json: String {
        var object: [(String, JSON)] = [
            ("cores", .number(Double(environment.cores))),
            ("swift_version", .string(environment.swiftVersion)),
            ("build_configuration", .string(environment.buildConfiguration)),
            ("date", .string(environment.date)),
            ("quick", .bool(settings.quick)),
            ("load_average_1m", environment.loadAverage.map(JSON.number) ?? .null),
            ("other_processes_cpu_percent", othersCPUPercent.map(JSON.number) ?? .null),
            ("repetitions", .number(Double(settings.repetitions))),
            ("mandelbrot_image", .string("\(settings.mandelbrot.width)x\(settings.mandelbrot.height), \(settings.mandelbrot.iterations) iterations")),
        ]
        var spread: [(String, JSON)] = []
        for (spec, result) in results.figures {
            object.append((spec.key, result.median.map(JSON.number) ?? .null))
            if case .measured(let summary) = result {
                spread.append((spec.key, .object([
                    ("unit", .string(spec.unit)),
                    ("min", .number(summary.min)),
                    ("max", .number(summary.max)),
                    ("repetitions", .array(summary.values.map(JSON.number))),
                ])))
            }
        }
        object.append(("spread", .object(spread)))
        object.append(("goals", .object(Goal.all.map { goal in
            let value = goal.value(results)
            return (goal.key, .object([
                ("value", value.map(JSON.number) ?? .null),
                ("target", .string(goal.target)),
                ("met", value.map { .bool(goal.isMet(by: $0)) } ?? .null),
            ]))
        })))
        object.append(("ratios_info", .object(Goal.informational.map { goal in
            (goal.key, goal.value(results).map(JSON.number) ?? .null)
        })))
        if !results.failures.isEmpty {
            object.append(("errors", .object(results.failures.map { ($0.key, .string($0.message)) })))
        }
        return JSON.object(object).rendered(indent: "") + "\n"
    }
}

/// Just enough JSON to write the report, without Foundation.
indirect enum JSON: Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    func rendered(indent: String) -> String {
        let inner = indent + "  "
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let value):
            guard value.isFinite else { return "null" }
            if value == value.rounded(), abs(value) < 1e15 { return "\(Int(value))" }
            // At least four significant digits, without the noise of binary fractions.
            let magnitude = abs(value)
            if magnitude >= 1 { return "\((value * 1e4).rounded() / 1e4)" }
            if magnitude >= 1e-4 { return "\((value * 1e8).rounded() / 1e8)" }
            return "\(value)"
        case .string(let value): return Self.quoted(value)
        case .array(let values):
            return "[" + values.map { $0.rendered(indent: inner) }.joined(separator: ", ") + "]"
        case .object(let members):
            guard !members.isEmpty else { return "{}" }
            let body = members.map { "\(inner)\(Self.quoted($0.0)): \($0.1.rendered(indent: inner))" }
            return "{\n" + body.joined(separator: ",\n") + "\n\(indent)}"
        }
    }

    private static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

/// A figure for the table: about four significant digits.
func formatFigure(_ value: Double) -> String {
    let magnitude = abs(value)
    let decimals = magnitude >= 1000 ? 0 : magnitude >= 100 ? 1 : magnitude >= 10 ? 2 : 3
    return String(value, decimals: decimals)
}
