package dev.roam

import java.net.ServerSocket
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.Test

/**
 * End-to-end check of the generated Kotlin bindings against the real libroam_ffi: plain calls,
 * typed exceptions, a suspend function on the tokio runtime, and a listener called from Rust.
 */
class SmokeTest {
    private class Collect : LogListener {
        val lines = CopyOnWriteArrayList<Triple<LogLevel, String, String>>()

        override fun onLog(level: LogLevel, target: String, message: String) {
            lines.add(Triple(level, target, message))
        }
    }

    @Test
    fun protocolVersionIsOne() {
        assertEquals(1u, protocolVersion())
    }

    @Test
    fun validRoomNamePasses() {
        validateRoomName("general")
        validateRoomName("team-42.dev_ops")
    }

    @Test
    fun invalidRoomNameThrowsInvalidInput() {
        val err = assertFailsWith<RoamException.InvalidInput> { validateRoomName("no spaces allowed") }
        assertTrue(err.reason.contains("room name"), err.reason)
        assertFailsWith<RoamException.InvalidInput> { validateRoomName("") }
    }

    @Test
    fun pingServerSuspendsAndReachesALocalListener() = runBlocking {
        ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress()).use { server ->
            val millis = pingServer("ws://127.0.0.1:${server.localPort}/ws")
            assertTrue(millis < 5_000u, "took $millis ms")
        }
    }

    @Test
    fun pingServerReportsRefusalAsNetworkException() = runBlocking {
        val port = ServerSocket(0).use { it.localPort } // closed again: nothing listens there
        val err = assertFailsWith<RoamException.Network> { pingServer("ws://127.0.0.1:$port/ws") }
        assertTrue(err.reason.contains("cannot connect"), err.reason)
        assertFailsWith<RoamException.InvalidInput> { pingServer("ftp://example.invalid") }
        Unit
    }

    @Test
    fun logListenerReceivesRustLogs() {
        val collect = Collect()
        setLogListener(collect, "roam_ffi=debug")
        try {
            assertFailsWith<RoamException.InvalidInput> { validateRoomName("bad name") }
        } finally {
            setLogListener(null, "")
        }
        val line = collect.lines.firstOrNull { it.third.startsWith("room name refused") }
        assertTrue(line != null, "no log line received: ${collect.lines}")
        assertEquals(LogLevel.DEBUG, line.first)
        assertEquals("roam_ffi", line.second)
        assertTrue(line.third.contains("reason="), line.third)
        assertFailsWith<RoamException.InvalidInput> { setLogListener(collect, "=[") }
    }
}
