// Shared fixtures of the client tests: a real roam-server process, listener collectors, and a
// bounded wait. The server binary comes from ROAM_SERVER_BIN (scripts/test-swift.sh builds it).

import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import Roam

struct TestFailure: Error, CustomStringConvertible {
    let description: String
}

/// A real roam-server on a free loopback port with its own data directory; it can be stopped
/// and started again on the same port and data.
///
/// Spawned with posix_spawn and an empty signal mask: Foundation's `Process` hands the child
/// the mask of the spawning thread, and Swift's concurrency threads block SIGTERM, which would
/// leave the server deaf to `stop()`.
final class TestServer: @unchecked Sendable {
    let bin: String
    let dir: String
    let port: Int
    let url: String
    private let secret = "swift-tests-secret-swift-tests-secret-012"
    private var pid: pid_t = 0

    init() throws {
        guard let bin = ProcessInfo.processInfo.environment["ROAM_SERVER_BIN"] else {
            throw XCTSkip("ROAM_SERVER_BIN is not set (run scripts/test-swift.sh)")
        }
        self.bin = bin
        dir = NSTemporaryDirectory() + "roam-swift-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        port = try freePort()
        url = "http://127.0.0.1:\(port)"
    }

    private var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["ROAM_LISTEN"] = "127.0.0.1:\(port)"
        env["ROAM_DATA_DIR"] = dir
        env["ROAM_JWT_SECRET"] = secret
        env["ROAM_TYPING_TIMEOUT_MS"] = "2000"
        env["ROAM_SHUTDOWN_GRACE_SECS"] = "1"
        return env
    }

    /// Starts the server and waits (up to 20 s) until /readyz answers 200.
    func start() async throws {
        precondition(pid == 0, "already running")
        pid = try spawn([bin], environment: environment, stdout: dir + "/server.log")
        for _ in 0..<400 {
            if httpGet(port: port, path: "/readyz")?.status == 200 { return }
            if exitStatus(pid, wait: false) != nil {
                pid = 0
                throw TestFailure(description: "server exited: \(log())")
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        throw TestFailure(description: "server not ready after 20 s: \(log())")
    }

    /// Stops the server (SIGTERM, SIGKILL after 10 s) and waits for it to exit.
    func stop() {
        guard pid != 0 else { return }
        kill(pid, SIGTERM)
        for _ in 0..<1000 where exitStatus(pid, wait: false) == nil {
            usleep(10_000)
        }
        if exitStatus(pid, wait: false) == nil {
            kill(pid, SIGKILL)
            _ = exitStatus(pid, wait: true)
        }
        pid = 0
    }

    /// Stops the server and deletes its data.
    func close() {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func log() -> String {
        (try? String(contentsOfFile: dir + "/server.log", encoding: .utf8)) ?? ""
    }

    /// A token for `user`, minted by `roam-server token`.
    func token(_ user: String) throws -> String {
        let out = dir + "/token-\(UUID().uuidString).txt"
        let child = try spawn(
            [bin, "token", "--user", user], environment: environment, stdout: out, stderr: "/dev/null")
        guard exitStatus(child, wait: true) == 0,
            let token = try? String(contentsOfFile: out, encoding: .utf8)
        else { throw TestFailure(description: "token command failed") }
        return token.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A client for `user` with its own database, quick to reconnect.
    func client(
        _ user: String, token: String? = nil, dbPath: String? = nil, maxStoreBytes: UInt64 = 0,
        tokens: TokenProvider? = nil
    ) throws -> RoamClient {
        let options = ClientOptions(
            dbPath: dbPath ?? dir + "/\(user)-\(UUID().uuidString).db",
            serverUrl: url,
            userId: user,
            reconnectInitialMs: 50,
            reconnectMaxMs: 250,
            maxStoreBytes: maxStoreBytes
        )
        return try RoamClient(
            options: options, tokens: try tokens ?? StaticTokenProvider(try token ?? self.token(user)))
    }

    /// The bodies of a room's messages as the server stores them, oldest first (REST).
    func storedBodies(room: String, token: String) throws -> [String] {
        guard let (status, body) = httpGet(port: port, path: "/v1/rooms/\(room)/messages?limit=200", token: token),
            status == 200,
            let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let items = json["items"] as? [[String: Any]]
        else { throw TestFailure(description: "GET messages failed") }
        return items.compactMap { $0["body"] as? String }.reversed()  // the page is newest first
    }
}

/// Spawns `argv` with an empty signal mask and default dispositions; stdout (and stderr, unless
/// given) go to the file `stdout`.
func spawn(_ argv: [String], environment: [String: String], stdout: String, stderr: String? = nil) throws -> pid_t {
    #if canImport(Darwin)
    var attr: posix_spawnattr_t? = nil
    var actions: posix_spawn_file_actions_t? = nil
    #else
    var attr = posix_spawnattr_t()
    var actions = posix_spawn_file_actions_t()
    #endif
    posix_spawnattr_init(&attr)
    posix_spawn_file_actions_init(&actions)
    defer {
        posix_spawnattr_destroy(&attr)
        posix_spawn_file_actions_destroy(&actions)
    }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attr, &empty)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for sig in [SIGTERM, SIGINT, SIGPIPE, SIGHUP] { sigaddset(&defaults, sig) }
    posix_spawnattr_setsigdefault(&attr, &defaults)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    if let stderr {
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    } else {
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
    }
    let args: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    let env: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        args.forEach { free($0) }
        env.forEach { free($0) }
    }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, &attr, args, env)
    guard rc == 0 else { throw TestFailure(description: "posix_spawn \(argv[0]) failed: \(rc)") }
    return pid
}

/// The exit code of a child once it has ended (-1: killed by a signal), else nil.
func exitStatus(_ pid: pid_t, wait: Bool) -> Int32? {
    var status: Int32 = 0
    let r = waitpid(pid, &status, wait ? 0 : WNOHANG)
    guard r == pid else { return r < 0 ? -1 : nil }
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
}

/// A free TCP port on 127.0.0.1.
func freePort() throws -> Int {
    let fd = tcpSocket()
    defer { close(fd) }
    var addr = loopback(port: 0)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { ptr in
        ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
        }
    }
    guard fd >= 0, ok else { throw TestFailure(description: "no free port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

private func tcpSocket() -> Int32 {
    #if canImport(Glibc)
    return socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    return socket(AF_INET, SOCK_STREAM, 0)
    #endif
}

private func loopback(port: Int) -> sockaddr_in {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return addr
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (2 s timeouts): the status and the body, or nil when the
/// connection fails.
func httpGet(port: Int, path: String, token: String? = nil) -> (status: Int, body: String)? {
    let fd = tcpSocket()
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = loopback(port: port)
    let connected = withUnsafePointer(to: &addr) { ptr in
        ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
    guard connected else { return nil }
    var request = "GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept-Encoding: identity\r\n"
    if let token { request += "Authorization: Bearer \(token)\r\n" }
    request += "\r\n"
    let bytes = Array(request.utf8)
    guard send(fd, bytes, bytes.count, 0) == bytes.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let head = text.range(of: "\r\n\r\n"),
        let status = Int(text.split(separator: " ").dropFirst().first ?? "")
    else { return nil }
    return (status, String(text[head.upperBound...]))
}

/// Thread-safe collector for listener callbacks.
final class Collected<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func add(_ x: T) { lock.lock(); items.append(x); lock.unlock() }
    var all: [T] { lock.lock(); defer { lock.unlock() }; return items }
}

final class Updates: RoomListener, @unchecked Sendable {
    let seen = Collected<RoomUpdate>()
    func onRoomUpdate(update: RoomUpdate) { seen.add(update) }

    func added(_ body: String) -> Bool {
        seen.all.contains { if case .messageAdded(let m) = $0 { return m.body == body } else { return false } }
    }
}

final class Typing: TypingListener, @unchecked Sendable {
    let seen = Collected<[String]>()
    func onTyping(room: String, users: [String]) { seen.add(users) }
}

final class Presences: PresenceListener, @unchecked Sendable {
    let seen = Collected<Presence>()
    func onPresence(presence: Presence) { seen.add(presence) }
}

final class States: ConnectionListener, @unchecked Sendable {
    let seen = Collected<ConnectionState>()
    func onConnectionState(state: ConnectionState) { seen.add(state) }
}

/// Polls until `cond` holds, failing the test after 10 s.
func waitUntil(
    _ what: String, file: StaticString = #filePath, line: UInt = #line, _ cond: () throws -> Bool
) async throws {
    for _ in 0..<500 {
        if try cond() { return }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
    XCTFail("timed out waiting until \(what)", file: file, line: line)
    throw TestFailure(description: "timed out waiting until \(what)")
}

/// Runs `body` with a 10 s limit, failing with `what` when it takes longer.
func within<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(nanoseconds: 10_000_000_000)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw TestFailure(description: "timed out: \(what)")
        }
        return value
    }
}

/// A roam-server per test and the clients made for it (shut down after the test).
class ServerTestCase: XCTestCase, @unchecked Sendable {
    var server: TestServer!
    private var clients: [RoamClient] = []

    override func setUp() async throws {
        server = try TestServer()
        try await server.start()
    }

    override func tearDown() async throws {
        for c in clients { await c.shutdown() }
        clients = []
        server?.close()
    }

    func client(
        _ user: String, token: String? = nil, dbPath: String? = nil, maxStoreBytes: UInt64 = 0,
        tokens: TokenProvider? = nil
    ) throws -> RoamClient {
        let c = try server.client(
            user, token: token, dbPath: dbPath, maxStoreBytes: maxStoreBytes, tokens: tokens)
        clients.append(c)
        return c
    }

    /// Alice's public room "team" with Bob in it, both connected and confirmed (Bob's store
    /// capped at `bobMaxStoreBytes` when that is not 0).
    func pair(bobDb: String? = nil, bobMaxStoreBytes: UInt64 = 0) async throws
        -> (RoamClient, RoamClient)
    {
        let alice = try client("alice")
        let bob = try client("bob", dbPath: bobDb, maxStoreBytes: bobMaxStoreBytes)
        try await alice.start()
        try await bob.start()
        _ = try alice.createRoom(room: "team", kind: .public, title: "Team")
        try await waitUntil("the room is created") { try alice.room(room: "team")?.sendState == .sent }
        _ = try bob.joinRoom(room: "team")
        try await waitUntil("bob has joined") {
            guard let r = try bob.room(room: "team") else { return false }
            return r.joined && r.sendState == .sent
        }
        return (alice, bob)
    }
}
