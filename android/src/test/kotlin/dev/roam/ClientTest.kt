package dev.roam

import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.After
import org.junit.Before
import org.junit.Test

/** The Kotlin API against a real roam-server: messages, offline, live events, errors, lifecycle. */
class ClientTest {
    private lateinit var server: TestServer
    private val clients = mutableListOf<RoamClient>()

    private class Updates : RoomListener {
        val seen = CopyOnWriteArrayList<RoomUpdate>()
        override fun onRoomUpdate(update: RoomUpdate) { seen.add(update) }
    }

    private fun client(user: String): RoamClient = server.client(user).also { clients.add(it) }

    /** Alice's room "team" with Bob in it, both connected. */
    private fun pair(): Pair<RoamClient, RoamClient> = runBlocking {
        val alice = client("alice")
        val bob = client("bob")
        alice.start()
        bob.start()
        alice.createRoom("team", RoomKind.PUBLIC, "Team")
        waitUntil("room created") { alice.metrics().outboxDepth == 0uL }
        bob.joinRoom("team")
        waitUntil("bob joined") { bob.metrics().outboxDepth == 0uL }
        alice to bob
    }

    @Before
    fun setUp() {
        server = TestServer()
        server.start()
    }

    @After
    fun tearDown() = runBlocking {
        clients.forEach { it.shutdown() }
        server.stop()
    }

    @Test
    fun sendReceiveEditDelete() {
        val (alice, bob) = pair()
        val updates = Updates()
        val handle = bob.subscribeRoomUpdates("team", updates)
        val sent = alice.sendMessage("team", "hello bob")
        assertIs<SendState.Pending>(sent.sendState)
        waitUntil("bob receives it") {
            updates.seen.any { it is RoomUpdate.MessageAdded && it.message.body == "hello bob" }
        }
        waitUntil("alice's copy is sent") { alice.message(sent.localId)?.sendState == SendState.Sent }
        alice.editMessage("team", sent.localId, "hello bob!")
        waitUntil("bob sees the edit") {
            updates.seen.any { it is RoomUpdate.MessageEdited && it.message.body == "hello bob!" }
        }
        alice.deleteMessage("team", sent.localId)
        waitUntil("bob sees the delete") { updates.seen.any { it is RoomUpdate.MessageDeleted } }
        handle.cancel()
    }

    @Test
    fun offlineMessagesArriveOnceWhenTheServerComesBack() = runBlocking {
        val (alice, bob) = pair()
        server.stop()
        waitUntil("alice notices") { alice.connectionState() != ConnectionState.Connected }
        val queued = (1..3).map { alice.sendMessage("team", "offline $it") }
        assertTrue(queued.all { it.sendState == SendState.Pending })
        assertEquals(3, alice.messages("team", null, 50u).count { it.sendState == SendState.Pending })
        server.start()
        alice.networkAvailable()
        bob.networkAvailable()
        waitUntil("all sent") { queued.all { alice.message(it.localId)?.sendState == SendState.Sent } }
        waitUntil("bob has each once") {
            bob.messages("team", null, 50u).map { it.body } == listOf("offline 1", "offline 2", "offline 3")
        }
    }

    @Test
    fun typingAndPresenceReachTheOtherClient() {
        val (alice, bob) = pair()
        val typing = CopyOnWriteArrayList<List<String>>()
        val presence = CopyOnWriteArrayList<Presence>()
        val t = bob.subscribeTyping("team", object : TypingListener {
            override fun onTyping(room: String, users: List<String>) { typing.add(users) }
        })
        val seen = presence
        val p = bob.subscribePresence(object : PresenceListener {
            override fun onPresence(presence: Presence) { seen.add(presence) }
        })
        alice.typingStarted("team")
        waitUntil("bob sees alice typing") { typing.any { it == listOf("alice") } }
        alice.setIdle(true)
        waitUntil("bob sees alice away") { presence.any { it.user == "alice" && it.status == PresenceStatus.AWAY } }
        t.cancel()
        p.cancel()
    }

    @Test
    fun errorsAreTyped() = runBlocking {
        val (alice, bob) = pair()
        // A refused token: a typed exception from a network call.
        val stranger = server.client("mallory", "not-a-token")
        clients.add(stranger)
        assertFailsWith<RoamException.Unauthorized> { stranger.refreshRooms() }
        // Bad input never reaches the queue.
        assertFailsWith<RoamException.InvalidInput> { alice.sendMessage("no spaces allowed", "x") }
        // Permission denied: banned, the send ends failed with the reason.
        alice.ban("team", "bob")
        waitUntil("ban applied") { alice.metrics().outboxDepth == 0uL }
        val doomed = bob.sendMessage("team", "let me in")
        waitUntil("bob's send failed") { bob.message(doomed.localId)?.sendState is SendState.Failed }
        assertEquals("forbidden", (bob.message(doomed.localId)!!.sendState as SendState.Failed).code)
        // Document conflict: the current version comes back.
        alice.putDocument("team", "plan", 0uL, "v1")
        waitUntil("v1 stored") { alice.document("team", "plan")?.version == 1uL }
        alice.putDocument("team", "plan", 0uL, "again from zero")
        waitUntil("conflict reported") { alice.document("team", "plan")?.conflict != null }
        assertEquals(1uL, alice.document("team", "plan")!!.conflict!!.version)
    }

    @Test
    fun handlesStopCallbacksAndShutdownReleases() = runBlocking {
        val (alice, bob) = pair()
        val updates = Updates()
        val handle = bob.subscribeRoomUpdates("team", updates)
        handle.cancel()
        assertTrue(!handle.isOpen())
        alice.sendMessage("team", "after cancel")
        waitUntil("bob stored it") { bob.messages("team", null, 10u).any { it.body == "after cancel" } }
        assertTrue(updates.seen.isEmpty(), "no callback after cancel")

        // Cancelling a coroutine waiting on a call does not break the client.
        withTimeoutOrNull(1) { bob.refreshRooms() }
        assertTrue(bob.refreshRooms().any { it.name == "team" })

        val late = Updates()
        bob.subscribeRoomUpdates(null, late)
        bob.shutdown()
        alice.sendMessage("team", "after shutdown")
        waitUntil("alice sent it") { alice.metrics().outboxDepth == 0uL }
        Thread.sleep(200)
        assertTrue(late.seen.none { it is RoomUpdate.MessageAdded }, "no callback after shutdown")
        assertFailsWith<RoamException.Closed> { bob.sendMessage("team", "x") }
        bob.shutdown() // twice is fine
        val m = alice.metrics()
        assertTrue(m.messagesAcked >= 1uL && m.outboxDepth == 0uL)
    }
}
