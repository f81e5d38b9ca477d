import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import Roam

/// Collects log lines handed over by Rust (from any thread).
private final class Collect: LogListener, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [(LogLevel, String, String)] = []

    func onLog(level: LogLevel, target: String, message: String) {
        lock.lock()
        defer { lock.unlock() }
        stored.append((level, target, message))
    }

    var lines: [(LogLevel, String, String)] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
}

/// A TCP socket listening on 127.0.0.1 at a free port, closed when released.
private final class LoopbackListener {
    let fd: Int32
    let port: UInt16

    init() throws {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = fd >= 0 && withUnsafeMutablePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && listen(fd, 1) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else {
            if fd >= 0 { close(fd) }
            throw NSError(domain: "LoopbackListener", code: Int(errno))
        }
        self.fd = fd
        self.port = UInt16(bigEndian: addr.sin_port)
    }

    deinit { close(fd) }
}

/// End-to-end check of the generated Swift bindings against the real libroam_ffi: plain calls,
/// typed errors, an async function on the tokio runtime, and a listener called from Rust.
final class SmokeTests: XCTestCase {
    func testProtocolVersionIsOne() {
        XCTAssertEqual(protocolVersion(), 1)
    }

    func testValidRoomNamePasses() throws {
        try validateRoomName(name: "general")
        try validateRoomName(name: "team-42.dev_ops")
    }

    func testInvalidRoomNameThrowsInvalidInput() {
        XCTAssertThrowsError(try validateRoomName(name: "no spaces allowed")) { error in
            guard case RoamError.InvalidInput(let reason) = error else {
                return XCTFail("expected RoamError.InvalidInput, got \(error)")
            }
            XCTAssertTrue(reason.contains("room name"), reason)
        }
        XCTAssertThrowsError(try validateRoomName(name: ""))
    }

    func testPingServerAwaitsAndReachesALocalListener() async throws {
        let listener = try LoopbackListener()
        let millis = try await pingServer(url: "ws://127.0.0.1:\(listener.port)/ws")
        XCTAssertLessThan(millis, 5_000)
    }

    func testPingServerReportsRefusalAsNetworkError() async throws {
        let port = try LoopbackListener().port  // closed again: nothing listens there
        do {
            _ = try await pingServer(url: "ws://127.0.0.1:\(port)/ws")
            XCTFail("expected RoamError.Network")
        } catch RoamError.Network(let reason) {
            XCTAssertTrue(reason.contains("cannot connect"), reason)
        } catch {
            XCTFail("expected RoamError.Network, got \(error)")
        }
        do {
            _ = try await pingServer(url: "ftp://example.invalid")
            XCTFail("expected RoamError.InvalidInput")
        } catch RoamError.InvalidInput {
        } catch {
            XCTFail("expected RoamError.InvalidInput, got \(error)")
        }
    }

    func testLogListenerReceivesRustLogs() throws {
        let collect = Collect()
        try setLogListener(listener: collect, filter: "roam_ffi=debug")
        defer { try? setLogListener(listener: nil, filter: "") }
        XCTAssertThrowsError(try validateRoomName(name: "bad name"))
        let line = collect.lines.first { $0.2.hasPrefix("room name refused") }
        XCTAssertNotNil(line, "no log line received: \(collect.lines)")
        XCTAssertEqual(line?.0, .debug)
        XCTAssertEqual(line?.1, "roam_ffi")
        XCTAssertThrowsError(try setLogListener(listener: collect, filter: "=["))
    }
}
