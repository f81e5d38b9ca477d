// Token providers for Swift: a fixed token, or an async closure that fetches one (a refresh
// call, the keychain).

/// A `TokenProvider` that always answers the same token. Immutable, so truly `Sendable`.
public final class StaticTokenProvider: TokenProvider {
    private let value: String

    public init(_ token: String) { value = token }

    public func token(refresh: Bool, reply: TokenReply) { reply.token(token: value) }
}

/// A `TokenProvider` backed by an async closure, run in a `Task` of its own for each request.
/// `fetch(refresh)` returns the token; `refresh` is true when the last one was refused or has
/// expired. Throw `RoamError.Network` when the token service cannot be reached (the client
/// retries later); anything else thrown means there is no sign-in (the client reports
/// `needsSignIn` until `networkAvailable()` is called).
public final class AsyncTokenProvider: TokenProvider {
    private let fetch: @Sendable (_ refresh: Bool) async throws -> String

    public init(_ fetch: @escaping @Sendable (_ refresh: Bool) async throws -> String) {
        self.fetch = fetch
    }

    public func token(refresh: Bool, reply: TokenReply) {
        let fetch = self.fetch
        Task {
            do {
                reply.token(token: try await fetch(refresh))
            } catch RoamError.Network(let reason) {
                reply.unreachable(reason: reason)
            } catch is CancellationError {
                reply.unreachable(reason: "the token request was cancelled")
            } catch {
                reply.signedOut(reason: String(describing: error))
            }
        }
    }
}
