// STAND-IN DECLARATIONS, not Android's code. The JVM toolchain of scripts/test-kotlin.sh has no
// android.jar, so the Android Keystore types that StoreKeySample.kt uses are declared here with
// the same names and signatures, just enough to compile the sample. They do nothing: the tests
// never call the Keystore part of the sample (the JVM has no "AndroidKeyStore" provider either).
// In an app, the real android.security.keystore classes take their place.
package android.security.keystore

import java.security.spec.AlgorithmParameterSpec

/** Stand-in for android.security.keystore.KeyGenParameterSpec. */
class KeyGenParameterSpec private constructor() : AlgorithmParameterSpec {
    /** Stand-in for KeyGenParameterSpec.Builder. */
    class Builder(val keystoreAlias: String, val purposes: Int) {
        private val settings = mutableListOf<String>()

        fun setBlockModes(vararg blockModes: String): Builder = apply { settings += blockModes }

        fun setEncryptionPaddings(vararg paddings: String): Builder = apply { settings += paddings }

        fun setKeySize(keySize: Int): Builder = apply { settings += keySize.toString() }

        fun build(): KeyGenParameterSpec =
            throw UnsupportedOperationException("stand-in for Android's KeyGenParameterSpec ($keystoreAlias, $purposes, $settings)")
    }
}

/** Stand-in for android.security.keystore.KeyProperties (the constants have Android's values). */
object KeyProperties {
    const val KEY_ALGORITHM_AES = "AES"
    const val PURPOSE_ENCRYPT = 1
    const val PURPOSE_DECRYPT = 2
    const val BLOCK_MODE_GCM = "GCM"
    const val ENCRYPTION_PADDING_NONE = "NoPadding"
}
