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

    func testTheSampleSendsAndOpensAFile() async throws {
        let (alice, bob) = try await pair()
        let photo = URL(fileURLWithPath: server.dir + "/beach-\(UUID().uuidString).jpg")
        let bytes = Data(repeating: 7, count: 50_000)
        try bytes.write(to: photo)
        let seen = Progress()
        let sent = try await within("the photo is uploaded") {
            try await sendPhoto(client: alice, room: "team", photo: photo) { seen.add($0) }
        }
        XCTAssertEqual(seen.last, 1.0)
        try await waitUntil("bob has the photo") {
            try bob.messages(room: "team", beforeSeq: nil, limit: 50).contains { $0.attachment != nil }
        }
        let theirs = try XCTUnwrap(
            try bob.messages(room: "team", beforeSeq: nil, limit: 50).first { $0.attachment != nil })
        let opened = try await openAttachment(client: bob, message: theirs)
        XCTAssertEqual(try Data(contentsOf: opened), bytes)
        // Asked again once the upload is over: done at once.
        var again: [UploadProgress] = []
        for await p in try alice.uploadProgress(message: sent.localId) { again.append(p) }
        XCTAssertEqual(again.map(\.state), [.done])
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

/// Progress fractions seen by the sample's callback.
private final class Progress: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Double] = []
    func add(_ v: Double) { lock.lock(); values.append(v); lock.unlock() }
    var last: Double? { lock.lock(); defer { lock.unlock() }; return values.last }
}
