// The push sample of docs/usage-kotlin.md, compiled here (against the stand-ins of the Android,
// Firebase and WorkManager types in ../standin/, which this JVM has not) and run by PushTest
// (scripts/test-kotlin.sh checks that the markdown shows exactly these lines).

package dev.roam

import android.app.Notification
import android.app.NotificationManager
import android.content.Context
import androidx.work.CoroutineWorker
import androidx.work.WorkerParameters
import com.google.firebase.messaging.FirebaseMessagingService
import com.google.firebase.messaging.RemoteMessage
import kotlinx.coroutines.runBlocking

// sample:begin
/** The app's account: how its RoamClient is opened, and the client while the app has it open. */
object RoamAccount {
    lateinit var options: ClientOptions
    lateinit var tokens: TokenProvider
    var client: RoamClient? = null
}

/** Roam's FCM pushes are data-only: this service decides what to show, even with the app closed. */
class RoamMessagingService : FirebaseMessagingService() {
    override fun onMessageReceived(message: RemoteMessage) {
        val roam = message.data["roam"] ?: return // not a Roam push
        // Runs off the main thread with about 10 s to finish: ask for an answer within 5.
        val content = try {
            runBlocking {
                PushHandler(RoamAccount.options, RoamAccount.tokens).use { it.handlePush(roam, 5_000uL) }
            }
        } catch (e: RoamException) {
            null // an unreadable payload or store: show the generic text
        }
        val notifications = getSystemService(Context.NOTIFICATION_SERVICE) as NotificationManager
        if (content?.kind == PushContentKind.CLEAR) {
            // Read on another device (or deleted): the room's notification goes.
            notifications.cancel(content.room, 0)
            return
        }
        val text = content?.body?.let { body -> content.sender?.let { "$it: $body" } ?: body }
        val notification = Notification.Builder(this, "messages")
            .setContentTitle(content?.roomTitle ?: "Roam")
            .setContentText(text ?: "New message")
            .setGroup(content?.room)
            .setNumber(content?.badge?.toInt() ?: 0)
            .build()
        // One notification per room (the server collapses pushes per room too).
        notifications.notify(content?.room, 0, notification)
    }

    override fun onNewToken(token: String) {
        RoamAccount.client?.registerPush(PushPlatform.FCM, token, "com.example.roam", false, null)
    }
}

/** Background catch-up (WorkManager): one bounded round of sync, then the client goes quiet. */
class RoamSyncWorker(context: Context, params: WorkerParameters) : CoroutineWorker(context, params) {
    override suspend fun doWork(): Result {
        val open = RoamAccount.client
        val client = open ?: RoamClient(RoamAccount.options, RoamAccount.tokens)
        return try {
            client.syncOnce(60_000uL)
            Result.success()
        } catch (e: RoamException.NeedsSignIn) {
            Result.failure()
        } catch (e: RoamException) {
            Result.retry()
        } finally {
            if (open == null) client.close()
        }
    }
}
// sample:end
