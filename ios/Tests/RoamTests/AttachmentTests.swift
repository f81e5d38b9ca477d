// Attachments through the Swift API against a real server: send, upload progress as an
// AsyncStream, the message reaching Bob, the download, and cancelling.

import Foundation
import XCTest

@testable import Roam

final class AttachmentTests: ServerTestCase, @unchecked Sendable {
    func testAFileReachesBobAndDownloadsByteForByte() async throws {
        let (alice, bob) = try await pair()
        let bytes = Data((0..<300_000).map { UInt8($0 % 251) })
        let file = server.dir + "/photo-\(UUID().uuidString).jpg"
        try bytes.write(to: URL(fileURLWithPath: file))
        let progress = try alice.uploadProgress()
        let updates = try bob.roomUpdates(room: "team")
        let sent = try alice.sendAttachment(
            room: "team", file: file, mime: "image/jpeg", caption: "look",
            details: AttachmentDetails(width: 4, height: 3))
        try FileManager.default.removeItem(atPath: file)
        XCTAssertEqual(sent.attachment?.size, 300_000)
        XCTAssertNotNil(sent.attachment?.localPath)
        let end = try await within("the upload ends") { () -> UploadProgress? in
            for await p in progress where p.localId == sent.localId {
                if case .uploading = p.state { continue }
                return p
            }
            return nil
        }
        XCTAssertEqual(end?.state, .done)
        let theirs = try await within("bob gets the file") { () -> Message? in
            for await case .messageAdded(let message) in updates where message.attachment != nil {
                return message
            }
            return nil
        }
        XCTAssertEqual(theirs?.body, "look")
        XCTAssertEqual(theirs?.attachment?.width, 4)
        let path = try await bob.attachmentFile(message: try XCTUnwrap(theirs?.localId))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), bytes)
        XCTAssertEqual(try bob.mediaCacheBytes(), 300_000)
    }

    func testCancellingAnUploadRemovesTheMessage() async throws {
        let (alice, _) = try await pair()
        try alice.setOnline(online: false)
        let file = server.dir + "/doc-\(UUID().uuidString).pdf"
        try Data(repeating: 1, count: 1000).write(to: URL(fileURLWithPath: file))
        let sent = try alice.sendAttachment(
            room: "team", file: file, mime: "application/pdf", caption: "",
            details: AttachmentDetails())
        try alice.cancelAttachment(message: sent.localId)
        XCTAssertNil(try alice.message(id: sent.localId))
        XCTAssertEqual(try alice.mediaCacheBytes(), 0)
        XCTAssertThrowsError(try alice.cancelAttachment(message: sent.localId)) { error in
            guard case RoamError.Conflict = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(
            try alice.sendAttachment(
                room: "team", file: "/no/such/file", mime: "text/plain", caption: "",
                details: AttachmentDetails())
        ) { error in
            guard case RoamError.File = error else { return XCTFail("\(error)") }
        }
    }
}
