// STAND-INS, NOT THE REAL API. Linux has no UIKit, so the shared-note sample (CollabSample.swift)
// is compiled here against these minimal declarations of just the types it uses, with the real
// names and signatures, so that the sample's lines are the ones an iOS app compiles. On Apple
// platforms UIKit is imported instead and this file is empty. The text view also plays the
// user's part for CollabTests: `type` asks the delegate as UIKit does, then edits.

#if !canImport(UIKit)
import Foundation

/// Stand-in for `UITextViewDelegate` (its methods are optional, as in UIKit).
@MainActor
protocol UITextViewDelegate: AnyObject {
    func textView(_ textView: UITextView, shouldChangeTextIn range: NSRange, replacementText text: String) -> Bool
    func textViewDidChangeSelection(_ textView: UITextView)
}

extension UITextViewDelegate {
    func textView(_ textView: UITextView, shouldChangeTextIn range: NSRange, replacementText text: String) -> Bool { true }
    func textViewDidChangeSelection(_ textView: UITextView) {}
}

/// Stand-in for `NSTextStorage`: the text view's characters, edited in UTF-16 ranges.
@MainActor
final class NSTextStorage {
    private(set) var string = ""
    fileprivate weak var view: UITextView?

    init(_ string: String) { self.string = string }

    func replaceCharacters(in range: NSRange, with str: String) {
        let units = Array(string.utf16)
        let lo = min(range.location, units.count)
        let hi = min(range.location + range.length, units.count)
        string = String(decoding: units[..<lo] + Array(str.utf16) + units[hi...], as: UTF16.self)
        view?.storageEdited(at: lo, removed: hi - lo, inserted: str.utf16.count)
    }
}

/// Stand-in for `UITextView`.
@MainActor
final class UITextView {
    weak var delegate: UITextViewDelegate?
    let textStorage = NSTextStorage("")
    var selectedRange = NSRange(location: 0, length: 0)

    init() { textStorage.view = self }

    var text: String! {
        get { textStorage.string }
        set {
            textStorage.replaceCharacters(
                in: NSRange(location: 0, length: textStorage.string.utf16.count), with: newValue ?? "")
        }
    }

    /// The user replaces `range` with `text` (typing, pasting, deleting), as UIKit does it: the
    /// delegate is asked first, then the text changes and the cursor moves after the new text.
    func type(_ text: String, replacing range: NSRange) {
        guard delegate?.textView(self, shouldChangeTextIn: range, replacementText: text) ?? true else { return }
        textStorage.replaceCharacters(in: range, with: text)
        selectedRange = NSRange(location: range.location + text.utf16.count, length: 0)
        delegate?.textViewDidChangeSelection(self)
    }

    /// Like UIKit, an edit of the storage keeps the selection on the same characters.
    fileprivate func storageEdited(at location: Int, removed: Int, inserted: Int) {
        func shift(_ i: Int) -> Int {
            if i <= location { return i }
            if i < location + removed { return location + inserted }
            return i - removed + inserted
        }
        let start = shift(selectedRange.location)
        let end = shift(selectedRange.location + selectedRange.length)
        selectedRange = NSRange(location: start, length: max(0, end - start))
    }
}
#endif
