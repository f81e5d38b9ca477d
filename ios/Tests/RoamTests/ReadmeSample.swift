// The sample of docs/usage-swift.md, compiled here and run by ReadmeSampleTests
// (scripts/test-swift.sh checks that the markdown shows exactly the lines between the markers).

import Roam

// sample:begin
func sendAndAwaitReply(serverUrl: String, token: String, dbPath: String) async throws -> Message? {
    let options = ClientOptions(dbPath: dbPath, serverUrl: serverUrl, userId: "alice")
    let client = try RoamClient(options: options, tokens: StaticTokenProvider(token))
    try await client.start()  // connects in the background; everything below also works offline
    _ = try client.joinRoom(room: "general")
    let updates = try client.roomUpdates(room: "general")
    _ = try client.sendMessage(room: "general", body: "Hello from Swift!")  // listed at once, as pending
    for await case .messageAdded(let reply) in updates where reply.sender != client.userId() {
        await client.shutdown()
        return reply
    }
    return nil
}
// sample:end
