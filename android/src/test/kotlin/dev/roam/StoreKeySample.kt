package dev.roam

import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import java.io.File
import java.security.KeyStore
import java.security.SecureRandom
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

// The encrypted-store sample of README.md and docs/usage-kotlin.md. It compiles against
// stand-ins for the Android Keystore types (android/security/keystore/StandIns.kt);
// StoreKeyTest runs the part that needs no Keystore (`openEncrypted` with a key).
// sample:begin
/** The store key: 32 random bytes made on first run, kept in [file] encrypted (AES-GCM) by a
 *  key that never leaves the Android Keystore. */
fun storeKey(file: File): ByteArray {
    val keyStore = KeyStore.getInstance("AndroidKeyStore").apply { load(null) }
    val wrapping = keyStore.getKey("roam-store", null) as SecretKey?
        ?: KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, "AndroidKeyStore").run {
            val purposes = KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT
            init(
                KeyGenParameterSpec.Builder("roam-store", purposes)
                    .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                    .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                    .setKeySize(256)
                    .build(),
            )
            generateKey()
        }
    val cipher = Cipher.getInstance("AES/GCM/NoPadding")
    if (file.exists()) { // 12-byte IV, then the encrypted key
        val saved = file.readBytes()
        cipher.init(Cipher.DECRYPT_MODE, wrapping, GCMParameterSpec(128, saved, 0, 12))
        return cipher.doFinal(saved, 12, saved.size - 12)
    }
    val key = ByteArray(32).also { SecureRandom().nextBytes(it) }
    cipher.init(Cipher.ENCRYPT_MODE, wrapping) // the Keystore picks the IV
    val sealed = cipher.iv + cipher.doFinal(key)
    val tmp = File(file.path + ".tmp")
    tmp.writeBytes(sealed)
    check(tmp.renameTo(file)) { "cannot save the store key" }
    return key
}

/** A client whose store is encrypted with [key] (a plain store there is encrypted once). */
fun openEncrypted(serverUrl: String, token: String, dbPath: String, key: ByteArray): RoamClient {
    val options = ClientOptions(dbPath = dbPath, serverUrl = serverUrl, userId = "alice", storeKey = key)
    return RoamClient(options, StaticTokenProvider(token))
}

// In the app: openEncrypted(url, token, dbPath, storeKey(File(context.noBackupFilesDir, "roam-store.key")))
// sample:end
