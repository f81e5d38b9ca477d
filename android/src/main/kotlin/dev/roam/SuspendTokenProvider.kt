// Token providers for Kotlin: a suspend function that fetches a token (a refresh call, the
// keystore) as the client's TokenProvider.
package dev.roam

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.launch
import kotlin.coroutines.cancellation.CancellationException

/**
 * A [TokenProvider] backed by a suspend function, run in [scope] (by default a scope of its own
 * on [Dispatchers.IO]). `fetch(refresh)` returns the token; `refresh` is true when the last one
 * was refused or has expired. Throw [RoamException.Network] when the token service cannot be
 * reached (the client retries later); anything else thrown means there is no sign-in (the
 * client reports `NeedsSignIn` until `networkAvailable()` is called).
 */
class SuspendTokenProvider(
    private val scope: CoroutineScope = CoroutineScope(SupervisorJob() + Dispatchers.IO),
    private val fetch: suspend (refresh: Boolean) -> String,
) : TokenProvider {
    override fun token(refresh: Boolean, reply: TokenReply) {
        scope.launch {
            try {
                reply.token(fetch(refresh))
            } catch (e: RoamException.Network) {
                reply.unreachable(e.reason)
            } catch (e: CancellationException) {
                reply.unreachable("the token request was cancelled")
                throw e
            } catch (e: Exception) {
                reply.signedOut(e.message ?: e.toString())
            }
        }
    }
}
