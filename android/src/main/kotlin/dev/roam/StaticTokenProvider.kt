package dev.roam

/** A [TokenProvider] that always answers the same token (tests, samples, long-lived tokens). */
class StaticTokenProvider(private val token: String) : TokenProvider {
    override fun token(refresh: Boolean, reply: TokenReply) = reply.token(token)
}
