package dev.roam

import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.first

// The sample of docs/usage-kotlin.md, compiled and run by ReadmeSampleTest
// (scripts/test-kotlin.sh checks that the markdown shows exactly the lines between the markers).
// sample:begin
suspend fun sendAndAwaitReply(serverUrl: String, token: String, dbPath: String): Message {
    val options = ClientOptions(dbPath = dbPath, serverUrl = serverUrl, userId = "alice")
    val client = RoamClient(options, StaticTokenProvider(token))
    client.start() // connects in the background; everything below also works offline
    client.joinRoom("general")
    val replies = client.roomUpdates("general").filterIsInstance<RoomUpdate.MessageAdded>()
    client.sendMessage("general", "Hello from Kotlin!") // listed at once, as pending
    val reply = replies.first { it.message.sender != client.userId() }.message
    client.shutdown()
    return reply
}
// sample:end
