// Collaborative documents in Swift's idiom: a document's changes and its people as
// AsyncStreams, and text deltas applied to a String in UTF-16 units (the units of NSString,
// NSRange and UITextView, and of every offset the document takes).

import Foundation

/// What `RoamCollabDoc.events()` yields.
public enum CollabEvent: Sendable, Equatable {
    /// One transaction's changes: this device's own edits (`local`), or everyone else's.
    case change(CollabChange)
    /// Edits the server refused for good (`forbidden`, `payload_too_large`, …): they stay on
    /// this device and their outbox entry waits for a retry or a discard.
    case refused(CollabError)
}

extension RoamCollabDoc {
    /// Changes of this document (as deltas an editor applies) and refusals of its edits. Ending
    /// the stream cancels the subscription.
    public func events() throws -> AsyncStream<CollabEvent> {
        let (stream, continuation) = AsyncStream<CollabEvent>.makeStream(bufferingPolicy: .unbounded)
        do {
            let handle = try subscribe(listener: CollabRelay(continuation))
            continuation.onTermination = { _ in handle.cancel() }
        } catch {
            continuation.finish()
            throw error
        }
        return stream
    }

    /// The other people in this document (one per session: cursor, selection, state), the
    /// current list first, then the whole list each time it changes.
    public func peerUpdates() throws -> AsyncStream<[CollabPeer]> {
        let (stream, continuation) = AsyncStream<[CollabPeer]>.makeStream(bufferingPolicy: .unbounded)
        do {
            let handle = try subscribePeers(listener: PeersRelay(continuation))
            continuation.onTermination = { _ in handle.cancel() }
        } catch {
            continuation.finish()
            throw error
        }
        return stream
    }
}

extension String {
    /// This text with a text change applied, as `CollabValueChange.textChange` delivers it: retains
    /// and deletes count UTF-16 units from the start.
    public func applying(_ delta: [TextDelta]) -> String {
        let units = Array(utf16)
        var out: [UInt16] = []
        out.reserveCapacity(units.count)
        var at = 0
        for piece in delta {
            switch piece {
            case .retain(let len, _):
                let end = Swift.min(at + Int(len), units.count)
                out.append(contentsOf: units[at..<end])
                at = end
            case .delete(let len):
                at = Swift.min(at + Int(len), units.count)
            case .insert(let text, _):
                out.append(contentsOf: text.utf16)
            }
        }
        out.append(contentsOf: units[at...])
        return String(decoding: out, as: UTF16.self)
    }
}

private final class CollabRelay: CollabListener {
    let continuation: AsyncStream<CollabEvent>.Continuation
    init(_ continuation: AsyncStream<CollabEvent>.Continuation) { self.continuation = continuation }
    func onChange(change: CollabChange) { continuation.yield(.change(change)) }
    func onError(error: CollabError) { continuation.yield(.refused(error)) }
}

private final class PeersRelay: AwarenessListener {
    let continuation: AsyncStream<[CollabPeer]>.Continuation
    init(_ continuation: AsyncStream<[CollabPeer]>.Continuation) { self.continuation = continuation }
    func onPeers(peers: [CollabPeer]) { continuation.yield(peers) }
}
