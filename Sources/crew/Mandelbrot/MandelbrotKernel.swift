import Crew

/// The Mandelbrot set, one row at a time (the demo's unit of work, after AsynQueue's mcmandelbrot).
struct MandelbrotGeometry: PlainData, Hashable {
    var width: Int
    var height: Int
    var iterations: Int
    /// The centre of the view on the complex plane.
    var centerX: Double = -0.75
    var centerY: Double = 0
    /// The real-axis span of the view; the imaginary span follows from the aspect ratio.
    var span: Double = 3.0

    /// RGB bytes (3 per pixel) of row `y`, top row 0.
    func renderRow(_ y: Int) -> [UInt8] {
        var pixels = [UInt8](repeating: 0, count: width * 3)
        let scale = span / Double(width)
        let ci = centerY + (Double(height) / 2 - Double(y)) * scale
        let left = centerX - span / 2
        pixels.withUnsafeMutableBufferPointer { out in
            for x in 0..<width {
                let cr = left + Double(x) * scale
                var zr = 0.0, zi = 0.0, zr2 = 0.0, zi2 = 0.0
                var n = 0
                while n < iterations && zr2 + zi2 <= 256 {
                    zi = 2 * zr * zi + ci
                    zr = zr2 - zi2 + cr
                    zr2 = zr * zr
                    zi2 = zi * zi
                    n += 1
                }
                let (r, g, b) = n >= iterations ? (0, 0, 0) : Self.color(n: n, modulus2: zr2 + zi2)
                out[3 * x] = r
                out[3 * x + 1] = g
                out[3 * x + 2] = b
            }
        }
        return pixels
    }

    /// A smooth escape-time palette: deep blue through white to gold.
    private static func color(n: Int, modulus2: Double) -> (UInt8, UInt8, UInt8) {
        // Smooth iteration count: n + 1 - log2(log|z|).
        let logModulus = 0.5 * log2Approx(modulus2)
        let smooth = Double(n) + 1 - log2Approx(max(logModulus, 1e-9))
        let t = (smooth * 0.035).truncatingRemainder(dividingBy: 1)
        let r = 9 * (1 - t) * t * t * t
        let g = 15 * (1 - t) * (1 - t) * t * t
        let b = 8.5 * (1 - t) * (1 - t) * (1 - t) * t
        return (channel(r), channel(g), channel(b))
    }

    private static func channel(_ value: Double) -> UInt8 { UInt8(max(0, min(255, value * 255))) }

    /// log2 without Foundation: exponent from the bit pattern plus a short series for the mantissa.
    private static func log2Approx(_ x: Double) -> Double {
        guard x > 0 else { return -1000 }
        let exponent = Double(x.exponent)
        let m = x.significand  // in [1, 2)
        let y = (m - 1) / (m + 1)
        let y2 = y * y
        let ln = 2 * y * (1 + y2 / 3 + y2 * y2 / 5 + y2 * y2 * y2 / 7)
        return exponent + ln * 1.4426950408889634
    }
}
