package dev.roam

import kotlin.test.assertEquals
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.cancel
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.Test

/** Room lists and read markers from Kotlin, against a real server. */
class RoomListTest : ServerTest() {
    @Test
    fun twoDevicesShowTheSameCountsAfterMarkReadOnOne() = runBlocking {
        val (alice, bob) = pair()
        val tablet = client("alice")
        withTimeout(20_000) { tablet.start() }
        for (body in listOf("one", "@alice two", "three", "@alice four")) bob.sendMessage("team", body)
        withTimeout(20_000) { bob.waitForPendingWrites() }
        for (device in listOf(alice, tablet)) {
            waitUntil("four unread, two mentions") {
                val s = device.roomSummary("team")
                s != null && s.unreadCount == 4uL && s.mentionCount == 2uL
            }
        }
        val marker = alice.markRoomRead("team", null)
        assertEquals(0uL, alice.roomSummary("team")?.unreadCount)
        waitUntil("the tablet has the phone's marker") { tablet.roomSummary("team")?.readSeq == marker }
        val phone = alice.roomSummary("team")!!
        val other = tablet.roomSummary("team")!!
        assertEquals(listOf(phone.unreadCount, phone.mentionCount), listOf(other.unreadCount, other.mentionCount))
        assertEquals(listOf(0uL, 0uL), listOf(other.unreadCount, other.mentionCount))
    }

    @Test
    fun roomListScreenModelSampleFollowsTheRooms() = runBlocking {
        val (alice, bob) = pair()
        alice.createRoom("quiet", RoomKind.PUBLIC, "Quiet")
        withTimeout(20_000) { alice.waitForPendingWrites() }
        val scope = CoroutineScope(Dispatchers.Default)
        val model = RoomListScreenModel(alice, scope)
        bob.sendMessage("team", "@alice news")
        withTimeout(20_000) { bob.waitForPendingWrites() }
        waitUntil("team is first, with one mention") {
            model.rooms.value.map { it.room.name } == listOf("team", "quiet") &&
                model.rooms.value.first().mentionCount == 1uL
        }
        waitUntil("the badge counts it") { model.totalUnread.value == 1uL }
        assertEquals("@alice news", model.rooms.value.first().lastMessage?.body)
        model.opened("team")
        waitUntil("read") { model.totalUnread.value == 0uL }
        model.close()
        scope.cancel()
    }
}
