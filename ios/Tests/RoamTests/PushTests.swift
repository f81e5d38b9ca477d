// Push on iOS against a real roam-server: registration and modes through the outbox, then the
// sample's notification service extension shows a message the app's store does not hold yet
// (opened next to the app's client), and a read push removes the delivered notification.

import Foundation
import XCTest

@testable import Roam

#if canImport(UserNotifications)
import UserNotifications
#endif

// The stand-in notification center lets the test see what was delivered and removed; the real
// one cannot be driven from a unit test, so on Apple platforms the sample is only compiled.
#if !canImport(UserNotifications)
final class PushTests: ServerTestCase, @unchecked Sendable {
    func testRegisterShowAndClear() async throws {
        let aliceDb = server.dir + "/alice-push.db"
        let aliceToken = try server.token("alice")
        let alice = try client("alice", token: aliceToken, dbPath: aliceDb)
        let bob = try client("bob")
        try await alice.start()
        try await bob.start()
        _ = try alice.createRoom(room: "team", kind: .public, title: "Team")
        try await waitUntil("the room is created") { try alice.room(room: "team")?.sendState == .sent }
        _ = try bob.joinRoom(room: "team")
        try await waitUntil("bob has joined") { try bob.room(room: "team")?.joined == true }

        let device = try alice.pushDeviceId()
        XCTAssertEqual(try alice.pushDeviceId(), device, "one device id per store")
        _ = try alice.registerPush(
            platform: .apns, token: "a1b2c3d4", appId: "dev.roam.test", sandbox: true, locale: "en")
        _ = try alice.setPushMode(room: nil, mode: .mentions)
        XCTAssertEqual(try alice.pushSettings().defaultMode, .mentions, "shown at once")
        try await alice.waitForPendingWrites()
        let settings = try await alice.refreshPushSettings()
        XCTAssertEqual(settings.defaultMode, .mentions)

        // The app goes to the background: no socket, its store stays open.
        try alice.setOnline(online: false)
        try await waitUntil("alice is offline") { alice.connectionState() == .offline }
        let sent = try bob.sendMessage(room: "team", body: "lunch?")
        try await waitUntil("bob's message is confirmed") { try bob.message(id: sent.localId)?.seq != nil }
        let confirmed = try XCTUnwrap(try bob.message(id: sent.localId))
        let seq = try XCTUnwrap(confirmed.seq)
        let id = try XCTUnwrap(confirmed.id)

        NotificationService.account = {
            (ClientOptions(dbPath: aliceDb, serverUrl: self.server.url, userId: "alice"),
             StaticTokenProvider(aliceToken))
        }
        defer { NotificationService.account = { nil } }
        let apns = """
            {"aps":{"alert":{"title":"New message"},"mutable-content":1,"thread-id":"team"},
             "roam":{"v":1,"kind":"message","room":"team","seq":\(seq),"message":"\(id)","unread":1}}
            """
        let shown = try await receive(apns, identifier: "n1")
        XCTAssertEqual(shown.title, "Team")
        XCTAssertEqual(shown.subtitle, "bob")
        XCTAssertEqual(shown.body, "lunch?")
        XCTAssertEqual(shown.threadIdentifier, "team")
        XCTAssertEqual(shown.badge?.uint64Value, 1)

        // Read on another device: the background push removes the delivered notification.
        UNUserNotificationCenter.current().standInDeliver(
            UNNotificationRequest(identifier: "n1", content: shown))
        let read = """
            {"aps":{"content-available":1,"badge":0},
             "roam":{"v":1,"kind":"read","room":"team","seq":\(seq),"unread":0}}
            """
        let handler = try PushHandler(
            options: ClientOptions(dbPath: aliceDb, serverUrl: server.url, userId: "alice"),
            tokens: StaticTokenProvider(aliceToken))
        let clear = try await handler.handlePush(payloadJson: read, deadlineMs: 2_000)
        XCTAssertEqual(clear.kind, PushContentKind.clear)
        await removeDelivered(room: clear.room, upTo: clear.seq)
        let left = await UNUserNotificationCenter.current().deliveredNotifications()
        XCTAssertTrue(left.isEmpty, "removed")

        // A payload the handler cannot read still shows the original alert.
        let garbled = try await receive(#"{"aps":{"alert":{"title":"x"}},"roam":"{"}"#, identifier: "n2")
        XCTAssertEqual(garbled.body, "")
        do {
            _ = try await handler.handlePush(payloadJson: "[]", deadlineMs: 100)
            XCTFail("a bad payload was accepted")
        } catch RoamError.InvalidInput {}
    }

    /// Runs the sample extension on a request built from an APNs payload, as the system would.
    private func receive(_ apns: String, identifier: String) async throws -> UNNotificationContent {
        let info = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(apns.utf8)) as? [String: Any])
        let content = UNMutableNotificationContent()
        content.userInfo = info
        let request = UNNotificationRequest(identifier: identifier, content: content)
        let service = NotificationService()
        return await withCheckedContinuation { (done: CheckedContinuation<UNNotificationContent, Never>) in
            let box = ContentBox(done)
            service.didReceive(request) { box.resume($0) }
        }
    }
}

/// Resumes a continuation once (the extension's handler is called exactly once).
private final class ContentBox: @unchecked Sendable {
    private var done: CheckedContinuation<UNNotificationContent, Never>?
    init(_ done: CheckedContinuation<UNNotificationContent, Never>) { self.done = done }
    func resume(_ content: UNNotificationContent) {
        done?.resume(returning: content)
        done = nil
    }
}
#endif
