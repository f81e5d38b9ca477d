// STAND-INS, NOT THE REAL APIs. The JVM toolchain here has no Android SDK, Firebase or
// WorkManager, so the push sample (dev.roam.PushSample) is compiled against these minimal
// declarations of just the platform types it uses, under their real package names and with
// their real signatures, so that the sample's lines are the ones an app compiles. Each records
// what the sample did with it, for PushTest to check. Nothing here ships.
@file:Suppress("unused", "UNUSED_PARAMETER")

package android.content

/** Stand-in for `android.content.Context`. */
open class Context {
    open val applicationContext: Context get() = this
    private val services = mutableMapOf<String, Any>()

    fun <T : Any> putSystemService(name: String, service: T) {
        services[name] = service
    }

    open fun getSystemService(name: String): Any? = services[name]

    companion object {
        const val NOTIFICATION_SERVICE = "notification"
    }
}
