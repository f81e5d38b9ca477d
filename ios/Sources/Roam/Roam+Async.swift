// A thin Swift layer over the generated bindings (Roam.swift, do not edit that one): each
// listener as an AsyncStream. Making a stream subscribes; when the stream terminates (the
// consuming Task is cancelled, or a `for await` loop breaks out and the stream is released)
// its subscription handle is cancelled, so no callback outlives the stream. Events are
// buffered without bound: the client never waits for a slow consumer.
//
// After `shutdown()` a stream delivers nothing more (its subscription is closed) but does not
// finish by itself: cancel the Task that reads it.

import Foundation

/// Who is typing in `room` (`users` empty: nobody).
public struct TypingUpdate: Sendable, Equatable {
    public let room: String
    public let users: [String]
}

/// What `RoamClient.notificationEvents()` yields.
public enum NotificationEvent: Sendable, Equatable {
    /// A new notification arrived.
    case new(RoamNotification)
    /// The unread count changed (the current count comes first).
    case unreadCount(UInt64)
}

extension SubscriptionHandle {
    /// Stops the subscription (the same as `cancel()`).
    public func close() { cancel() }
}

extension RoamClient {
    /// Updates of one room, or of every room with `nil`.
    public func roomUpdates(room: String? = nil) throws -> AsyncStream<RoomUpdate> {
        try makeStream { try subscribeRoomUpdates(room: room, listener: RoomRelay($0)) }
    }

    /// Connection states, the current one first.
    public func connectionStates() throws -> AsyncStream<ConnectionState> {
        try makeStream { try subscribeConnectionState(listener: ConnectionRelay($0)) }
    }

    /// Typing lists of one room (its current list first), or of every room with `nil`.
    public func typingUpdates(room: String? = nil) throws -> AsyncStream<TypingUpdate> {
        try makeStream { try subscribeTyping(room: room, listener: TypingRelay($0)) }
    }

    /// Presence changes of other users.
    public func presenceUpdates() throws -> AsyncStream<Presence> {
        try makeStream { try subscribePresence(listener: PresenceRelay($0)) }
    }

    /// Document versions and conflicts of one room, or of every room with `nil`.
    public func documentUpdates(room: String? = nil) throws -> AsyncStream<DocumentUpdate> {
        try makeStream { try subscribeDocuments(room: room, listener: DocumentRelay($0)) }
    }

    /// New notifications and the unread count (the current count first).
    public func notificationEvents() throws -> AsyncStream<NotificationEvent> {
        try makeStream { try subscribeNotifications(listener: NotificationRelay($0)) }
    }

    /// Sync statuses (phase, pending writes), the current one first.
    public func syncStatuses() throws -> AsyncStream<SyncStatus> {
        try makeStream { try subscribeSyncStatus(listener: SyncStatusRelay($0)) }
    }

    /// Progress of this device's attachment uploads: bytes sent after each request, then how
    /// each ended. With `message` (a message's local id) only that upload's: its current state
    /// first (`.done` at once when the file is uploaded already), and the stream finishes once
    /// it is `.done`, `.failed` or `.cancelled` (or when the message has no upload to follow).
    public func uploadProgress(message: String? = nil) throws -> AsyncStream<UploadProgress> {
        let (stream, continuation) = AsyncStream<UploadProgress>.makeStream(bufferingPolicy: .unbounded)
        do {
            let handle = try subscribeUploads(listener: UploadRelay(continuation, message: message))
            continuation.onTermination = { _ in handle.cancel() }
            if let message {
                // Read after subscribing: an end that comes meanwhile is not missed.
                let current = try self.message(id: message)
                if let current, let file = current.attachment, !current.deleted {
                    if let upload = file.upload {
                        continuation.yield(upload)
                    } else {
                        continuation.yield(
                            UploadProgress(
                                localId: message, room: current.room, sentBytes: file.size,
                                totalBytes: file.size, state: .done))
                        continuation.finish()
                    }
                } else {
                    continuation.finish()
                }
            }
        } catch {
            continuation.finish()
            throw error
        }
        return stream
    }

    /// A live timeline of `room`: the timeline (for `paginateBackwards` and `cancel`) and its
    /// batches of diffs, the first one a `.reset` with the newest `initial` (1–200) messages.
    /// Ending the stream cancels the timeline. A view model applies each batch with
    /// `[Message].applying(_:)`.
    public func liveTimeline(room: String, initial: UInt32 = 50) throws
        -> (timeline: RoamTimeline, diffs: AsyncStream<[TimelineDiff]>)
    {
        let (stream, continuation) = AsyncStream<[TimelineDiff]>.makeStream(bufferingPolicy: .unbounded)
        do {
            let timeline = try timeline(room: room, initial: initial, listener: TimelineRelay(continuation))
            continuation.onTermination = { _ in timeline.cancel() }
            return (timeline, stream)
        } catch {
            continuation.finish()
            throw error
        }
    }

    /// A live list of the account's rooms (last message, unread and mention counts), newest
    /// activity first: the list (for `items` and `cancel`) and its batches of diffs, the first
    /// one a `.reset` with every room. Ending the stream cancels the list. A view model applies
    /// each batch with `[RoomSummary].applying(_:)`.
    public func liveRoomList() throws -> (list: RoamRoomList, diffs: AsyncStream<[RoomListDiff]>) {
        let (stream, continuation) = AsyncStream<[RoomListDiff]>.makeStream(bufferingPolicy: .unbounded)
        do {
            let list = try roomList(listener: RoomListRelay(continuation))
            continuation.onTermination = { _ in list.cancel() }
            return (list, stream)
        } catch {
            continuation.finish()
            throw error
        }
    }
}

extension Array where Element == RoomSummary {
    /// This list with `diffs` applied in order, as a room list's listener receives them.
    public func applying(_ diffs: [RoomListDiff]) -> [RoomSummary] {
        var out = self
        for diff in diffs {
            switch diff {
            case .reset(let rooms):
                out = rooms
            case .insert(let index, let room):
                out.insert(room, at: Swift.min(Int(index), out.count))
            case .set(let index, let room):
                if Int(index) < out.count { out[Int(index)] = room }
            case .remove(let index):
                if Int(index) < out.count { out.remove(at: Int(index)) }
            }
        }
        return out
    }
}

extension Array where Element == Message {
    /// This list with `diffs` applied in order, as a timeline's listener receives them.
    public func applying(_ diffs: [TimelineDiff]) -> [Message] {
        var out = self
        for diff in diffs {
            switch diff {
            case .reset(let messages):
                out = messages
            case .insert(let index, let message):
                out.insert(message, at: Swift.min(Int(index), out.count))
            case .set(let index, let message):
                if Int(index) < out.count { out[Int(index)] = message }
            case .remove(let index):
                if Int(index) < out.count { out.remove(at: Int(index)) }
            }
        }
        return out
    }
}

/// An unbounded stream whose termination cancels the subscription made by `subscribe`.
private func makeStream<Element: Sendable>(
    _ subscribe: (AsyncStream<Element>.Continuation) throws -> SubscriptionHandle
) throws -> AsyncStream<Element> {
    let (stream, continuation) = AsyncStream<Element>.makeStream(bufferingPolicy: .unbounded)
    do {
        let handle = try subscribe(continuation)
        continuation.onTermination = { _ in handle.cancel() }
    } catch {
        continuation.finish()
        throw error
    }
    return stream
}

// The relays only hold a continuation (Sendable), so they are Sendable without `@unchecked`.

private final class RoomRelay: RoomListener {
    let continuation: AsyncStream<RoomUpdate>.Continuation
    init(_ continuation: AsyncStream<RoomUpdate>.Continuation) { self.continuation = continuation }
    func onRoomUpdate(update: RoomUpdate) { continuation.yield(update) }
}

private final class ConnectionRelay: ConnectionListener {
    let continuation: AsyncStream<ConnectionState>.Continuation
    init(_ continuation: AsyncStream<ConnectionState>.Continuation) {
        self.continuation = continuation
    }
    func onConnectionState(state: ConnectionState) { continuation.yield(state) }
}

private final class TypingRelay: TypingListener {
    let continuation: AsyncStream<TypingUpdate>.Continuation
    init(_ continuation: AsyncStream<TypingUpdate>.Continuation) {
        self.continuation = continuation
    }
    func onTyping(room: String, users: [String]) {
        continuation.yield(TypingUpdate(room: room, users: users))
    }
}

private final class PresenceRelay: PresenceListener {
    let continuation: AsyncStream<Presence>.Continuation
    init(_ continuation: AsyncStream<Presence>.Continuation) { self.continuation = continuation }
    func onPresence(presence: Presence) { continuation.yield(presence) }
}

private final class DocumentRelay: DocumentListener {
    let continuation: AsyncStream<DocumentUpdate>.Continuation
    init(_ continuation: AsyncStream<DocumentUpdate>.Continuation) {
        self.continuation = continuation
    }
    func onDocumentUpdate(update: DocumentUpdate) { continuation.yield(update) }
}

private final class NotificationRelay: NotificationListener {
    let continuation: AsyncStream<NotificationEvent>.Continuation
    init(_ continuation: AsyncStream<NotificationEvent>.Continuation) {
        self.continuation = continuation
    }
    func onNotification(notification: RoamNotification) { continuation.yield(.new(notification)) }
    func onUnreadCount(count: UInt64) { continuation.yield(.unreadCount(count)) }
}

private final class SyncStatusRelay: SyncStatusListener {
    let continuation: AsyncStream<SyncStatus>.Continuation
    init(_ continuation: AsyncStream<SyncStatus>.Continuation) { self.continuation = continuation }
    func onSyncStatus(status: SyncStatus) { continuation.yield(status) }
}

private final class UploadRelay: UploadListener {
    let continuation: AsyncStream<UploadProgress>.Continuation
    let message: String?
    init(_ continuation: AsyncStream<UploadProgress>.Continuation, message: String?) {
        self.continuation = continuation
        self.message = message
    }
    func onUploadProgress(progress: UploadProgress) {
        guard let message else {
            continuation.yield(progress)
            return
        }
        guard progress.localId == message else { return }
        continuation.yield(progress)
        if case .uploading = progress.state { return }
        continuation.finish()
    }
}

private final class TimelineRelay: TimelineListener {
    let continuation: AsyncStream<[TimelineDiff]>.Continuation
    init(_ continuation: AsyncStream<[TimelineDiff]>.Continuation) {
        self.continuation = continuation
    }
    func onDiffs(diffs: [TimelineDiff]) { continuation.yield(diffs) }
}

private final class RoomListRelay: RoomListListener {
    let continuation: AsyncStream<[RoomListDiff]>.Continuation
    init(_ continuation: AsyncStream<[RoomListDiff]>.Continuation) {
        self.continuation = continuation
    }
    func onDiffs(diffs: [RoomListDiff]) { continuation.yield(diffs) }
}
