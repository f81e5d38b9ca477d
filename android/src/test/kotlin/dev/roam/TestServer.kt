package dev.roam

import java.io.File
import java.net.HttpURLConnection
import java.net.ServerSocket
import java.net.URI
import java.nio.file.Files

/**
 * A real roam-server process for the tests (the binary from ROAM_SERVER_BIN, which
 * scripts/test-kotlin.sh builds), on a free loopback port with its own data directory, so a test
 * can stop it and start it again on the same port and data.
 */
class TestServer {
    private val bin = System.getenv("ROAM_SERVER_BIN")
        ?: error("ROAM_SERVER_BIN must point at target/debug/roam-server")
    val dir: File = Files.createTempDirectory("roam-kt").toFile()
    val port: Int = ServerSocket(0).use { it.localPort }
    val url = "http://127.0.0.1:$port"
    private val secret = "kotlin-tests-secret-kotlin-tests-secret-0"
    private var process: Process? = null
    private val log = File(dir, "server.log")

    private fun env(pb: ProcessBuilder): ProcessBuilder {
        val e = pb.environment()
        e["ROAM_LISTEN"] = "127.0.0.1:$port"
        e["ROAM_DATA_DIR"] = dir.absolutePath
        e["ROAM_JWT_SECRET"] = secret
        e["ROAM_TYPING_TIMEOUT_MS"] = "2000"
        e["ROAM_SHUTDOWN_GRACE_SECS"] = "1"
        return pb
    }

    /** Starts the server and waits (up to 20 s) until /readyz answers 200. */
    fun start() {
        check(process == null) { "already running" }
        process = env(ProcessBuilder(bin))
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(log))
            .start()
        val deadline = System.currentTimeMillis() + 20_000
        while (status("/readyz") != 200) {
            check(process!!.isAlive) { "server exited: ${log.readText()}" }
            check(System.currentTimeMillis() < deadline) { "server not ready: ${log.readText()}" }
            Thread.sleep(50)
        }
    }

    /** Stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it to exit. */
    fun stop() {
        process?.let {
            it.destroy()
            if (!it.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)) {
                it.destroyForcibly()
                it.waitFor()
            }
        }
        process = null
    }

    /** Stops the server and deletes its data. */
    fun close() {
        stop()
        dir.deleteRecursively()
    }

    /** A token for [user], minted by `roam-server token`. */
    fun token(user: String): String {
        val p = env(ProcessBuilder(bin, "token", "--user", user))
            .redirectError(ProcessBuilder.Redirect.DISCARD)
            .start()
        val out = p.inputStream.bufferedReader().readText().trim()
        check(p.waitFor() == 0 && out.isNotEmpty()) { "token command failed" }
        return out
    }

    /** A client for [user] with its own database, quick to reconnect. */
    fun client(
        user: String,
        token: String = token(user),
        dbPath: String? = null,
        maxStoreBytes: ULong = 0uL,
        tokens: TokenProvider = StaticTokenProvider(token),
    ): RoamClient {
        val options = ClientOptions(
            dbPath = dbPath ?: File(dir, "$user-${System.nanoTime()}.db").absolutePath,
            serverUrl = url,
            userId = user,
            reconnectInitialMs = 50uL,
            reconnectMaxMs = 250uL,
            maxStoreBytes = maxStoreBytes,
        )
        return RoamClient(options, tokens)
    }

    /** The bodies of a room's messages as the server stores them, oldest first (REST). */
    fun storedBodies(room: String, token: String): List<String> {
        val conn = URI("$url/v1/rooms/$room/messages?limit=200").toURL().openConnection() as HttpURLConnection
        conn.setRequestProperty("Authorization", "Bearer $token")
        conn.setRequestProperty("Accept-Encoding", "identity")
        val body = conn.inputStream.bufferedReader().readText()
        check(conn.responseCode == 200) { "GET messages: ${conn.responseCode}" }
        // Newest first; bodies are plain test strings, so a regex over the JSON is enough.
        return Regex("\"body\":\"([^\"]*)\"").findAll(body).map { it.groupValues[1] }.toList().reversed()
    }

    private fun status(path: String): Int = try {
        val conn = URI("$url$path").toURL().openConnection() as HttpURLConnection
        conn.connectTimeout = 200
        conn.readTimeout = 1000
        conn.responseCode.also { conn.disconnect() }
    } catch (e: java.io.IOException) {
        -1
    }
}

/** Polls until [cond] holds, failing after 10 s. */
fun waitUntil(what: String, cond: () -> Boolean) {
    val deadline = System.currentTimeMillis() + 10_000
    while (!cond()) {
        if (System.currentTimeMillis() > deadline) throw AssertionError("timed out waiting until $what")
        Thread.sleep(20)
    }
}
