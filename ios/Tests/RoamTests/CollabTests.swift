// Collaborative documents through the Swift layer, against a real server: the README's shared
// note bound to a (stand-in) text view, offline edits merging, deltas that rebuild the text.

import Foundation
import XCTest

@testable import Roam

final class CollabTests: ServerTestCase, @unchecked Sendable {
    @MainActor
    func testTheSharedNoteSampleFollowsBothWriters() async throws {
        let (alice, bob) = try await pair()
        let view = UITextView()
        let note = try SharedNote(client: alice, room: "team", textView: view)
        view.type("Hello", replacing: NSRange(location: 0, length: 0))
        XCTAssertEqual(view.selectedRange.location, 5)

        let bobNote = try bob.openCollab(room: "team", doc: "note")
        try await waitOnMain("bob sees alice's text") { try bobNote.text(name: "body") == "Hello" }
        // Bob writes before Alice's cursor: her text view follows, and her cursor stays after
        // "Hello".
        try bobNote.insertText(name: "body", index: 0, text: "Bob: ", attributesJson: nil)
        try await waitOnMain("alice's view shows bob's edit") { view.text == "Bob: Hello" }
        XCTAssertEqual(view.selectedRange.location, 10, "the cursor moved with the text")

        // Undo takes back Alice's own typing only.
        note.undo()
        XCTAssertEqual(view.text, "Bob: ")
        try await waitOnMain("bob sees the undo") { try bobNote.text(name: "body") == "Bob: " }
        note.close()
    }

    func testOfflineEditsMergeAndDeltasRebuildTheText() async throws {
        let (alice, bob) = try await pair()
        let a = try alice.openCollab(room: "team", doc: "draft")
        let b = try bob.openCollab(room: "team", doc: "draft")
        try a.insertText(name: "t", index: 0, text: "shared ", attributesJson: nil)
        try await waitUntil("bob has the start") { try b.text(name: "t") == "shared " }

        // Bob's mirror of the text, kept only from the deltas he receives.
        let mirror = Mirror(try b.text(name: "t"))
        let events = try b.events()
        let reader = Task {
            for await case .change(let change) in events {
                for case .textChange("t", let delta) in change.changes { mirror.apply(delta) }
            }
        }

        try bob.setOnline(online: false)
        try b.insertText(name: "t", index: 7, text: "bob🙂", attributesJson: nil)  // a surrogate pair
        try a.insertText(name: "t", index: 0, text: "alice ", attributesJson: nil)
        try a.deleteText(name: "t", index: 6, len: 1)  // the "s" of "shared"
        try bob.setOnline(online: true)

        try await waitUntil("both converge") {
            let ta = try a.text(name: "t")
            return ta == (try b.text(name: "t")) && ta.contains("bob🙂") && ta.hasPrefix("alice ")
        }
        XCTAssertEqual(try a.text(name: "t"), "alice hared bob🙂")
        try await waitUntil("the deltas rebuild bob's text") { mirror.text == (try b.text(name: "t")) }
        reader.cancel()
    }
}

private final class Mirror: @unchecked Sendable {
    private let lock = NSLock()
    private var value: String
    init(_ value: String) { self.value = value }
    var text: String { lock.withLock { value } }
    func apply(_ delta: [TextDelta]) { lock.withLock { value = value.applying(delta) } }
}

/// `waitUntil` for a test on the main actor: polls on it, so the conditions may read its state,
/// and sleeps between polls, so the main actor's other work (the sample's listener) runs.
@MainActor
private func waitOnMain(_ what: String, _ cond: () throws -> Bool) async throws {
    for _ in 0..<500 {
        if try cond() { return }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
    XCTFail("timed out waiting until \(what)")
    throw TestFailure(description: "timed out waiting until \(what)")
}
