// An encrypted store through the Swift API: the sample's `openEncrypted`, a restart, a wrong
// key, and a key change.

import Foundation
import XCTest

@testable import Roam

final class StoreKeyTests: ServerTestCase, @unchecked Sendable {
    private func randomKey() -> Data {
        var rng = SystemRandomNumberGenerator()
        return Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
    }

    private func onDisk(_ path: String, _ text: String) -> Bool {
        guard let bytes = FileManager.default.contents(atPath: path) else { return false }
        return bytes.range(of: Data(text.utf8)) != nil
    }

    func testAnEncryptedStoreOpensOnlyWithItsKey() async throws {
        let key = randomKey()
        let db = server.dir + "/alice-encrypted.db"
        let token = try server.token("alice")
        let alice = try openEncrypted(serverUrl: server.url, token: token, dbPath: db, key: key)
        _ = try alice.createRoom(room: "secret", kind: .private, title: "Secret", metadataJson: nil)
        _ = try alice.sendMessage(room: "secret", body: "swift-unique-b7e013")
        await alice.shutdown()
        for suffix in ["", "-wal"] {
            XCTAssertFalse(onDisk(db + suffix, "swift-unique-b7e013"), "plain text in \(db)\(suffix)")
        }

        let again = try openEncrypted(serverUrl: server.url, token: token, dbPath: db, key: key)
        XCTAssertEqual(try again.messages(room: "secret", beforeSeq: nil, limit: 10).map(\.body), ["swift-unique-b7e013"])
        let newKey = randomKey()
        try await again.changeStoreKey(key: newKey)
        await again.shutdown()

        XCTAssertThrowsError(try openEncrypted(serverUrl: server.url, token: token, dbPath: db, key: key)) { error in
            guard case RoamError.InvalidKey = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(
            try RoamClient(
                options: ClientOptions(dbPath: db, serverUrl: server.url, userId: "alice"),
                tokens: StaticTokenProvider(token))
        ) { error in
            guard case RoamError.InvalidKey = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try openEncrypted(serverUrl: server.url, token: token, dbPath: db, key: Data(count: 16))) { error in
            guard case RoamError.InvalidInput = error else { return XCTFail("\(error)") }
        }
        let reopened = try openEncrypted(serverUrl: server.url, token: token, dbPath: db, key: newKey)
        XCTAssertEqual(try reopened.messages(room: "secret", beforeSeq: nil, limit: 10).map(\.body), ["swift-unique-b7e013"])
        await reopened.shutdown()
    }
}
