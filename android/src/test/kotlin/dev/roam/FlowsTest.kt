package dev.roam

import kotlin.test.assertEquals
import kotlin.test.assertIs
import kotlin.test.assertTrue
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.onEach
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.Test

/**
 * The Flow layer (RoamFlows.kt) against a real server. Collectors start UNDISPATCHED on the
 * Unconfined dispatcher, so the subscription exists before the other client acts.
 */
class FlowsTest : ServerTest() {
    @Test
    fun roomUpdatesFlowDeliversMessagesAndEdits() = runBlocking {
        val (alice, bob) = pair()
        val got = async(Dispatchers.Unconfined, start = CoroutineStart.UNDISPATCHED) {
            withTimeout(10_000) {
                bob.roomUpdates("team").filterIsInstance<RoomUpdate.MessageEdited>().first().message
            }
        }
        val sent = alice.sendMessage("team", "first draft")
        // An edit before the send is confirmed would fold into the send (no edit event).
        withTimeout(20_000) { alice.waitForPendingWrites() }
        alice.editMessage("team", sent.localId, "final text")
        assertEquals("final text", got.await().body)
        assertEquals("alice", got.await().sender)
    }

    @Test
    fun connectionStatesStartWithTheCurrentState() = runBlocking {
        val (alice, _) = pair()
        assertEquals(ConnectionState.Connected, withTimeout(10_000) { alice.connectionStates().first() })
        val states = async(Dispatchers.Unconfined, start = CoroutineStart.UNDISPATCHED) {
            withTimeout(10_000) { alice.connectionStates().take(2).toList() }
        }
        alice.setOnline(false)
        assertEquals(listOf(ConnectionState.Connected, ConnectionState.Offline), states.await())
    }

    @Test
    fun typingAndPresenceFlowsSeeTheOtherClient() = runBlocking {
        val (alice, bob) = pair()
        // The current (empty) list comes first; Alice starts typing once Bob is listening.
        val typing = withTimeout(10_000) {
            bob.typingUpdates("team")
                .onEach { if (it.users.isEmpty()) alice.typingStarted("team") }
                .first { it.users.isNotEmpty() }
        }
        assertEquals(TypingUpdate("team", listOf("alice")), typing)

        val away = async(Dispatchers.Unconfined, start = CoroutineStart.UNDISPATCHED) {
            withTimeout(10_000) { bob.presenceUpdates().first { it.user == "alice" && it.status == PresenceStatus.AWAY } }
        }
        alice.setIdle(true)
        assertEquals(PresenceStatus.AWAY, away.await().status)
    }

    @Test
    fun notificationAndDocumentFlows() = runBlocking {
        val (alice, bob) = pair()
        val events = async(Dispatchers.Unconfined, start = CoroutineStart.UNDISPATCHED) {
            withTimeout(10_000) {
                bob.notificationEvents().first { it is NotificationEvent.New }
            }
        }
        alice.setRole("team", "bob", Role.ADMIN)
        val new = assertIs<NotificationEvent.New>(events.await())
        assertEquals("role_changed", new.notification.kind)
        val count = withTimeout(10_000) { bob.notificationEvents().first() }
        assertIs<NotificationEvent.UnreadCount>(count)
        assertTrue(count.count >= 1uL, "$count")

        alice.saveDocument("team", "plan", 0uL, "v1")
        val conflict = async(Dispatchers.Unconfined, start = CoroutineStart.UNDISPATCHED) {
            withTimeout(10_000) { bob.documentUpdates("team").filterIsInstance<DocumentUpdate.Conflict>().first() }
        }
        bob.putDocument("team", "plan", 0uL, "stale")
        val c = conflict.await()
        assertEquals(1uL, c.current.version)
        assertEquals("v1", c.current.content)
        assertEquals("stale", c.document.content)
    }

    @Test
    fun aFlowThatEndsClosesItsSubscription() = runBlocking {
        val (alice, bob) = pair()
        // take(1) ends the collection: awaitClose closes the handle; the client goes on working.
        repeat(20) { withTimeout(10_000) { bob.connectionStates().first() } }
        alice.sendMessage("team", "still fine")
        waitUntil("bob still receives") { bob.messages("team", null, 10u).any { it.body == "still fine" } }
    }
}
