// The attachment sample of docs/usage-swift.md, compiled here and run by AttachmentTests
// (scripts/test-swift.sh checks that the markdown shows exactly these lines).

import Foundation
import Roam

// sample:begin
/// Sends a photo, reporting its upload; the message follows once the server has the file.
func sendPhoto(
    client: RoamClient, room: String, photo: URL, onProgress: (Double) -> Void
) async throws -> Message {
    // The file is linked or copied into the client's media directory: `photo` may go now.
    let message = try client.sendAttachment(
        room: room, file: photo.path, mime: "image/jpeg", caption: "",
        details: AttachmentDetails())
    for await p in try client.uploadProgress(message: message.localId) {
        onProgress(Double(p.sentBytes) / Double(max(p.totalBytes, 1)))
    }
    return message
}

/// A received file on this device: downloaded once (resumably), then read from the cache.
func openAttachment(client: RoamClient, message: Message) async throws -> URL {
    URL(fileURLWithPath: try await client.attachmentFile(message: message.localId))
}
// sample:end
