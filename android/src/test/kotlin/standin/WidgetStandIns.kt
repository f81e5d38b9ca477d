// STAND-INS, NOT THE REAL APIs (see TextStandIns.kt): `android.widget.EditText`, enough for the
// shared-note sample, and `type` to play the user's part in CollabTest. Nothing here ships.
@file:Suppress("unused")

package android.widget

import android.text.Editable
import android.text.TextWatcher

/** Stand-in for `android.widget.EditText`. Thread-safe, so a test can read it from any thread. */
open class EditText {
    private val watchers = mutableListOf<TextWatcher>()
    private val buffer = Buffer()

    var selectionStart = 0
        private set
    var selectionEnd = 0
        private set

    open val text: Editable get() = buffer

    fun setText(text: CharSequence) {
        buffer.replace(0, buffer.length, text)
    }

    fun addTextChangedListener(watcher: TextWatcher) {
        synchronized(buffer) { watchers.add(watcher) }
    }

    fun removeTextChangedListener(watcher: TextWatcher) {
        synchronized(buffer) { watchers.remove(watcher) }
    }

    fun setSelection(start: Int, stop: Int) {
        synchronized(buffer) {
            selectionStart = start
            selectionEnd = stop
        }
    }

    /** The user replaces [start]..[end] with [text] (typing, pasting, deleting). */
    fun type(text: String, start: Int, end: Int = start) {
        buffer.replace(start, end, text)
        setSelection(start + text.length, start + text.length)
    }

    private inner class Buffer : Editable {
        private val sb = StringBuilder()

        override val length: Int get() = synchronized(this) { sb.length }
        override fun get(index: Int): Char = synchronized(this) { sb[index] }
        override fun subSequence(startIndex: Int, endIndex: Int): CharSequence =
            synchronized(this) { sb.substring(startIndex, endIndex) }
        override fun toString(): String = synchronized(this) { sb.toString() }

        // As Android's SpannableStringBuilder: watchers hear of the change, and the selection
        // stays on the same characters.
        override fun replace(st: Int, en: Int, text: CharSequence): Editable {
            synchronized(this) {
                val now = watchers.toList()
                now.forEach { it.beforeTextChanged(this, st, en - st, text.length) }
                sb.replace(st, en, text.toString())
                fun shift(i: Int) = when {
                    i <= st -> i
                    i < en -> st + text.length
                    else -> i - (en - st) + text.length
                }
                selectionStart = shift(selectionStart)
                selectionEnd = shift(selectionEnd)
                now.forEach { it.onTextChanged(this, st, en - st, text.length) }
                now.forEach { it.afterTextChanged(this) }
            }
            return this
        }

        override fun insert(where: Int, text: CharSequence): Editable = replace(where, where, text)
        override fun delete(st: Int, en: Int): Editable = replace(st, en, "")
    }
}
