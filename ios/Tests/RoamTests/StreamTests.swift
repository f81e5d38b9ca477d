// The AsyncStream layer (Roam+Async.swift) against a real server. A stream subscribes when it
// is made, so the other client can act right after.

import Foundation
import XCTest

@testable import Roam

final class StreamTests: ServerTestCase, @unchecked Sendable {
    func testRoomUpdatesStreamDeliversMessagesAndEdits() async throws {
        let (alice, bob) = try await pair()
        let updates = try bob.roomUpdates(room: "team")
        let sent = try alice.sendMessage(room: "team", body: "first draft")
        // An edit before the send is confirmed would fold into the send (no edit event).
        try await alice.waitForPendingWrites()
        _ = try alice.editMessage(room: "team", message: sent.localId, body: "final text")
        let edited = try await within("the edit arrives") { () -> Message? in
            for await case .messageEdited(let message) in updates { return message }
            return nil
        }
        XCTAssertEqual(edited?.body, "final text")
        XCTAssertEqual(edited?.sender, "alice")
    }

    func testConnectionStatesStartWithTheCurrentState() async throws {
        let (alice, _) = try await pair()
        let states = try alice.connectionStates()
        try alice.setOnline(online: false)
        let firstTwo = try await within("two states") { () -> [ConnectionState] in
            var seen: [ConnectionState] = []
            for await state in states {
                seen.append(state)
                if seen.count == 2 { break }
            }
            return seen
        }
        XCTAssertEqual(firstTwo, [.connected, .offline])
    }

    func testTypingAndPresenceStreamsSeeTheOtherClient() async throws {
        let (alice, bob) = try await pair()
        let typing = try bob.typingUpdates(room: "team")
        let presence = try bob.presenceUpdates()
        try alice.typingStarted(room: "team")
        let someone = try await within("alice types") { () -> TypingUpdate? in
            for await update in typing where !update.users.isEmpty { return update }
            return nil
        }
        XCTAssertEqual(someone, TypingUpdate(room: "team", users: ["alice"]))
        try alice.setIdle(idle: true)
        let away = try await within("alice is away") { () -> Presence? in
            for await p in presence where p.user == "alice" && p.status == .away { return p }
            return nil
        }
        XCTAssertEqual(away?.status, .away)
    }

    func testNotificationAndDocumentStreams() async throws {
        let (alice, bob) = try await pair()
        let events = try bob.notificationEvents()
        _ = try alice.setRole(room: "team", user: "bob", role: .admin)
        let seen = try await within("a notification") { () -> [NotificationEvent] in
            var seen: [NotificationEvent] = []
            for await event in events {
                seen.append(event)
                if case .new = event { break }
            }
            return seen
        }
        XCTAssertEqual(seen.first, .unreadCount(0), "the current count comes first")
        guard case .new(let notification) = seen.last else { return XCTFail("\(seen)") }
        XCTAssertEqual(notification.kind, "role_changed")

        _ = try await alice.saveDocument(room: "team", doc: "plan", baseVersion: 0, content: "v1")
        let docs = try bob.documentUpdates(room: "team")
        _ = try bob.putDocument(room: "team", doc: "plan", baseVersion: 0, content: "stale")
        let conflict = try await within("the conflict") { () -> (Document, DocumentVersion)? in
            for await case .conflict(let document, let current) in docs { return (document, current) }
            return nil
        }
        XCTAssertEqual(conflict?.1.version, 1)
        XCTAssertEqual(conflict?.1.content, "v1")
        XCTAssertEqual(conflict?.0.content, "stale")
    }

    func testCancellingTheConsumingTaskEndsTheSubscription() async throws {
        let (alice, bob) = try await pair()
        let counter = Collected<RoomUpdate>()
        let stream = try bob.roomUpdates(room: "team")
        let consumer = Task {
            for await update in stream { counter.add(update) }
        }
        _ = try alice.sendMessage(room: "team", body: "one")
        try await waitUntil("the consumer sees it") { !counter.all.isEmpty }
        consumer.cancel()
        await consumer.value  // ends: the stream finished when its Task was cancelled
        let count = counter.all.count
        _ = try alice.sendMessage(room: "team", body: "two")
        try await waitUntil("bob stored it") {
            try bob.messages(room: "team", beforeSeq: nil, limit: 10).contains { $0.body == "two" }
        }
        try await Task.sleep(nanoseconds: 200_000_000)
        XCTAssertEqual(counter.all.count, count, "nothing after the Task ended")
    }
}
