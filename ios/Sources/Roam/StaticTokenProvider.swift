// A token provider for a fixed token (tests, samples, long-lived tokens).

/// A `TokenProvider` that always answers the same token. Immutable, so truly `Sendable`.
public final class StaticTokenProvider: TokenProvider {
    private let value: String

    public init(_ token: String) { value = token }

    public func token(refresh: Bool) throws -> String { value }
}
