package dev.roam

import java.io.File

// The attachment sample of docs/usage-kotlin.md, compiled and run by AttachmentsTest.
// sample:begin
/** Sends a photo, reporting its upload; the message follows once the server has the file. */
suspend fun sendPhoto(client: RoamClient, room: String, photo: File, onProgress: (Double) -> Unit): Message {
    // The file is linked or copied into the client's media directory: `photo` may go now.
    val message = client.sendAttachment(room, photo.path, "image/jpeg", "", AttachmentDetails())
    client.uploadProgress(message.localId).collect { p ->
        onProgress(p.sentBytes.toDouble() / p.totalBytes.toDouble().coerceAtLeast(1.0))
    }
    return message
}

/** A received file on this device: downloaded once (resumably), then read from the cache. */
suspend fun openAttachment(client: RoamClient, message: Message): File =
    File(client.attachmentFile(message.localId))
// sample:end
