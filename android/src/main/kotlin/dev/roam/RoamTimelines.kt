// Timelines and the sync status for Kotlin: a room's messages as a Flow of whole lists (built by
// applying the core's diffs), and the sync status as a Flow, for a ViewModel to turn into
// StateFlows.
package dev.roam

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.drop
import kotlinx.coroutines.flow.receiveAsFlow
import kotlinx.coroutines.flow.scan

/** [this] list with [diffs] applied in order, as the timeline's listener receives them. */
fun List<Message>.applying(diffs: List<TimelineDiff>): List<Message> {
    val out = toMutableList()
    for (d in diffs) {
        when (d) {
            is TimelineDiff.Reset -> {
                out.clear()
                out.addAll(d.messages)
            }
            is TimelineDiff.Insert -> out.add(minOf(d.index.toInt(), out.size), d.message)
            is TimelineDiff.Set -> if (d.index.toInt() < out.size) out[d.index.toInt()] = d.message
            is TimelineDiff.Remove -> if (d.index.toInt() < out.size) out.removeAt(d.index.toInt())
        }
    }
    return out
}

/**
 * A live timeline of one room. [diffs] is buffered from the moment the timeline is opened, so
 * nothing is lost before collection starts; collect it (or [messages]) once. Close it when the
 * screen goes away.
 */
class LiveTimeline internal constructor(
    /** The timeline itself (pagination, cancel). */
    val timeline: RoamTimeline,
    /** Batches of diffs: first one with a Reset, then changes. */
    val diffs: Flow<List<TimelineDiff>>,
) : AutoCloseable {
    /** The room's messages, a whole list after every batch of diffs. */
    val messages: Flow<List<Message>> =
        diffs.scan(emptyList<Message>()) { list, batch -> list.applying(batch) }.drop(1)

    /** Loads up to [count] older messages; true once the start of the room is reached. */
    suspend fun paginateBackwards(count: UInt = 50u): Boolean = timeline.paginateBackwards(count)

    override fun close() = timeline.cancel()
}

/** Opens a live timeline of [room] with the newest [initial] messages (1–200). */
fun RoamClient.liveTimeline(room: String, initial: UInt = 50u): LiveTimeline {
    val channel = Channel<List<TimelineDiff>>(Channel.UNLIMITED)
    val timeline = timeline(room, initial, object : TimelineListener {
        override fun onDiffs(diffs: List<TimelineDiff>) {
            channel.trySend(diffs)
        }
    })
    return LiveTimeline(timeline, channel.receiveAsFlow())
}

/** Sync statuses, the current one first. */
fun RoamClient.syncStatuses(): Flow<SyncStatus> = callbackFlow {
    val handle = subscribeSyncStatus(object : SyncStatusListener {
        override fun onSyncStatus(status: SyncStatus) {
            trySend(status)
        }
    })
    awaitClose { handle.close() }
}.buffer(Channel.UNLIMITED)
