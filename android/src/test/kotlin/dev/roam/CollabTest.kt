package dev.roam

import android.widget.EditText
import java.util.concurrent.Executors
import kotlin.test.assertEquals
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.cancel
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import org.junit.Test

/**
 * Collaborative documents through the Kotlin layer, against a real server: the README's shared
 * note bound to a (stand-in) EditText, offline edits merging, deltas that rebuild the text.
 */
class CollabTest : ServerTest() {
    @Test
    fun theSharedNoteSampleFollowsBothWriters() = runBlocking {
        val (alice, bob) = pair()
        // The app's main thread.
        val main = Executors.newSingleThreadExecutor().asCoroutineDispatcher()
        val scope = CoroutineScope(SupervisorJob() + main)
        val view = EditText()
        val note = withContext(main) { SharedNote(alice, "team", view, scope) }
        withContext(main) { view.type("Hello", 0) }
        assertEquals(5, view.selectionStart)

        val bobNote = bob.openCollab("team", "note")
        waitUntil("bob sees alice's text") { bobNote.text("body") == "Hello" }
        // Bob writes before Alice's cursor: her view follows, and her cursor stays after "Hello".
        bobNote.insertText("body", 0u, "Bob: ", null)
        waitUntil("alice's view shows bob's edit") { view.text.toString() == "Bob: Hello" }
        assertEquals(10, view.selectionStart, "the cursor moved with the text")
        assertEquals("Bob: Hello", alice.openCollab("team", "note").text("body"), "no echo of bob's edit")

        // Undo takes back Alice's own typing only.
        withContext(main) { note.undo() }
        assertEquals("Bob: ", view.text.toString())
        waitUntil("bob sees the undo") { bobNote.text("body") == "Bob: " }
        withContext(main) { note.close() }
        scope.cancel()
        main.close()
    }

    @Test
    fun offlineEditsMergeAndDeltasRebuildTheText() = runBlocking {
        val (alice, bob) = pair()
        val a = alice.openCollab("team", "draft")
        val b = bob.openCollab("team", "draft")
        a.insertText("t", 0u, "shared ", null)
        waitUntil("bob has the start") { b.text("t") == "shared " }

        // Bob's mirror of the text, kept only from the deltas he receives. A flow subscribes
        // when collected, so a marker edit tells when the collector listens.
        var mirror: String? = null
        val lock = Any()
        val reader = launch(kotlinx.coroutines.Dispatchers.Default) {
            b.events().collect { event ->
                if (event is CollabEvent.Change) {
                    synchronized(lock) {
                        if (mirror == null && event.change.changes.any { it is CollabValueChange.MapChange }) {
                            mirror = b.text("t")
                        }
                        event.change.textDeltas("t").forEach { d -> mirror = mirror?.applying(d) }
                    }
                }
            }
        }
        var marks = 0
        waitUntil("bob's collector listens") {
            b.mapSet("marks", "n", (++marks).toString())
            Thread.sleep(50)
            synchronized(lock) { mirror != null }
        }

        bob.setOnline(false)
        b.insertText("t", 7u, "bob\uD83D\uDE42", null) // a surrogate pair
        a.insertText("t", 0u, "alice ", null)
        a.deleteText("t", 6u, 1u) // the "s" of "shared"
        bob.setOnline(true)

        waitUntil("both converge") {
            val ta = a.text("t")
            ta == b.text("t") && ta.contains("bob") && ta.startsWith("alice ")
        }
        assertEquals("alice hared bob\uD83D\uDE42", a.text("t"))
        waitUntil("the deltas rebuild bob's text") { synchronized(lock) { mirror } == b.text("t") }
        reader.cancel()
    }
}
