package dev.roam

import java.io.File
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.cancel
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.Test

/** Timelines, the sync status and account safety from Kotlin, against a real server. */
class TimelineTest : ServerTest() {
    @Test
    fun timelineListFollowsSendsEditsDeletesAndTheOtherUser() = runBlocking {
        val (alice, bob) = pair()
        val live = alice.liveTimeline("team", 50u)
        val mine = (0 until 30).map { alice.sendMessage("team", "mine $it") }
        // Sent first: an edit or delete of a message not sent yet folds into its send (a delete
        // then leaves no trace), and whether it is sent yet would be up to timing.
        withTimeout(20_000) { alice.waitForPendingWrites() }
        alice.editMessage("team", mine[3].localId, "edited")
        alice.deleteMessage("team", mine[5].localId)
        repeat(10) { bob.sendMessage("team", "theirs $it") }
        withTimeout(20_000) { alice.waitForPendingWrites() }
        waitUntil("bob's messages arrive") { alice.messages("team", null, 200u).count { it.body.startsWith("theirs") } == 10 }
        val expected = alice.messages("team", null, 200u)
        val list = withTimeout(20_000) { live.messages.first { it == expected } }
        assertEquals(40, list.size)
        assertTrue(list.any { it.body == "edited" })
        assertTrue(list.any { it.deleted })
        assertTrue(list.all { it.sendState == SendState.Sent })
        assertFailsWith<RoamException.InvalidInput> { live.paginateBackwards(0u) }
        live.close()
    }

    @Test
    fun chatScreenModelSampleFollowsTheRoom() = runBlocking {
        val (alice, bob) = pair()
        val scope = CoroutineScope(Dispatchers.Default)
        val model = ChatScreenModel(alice, "team", scope)
        alice.sendMessage("team", "hello")
        bob.sendMessage("team", "hi alice")
        withTimeout(20_000) { alice.waitForPendingWrites() }
        waitUntil("the model shows both messages, confirmed") {
            model.messages.value.map { it.body }.toSet() == setOf("hello", "hi alice") &&
                model.messages.value.all { it.sendState == SendState.Sent }
        }
        assertTrue(model.loadOlder(), "the room's start is reached")
        waitUntil("the model sees the sync status") { model.sync.value?.phase == SyncPhase.Synced }
        model.close()
        scope.cancel()
    }

    @Test
    fun syncStatusAndWaitingForPendingWritesAcrossAnOutage() = runBlocking {
        val (alice, _) = pair()
        alice.setOnline(false)
        // Going offline closes the socket in the background: wait for it, so the sends below
        // stay queued instead of leaving on the socket that is still closing.
        withTimeout(10_000) { alice.syncStatuses().first { it.phase == SyncPhase.Offline } }
        repeat(5) { alice.sendMessage("team", "queued $it") }
        assertEquals(5uL, alice.syncStatus().pendingWrites)
        assertEquals(SyncPhase.Offline, alice.syncStatus().phase)
        alice.setOnline(true)
        withTimeout(20_000) { alice.waitForPendingWrites() }
        val synced = withTimeout(20_000) { alice.syncStatuses().first { it.phase == SyncPhase.Synced } }
        assertEquals(0uL, synced.pendingWrites)
    }

    @Test
    fun aTokenForAnotherUserNeedsSignInAndSendsNothing() = runBlocking {
        val mallory = client("mallory")
        mallory.createRoom("shared", RoomKind.PUBLIC, "Shared")
        withTimeout(20_000) { mallory.start(); mallory.waitForPendingWrites() }
        val wrong = client("alice", token = server.token("mallory"))
        wrong.sendMessage("shared", "alice's secret")
        wrong.start()
        val status = withTimeout(10_000) { wrong.syncStatuses().first { it.phase is SyncPhase.NeedsSignIn } }
        assertTrue((status.phase as SyncPhase.NeedsSignIn).reason.contains("mallory"))
        assertEquals(ConnectionState.NeedsSignIn, wrong.connectionState())
        assertFailsWith<RoamException.NeedsSignIn> { wrong.waitForPendingWrites() }
        assertEquals(emptyList(), server.storedBodies("shared", server.token("mallory")))
    }

    @Test
    fun aSuspendTokenProviderSignsInAndOneThatThrowsNeedsSignIn() = runBlocking {
        val token = server.token("dora")
        val dora = client("dora", tokens = SuspendTokenProvider { delay(20); token })
        dora.createRoom("tokens", RoomKind.PUBLIC, "Tokens")
        dora.sendMessage("tokens", "signed in asynchronously")
        withTimeout(20_000) { dora.start(); dora.waitForPendingWrites() }
        assertEquals(listOf("signed in asynchronously"), server.storedBodies("tokens", token))

        val gone = client("dora", tokens = SuspendTokenProvider { throw IllegalStateException("session revoked") })
        gone.start()
        val status = withTimeout(10_000) { gone.syncStatuses().first { it.phase is SyncPhase.NeedsSignIn } }
        assertTrue((status.phase as SyncPhase.NeedsSignIn).reason.contains("session revoked"))
    }

    @Test
    fun signOutWipesTheDatabaseAndASecondClientIsRefused() = runBlocking {
        val db = File(server.dir, "carol-${System.nanoTime()}.db")
        val carol = client("carol", dbPath = db.absolutePath)
        carol.sendMessage("team", "draft")
        assertFailsWith<RoamException.AlreadyOpen> { client("carol", dbPath = db.absolutePath) }
        carol.signOut(true)
        assertTrue(!db.exists())
        assertFailsWith<RoamException.Closed> { carol.messages("team", null, 10u) }
        val again = client("carol", dbPath = db.absolutePath)
        assertEquals(0, again.messages("team", null, 10u).size)
    }
}
