// Timelines, the sync status and account safety from Swift, against a real server.

import Foundation
import XCTest

@testable import Roam

final class TimelineTests: ServerTestCase, @unchecked Sendable {
    func testTimelineListFollowsSendsEditsDeletesAndTheOtherUser() async throws {
        let (alice, bob) = try await pair()
        let live = try alice.liveTimeline(room: "team", initial: 50)
        var mine: [Message] = []
        for i in 0..<30 { mine.append(try alice.sendMessage(room: "team", body: "mine \(i)")) }
        // Sent first: an edit or delete of a message not sent yet folds into its send (a delete
        // then leaves no trace), and whether it is sent yet would be up to timing.
        try await alice.waitForPendingWrites()
        _ = try alice.editMessage(room: "team", message: mine[3].localId, body: "edited")
        _ = try alice.deleteMessage(room: "team", message: mine[5].localId)
        for i in 0..<10 { _ = try bob.sendMessage(room: "team", body: "theirs \(i)") }
        try await alice.waitForPendingWrites()
        try await waitUntil("bob's messages arrive") {
            try alice.messages(room: "team", beforeSeq: nil, limit: 200).filter { $0.body.hasPrefix("theirs") }.count == 10
        }
        let expected = try alice.messages(room: "team", beforeSeq: nil, limit: 200)
        let diffs = live.diffs
        let list = try await within("the timeline matches the store") { () -> [Message] in
            var list: [Message] = []
            for await batch in diffs {
                list = list.applying(batch)
                if list == expected { return list }
            }
            return list
        }
        XCTAssertEqual(list.count, 40)
        XCTAssertTrue(list.contains { $0.body == "edited" })
        XCTAssertTrue(list.contains { $0.deleted })
        live.timeline.cancel()
    }

    @MainActor
    func testChatScreenModelSampleFollowsTheRoom() async throws {
        let (alice, bob) = try await pair()
        let model = try ChatScreenModel(client: alice, room: "team")
        _ = try alice.sendMessage(room: "team", body: "hello")
        _ = try bob.sendMessage(room: "team", body: "hi alice")
        try await alice.waitForPendingWrites()
        var shown = false
        for _ in 0..<500 {
            shown = Set(model.messages.map(\.body)) == ["hello", "hi alice"]
                && model.messages.allSatisfy { $0.sendState == .sent }
            if shown { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertTrue(shown, "the model shows both messages, confirmed: \(model.messages)")
        let reached = try await model.loadOlder()
        XCTAssertTrue(reached, "the room's start is reached")
        model.close()
    }

    func testSyncStatusAndWaitingForPendingWritesAcrossAnOutage() async throws {
        let (alice, _) = try await pair()
        try alice.setOnline(online: false)
        // Going offline closes the socket in the background: wait for it, so the sends below
        // stay queued instead of leaving on the socket that is still closing.
        try await waitUntil("offline") { alice.syncStatus().phase == .offline }
        for i in 0..<5 { _ = try alice.sendMessage(room: "team", body: "queued \(i)") }
        XCTAssertEqual(alice.syncStatus().pendingWrites, 5)
        let statuses = try alice.syncStatuses()
        try alice.setOnline(online: true)
        try await alice.waitForPendingWrites()
        let synced = try await within("synced") { () -> SyncStatus? in
            for await s in statuses where s.phase == .synced && s.pendingWrites == 0 { return s }
            return nil
        }
        XCTAssertEqual(synced?.pendingWrites, 0)
    }

    func testATokenForAnotherUserNeedsSignInAndSendsNothing() async throws {
        let mallory = try client("mallory")
        _ = try mallory.createRoom(room: "shared", kind: .public, title: "Shared")
        try await mallory.start()
        try await mallory.waitForPendingWrites()
        let wrong = try client("alice", token: try server.token("mallory"))
        _ = try wrong.sendMessage(room: "shared", body: "alice's secret")
        try await wrong.start()
        try await waitUntil("needs sign-in") { wrong.connectionState() == .needsSignIn }
        guard case .needsSignIn(let reason) = wrong.syncStatus().phase else {
            return XCTFail("expected needsSignIn, got \(wrong.syncStatus().phase)")
        }
        XCTAssertTrue(reason.contains("mallory"), reason)
        do {
            try await wrong.waitForPendingWrites()
            XCTFail("waiting must fail")
        } catch RoamError.NeedsSignIn {
        }
        XCTAssertEqual(try server.storedBodies(room: "shared", token: try server.token("mallory")), [])
    }

    func testAnAsyncTokenProviderSignsInAndOneThatThrowsNeedsSignIn() async throws {
        let token = try server.token("dora")
        let dora = try client("dora", tokens: AsyncTokenProvider { _ in
            try await Task.sleep(nanoseconds: 20_000_000)
            return token
        })
        _ = try dora.createRoom(room: "tokens", kind: .public, title: "Tokens")
        _ = try dora.sendMessage(room: "tokens", body: "signed in asynchronously")
        try await dora.start()
        try await dora.waitForPendingWrites()
        XCTAssertEqual(try server.storedBodies(room: "tokens", token: token), ["signed in asynchronously"])

        struct Revoked: Error, CustomStringConvertible { var description: String { "session revoked" } }
        let gone = try client("dora", tokens: AsyncTokenProvider { _ in throw Revoked() })
        try await gone.start()
        try await waitUntil("needs sign-in") { gone.connectionState() == .needsSignIn }
        guard case .needsSignIn(let reason) = gone.syncStatus().phase else {
            return XCTFail("expected needsSignIn, got \(gone.syncStatus().phase)")
        }
        XCTAssertTrue(reason.contains("session revoked"), reason)
        await gone.shutdown()
        await dora.shutdown()
    }

    func testSignOutWipesTheDatabaseAndASecondClientIsRefused() async throws {
        let db = server.dir + "/carol-\(UUID().uuidString).db"
        let carol = try client("carol", dbPath: db)
        _ = try carol.sendMessage(room: "team", body: "draft")
        XCTAssertThrowsError(try client("carol", dbPath: db)) { error in
            guard case RoamError.AlreadyOpen = error else { return XCTFail("\(error)") }
        }
        try await carol.signOut(wipe: true)
        XCTAssertFalse(FileManager.default.fileExists(atPath: db))
        XCTAssertThrowsError(try carol.messages(room: "team", beforeSeq: nil, limit: 10))
        let again = try client("carol", dbPath: db)
        XCTAssertEqual(try again.messages(room: "team", beforeSeq: nil, limit: 10).count, 0)
    }
}
