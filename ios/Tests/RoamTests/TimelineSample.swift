// The timeline sample of docs/usage-swift.md and README.md, compiled here and run by
// TimelineTests (scripts/test-swift.sh checks that the markdown shows exactly these lines).

import Roam

// sample:begin
/// A chat screen's model: the room's messages, kept current by the timeline's diffs.
@MainActor
final class ChatScreenModel {
    private(set) var messages: [Message] = []
    var onChange: (([Message]) -> Void)?
    private let timeline: RoamTimeline
    private var reader: Task<Void, Never>?

    init(client: RoamClient, room: String) throws {
        let live = try client.liveTimeline(room: room, initial: 50)
        timeline = live.timeline
        let diffs = live.diffs
        reader = Task { [weak self] in
            for await batch in diffs {
                guard let self else { return }
                messages = messages.applying(batch)
                onChange?(messages)
            }
        }
    }

    /// Loads older messages (store first, then server); true once the room's start is reached.
    func loadOlder() async throws -> Bool { try await timeline.paginateBackwards(count: 50) }

    func close() {
        reader?.cancel()
        timeline.cancel()
    }
}
// sample:end
