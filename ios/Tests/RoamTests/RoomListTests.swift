// Room lists and read markers from Swift, against a real server: the list follows messages and
// mentions; two devices of one account show the same counts after one of them reads the room.

import Foundation
import XCTest

@testable import Roam

final class RoomListTests: ServerTestCase, @unchecked Sendable {
    func testTwoDevicesShowTheSameCountsAfterMarkReadOnOne() async throws {
        let (alice, bob) = try await pair()
        let tablet = try client("alice")
        try await tablet.start()
        for body in ["one", "@alice two", "three", "@alice four"] {
            _ = try bob.sendMessage(room: "team", body: body)
        }
        try await bob.waitForPendingWrites()
        for device in [alice, tablet] {
            try await waitUntil("four unread, two mentions") {
                guard let s = try device.roomSummary(room: "team") else { return false }
                return s.unreadCount == 4 && s.mentionCount == 2
            }
        }
        let marker = try alice.markRoomRead(room: "team", seq: nil)
        XCTAssertEqual(try alice.roomSummary(room: "team")?.unreadCount, 0)
        try await waitUntil("the tablet has the phone's marker") {
            try tablet.roomSummary(room: "team")?.readSeq == marker
        }
        let phone = try XCTUnwrap(alice.roomSummary(room: "team"))
        let other = try XCTUnwrap(tablet.roomSummary(room: "team"))
        XCTAssertEqual(
            [phone.unreadCount, phone.mentionCount], [other.unreadCount, other.mentionCount])
        XCTAssertEqual([other.unreadCount, other.mentionCount], [0, 0])
    }

    @MainActor
    func testRoomListScreenModelSampleFollowsTheRooms() async throws {
        let (alice, bob) = try await pair()
        _ = try alice.createRoom(room: "quiet", kind: .public, title: "Quiet")
        try await alice.waitForPendingWrites()
        let model = try RoomListScreenModel(client: alice)
        _ = try bob.sendMessage(room: "team", body: "@alice news")
        try await bob.waitForPendingWrites()
        var shown = false
        for _ in 0..<500 {
            shown = model.rooms.map(\.room.name) == ["team", "quiet"]
                && model.rooms.first?.mentionCount == 1
            if shown { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertTrue(shown, "team is first, with one mention: \(model.rooms)")
        XCTAssertEqual(model.totalUnread, 1)
        XCTAssertEqual(model.rooms.first?.lastMessage?.body, "@alice news")
        try model.opened(room: "team")
        for _ in 0..<500 where model.totalUnread != 0 {
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertEqual(model.totalUnread, 0, "read")
        XCTAssertEqual(model.rooms.first, try alice.roomSummary(room: "team"))
        model.close()
    }
}
