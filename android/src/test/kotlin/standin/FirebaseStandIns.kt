// STAND-INS, NOT THE REAL APIs (see AndroidStandIns.kt): Firebase Cloud Messaging's
// `FirebaseMessagingService` and `RemoteMessage`.
@file:Suppress("unused", "UNUSED_PARAMETER")

package com.google.firebase.messaging

import android.content.Context

/** Stand-in for `com.google.firebase.messaging.RemoteMessage`: the data map of a message. */
class RemoteMessage(val data: Map<String, String>)

/** Stand-in for `com.google.firebase.messaging.FirebaseMessagingService` (a `Context`). */
abstract class FirebaseMessagingService : Context() {
    open fun onMessageReceived(message: RemoteMessage) {}
    open fun onNewToken(token: String) {}
}
