package dev.roam

import java.io.File
import java.security.SecureRandom
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlinx.coroutines.runBlocking
import org.junit.Test

/** An encrypted store through the Kotlin API: the sample's `openEncrypted`, a restart, a wrong
 *  key, and a key change. */
class StoreKeyTest : ServerTest() {
    private fun contains(file: File, text: String): Boolean {
        if (!file.exists()) return false
        return String(file.readBytes(), Charsets.ISO_8859_1).contains(text)
    }

    @Test
    fun anEncryptedStoreOpensOnlyWithItsKey() = runBlocking {
        val key = ByteArray(32).also { SecureRandom().nextBytes(it) }
        val db = File(server.dir, "alice-encrypted.db").path
        val token = server.token("alice")
        val alice = openEncrypted(server.url, token, db, key)
        alice.createRoom("secret", RoomKind.PRIVATE, "Secret")
        alice.sendMessage("secret", "kotlin-unique-4f2a9c")
        alice.shutdown()
        for (suffix in listOf("", "-wal")) {
            assertFalse(contains(File(db + suffix), "kotlin-unique-4f2a9c"), "plain text in $db$suffix")
        }

        val again = openEncrypted(server.url, token, db, key)
        assertEquals(listOf("kotlin-unique-4f2a9c"), again.messages("secret", null, 10u).map { it.body })
        val newKey = ByteArray(32).also { SecureRandom().nextBytes(it) }
        again.changeStoreKey(newKey)
        again.shutdown()

        assertFailsWith<RoamException.InvalidKey> { openEncrypted(server.url, token, db, key) }
        assertFailsWith<RoamException.InvalidKey> {
            RoamClient(ClientOptions(dbPath = db, serverUrl = server.url, userId = "alice"), StaticTokenProvider(token))
        }
        assertFailsWith<RoamException.InvalidInput> { openEncrypted(server.url, token, db, ByteArray(16)) }
        val reopened = openEncrypted(server.url, token, db, newKey)
        assertEquals(listOf("kotlin-unique-4f2a9c"), reopened.messages("secret", null, 10u).map { it.body })
        reopened.shutdown()
    }
}
