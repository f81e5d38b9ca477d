// The push sample of docs/usage-swift.md, compiled here (on Linux against the stand-ins in
// UserNotificationsStandIns.swift) and run by PushTests (scripts/test-swift.sh checks that the
// markdown shows exactly these lines).

import Foundation
import Roam

#if canImport(UserNotifications)
import UserNotifications
#endif

// sample:begin
/// The notification service extension (the principal class of the extension's target). The app
/// keeps its database in the app group's container and gives `account` what the extension needs.
class NotificationService: UNNotificationServiceExtension {
    /// The account's options and token as the app saved them in the app group (nil: signed out).
    nonisolated(unsafe) static var account: () -> (ClientOptions, TokenProvider)? = { nil }

    private var delivery: Delivery?

    override func didReceive(
        _ request: UNNotificationRequest,
        withContentHandler contentHandler: @escaping (UNNotificationContent) -> Void
    ) {
        let delivery = Delivery(original: request.content, handler: contentHandler)
        self.delivery = delivery
        guard let (options, tokens) = Self.account(),
            let json = try? JSONSerialization.data(withJSONObject: stringKeys(request.content.userInfo)),
            let payload = String(data: json, encoding: .utf8)
        else { return delivery.deliverOriginal() }
        Task {
            do {
                // Next to the running app (never AlreadyOpen); well within the extension's ~30 s.
                let handler = try PushHandler(options: options, tokens: tokens)
                let content = try await handler.handlePush(payloadJson: payload, deadlineMs: 5_000)
                if content.kind == .clear {
                    await removeDelivered(room: content.room, upTo: content.seq)
                }
                delivery.deliver(content)
            } catch {
                delivery.deliverOriginal()  // unreadable payload or store: the generic alert
            }
        }
    }

    override func serviceExtensionTimeWillExpire() { delivery?.deliverOriginal() }
}

/// Hands the system one content, whichever comes first: the answer or the time running out.
final class Delivery: @unchecked Sendable {
    private let lock = NSLock()
    private var handler: ((UNNotificationContent) -> Void)?
    private let original: UNNotificationContent

    init(original: UNNotificationContent, handler: @escaping (UNNotificationContent) -> Void) {
        self.original = original
        self.handler = handler
    }

    func deliver(_ content: PushContent) {
        let shown = UNMutableNotificationContent()
        shown.userInfo = original.userInfo  // keeps "roam" (room, seq) for removeDelivered
        shown.threadIdentifier = content.room
        shown.badge = NSNumber(value: content.badge)
        shown.title = content.roomTitle
        if content.kind == .show, let body = content.body {
            shown.subtitle = content.sender ?? ""
            shown.body = body
        } else {
            shown.body = original.body
        }
        finish(shown)
    }

    func deliverOriginal() { finish(original) }

    private func finish(_ content: UNNotificationContent) {
        lock.lock()
        let handler = self.handler
        self.handler = nil
        lock.unlock()
        handler?(content)
    }
}

/// Removes the delivered notifications of `room` up to `seq` (read on another device). The app
/// calls it too for the background `read` pushes it receives.
func removeDelivered(room: String, upTo seq: UInt64) async {
    let center = UNUserNotificationCenter.current()
    let ids = await center.deliveredNotifications().compactMap { note -> String? in
        let info = note.request.content.userInfo["roam"] as? [String: Any]
        let noteSeq = (info?["seq"] as? NSNumber)?.uint64Value ?? 0
        return note.request.content.threadIdentifier == room && noteSeq <= seq
            ? note.request.identifier : nil
    }
    center.removeDeliveredNotifications(withIdentifiers: ids)
}

/// The `userInfo` dictionary with string keys, as JSON wants it.
func stringKeys(_ info: [AnyHashable: Any]) -> [String: Any] {
    Dictionary(uniqueKeysWithValues: info.compactMap { k, v in (k as? String).map { ($0, v) } })
}
// sample:end
