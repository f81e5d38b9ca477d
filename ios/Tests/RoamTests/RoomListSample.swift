// The room-list sample of docs/usage-swift.md and README.md, compiled here and run by
// RoomListTests (scripts/test-swift.sh checks that the markdown shows exactly these lines).

import Roam

// sample:begin
/// A room-list screen's model: the account's rooms, newest activity first, with unread counts.
@MainActor
final class RoomListScreenModel {
    private(set) var rooms: [RoomSummary] = []
    var onChange: (([RoomSummary]) -> Void)?
    private let client: RoamClient
    private let list: RoamRoomList
    private var reader: Task<Void, Never>?

    init(client: RoamClient) throws {
        self.client = client
        let live = try client.liveRoomList()
        list = live.list
        let diffs = live.diffs
        reader = Task { [weak self] in
            for await batch in diffs {
                guard let self else { return }
                rooms = rooms.applying(batch)
                onChange?(rooms)
            }
        }
    }

    /// The badge of the app icon: unread messages over every room.
    var totalUnread: UInt64 { rooms.reduce(0) { $0 + $1.unreadCount } }

    /// The user opened `room`: everything in it is read, here and on the user's other devices.
    func opened(room: String) throws { _ = try client.markRoomRead(room: room, seq: nil) }

    func close() {
        reader?.cancel()
        list.cancel()
    }
}
// sample:end
