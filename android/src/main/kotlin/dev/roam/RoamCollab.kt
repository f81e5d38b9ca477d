// Collaborative documents in Kotlin's idiom: a document's changes and its people as cold Flows,
// and text deltas applied to a String (UTF-16 units, the units of Kotlin's String and Android's
// Editable, and of every offset the document takes).
package dev.roam

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow

/** What [RoamCollabDoc.events] emits. */
sealed interface CollabEvent {
    /** One transaction's changes: this device's own edits ([CollabChange.local]), or others'. */
    data class Change(val change: CollabChange) : CollabEvent

    /**
     * Edits the server refused for good (`forbidden`, `payload_too_large`, …): they stay on this
     * device and their outbox entry waits for a retry or a discard.
     */
    data class Refused(val error: CollabError) : CollabEvent
}

/** Changes of this document (as deltas an editor applies) and refusals of its edits. */
fun RoamCollabDoc.events(): Flow<CollabEvent> = callbackFlow {
    val handle = subscribe(object : CollabListener {
        override fun onChange(change: CollabChange) {
            trySend(CollabEvent.Change(change))
        }

        override fun onError(error: CollabError) {
            trySend(CollabEvent.Refused(error))
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)

/**
 * The other people in this document (one per session: cursor, selection, state), the current
 * list first, then the whole list each time it changes.
 */
fun RoamCollabDoc.peerUpdates(): Flow<List<CollabPeer>> = callbackFlow {
    val handle = subscribePeers(object : AwarenessListener {
        override fun onPeers(peers: List<CollabPeer>) {
            trySend(peers)
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)

/** The text changes of [name] in this change, in order (none when [name] did not change). */
fun CollabChange.textDeltas(name: String): List<List<TextDelta>> =
    changes.filterIsInstance<CollabValueChange.TextChange>().filter { it.name == name }.map { it.delta }

/**
 * This text with a text change applied, as [CollabValueChange.TextChange] delivers it: retains and
 * deletes count UTF-16 units from the start.
 */
fun String.applying(delta: List<TextDelta>): String {
    val out = StringBuilder(length)
    var at = 0
    for (piece in delta) {
        when (piece) {
            is TextDelta.Retain -> {
                val end = minOf(at + piece.len.toInt(), length)
                out.append(this, at, end)
                at = end
            }
            is TextDelta.Delete -> at = minOf(at + piece.len.toInt(), length)
            is TextDelta.Insert -> out.append(piece.text)
        }
    }
    out.append(this, at, length)
    return out.toString()
}
