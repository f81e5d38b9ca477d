import Foundation
import XCTest

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

    func testPingServerReportsRefusalAsNetworkError() async {
        // Port 1 (tcpmux) is not served on loopback: the connection is refused at once.
        do {
            _ = try await pingServer(url: "ws://127.0.0.1:1/ws")
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
