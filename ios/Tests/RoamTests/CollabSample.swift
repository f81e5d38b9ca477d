// The shared-note sample of docs/usage-swift.md and README.md (the lines between the markers are
// the ones shown there; scripts/check-samples.sh keeps them equal). On Linux, UIKit's types come
// from UIKitStandIns.swift.

import Foundation
import Roam

#if canImport(UIKit)
import UIKit
#endif

// sample:begin
/// A shared note bound to a text view: what the user types goes into the document at once
/// (offline too), and everyone else's edits come back as deltas applied to the text storage,
/// which keeps the user's cursor where it belongs.
@MainActor
final class SharedNote: NSObject, UITextViewDelegate {
    private let note: RoamCollabDoc
    private let textView: UITextView
    private var listening: Task<Void, Never>?

    init(client: RoamClient, room: String, textView: UITextView) throws {
        note = try client.openCollab(room: room, doc: "note")
        self.textView = textView
        super.init()
        textView.text = try note.text(name: "body")
        textView.delegate = self
        let events = try note.events()
        listening = Task { @MainActor [weak self] in
            for await case .change(let change) in events where !change.local {
                for case .textChange("body", let delta) in change.changes {
                    self?.apply(delta)
                }
            }
        }
    }

    // Typing, pasting, deleting: the same range goes into the note (UTF-16 units, as NSRange).
    func textView(_ textView: UITextView, shouldChangeTextIn range: NSRange, replacementText text: String) -> Bool {
        do {
            if range.length > 0 {
                try note.deleteText(name: "body", index: UInt32(range.location), len: UInt32(range.length))
            }
            if !text.isEmpty {
                try note.insertText(name: "body", index: UInt32(range.location), text: text, attributesJson: nil)
            }
            return true
        } catch {
            return false
        }
    }

    // My cursor, for the others' views.
    func textViewDidChangeSelection(_ textView: UITextView) {
        let r = textView.selectedRange
        try? note.setSelection(name: "body", anchor: UInt32(r.location), head: UInt32(r.location + r.length))
    }

    // Undo my own last edits (never someone else's); the view is not the one that made this
    // change, so it takes the note's text.
    func undo() {
        if (try? note.undo()) == true, let text = try? note.text(name: "body") {
            textView.text = text
        }
    }

    func close() {
        listening?.cancel()
        try? note.closeDocument()
    }

    private func apply(_ delta: [TextDelta]) {
        var at = 0
        for piece in delta {
            switch piece {
            case .retain(let len, _):
                at += Int(len)
            case .delete(let len):
                textView.textStorage.replaceCharacters(in: NSRange(location: at, length: Int(len)), with: "")
            case .insert(let text, _):
                textView.textStorage.replaceCharacters(in: NSRange(location: at, length: 0), with: text)
                at += text.utf16.count
            }
        }
    }
}
// sample:end
