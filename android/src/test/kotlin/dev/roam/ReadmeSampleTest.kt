package dev.roam

import java.io.File
import kotlin.test.assertEquals
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.Test

/** Runs the sample of docs/usage-kotlin.md against a real server, with Bob answering. */
class ReadmeSampleTest : ServerTest() {
    @Test
    fun theSampleSendsAndGetsTheReply() = runBlocking {
        val bob = client("bob")
        bob.start()
        bob.createRoom("general", RoomKind.PUBLIC, "General")
        // Bob answers every message from Alice.
        val handle = bob.subscribeRoomUpdates("general", object : RoomListener {
            override fun onRoomUpdate(update: RoomUpdate) {
                if (update is RoomUpdate.MessageAdded && update.message.sender == "alice") {
                    bob.sendMessage("general", "Hi Alice, Bob here")
                }
            }
        })
        val reply = withTimeout(10_000) {
            sendAndAwaitReply(server.url, server.token("alice"), File(server.dir, "alice.db").path)
        }
        assertEquals("bob", reply.sender)
        assertEquals("Hi Alice, Bob here", reply.body)
        handle.close()
    }
}
