// STAND-INS, NOT THE REAL APIs (see AndroidStandIns.kt): `android.app.Notification` and
// `android.app.NotificationManager`, recording the notifications posted and cancelled.
@file:Suppress("unused", "UNUSED_PARAMETER")

package android.app

import android.content.Context

/** Stand-in for `android.app.Notification`, built by `Notification.Builder`. */
class Notification private constructor(
    val title: CharSequence?,
    val text: CharSequence?,
    val group: String?,
    val number: Int,
) {
    /** Stand-in for `android.app.Notification.Builder`. */
    class Builder(context: Context, channelId: String) {
        private var title: CharSequence? = null
        private var text: CharSequence? = null
        private var group: String? = null
        private var number = 0
        fun setContentTitle(title: CharSequence?) = apply { this.title = title }
        fun setContentText(text: CharSequence?) = apply { this.text = text }
        fun setGroup(group: String?) = apply { this.group = group }
        fun setNumber(number: Int) = apply { this.number = number }
        fun setSmallIcon(icon: Int) = apply {}
        fun build() = Notification(title, text, group, number)
    }
}

/** Stand-in for `android.app.NotificationManager`: keeps what is shown, by tag and id. */
class NotificationManager {
    val shown = mutableMapOf<Pair<String?, Int>, Notification>()
    fun notify(tag: String?, id: Int, notification: Notification) {
        shown[tag to id] = notification
    }
    fun cancel(tag: String?, id: Int) {
        shown.remove(tag to id)
    }
}
