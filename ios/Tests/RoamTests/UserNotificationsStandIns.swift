// STAND-INS, NOT THE REAL API. Linux has no UserNotifications framework, so the push sample
// (PushSample.swift) is compiled here against these minimal declarations of just the types it
// uses, with the real names and signatures, so that the sample's lines are the ones an iOS app
// compiles. On Apple platforms the real framework is imported instead and this file is empty.
// The notification center records what the sample removed, for PushTests to check.

#if !canImport(UserNotifications)
import Foundation

/// Stand-in for `UNNotificationContent`.
class UNNotificationContent: NSObject, @unchecked Sendable {
    fileprivate(set) var title = ""
    fileprivate(set) var subtitle = ""
    fileprivate(set) var body = ""
    fileprivate(set) var badge: NSNumber?
    fileprivate(set) var threadIdentifier = ""
    fileprivate(set) var userInfo: [AnyHashable: Any] = [:]
}

/// Stand-in for `UNMutableNotificationContent`.
final class UNMutableNotificationContent: UNNotificationContent, @unchecked Sendable {
    override var title: String { get { super.title } set { super.title = newValue } }
    override var subtitle: String { get { super.subtitle } set { super.subtitle = newValue } }
    override var body: String { get { super.body } set { super.body = newValue } }
    override var badge: NSNumber? { get { super.badge } set { super.badge = newValue } }
    override var threadIdentifier: String {
        get { super.threadIdentifier } set { super.threadIdentifier = newValue }
    }
    override var userInfo: [AnyHashable: Any] {
        get { super.userInfo } set { super.userInfo = newValue }
    }
}

/// Stand-in for `UNNotificationRequest`.
final class UNNotificationRequest: NSObject, @unchecked Sendable {
    let identifier: String
    let content: UNNotificationContent
    init(identifier: String, content: UNNotificationContent) {
        self.identifier = identifier
        self.content = content
    }
}

/// Stand-in for `UNNotification`: a delivered notification.
final class UNNotification: NSObject, @unchecked Sendable {
    let request: UNNotificationRequest
    init(request: UNNotificationRequest) { self.request = request }
}

/// Stand-in for `UNUserNotificationCenter`: holds the delivered notifications.
final class UNUserNotificationCenter: NSObject, @unchecked Sendable {
    private static let shared = UNUserNotificationCenter()
    private let lock = NSLock()
    private var delivered: [UNNotification] = []

    static func current() -> UNUserNotificationCenter { shared }

    func deliveredNotifications() async -> [UNNotification] {
        lock.withLock { delivered }
    }

    func removeDeliveredNotifications(withIdentifiers identifiers: [String]) {
        lock.lock()
        defer { lock.unlock() }
        delivered.removeAll { identifiers.contains($0.request.identifier) }
    }

    /// Not in the real API: what the system would have delivered (for the tests).
    func standInDeliver(_ request: UNNotificationRequest) {
        lock.lock()
        defer { lock.unlock() }
        delivered.append(UNNotification(request: request))
    }
}

/// Stand-in for `UNNotificationServiceExtension`.
class UNNotificationServiceExtension: NSObject {
    func didReceive(
        _ request: UNNotificationRequest,
        withContentHandler contentHandler: @escaping (UNNotificationContent) -> Void
    ) {
        contentHandler(request.content)
    }

    func serviceExtensionTimeWillExpire() {}
}
#endif
