/// When and how often a job that crashed its worker or timed out is run again.
///
/// Retrying is opt-in and only for jobs that are safe to run twice: the job type must declare
/// ``Job/isIdempotent``. Give the policy per call or per job type (``Job/retryPolicy``).
///
/// ```swift
/// struct Fetch: Job {
///     static var isIdempotent: Bool { true }
///     static var retryPolicy: RetryPolicy? { .exponential(maxAttempts: 4) }
///     ...
/// }
/// ```
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts in all, the first included (so 1 means no retry).
    public var maxAttempts: Int
    /// The wait before the second attempt.
    public var initialBackoff: Duration
    /// Each further wait is the previous one times this (at least 1).
    public var multiplier: Double
    /// The longest wait.
    public var maxBackoff: Duration
    /// The share of each wait that is random, from 0 (none) to 1 (anywhere between 0 and the
    /// full wait), so that many callers do not retry in lockstep.
    public var jitter: Double
    /// The failures that are retried. Default: a crashed worker and a timeout.
    public var retryableCodes: Set<CrewError.Code>

    /// A policy with the given limits.
    public init(
        maxAttempts: Int, initialBackoff: Duration = .milliseconds(50), multiplier: Double = 2,
        maxBackoff: Duration = .seconds(5), jitter: Double = 0.5,
        retryableCodes: Set<CrewError.Code> = [.workerCrashed, .timedOut]
    ) {
        precondition(maxAttempts >= 1, "maxAttempts counts the first attempt: at least 1")
        precondition((0...1).contains(jitter), "jitter is a share, from 0 to 1")
        precondition(multiplier >= 1, "multiplier grows each wait: at least 1")
        precondition(initialBackoff >= .zero && maxBackoff >= .zero, "backoffs are waits: not negative")
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.multiplier = multiplier
        self.maxBackoff = maxBackoff
        self.jitter = jitter
        self.retryableCodes = retryableCodes
    }

    /// Exponential backoff from 50 ms, doubling, at most 5 s, half of it random.
    public static func exponential(maxAttempts: Int) -> RetryPolicy { RetryPolicy(maxAttempts: maxAttempts) }

    /// The longest wait ``backoff(beforeAttempt:random:)`` returns: `Task.sleep` traps on a
    /// deadline its clock cannot represent (about `Int64.max` seconds from now), and a longer
    /// wait is forever all the same.
    private static let longestWait = Duration.seconds(Int64.max / 2)

    /// The wait before attempt `attempt` (2 for the first retry), with `random` in 0...1.
    func backoff(beforeAttempt attempt: Int, random: Double) -> Duration {
        let cap = min(maxBackoff, Self.longestWait)
        var wait = min(initialBackoff, cap)
        if attempt > 2 {
            for _ in 2..<attempt {
                if wait >= cap { break }
                // Checked in Double first: `Duration * Double` traps on a product outside its
                // range (a large multiplier, or a maxBackoff that means "no cap"), and a product
                // past the cap is the cap anyway.
                guard Self.seconds(wait) * multiplier < Self.seconds(cap) else {
                    wait = cap
                    break
                }
                wait = wait * multiplier
            }
        }
        wait = min(wait, cap)
        return wait * (1 - jitter) + wait * (jitter * random)
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }
}
