// A thin Kotlin layer over the generated bindings (roam_ffi.kt): each listener as a cold Flow.
// Collecting a flow subscribes; when the collector stops (cancelled, or an operator such as
// first() is done) the subscription handle is closed, so no callback outlives the flow.
// Events are buffered without bound: the client never blocks on a slow collector.
package dev.roam

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow

/** Who is typing in [room] ([users] empty: nobody). */
data class TypingUpdate(val room: String, val users: List<String>)

/** What [RoamClient.notificationEvents] emits. */
sealed interface NotificationEvent {
    /** A new notification arrived. */
    data class New(val notification: RoamNotification) : NotificationEvent

    /** The unread count changed (the current count comes first). */
    data class UnreadCount(val count: ULong) : NotificationEvent
}

/** Updates of one room, or of every room when [room] is null. */
fun RoamClient.roomUpdates(room: String? = null): Flow<RoomUpdate> = callbackFlow {
    val handle = subscribeRoomUpdates(room, object : RoomListener {
        override fun onRoomUpdate(update: RoomUpdate) {
            trySend(update)
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)

/** Connection states, the current one first. */
fun RoamClient.connectionStates(): Flow<ConnectionState> = callbackFlow {
    val handle = subscribeConnectionState(object : ConnectionListener {
        override fun onConnectionState(state: ConnectionState) {
            trySend(state)
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)

/** Typing lists of one room (its current list first), or of every room when [room] is null. */
fun RoamClient.typingUpdates(room: String? = null): Flow<TypingUpdate> = callbackFlow {
    val handle = subscribeTyping(room, object : TypingListener {
        override fun onTyping(room: String, users: List<String>) {
            trySend(TypingUpdate(room, users))
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)

/** Presence changes of other users. */
fun RoamClient.presenceUpdates(): Flow<Presence> = callbackFlow {
    val handle = subscribePresence(object : PresenceListener {
        override fun onPresence(presence: Presence) {
            trySend(presence)
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)

/** Document versions and conflicts of one room, or of every room when [room] is null. */
fun RoamClient.documentUpdates(room: String? = null): Flow<DocumentUpdate> = callbackFlow {
    val handle = subscribeDocuments(room, object : DocumentListener {
        override fun onDocumentUpdate(update: DocumentUpdate) {
            trySend(update)
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)

/**
 * Progress of this device's attachment uploads: bytes sent after each request, then how each
 * ended. With [message] (a message's local id) only that upload's: its current state first
 * (`Done` at once when the file is uploaded already), and the flow completes once it is done,
 * failed or cancelled (or when the message has no upload to follow).
 */
fun RoamClient.uploadProgress(message: String? = null): Flow<UploadProgress> = callbackFlow {
    val handle = subscribeUploads(object : UploadListener {
        override fun onUploadProgress(progress: UploadProgress) {
            if (message != null && progress.localId != message) return
            trySend(progress)
            if (message != null && progress.state !is UploadState.Uploading) channel.close()
        }
    })
    if (message != null) {
        // Read after subscribing: an end that comes meanwhile is not missed.
        val current = message(message)
        val file = current?.attachment
        when {
            current == null || file == null || current.deleted -> channel.close()
            file.upload == null -> {
                trySend(UploadProgress(message, current.room, file.size, file.size, UploadState.Done))
                channel.close()
            }
            else -> trySend(file.upload!!)
        }
    }
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)

/** New notifications and the unread count (the current count first). */
fun RoamClient.notificationEvents(): Flow<NotificationEvent> = callbackFlow {
    val handle = subscribeNotifications(object : NotificationListener {
        override fun onNotification(notification: RoamNotification) {
            trySend(NotificationEvent.New(notification))
        }

        override fun onUnreadCount(count: ULong) {
            trySend(NotificationEvent.UnreadCount(count))
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)
