package dev.roam

import java.io.File
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Files

/**
 * A real roam-server process for the tests (binary from ROAM_SERVER_BIN), on a fixed loopback
 * port and data directory so it can be stopped and started again.
 */
class TestServer {
    private val bin = System.getenv("ROAM_SERVER_BIN")
        ?: error("ROAM_SERVER_BIN must point at target/debug/roam-server")
    val dir: File = Files.createTempDirectory("roam-kt").toFile()
    val port: Int = ServerSocket(0).use { it.localPort }
    val url = "http://127.0.0.1:$port"
    private val secret = "kotlin-tests-secret-kotlin-tests-secret-0"
    private var process: Process? = null

    private fun env(pb: ProcessBuilder): ProcessBuilder {
        val e = pb.environment()
        e["ROAM_LISTEN"] = "127.0.0.1:$port"
        e["ROAM_DATA_DIR"] = dir.absolutePath
        e["ROAM_JWT_SECRET"] = secret
        e["ROAM_TYPING_TIMEOUT_MS"] = "2000"
        return pb
    }

    fun start() {
        check(process == null) { "already running" }
        process = env(ProcessBuilder(bin))
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(File(dir, "server.log")))
            .start()
        val deadline = System.currentTimeMillis() + 20_000
        while (true) {
            try {
                Socket().use { it.connect(InetSocketAddress("127.0.0.1", port), 200) }
                return
            } catch (e: java.io.IOException) {
                check(System.currentTimeMillis() < deadline) { "server did not start: ${File(dir, "server.log").readText()}" }
                Thread.sleep(50)
            }
        }
    }

    fun stop() {
        process?.let {
            it.destroy()
            it.waitFor()
        }
        process = null
    }

    fun token(user: String): String {
        val p = env(ProcessBuilder(bin, "token", "--user", user)).redirectError(ProcessBuilder.Redirect.DISCARD).start()
        val out = p.inputStream.bufferedReader().readText().trim()
        check(p.waitFor() == 0) { "token command failed" }
        return out
    }

    fun client(user: String, token: String = token(user)): RoamClient {
        val options = ClientOptions(
            dbPath = File(dir, "$user-${System.nanoTime()}.db").absolutePath,
            serverUrl = url,
            userId = user,
            reconnectInitialMs = 50uL,
            reconnectMaxMs = 250uL,
            heartbeatMs = 0uL,
        )
        return RoamClient(options, FixedToken(token))
    }
}

class FixedToken(private val token: String) : TokenProvider {
    override fun token(refresh: Boolean): String = token
}

/** Polls until [cond] holds, failing after 15 s. */
fun waitUntil(what: String, cond: () -> Boolean) {
    val deadline = System.currentTimeMillis() + 15_000
    while (!cond()) {
        if (System.currentTimeMillis() > deadline) throw AssertionError("timed out waiting until $what")
        Thread.sleep(20)
    }
}
