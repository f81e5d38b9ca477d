// Room lists for Kotlin: the account's rooms as a Flow of whole lists (built by applying the
// core's diffs), for a ViewModel to turn into a StateFlow.
package dev.roam

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.drop
import kotlinx.coroutines.flow.receiveAsFlow
import kotlinx.coroutines.flow.scan

/** [this] list with [diffs] applied in order, as the room list's listener receives them. */
fun List<RoomSummary>.applyingRoomDiffs(diffs: List<RoomListDiff>): List<RoomSummary> {
    val out = toMutableList()
    for (d in diffs) {
        when (d) {
            is RoomListDiff.Reset -> {
                out.clear()
                out.addAll(d.rooms)
            }
            is RoomListDiff.Insert -> out.add(minOf(d.index.toInt(), out.size), d.room)
            is RoomListDiff.Set -> if (d.index.toInt() < out.size) out[d.index.toInt()] = d.room
            is RoomListDiff.Remove -> if (d.index.toInt() < out.size) out.removeAt(d.index.toInt())
        }
    }
    return out
}

/**
 * A live list of the account's rooms, newest activity first. [diffs] is buffered from the
 * moment the list is opened, so nothing is lost before collection starts; collect it (or
 * [rooms]) once. Close it when the screen goes away.
 */
class LiveRoomList internal constructor(
    /** The list itself (items, cancel). */
    val list: RoamRoomList,
    /** Batches of diffs: first one with a Reset, then changes. */
    val diffs: Flow<List<RoomListDiff>>,
) : AutoCloseable {
    /** The account's rooms, a whole list after every batch of diffs. */
    val rooms: Flow<List<RoomSummary>> =
        diffs.scan(emptyList<RoomSummary>()) { list, batch -> list.applyingRoomDiffs(batch) }.drop(1)

    override fun close() = list.cancel()
}

/** Opens a live list of the account's rooms (last message, unread and mention counts). */
fun RoamClient.liveRoomList(): LiveRoomList {
    val channel = Channel<List<RoomListDiff>>(Channel.UNLIMITED)
    val list = roomList(object : RoomListListener {
        override fun onDiffs(diffs: List<RoomListDiff>) {
            channel.trySend(diffs)
        }
    })
    return LiveRoomList(list, channel.receiveAsFlow())
}
