package dev.roam

import java.io.File
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.After
import org.junit.Before
import org.junit.Test

/** Collects room updates from any thread. */
class Updates : RoomListener {
    val seen = CopyOnWriteArrayList<RoomUpdate>()
    override fun onRoomUpdate(update: RoomUpdate) {
        seen.add(update)
    }

    fun added(body: String) = seen.any { it is RoomUpdate.MessageAdded && it.message.body == body }
}

/** A roam-server per test, and the clients it made (shut down after the test). */
abstract class ServerTest {
    protected lateinit var server: TestServer
    private val clients = mutableListOf<RoamClient>()

    @Before
    fun startServer() {
        server = TestServer()
        server.start()
    }

    @After
    fun stopServer() = runBlocking {
        // A test may have released a client already (close() twice is a no-op).
        clients.forEach {
            runCatching { it.shutdown() }
            it.close()
        }
        server.close()
    }

    protected fun client(
        user: String,
        token: String = server.token(user),
        dbPath: String? = null,
        maxStoreBytes: ULong = 0uL,
        tokens: TokenProvider = StaticTokenProvider(token),
    ): RoamClient = server.client(user, token, dbPath, maxStoreBytes, tokens).also { clients.add(it) }

    /**
     * Alice's public room "team" with Bob in it, both connected and confirmed (Bob's store capped
     * at [bobMaxStoreBytes] when that is not 0).
     */
    protected fun pair(bobDb: String? = null, bobMaxStoreBytes: ULong = 0uL): Pair<RoamClient, RoamClient> = runBlocking {
        val alice = client("alice")
        val bob = client("bob", dbPath = bobDb, maxStoreBytes = bobMaxStoreBytes)
        alice.start()
        bob.start()
        alice.createRoom("team", RoomKind.PUBLIC, "Team")
        waitUntil("the room is created") { alice.room("team")?.sendState == SendState.Sent }
        bob.joinRoom("team")
        waitUntil("bob has joined") { bob.room("team")?.let { it.joined && it.sendState == SendState.Sent } == true }
        alice to bob
    }
}

/** The Kotlin API against a real roam-server: messages, offline, live events, errors, lifecycle. */
class ClientTest : ServerTest() {
    @Test
    fun sendReceiveEditDelete() {
        val (alice, bob) = pair()
        val bobSees = Updates()
        val handle = bob.subscribeRoomUpdates("team", bobSees)
        val sent = alice.sendMessage("team", "hello bob")
        assertIs<SendState.Pending>(sent.sendState)
        assertEquals(sent, alice.message(sent.localId), "visible locally at once")
        waitUntil("bob receives it") { bobSees.added("hello bob") }
        waitUntil("alice's copy is sent") { alice.message(sent.localId)?.sendState == SendState.Sent }
        assertNotNull(alice.message(sent.localId)?.seq)

        bob.sendMessage("team", "hi alice")
        waitUntil("alice receives the answer") { alice.messages("team", null, 50u).any { it.body == "hi alice" && it.sender == "bob" } }

        alice.editMessage("team", sent.localId, "hello bob!")
        waitUntil("bob sees the edit") {
            bobSees.seen.any { it is RoomUpdate.MessageEdited && it.message.body == "hello bob!" }
        }
        alice.deleteMessage("team", sent.localId)
        waitUntil("bob sees the delete") { bobSees.seen.any { it is RoomUpdate.MessageDeleted } }
        val deleted = bob.messages("team", null, 50u).single { it.sender == "alice" }
        assertTrue(deleted.deleted && deleted.body.isEmpty(), "$deleted")
        handle.close()
    }

    @Test
    fun offlineMessagesArriveExactlyOnceWhenTheServerComesBack() = runBlocking {
        val (alice, bob) = pair()
        server.stop()
        waitUntil("alice notices") { alice.connectionState() != ConnectionState.Connected }
        val queued = (1..3).map { alice.sendMessage("team", "offline $it") }
        assertTrue(queued.all { it.sendState == SendState.Pending })
        assertEquals(3, alice.messages("team", null, 50u).count { it.sendState == SendState.Pending })
        assertEquals(3, alice.outbox().count { it.op == "message.send" })
        val offline = alice.metrics()
        assertEquals(3uL, offline.outboxDepth)
        assertNotNull(offline.outboxOldestAgeMs)

        server.start()
        alice.networkAvailable()
        bob.networkAvailable()
        waitUntil("all three are sent") { queued.all { alice.message(it.localId)?.sendState == SendState.Sent } }
        val expected = listOf("offline 1", "offline 2", "offline 3")
        waitUntil("bob has each once, in order") {
            bob.messages("team", null, 50u).map { it.body }.filter { it.startsWith("offline") } == expected
        }
        assertEquals(expected, server.storedBodies("team", server.token("bob")), "stored once each")
        assertEquals(0uL, alice.metrics().outboxDepth)
        assertNull(alice.metrics().outboxOldestAgeMs)
    }

    @Test
    fun typingAndPresenceReachTheOtherClient() {
        val (alice, bob) = pair()
        val typing = CopyOnWriteArrayList<List<String>>()
        val presences = CopyOnWriteArrayList<Presence>()
        val t = bob.subscribeTyping("team", object : TypingListener {
            override fun onTyping(room: String, users: List<String>) {
                typing.add(users)
            }
        })
        val p = bob.subscribePresence(object : PresenceListener {
            override fun onPresence(presence: Presence) {
                presences.add(presence)
            }
        })
        waitUntil("the current typing list comes first") { typing.firstOrNull() == emptyList<String>() }
        alice.typingStarted("team")
        waitUntil("bob sees alice typing") { typing.any { it == listOf("alice") } }
        assertEquals(listOf("alice"), bob.typing("team"))
        alice.typingStopped("team")
        waitUntil("bob sees alice stop") { typing.last().isEmpty() }

        alice.setIdle(true)
        waitUntil("bob sees alice away") { presences.any { it.user == "alice" && it.status == PresenceStatus.AWAY } }
        alice.setIdle(false)
        waitUntil("bob sees alice back") { presences.last().let { it.user == "alice" && it.status == PresenceStatus.ONLINE } }
        assertEquals(PresenceStatus.ONLINE, bob.presence("alice")?.status)
        t.close()
        p.close()
    }

    @Test
    fun aRefusedTokenIsUnauthorized() = runBlocking {
        val stranger = client("mallory", token = "not-a-token")
        val err = assertFailsWith<RoamException.Unauthorized> { stranger.refreshRooms() }
        assertTrue(err.reason.isNotEmpty())
        stranger.start()
        delay(300)
        assertTrue(stranger.connectionState() != ConnectionState.Connected)
    }

    @Test
    fun permissionDeniedIsForbidden() = runBlocking {
        val (alice, bob) = pair()
        assertFailsWith<RoamException.InvalidInput> { alice.sendMessage("no spaces allowed", "x") }
        alice.ban("team", "bob")
        waitUntil("the ban is applied") { alice.outbox().isEmpty() }
        // An API that asks the server: a typed exception at once.
        val err = assertFailsWith<RoamException.Forbidden> { bob.refreshMembers("team") }
        assertTrue(err.reason.contains("banned"), err.reason)
        // A queued write: the send ends failed, with the reason; the message names its entry.
        val doomed = bob.sendMessage("team", "let me in")
        assertEquals(doomed.localId, doomed.outboxEntryId)
        waitUntil("bob's send failed") { bob.message(doomed.localId)?.sendState is SendState.Failed }
        val failed = assertNotNull(bob.message(doomed.localId))
        assertEquals("forbidden", (failed.sendState as SendState.Failed).code)
        bob.discard(assertNotNull(failed.outboxEntryId))
        assertTrue(bob.outbox().isEmpty())
        assertNull(bob.message(doomed.localId))
    }

    @Test
    fun aFullStoreSaysSoInsteadOfReconnecting() = runBlocking {
        // Room for the schema and a few hundred kilobytes, not for 500 messages of 1,500 characters.
        val (alice, bob) = pair(bobMaxStoreBytes = 384uL * 1024uL)
        bob.setOnline(false)
        val filler = "x".repeat(1_500)
        repeat(500) { alice.sendMessage("team", "$it $filler") }
        waitUntil("alice's messages are sent") { alice.outbox().isEmpty() }
        bob.setOnline(true)
        waitUntil("bob's store is full") { bob.connectionState() is ConnectionState.StorageFull }
        assertEquals(SyncPhase.StorageFull, bob.syncStatus().phase)
        assertEquals(60_000uL, (bob.connectionState() as ConnectionState.StorageFull).retryInMs)
    }

    @Test
    fun aDocumentConflictCarriesTheCurrentVersion() = runBlocking {
        val (alice, bob) = pair()
        val v1 = alice.saveDocument("team", "plan", 0uL, "alice's plan")
        assertEquals(1uL, v1.version)
        assertEquals(SendState.Sent, v1.sendState)
        val err = assertFailsWith<RoamException.VersionConflict> { bob.saveDocument("team", "plan", 0uL, "bob's plan") }
        assertEquals(1uL, err.currentVersion)
        assertEquals("alice's plan", err.currentContent)
        assertEquals(1uL, bob.document("team", "plan")?.conflict?.version)
        // Rebase on the current version and save again.
        val v2 = bob.saveDocument("team", "plan", err.currentVersion, "both plans")
        assertEquals(2uL, v2.version)
        waitUntil("alice has version 2") { alice.document("team", "plan")?.version == 2uL }
    }

    @Test
    fun closingAHandleStopsItsCallbacks() {
        val (alice, bob) = pair()
        val closed = Updates()
        val cancelled = Updates()
        val open = Updates()
        val h1 = bob.subscribeRoomUpdates("team", closed)
        val h2 = bob.subscribeRoomUpdates("team", cancelled)
        val h3 = bob.subscribeRoomUpdates("team", open)
        h1.close()
        h2.cancel()
        assertFalse(h2.isOpen())
        alice.sendMessage("team", "after close")
        waitUntil("the open subscription sees it") { open.added("after close") }
        Thread.sleep(200)
        assertTrue(closed.seen.isEmpty(), "no callback after close(): ${closed.seen}")
        assertTrue(cancelled.seen.isEmpty(), "no callback after cancel(): ${cancelled.seen}")
        h2.cancel() // twice is fine
        h3.close()
    }

    @Test
    fun aThrowingListenerDoesNotBreakTheClient() {
        val (alice, bob) = pair()
        val thrower = bob.subscribeRoomUpdates("team", object : RoomListener {
            override fun onRoomUpdate(update: RoomUpdate): Unit = throw IllegalStateException("app bug")
        })
        val after = Updates()
        val h = bob.subscribeRoomUpdates("team", after)
        alice.sendMessage("team", "one")
        alice.sendMessage("team", "two")
        waitUntil("the other listener gets both") { after.added("one") && after.added("two") }
        thrower.close()
        h.close()
    }

    @Test
    fun shutdownReleasesTheClient() = runBlocking {
        val bobDb = File(server.dir, "bob-own.db").absolutePath
        val (alice, bob) = pair(bobDb)
        val late = Updates()
        val handle = bob.subscribeRoomUpdates(null, late)
        val states = CopyOnWriteArrayList<ConnectionState>()
        bob.subscribeConnectionState(object : ConnectionListener {
            override fun onConnectionState(state: ConnectionState) {
                states.add(state)
            }
        })
        bob.shutdown()
        assertFalse(handle.isOpen(), "shutdown closes the handles")
        val statesAtShutdown = states.size
        alice.sendMessage("team", "after shutdown")
        waitUntil("alice sent it") { alice.outbox().isEmpty() }
        Thread.sleep(300)
        assertTrue(late.seen.none { it is RoomUpdate.MessageAdded }, "no callback after shutdown")
        assertEquals(statesAtShutdown, states.size)
        assertFailsWith<RoamException.Closed> { bob.sendMessage("team", "x") }
        assertFailsWith<RoamException.Closed> { bob.refreshRooms() }
        assertFailsWith<RoamException.Closed> { bob.subscribeRoomUpdates(null, Updates()) }
        bob.shutdown() // twice is fine
        bob.close() // releases the Rust object
        // The database is free for a new client, with what bob had.
        val again = client("bob", dbPath = bobDb)
        assertTrue(again.rooms().any { it.name == "team" })
    }

    @Test
    fun cancellingACoroutineLeavesTheClientWorking() = runBlocking {
        val (_, bob) = pair()
        server.stop()
        waitUntil("bob notices") { bob.connectionState() != ConnectionState.Connected }
        // saveDocument waits for the server: cancel the coroutine while it waits.
        val job = launch(Dispatchers.Default) { bob.saveDocument("team", "notes", 0uL, "draft") }
        delay(300)
        assertTrue(job.isActive, "still waiting for the server")
        job.cancelAndJoin()
        assertTrue(job.isCancelled)
        // A REST call cancelled at once.
        assertNull(withTimeoutOrNull(1) { bob.refreshRooms() })

        server.start()
        bob.networkAvailable()
        // The edit stayed queued and is delivered; later calls work.
        waitUntil("the queued edit is sent") { bob.document("team", "notes")?.sendState == SendState.Sent }
        assertTrue(bob.refreshRooms().any { it.name == "team" })
        assertEquals(2uL, bob.saveDocument("team", "notes", 1uL, "final").version)
    }

    @Test
    fun metricsSnapshotIsReadable() {
        val (alice, bob) = pair()
        val m0 = alice.metrics()
        alice.sendMessage("team", "count me")
        waitUntil("acknowledged") { alice.metrics().messagesAcked > m0.messagesAcked }
        waitUntil("bob has it") { bob.messages("team", null, 10u).any { it.body == "count me" } }
        val m = alice.metrics()
        assertTrue(m.messagesQueued >= 1uL && m.messagesSent >= 1uL && m.messagesAcked >= 1uL, "$m")
        assertTrue(m.connections >= 1uL && m.connectAttempts >= m.connections, "$m")
        assertTrue(m.bytesSent > 0uL && m.bytesReceived > 0uL && m.framesSent > 0uL, "$m")
        assertEquals(0uL, m.outboxDepth)
        assertEquals(0uL, m.outboxFailed)
        assertTrue(m.cacheHitRate in 0.0..1.0)
        assertTrue(bob.metrics().eventsLive >= 1uL, "${bob.metrics()}")
    }
}
