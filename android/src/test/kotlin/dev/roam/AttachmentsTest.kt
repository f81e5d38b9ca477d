package dev.roam

import java.io.File
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.Test

/** Attachments through the Kotlin API against a real server: send, progress, download, cancel. */
class AttachmentsTest : ServerTest() {
    @Test
    fun aFileReachesBobAndDownloadsByteForByte() = runBlocking<Unit> {
        val (alice, bob) = pair()
        val bytes = ByteArray(300_000) { (it % 251).toByte() }
        val file = File.createTempFile("photo", ".jpg").apply { writeBytes(bytes) }
        val done = async(Dispatchers.Unconfined, start = CoroutineStart.UNDISPATCHED) {
            withTimeout(20_000) { alice.uploadProgress().first { it.state !is UploadState.Uploading } }
        }
        val received = async(Dispatchers.Unconfined, start = CoroutineStart.UNDISPATCHED) {
            withTimeout(20_000) {
                bob.roomUpdates("team").filterIsInstance<RoomUpdate.MessageAdded>()
                    .first { it.message.attachment != null }.message
            }
        }
        val sent = alice.sendAttachment(
            "team", file.absolutePath, "image/jpeg", "look", AttachmentDetails(width = 4u, height = 3u),
        )
        file.delete()
        val attachment = assertNotNull(sent.attachment)
        assertEquals(file.name, attachment.name)
        assertEquals(300_000uL, attachment.size)
        assertNotNull(attachment.localPath)
        assertIs<UploadState.Done>(done.await().state)

        val theirs = received.await()
        assertEquals("look", theirs.body)
        assertEquals(4u, theirs.attachment?.width)
        val path = bob.attachmentFile(theirs.localId)
        assertContentEquals(bytes, File(path).readBytes())
        assertEquals(300_000uL, bob.mediaCacheBytes())
    }

    @Test
    fun theSampleSendsAndOpensAFile() = runBlocking<Unit> {
        val (alice, bob) = pair()
        val photo = File.createTempFile("beach", ".jpg").apply { writeBytes(ByteArray(50_000) { 7 }) }
        val seen = mutableListOf<Double>()
        val sent = withTimeout(20_000) { sendPhoto(alice, "team", photo, seen::add) }
        assertEquals(1.0, seen.last())
        waitUntil("bob has the photo") { bob.messages("team", null, 50u).any { it.attachment != null } }
        val theirs = bob.messages("team", null, 50u).first { it.attachment != null }
        assertContentEquals(photo.readBytes(), openAttachment(bob, theirs).readBytes())
        // Asked again once the upload is over: done at once.
        assertIs<UploadState.Done>(alice.uploadProgress(sent.localId).first().state)
    }

    @Test
    fun cancellingAnUploadRemovesTheMessage() = runBlocking<Unit> {
        val (alice, _) = pair()
        alice.setOnline(false)
        val file = File.createTempFile("doc", ".pdf").apply { writeBytes(ByteArray(1000) { 1 }) }
        val sent = alice.sendAttachment("team", file.absolutePath, "application/pdf", "", AttachmentDetails())
        alice.cancelAttachment(sent.localId)
        assertNull(alice.message(sent.localId))
        assertEquals(0uL, alice.mediaCacheBytes())
        assertFailsWith<RoamException.Conflict> { alice.cancelAttachment(sent.localId) }
        assertFailsWith<RoamException.File> {
            alice.sendAttachment("team", "/no/such/file", "text/plain", "", AttachmentDetails())
        }
    }
}
