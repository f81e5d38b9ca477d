// The Swift API against a real roam-server: messages, offline, live events, typed errors,
// handles, shutdown, cancellation and metrics.

import Foundation
import XCTest

@testable import Roam

final class ClientTests: ServerTestCase, @unchecked Sendable {
    func testSendReceiveEditDelete() async throws {
        let (alice, bob) = try await pair()
        let bobSees = Updates()
        let handle = try bob.subscribeRoomUpdates(room: "team", listener: bobSees)
        let sent = try alice.sendMessage(room: "team", body: "hello bob")
        XCTAssertEqual(sent.sendState, .pending)
        XCTAssertEqual(try alice.message(id: sent.localId), sent, "visible locally at once")
        try await waitUntil("bob receives it") { bobSees.added("hello bob") }
        try await waitUntil("alice's copy is sent") { try alice.message(id: sent.localId)?.sendState == .sent }
        XCTAssertNotNil(try alice.message(id: sent.localId)?.seq)

        _ = try bob.sendMessage(room: "team", body: "hi alice")
        try await waitUntil("alice receives the answer") {
            try alice.messages(room: "team", beforeSeq: nil, limit: 50).contains { $0.body == "hi alice" && $0.sender == "bob" }
        }

        _ = try alice.editMessage(room: "team", message: sent.localId, body: "hello bob!")
        try await waitUntil("bob sees the edit") {
            bobSees.seen.all.contains { if case .messageEdited(let m) = $0 { return m.body == "hello bob!" } else { return false } }
        }
        _ = try alice.deleteMessage(room: "team", message: sent.localId)
        try await waitUntil("bob sees the delete") {
            bobSees.seen.all.contains { if case .messageDeleted = $0 { return true } else { return false } }
        }
        let deleted = try bob.messages(room: "team", beforeSeq: nil, limit: 50).filter { $0.sender == "alice" }
        XCTAssertEqual(deleted.count, 1)
        XCTAssertTrue(deleted[0].deleted && deleted[0].body.isEmpty, "\(deleted)")
        handle.close()
    }

    func testOfflineMessagesArriveExactlyOnceWhenTheServerComesBack() async throws {
        let (alice, bob) = try await pair()
        server.stop()
        try await waitUntil("alice notices") { alice.connectionState() != .connected }
        let queued = try (1...3).map { try alice.sendMessage(room: "team", body: "offline \($0)") }
        XCTAssertTrue(queued.allSatisfy { $0.sendState == .pending })
        XCTAssertEqual(try alice.messages(room: "team", beforeSeq: nil, limit: 50).filter { $0.sendState == .pending }.count, 3)
        XCTAssertEqual(try alice.outbox().filter { $0.op == "message.send" }.count, 3)
        let offline = alice.metrics()
        XCTAssertEqual(offline.outboxDepth, 3)
        XCTAssertNotNil(offline.outboxOldestAgeMs)

        try await server.start()
        try alice.networkAvailable()
        try bob.networkAvailable()
        try await waitUntil("all three are sent") {
            try queued.allSatisfy { try alice.message(id: $0.localId)?.sendState == .sent }
        }
        let expected = ["offline 1", "offline 2", "offline 3"]
        try await waitUntil("bob has each once, in order") {
            try bob.messages(room: "team", beforeSeq: nil, limit: 50).map(\.body).filter { $0.hasPrefix("offline") } == expected
        }
        XCTAssertEqual(try server.storedBodies(room: "team", token: server.token("bob")), expected, "stored once each")
        XCTAssertEqual(alice.metrics().outboxDepth, 0)
        XCTAssertNil(alice.metrics().outboxOldestAgeMs)
    }

    func testTypingAndPresenceReachTheOtherClient() async throws {
        let (alice, bob) = try await pair()
        let typing = Typing()
        let presences = Presences()
        let t = try bob.subscribeTyping(room: "team", listener: typing)
        let p = try bob.subscribePresence(listener: presences)
        try await waitUntil("the current typing list comes first") { typing.seen.all.first == [] }
        try alice.typingStarted(room: "team")
        try await waitUntil("bob sees alice typing") { typing.seen.all.contains(["alice"]) }
        XCTAssertEqual(bob.typing(room: "team"), ["alice"])
        try alice.typingStopped(room: "team")
        try await waitUntil("bob sees alice stop") { typing.seen.all.last == [] }

        try alice.setIdle(idle: true)
        try await waitUntil("bob sees alice away") {
            presences.seen.all.contains { $0.user == "alice" && $0.status == .away }
        }
        try alice.setIdle(idle: false)
        try await waitUntil("bob sees alice back") {
            presences.seen.all.last.map { $0.user == "alice" && $0.status == .online } ?? false
        }
        XCTAssertEqual(try bob.presence(user: "alice")?.status, .online)
        t.close()
        p.close()
    }

    func testARefusedTokenIsUnauthorized() async throws {
        let stranger = try client("mallory", token: "not-a-token")
        do {
            _ = try await stranger.refreshRooms()
            XCTFail("expected RoamError.Unauthorized")
        } catch RoamError.Unauthorized(let reason) {
            XCTAssertFalse(reason.isEmpty)
        }
        try await stranger.start()
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertNotEqual(stranger.connectionState(), .connected)
    }

    func testPermissionDeniedIsForbidden() async throws {
        let (alice, bob) = try await pair()
        XCTAssertThrowsError(try alice.sendMessage(room: "no spaces allowed", body: "x")) { error in
            guard case RoamError.InvalidInput = error else { return XCTFail("\(error)") }
        }
        _ = try alice.ban(room: "team", user: "bob")
        try await waitUntil("the ban is applied") { try alice.outbox().isEmpty }
        // An API that asks the server: a typed error at once.
        do {
            _ = try await bob.refreshMembers(room: "team")
            XCTFail("expected RoamError.Forbidden")
        } catch RoamError.Forbidden(let reason) {
            XCTAssertTrue(reason.contains("banned"), reason)
        }
        // A queued write: the send ends failed, with the reason; the message names its entry.
        let doomed = try bob.sendMessage(room: "team", body: "let me in")
        XCTAssertEqual(doomed.outboxEntryId, doomed.localId)
        try await waitUntil("bob's send failed") {
            if case .failed = try bob.message(id: doomed.localId)?.sendState { return true } else { return false }
        }
        guard let failed = try bob.message(id: doomed.localId),
              case .failed(let code, _) = failed.sendState,
              let entry = failed.outboxEntryId
        else {
            return XCTFail("not failed, or no outbox entry")
        }
        XCTAssertEqual(code, "forbidden")
        try bob.discard(entryId: entry)
        XCTAssertTrue(try bob.outbox().isEmpty)
        XCTAssertNil(try bob.message(id: doomed.localId))
    }

    func testAFullStoreSaysSoInsteadOfReconnecting() async throws {
        // Room for the schema and a few hundred kilobytes, not for 500 messages of 1,500 characters.
        let (alice, bob) = try await pair(bobMaxStoreBytes: 384 * 1024)
        try bob.setOnline(online: false)
        let filler = String(repeating: "x", count: 1_500)
        for i in 0..<500 { _ = try alice.sendMessage(room: "team", body: "\(i) \(filler)") }
        try await waitUntil("alice's messages are sent") { try alice.outbox().isEmpty }
        try bob.setOnline(online: true)
        try await waitUntil("bob's store is full") {
            if case .storageFull = bob.connectionState() { return true } else { return false }
        }
        XCTAssertEqual(bob.syncStatus().phase, .storageFull)
        XCTAssertEqual(bob.connectionState(), .storageFull(retryInMs: 60_000))
    }

    func testADocumentConflictCarriesTheCurrentVersion() async throws {
        let (alice, bob) = try await pair()
        let v1 = try await alice.saveDocument(room: "team", doc: "plan", baseVersion: 0, content: "alice's plan")
        XCTAssertEqual(v1.version, 1)
        XCTAssertEqual(v1.sendState, .sent)
        var current: UInt64 = 0
        do {
            _ = try await bob.saveDocument(room: "team", doc: "plan", baseVersion: 0, content: "bob's plan")
            XCTFail("expected RoamError.VersionConflict")
        } catch RoamError.VersionConflict(let currentVersion, let currentContent) {
            XCTAssertEqual(currentVersion, 1)
            XCTAssertEqual(currentContent, "alice's plan")
            current = currentVersion
        }
        XCTAssertEqual(try bob.document(room: "team", doc: "plan")?.conflict?.version, 1)
        // Rebase on the current version and save again.
        let v2 = try await bob.saveDocument(room: "team", doc: "plan", baseVersion: current, content: "both plans")
        XCTAssertEqual(v2.version, 2)
        try await waitUntil("alice has version 2") { try alice.document(room: "team", doc: "plan")?.version == 2 }
    }

    func testClosingAHandleStopsItsCallbacks() async throws {
        let (alice, bob) = try await pair()
        let closed = Updates()
        let cancelled = Updates()
        let released = Updates()
        let open = Updates()
        let h1 = try bob.subscribeRoomUpdates(room: "team", listener: closed)
        let h2 = try bob.subscribeRoomUpdates(room: "team", listener: cancelled)
        var h3: SubscriptionHandle? = try bob.subscribeRoomUpdates(room: "team", listener: released)
        let h4 = try bob.subscribeRoomUpdates(room: "team", listener: open)
        h1.close()
        h2.cancel()
        XCTAssertFalse(h2.isOpen())
        XCTAssertNotNil(h3)
        h3 = nil  // the last reference: released, so stopped
        _ = try alice.sendMessage(room: "team", body: "after close")
        try await waitUntil("the open subscription sees it") { open.added("after close") }
        try await Task.sleep(nanoseconds: 200_000_000)
        XCTAssertTrue(closed.seen.all.isEmpty, "no callback after close(): \(closed.seen.all)")
        XCTAssertTrue(cancelled.seen.all.isEmpty, "no callback after cancel(): \(cancelled.seen.all)")
        XCTAssertTrue(released.seen.all.isEmpty, "no callback after release: \(released.seen.all)")
        h2.cancel()  // twice is fine
        h4.close()
    }

    func testShutdownReleasesTheClient() async throws {
        let bobDb = server.dir + "/bob-own.db"
        let (alice, bob) = try await pair(bobDb: bobDb)
        let late = Updates()
        let states = States()
        let handle = try bob.subscribeRoomUpdates(room: nil, listener: late)
        let stateHandle = try bob.subscribeConnectionState(listener: states)
        await bob.shutdown()
        XCTAssertFalse(handle.isOpen(), "shutdown closes the handles")
        let statesAtShutdown = states.seen.all.count
        _ = try alice.sendMessage(room: "team", body: "after shutdown")
        try await waitUntil("alice sent it") { try alice.outbox().isEmpty }
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertFalse(late.seen.all.contains { if case .messageAdded = $0 { return true } else { return false } },
                       "no callback after shutdown")
        XCTAssertEqual(states.seen.all.count, statesAtShutdown)
        XCTAssertThrowsError(try bob.sendMessage(room: "team", body: "x")) { error in
            guard case RoamError.Closed = error else { return XCTFail("\(error)") }
        }
        do {
            _ = try await bob.refreshRooms()
            XCTFail("expected RoamError.Closed")
        } catch RoamError.Closed {}
        XCTAssertThrowsError(try bob.subscribeRoomUpdates(room: nil, listener: Updates()))
        await bob.shutdown()  // twice is fine
        withExtendedLifetime((handle, stateHandle)) {}
        // The database is free for a new client, with what bob had.
        let again = try client("bob", dbPath: bobDb)
        XCTAssertTrue(try again.rooms().contains { $0.name == "team" })
    }

    func testCancellingATaskLeavesTheClientWorking() async throws {
        let (_, bob) = try await pair()
        // A Task cancelled while its call runs: the call ends normally (the generated Swift code
        // does not cancel Rust futures), the client is unharmed.
        let refresh = Task { try await bob.refreshRooms() }
        refresh.cancel()
        _ = await refresh.result
        server.stop()
        try await waitUntil("bob notices") { bob.connectionState() != .connected }
        // saveDocument waits for the server: cancel the Task that waits.
        let save = Task { try await bob.saveDocument(room: "team", doc: "notes", baseVersion: 0, content: "draft") }
        try await Task.sleep(nanoseconds: 300_000_000)
        save.cancel()
        XCTAssertEqual(bob.metrics().outboxDepth, 1, "the edit is queued")

        try await server.start()
        try bob.networkAvailable()
        // The edit is delivered; the cancelled Task ends with it; later calls work.
        try await waitUntil("the queued edit is sent") { try bob.document(room: "team", doc: "notes")?.sendState == .sent }
        let saved = try await save.value
        XCTAssertEqual(saved.version, 1)
        let rooms = try await bob.refreshRooms()
        XCTAssertTrue(rooms.contains { $0.name == "team" })
        let v2 = try await bob.saveDocument(room: "team", doc: "notes", baseVersion: 1, content: "final")
        XCTAssertEqual(v2.version, 2)
    }

    func testMetricsSnapshotIsReadable() async throws {
        let (alice, bob) = try await pair()
        let before = alice.metrics()
        _ = try alice.sendMessage(room: "team", body: "count me")
        try await waitUntil("acknowledged") { alice.metrics().messagesAcked > before.messagesAcked }
        try await waitUntil("bob has it") {
            try bob.messages(room: "team", beforeSeq: nil, limit: 10).contains { $0.body == "count me" }
        }
        let m = alice.metrics()
        XCTAssertTrue(m.messagesQueued >= 1 && m.messagesSent >= 1 && m.messagesAcked >= 1, "\(m)")
        XCTAssertTrue(m.connections >= 1 && m.connectAttempts >= m.connections, "\(m)")
        XCTAssertTrue(m.bytesSent > 0 && m.bytesReceived > 0 && m.framesSent > 0, "\(m)")
        XCTAssertEqual(m.outboxDepth, 0)
        XCTAssertEqual(m.outboxFailed, 0)
        XCTAssertTrue((0.0...1.0).contains(m.cacheHitRate))
        XCTAssertGreaterThanOrEqual(bob.metrics().eventsLive, 1)
    }
}
