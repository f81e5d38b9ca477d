package dev.roam

import java.io.File
import java.nio.file.Files
import kotlin.random.Random
import kotlinx.coroutines.runBlocking
import org.junit.Assume.assumeTrue
import org.junit.Test

/**
 * The Kotlin peer of the three-language convergence check (scripts/test-converge.sh runs it next
 * to the Rust `converge_peer` and the Swift `CollabConvergeTests` against one server, which it
 * restarts while they edit). Skipped unless ROAM_CONVERGE_URL is set, so the normal suite skips
 * it. The steps and the environment are those of tests/examples/converge_peer.rs.
 */
class CollabConvergeTest {
    private val doc = "converge"
    private val text = "body"
    private val peers = "peers"
    private val langs = listOf("rust", "kotlin", "swift")
    private val waitMs = 120_000L
    private val quietMs = 1_000L

    private fun env(name: String): String = System.getenv(name) ?: error("$name is not set")

    private fun waitFor(what: String, cond: () -> Boolean) {
        val deadline = System.currentTimeMillis() + waitMs
        while (!cond()) {
            if (System.currentTimeMillis() > deadline) throw AssertionError("timed out waiting until $what")
            Thread.sleep(20)
        }
    }

    private fun allKeys(d: RoamCollabDoc, prefix: String): Boolean {
        val m = d.map(peers)
        return langs.all { m.containsKey("${prefix}_$it") }
    }

    /** One random insert or delete; an edit refused because a remote one moved the end counts as not made. */
    private fun randomEdit(rng: Random, d: RoamCollabDoc): Boolean = try {
        val len = d.textLen(text).toInt()
        if (len > 10 && rng.nextDouble() < 0.35) {
            val at = rng.nextInt(len)
            val n = minOf(rng.nextInt(1, 4), len - at)
            d.deleteText(text, at.toUInt(), n.toUInt())
        } else {
            val letters = "kotlé "
            val s = (1..rng.nextInt(1, 4)).map { letters[rng.nextInt(letters.length)] }.joinToString("")
            d.insertText(text, rng.nextInt(len + 1).toUInt(), s, null)
        }
        true
    } catch (e: RoamException) {
        false
    }

    @Test
    fun convergesWithRustAndSwift() = runBlocking {
        val url = System.getenv("ROAM_CONVERGE_URL")
        assumeTrue("ROAM_CONVERGE_URL is not set (scripts/test-converge.sh sets it)", url != null)
        val room = env("ROAM_CONVERGE_ROOM")
        val out = File(env("ROAM_CONVERGE_OUT"))
        val user = env("ROAM_CONVERGE_USER_KOTLIN")
        val edits = (System.getenv("ROAM_CONVERGE_EDITS") ?: "300").toInt()
        val seed = (System.getenv("ROAM_CONVERGE_SEED") ?: "1").toLong() + 1
        val dir = Files.createTempDirectory("roam-converge-kt").toFile()
        val options = ClientOptions(
            dbPath = File(dir, "peer.db").absolutePath,
            serverUrl = url!!,
            userId = user,
            reconnectInitialMs = 50uL,
            reconnectMaxMs = 250uL,
            maxStoreBytes = 0uL,
        )
        val client = RoamClient(options, StaticTokenProvider(env("ROAM_CONVERGE_TOKEN_KOTLIN")))
        try {
            client.start()
            val d = client.openCollab(room, doc)
            d.mapSet(peers, "ready_kotlin", "true")
            File(out, "ready-kotlin").writeText("")
            waitFor("every peer is ready") { allKeys(d, "ready") }
            val rng = Random(seed)
            var made = 0
            for (i in 0 until edits) {
                when (i % 50) {
                    25 -> client.setOnline(false)
                    40 -> client.setOnline(true)
                }
                if (randomEdit(rng, d)) made++
                Thread.sleep(15)
            }
            client.setOnline(true)
            d.mapSet(peers, "done_kotlin", "true")
            d.flush()
            System.err.println("CollabConvergeTest: $made of $edits edits made")
            waitFor("every peer is done") { allKeys(d, "done") }
            waitFor("the outbox is empty") { client.metrics().outboxDepth == 0uL }
            // The text must stand still for a moment before it is written out.
            var last = d.text(text)
            var since = System.currentTimeMillis()
            val deadline = since + waitMs
            while (System.currentTimeMillis() - since < quietMs) {
                if (System.currentTimeMillis() > deadline) throw AssertionError("the text never stood still")
                Thread.sleep(50)
                val now = d.text(text)
                if (now != last) {
                    last = now
                    since = System.currentTimeMillis()
                }
            }
            File(out, "kotlin.txt").writeText(last)
            client.shutdown()
        } finally {
            client.close()
            dir.deleteRecursively()
        }
    }
}
