// The Swift peer of the three-language convergence check (scripts/test-converge.sh runs it next
// to the Rust `converge_peer` and the Kotlin `CollabConvergeTest` against one server, which it
// restarts while they edit). Skipped unless ROAM_CONVERGE_URL is set, so the normal suite skips
// it. The steps and the environment are those of tests/examples/converge_peer.rs.

import Foundation
import XCTest

@testable import Roam

/// SplitMix64: a seeded generator, so a run's edits can be made again.
private struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class CollabConvergeTests: XCTestCase, @unchecked Sendable {
    private let docName = "converge"
    private let text = "body"
    private let peers = "peers"
    private let langs = ["rust", "kotlin", "swift"]
    private let waitSeconds = 120.0
    private let quietSeconds = 1.0

    private func env(_ name: String) throws -> String {
        guard let v = ProcessInfo.processInfo.environment[name] else {
            throw TestFailure(description: "\(name) is not set")
        }
        return v
    }

    private func waitFor(_ what: String, _ cond: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(waitSeconds)
        while !(try cond()) {
            if Date() > deadline { throw TestFailure(description: "timed out waiting until \(what)") }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    private func allKeys(_ d: RoamCollabDoc, _ prefix: String) throws -> Bool {
        let m = try d.map(name: peers)
        return langs.allSatisfy { m["\(prefix)_\($0)"] != nil }
    }

    /// One random insert or delete; an edit refused because a remote one moved the end counts
    /// as not made.
    private func randomEdit(_ rng: inout SeededGenerator, _ d: RoamCollabDoc) -> Bool {
        do {
            let len = try d.textLen(name: text)
            if len > 10 && Double.random(in: 0..<1, using: &rng) < 0.35 {
                let at = UInt32.random(in: 0..<len, using: &rng)
                let n = min(UInt32.random(in: 1...3, using: &rng), len - at)
                try d.deleteText(name: text, index: at, len: n)
            } else {
                let letters = Array("swifté ")
                let count = Int.random(in: 1...3, using: &rng)
                let s = String((0..<count).map { _ in letters[Int.random(in: 0..<letters.count, using: &rng)] })
                try d.insertText(
                    name: text, index: UInt32.random(in: 0...len, using: &rng), text: s, attributesJson: nil)
            }
            return true
        } catch {
            return false
        }
    }

    func testConvergesWithRustAndKotlin() async throws {
        guard let url = ProcessInfo.processInfo.environment["ROAM_CONVERGE_URL"] else {
            throw XCTSkip("ROAM_CONVERGE_URL is not set (scripts/test-converge.sh sets it)")
        }
        let room = try env("ROAM_CONVERGE_ROOM")
        let out = try env("ROAM_CONVERGE_OUT")
        let user = try env("ROAM_CONVERGE_USER_SWIFT")
        let edits = Int(ProcessInfo.processInfo.environment["ROAM_CONVERGE_EDITS"] ?? "300") ?? 300
        let seed = UInt64(ProcessInfo.processInfo.environment["ROAM_CONVERGE_SEED"] ?? "1") ?? 1
        let dir = NSTemporaryDirectory() + "roam-converge-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let options = ClientOptions(
            dbPath: dir + "/peer.db", serverUrl: url, userId: user,
            reconnectInitialMs: 50, reconnectMaxMs: 250, maxStoreBytes: 0)
        let client = try RoamClient(
            options: options, tokens: StaticTokenProvider(try env("ROAM_CONVERGE_TOKEN_SWIFT")))
        try await client.start()
        let d = try client.openCollab(room: room, doc: docName)
        try d.mapSet(name: peers, key: "ready_swift", valueJson: "true")
        FileManager.default.createFile(atPath: out + "/ready-swift", contents: Data())
        try await waitFor("every peer is ready") { try allKeys(d, "ready") }

        var rng = SeededGenerator(state: seed &+ 2)
        var made = 0
        for i in 0..<edits {
            switch i % 50 {
            case 25: try client.setOnline(online: false)
            case 40: try client.setOnline(online: true)
            default: break
            }
            if randomEdit(&rng, d) { made += 1 }
            try await Task.sleep(nanoseconds: 15_000_000)
        }
        try client.setOnline(online: true)
        try d.mapSet(name: peers, key: "done_swift", valueJson: "true")
        try d.flush()
        print("CollabConvergeTests: \(made) of \(edits) edits made")
        try await waitFor("every peer is done") { try allKeys(d, "done") }
        try await waitFor("the outbox is empty") { client.metrics().outboxDepth == 0 }
        // The text must stand still for a moment before it is written out.
        var last = try d.text(name: text)
        var since = Date()
        let deadline = since.addingTimeInterval(waitSeconds)
        while Date().timeIntervalSince(since) < quietSeconds {
            if Date() > deadline { throw TestFailure(description: "the text never stood still") }
            try await Task.sleep(nanoseconds: 50_000_000)
            let now = try d.text(name: text)
            if now != last {
                last = now
                since = Date()
            }
        }
        try last.write(toFile: out + "/swift.txt", atomically: true, encoding: .utf8)
        await client.shutdown()
    }
}
