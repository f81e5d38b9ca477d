package dev.roam

import android.app.NotificationManager
import android.content.Context
import androidx.work.ListenableWorker
import androidx.work.WorkerParameters
import com.google.firebase.messaging.RemoteMessage
import java.io.File
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.Test

/**
 * Push on Android against a real server: register and set modes through the outbox, then the
 * sample's FirebaseMessagingService shows a message its store does not hold yet (fetched next
 * to the app's open client), clears it when read elsewhere, and the sample's worker catches up.
 */
class PushTest : ServerTest() {
    @Test
    fun registerShowClearAndCatchUp() = runBlocking<Unit> {
        val aliceToken = server.token("alice")
        val aliceDb = File(server.dir, "alice-push.db").absolutePath
        val alice = client("alice", token = aliceToken, dbPath = aliceDb)
        val bob = client("bob")
        alice.start()
        bob.start()
        alice.createRoom("team", RoomKind.PUBLIC, "Team")
        waitUntil("the room is created") { alice.room("team")?.sendState == SendState.Sent }
        bob.joinRoom("team")
        waitUntil("bob has joined") { bob.room("team")?.let { it.joined && it.sendState == SendState.Sent } == true }

        val device = alice.pushDeviceId()
        assertEquals(device, alice.pushDeviceId(), "one device id per store")
        alice.registerPush(PushPlatform.FCM, "fcm-token-alice", "dev.roam.test", false, "en")
        alice.setPushMode("team", PushMode.MENTIONS)
        assertEquals(PushMode.MENTIONS, alice.pushSettings().rooms["team"], "shown at once")
        withTimeout(10_000) { alice.waitForPendingWrites() }
        assertEquals(PushMode.MENTIONS, alice.refreshPushSettings().rooms["team"], "confirmed by the server")
        assertFailsWith<RoamException.InvalidInput> { alice.setPushMode(null, PushMode.DEFAULT) }

        // The app goes to the background: no socket, the store stays open in the app.
        alice.setOnline(false)
        waitUntil("alice is offline") { alice.connectionState() == ConnectionState.Offline }
        val sent = bob.sendMessage("team", "are you there?")
        waitUntil("bob's message is confirmed") { bob.message(sent.localId)?.seq != null }
        val confirmed = assertNotNull(bob.message(sent.localId))
        assertTrue(alice.messages("team", null, 50u).none { it.body == "are you there?" }, "not local yet")

        RoamAccount.options = ClientOptions(dbPath = aliceDb, serverUrl = server.url, userId = "alice")
        RoamAccount.tokens = StaticTokenProvider(aliceToken)
        RoamAccount.client = alice
        val service = RoamMessagingService()
        val shown = NotificationManager()
        service.putSystemService(Context.NOTIFICATION_SERVICE, shown)

        val push = """{"v":1,"kind":"message","room":"team","seq":${confirmed.seq},""" +
            """"message":"${confirmed.id}","unread":1}"""
        service.onMessageReceived(RemoteMessage(mapOf("roam" to push)))
        val n = assertNotNull(shown.shown["team" to 0], "a notification for the room")
        assertEquals("Team", n.title)
        assertEquals("bob: are you there?", n.text)
        assertEquals("team", n.group)

        // A bad payload still shows something, generically.
        service.onMessageReceived(RemoteMessage(mapOf("roam" to """{"v":1,"kind":"nope"}""")))
        assertEquals("New message", shown.shown[null to 0]?.text)

        // Read on another device: the room's notification goes.
        val read = """{"v":1,"kind":"read","room":"team","seq":${confirmed.seq},"unread":0}"""
        service.onMessageReceived(RemoteMessage(mapOf("roam" to read)))
        assertTrue(("team" to 0) !in shown.shown, "cleared")

        // The worker catches the app's store up.
        val result = RoamSyncWorker(service, WorkerParameters()).doWork()
        assertIs<ListenableWorker.Result.Success>(result)
        assertTrue(alice.messages("team", null, 50u).any { it.body == "are you there?" }, "caught up")

        alice.unregisterPush()
        withTimeout(10_000) { alice.syncOnce(10_000uL) }
        RoamAccount.client = null
    }
}
