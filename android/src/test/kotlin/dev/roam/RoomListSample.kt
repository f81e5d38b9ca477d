package dev.roam

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.flow.SharingStarted
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.stateIn

// The room-list sample of docs/usage-kotlin.md and README.md, compiled and run by RoomListTest.
// sample:begin
/** A room-list screen's model: the account's rooms, newest activity first, as StateFlows. */
class RoomListScreenModel(private val client: RoamClient, scope: CoroutineScope) : AutoCloseable {
    private val live = client.liveRoomList()
    val rooms: StateFlow<List<RoomSummary>> =
        live.rooms.stateIn(scope, SharingStarted.Eagerly, emptyList())

    /** The badge of the app icon: unread messages over every room. */
    val totalUnread: StateFlow<ULong> =
        rooms.map { list -> list.sumOf { it.unreadCount } }.stateIn(scope, SharingStarted.Eagerly, 0uL)

    /** The user opened [room]: everything in it is read, here and on the user's other devices. */
    fun opened(room: String) {
        client.markRoomRead(room, null)
    }

    override fun close() = live.close()
}
// sample:end
