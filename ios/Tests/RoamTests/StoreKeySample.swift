// The encrypted-store sample of README.md and docs/usage-swift.md. On Linux it compiles against
// stand-ins for the Keychain API (KeychainStandIns.swift); StoreKeyTests runs the part that needs
// no Keychain (`openEncrypted` with a key).

import Foundation
import Roam
#if canImport(Security)
import Security
#endif

// sample:begin
/// The store key: 32 random bytes made on first run and kept in the Keychain, on this device
/// only and readable after the first unlock (so a background sync can open the store).
func storeKey() throws -> Data {
    let item: [String: Any] = [
        kSecClass as String: kSecClassGenericPassword,
        kSecAttrService as String: "dev.roam.store",
        kSecAttrAccount as String: "store-key",
    ]
    var query = item
    query[kSecReturnData as String] = true
    query[kSecMatchLimit as String] = kSecMatchLimitOne
    var found: CFTypeRef?
    let status = SecItemCopyMatching(query as CFDictionary, &found)
    if status == errSecSuccess, let key = found as? Data { return key }
    guard status == errSecItemNotFound else { throw KeychainError(status: status) }
    var key = Data(count: 32)
    let made = key.withUnsafeMutableBytes { SecRandomCopyBytes(kSecRandomDefault, 32, $0.baseAddress!) }
    guard made == errSecSuccess else { throw KeychainError(status: made) }
    var add = item
    add[kSecValueData as String] = key
    add[kSecAttrAccessible as String] = kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
    let added = SecItemAdd(add as CFDictionary, nil)
    guard added == errSecSuccess else { throw KeychainError(status: added) }
    return key
}

struct KeychainError: Error {
    let status: OSStatus
}

/// A client whose store is encrypted with `key` (a plain store there is encrypted once).
func openEncrypted(serverUrl: String, token: String, dbPath: String, key: Data) throws -> RoamClient {
    let options = ClientOptions(dbPath: dbPath, serverUrl: serverUrl, userId: "alice", storeKey: key)
    return try RoamClient(options: options, tokens: StaticTokenProvider(token))
}

// In the app: try openEncrypted(serverUrl: url, token: token, dbPath: dbPath, key: storeKey())
// sample:end
