// STAND-INS, NOT THE REAL APIs. The JVM toolchain here has no Android SDK, so the shared-note
// sample (dev.roam.CollabSample) is compiled against these minimal declarations of just the
// platform types it uses, under their real package names and with their real signatures, so
// that the sample's lines are the ones an app compiles. Nothing here ships.
@file:Suppress("unused")

package android.text

/** Stand-in for `android.text.TextWatcher`. */
interface TextWatcher {
    fun beforeTextChanged(s: CharSequence, start: Int, count: Int, after: Int)
    fun onTextChanged(s: CharSequence, start: Int, before: Int, count: Int)
    fun afterTextChanged(s: Editable)
}

/** Stand-in for `android.text.Editable`: text edited in place, telling its watchers. */
interface Editable : CharSequence {
    fun replace(st: Int, en: Int, text: CharSequence): Editable
    fun insert(where: Int, text: CharSequence): Editable
    fun delete(st: Int, en: Int): Editable
}
