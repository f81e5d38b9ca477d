package dev.roam

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.flow.SharingStarted
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.stateIn

// The timeline sample of docs/usage-kotlin.md and README.md, compiled and run by TimelineTest.
// sample:begin
/** A chat screen's model: the room's messages and the sync status as StateFlows. */
class ChatScreenModel(client: RoamClient, room: String, scope: CoroutineScope) : AutoCloseable {
    private val live = client.liveTimeline(room, initial = 50u)
    val messages: StateFlow<List<Message>> =
        live.messages.stateIn(scope, SharingStarted.Eagerly, emptyList())
    val sync: StateFlow<SyncStatus?> =
        client.syncStatuses().stateIn(scope, SharingStarted.Eagerly, null)

    /** Loads older messages (store first, then server); true once the room's start is reached. */
    suspend fun loadOlder(): Boolean = live.paginateBackwards(50u)

    override fun close() = live.close()
}
// sample:end
