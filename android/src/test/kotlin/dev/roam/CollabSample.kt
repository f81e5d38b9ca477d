// The shared-note sample of docs/usage-kotlin.md and README.md (the lines between the markers
// are the ones shown there; scripts/check-samples.sh keeps them equal). Android's types come
// from the stand-ins in src/test/kotlin/standin.
package dev.roam

import android.text.Editable
import android.text.TextWatcher
import android.widget.EditText
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.launch

// sample:begin
/**
 * A shared note bound to an EditText: what the user types goes into the document at once
 * (offline too), and everyone else's edits come back as deltas applied to the Editable, which
 * keeps the user's cursor where it belongs. Make it on the main thread with a main-thread scope
 * (`lifecycleScope`).
 */
class SharedNote(client: RoamClient, room: String, private val editText: EditText, scope: CoroutineScope) :
    TextWatcher {
    private val note = client.openCollab(room, "note")
    private var applying = false
    private val listening: Job

    init {
        editText.setText(note.text("body"))
        editText.addTextChangedListener(this)
        listening = scope.launch {
            note.events().collect { event ->
                if (event is CollabEvent.Change && !event.change.local) {
                    event.change.textDeltas("body").forEach(::apply)
                }
            }
        }
    }

    override fun beforeTextChanged(s: CharSequence, start: Int, count: Int, after: Int) {}

    // Typing, pasting, deleting: the same range goes into the note (UTF-16 units, as Editable).
    override fun onTextChanged(s: CharSequence, start: Int, before: Int, count: Int) {
        if (applying) return
        if (before > 0) note.deleteText("body", start.toUInt(), before.toUInt())
        if (count > 0) note.insertText("body", start.toUInt(), s.subSequence(start, start + count).toString(), null)
    }

    // My cursor, for the others' views (call it from your selection listener).
    override fun afterTextChanged(s: Editable) {
        if (!applying) note.setSelection("body", editText.selectionStart.toUInt(), editText.selectionEnd.toUInt())
    }

    // Undo my own last edits (never someone else's).
    fun undo() {
        if (note.undo()) withoutEcho { editText.setText(note.text("body")) }
    }

    fun close() {
        listening.cancel()
        editText.removeTextChangedListener(this)
        note.closeDocument()
    }

    private fun apply(delta: List<TextDelta>) = withoutEcho {
        var at = 0
        for (piece in delta) {
            when (piece) {
                is TextDelta.Retain -> at += piece.len.toInt()
                is TextDelta.Delete -> editText.text.delete(at, at + piece.len.toInt())
                is TextDelta.Insert -> {
                    editText.text.insert(at, piece.text)
                    at += piece.text.length
                }
            }
        }
    }

    private fun withoutEcho(edit: () -> Unit) {
        applying = true
        try {
            edit()
        } finally {
            applying = false
        }
    }
}
// sample:end
