// STAND-IN DECLARATIONS, not Apple's code. The Linux Swift toolchain of scripts/test-swift.sh has
// no Security framework, so the Keychain and random-bytes API that StoreKeySample.swift uses is
// declared here with the same names and shapes, just enough to compile the sample. They do
// nothing but report the Keychain unavailable, and the tests never call them. On Apple
// platforms `canImport(Security)` holds, this file is empty and the real framework is used.

#if !canImport(Security)
import Foundation

typealias OSStatus = Int32
typealias CFTypeRef = AnyObject
typealias CFDictionary = [String: Any]
typealias SecRandomRef = OpaquePointer

let errSecSuccess: OSStatus = 0
let errSecItemNotFound: OSStatus = -25300
let errSecNotAvailable: OSStatus = -25291

let kSecClass = "class"
let kSecClassGenericPassword = "genp"
let kSecAttrService = "svce"
let kSecAttrAccount = "acct"
let kSecAttrAccessible = "pdmn"
let kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly = "cku"
let kSecReturnData = "r_Data"
let kSecMatchLimit = "m_Limit"
let kSecMatchLimitOne = "m_LimitOne"
let kSecValueData = "v_Data"
var kSecRandomDefault: SecRandomRef? { nil }

func SecItemCopyMatching(_ query: CFDictionary, _ result: UnsafeMutablePointer<CFTypeRef?>?) -> OSStatus {
    errSecNotAvailable
}

func SecItemAdd(_ attributes: CFDictionary, _ result: UnsafeMutablePointer<CFTypeRef?>?) -> OSStatus {
    errSecNotAvailable
}

func SecRandomCopyBytes(_ rnd: SecRandomRef?, _ count: Int, _ bytes: UnsafeMutableRawPointer) -> Int32 {
    errSecNotAvailable
}
#endif
