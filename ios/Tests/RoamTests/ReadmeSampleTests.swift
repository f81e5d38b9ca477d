import Foundation
import XCTest

@testable import Roam

/// Answers every message from Alice.
private final class Answer: RoomListener, @unchecked Sendable {
    let bob: RoamClient
    init(_ bob: RoamClient) { self.bob = bob }
    func onRoomUpdate(update: RoomUpdate) {
        if case .messageAdded(let m) = update, m.sender == "alice" {
            _ = try? bob.sendMessage(room: "general", body: "Hi Alice, Bob here")
        }
    }
}

/// Runs the sample of docs/usage-swift.md against a real server, with Bob answering.
final class ReadmeSampleTests: ServerTestCase, @unchecked Sendable {
    func testTheSampleSendsAndGetsTheReply() async throws {
        let bob = try client("bob")
        try await bob.start()
        _ = try bob.createRoom(room: "general", kind: .public, title: "General")
        let handle = try bob.subscribeRoomUpdates(room: "general", listener: Answer(bob))
        let (url, token, db) = (server.url, try server.token("alice"), server.dir + "/alice.db")
        let reply = try await within("the reply") {
            try await sendAndAwaitReply(serverUrl: url, token: token, dbPath: db)
        }
        XCTAssertEqual(reply?.sender, "bob")
        XCTAssertEqual(reply?.body, "Hi Alice, Bob here")
        handle.close()
    }
}
