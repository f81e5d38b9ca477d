//! The cryptography under SQLCipher, in Rust: AES-256-CBC, HMAC-SHA256/512 and PBKDF2,
//! registered as SQLCipher's crypto provider ([`install`]).
//!
//! SQLCipher encrypts each page with AES-256-CBC under a random IV and authenticates it with an
//! HMAC; it asks a *provider* for those primitives. Its OpenSSL provider sets up everything
//! again for every page: under OpenSSL 3 that is a lookup of the HMAC, of the digest and of the
//! cipher by name (locks and reference counts included), a new context for each, and a trip
//! through the DRBG for the IV; that set-up cost as much as the AES and the SHA-256 themselves on
//! a small commit. This provider needs no set-up and keeps, per connection, only the AES key
//! schedules and the HMAC's padded key of the keys SQLCipher gives it ([`Keys`]); AES (RustCrypto's
//! `aes` and `cbc`) and SHA-2 (ring's HMAC and PBKDF2) use the CPU's instructions where it has
//! them (AES-NI and SHA-NI on x86, the ARMv8 cryptography extensions — see `.cargo/config.toml`
//! for AES on 64-bit ARM), and the IVs come from the thread's CSPRNG (`rand`'s ChaCha, seeded
//! and reseeded from the OS).
//!
//! **The file format is SQLCipher's, unchanged**: the same cipher, MAC, key derivation and page
//! layout, so a store written by one provider reads with the other (a test checks each
//! primitive against OpenSSL's). Only SQLCipher 4's choices are provided: AES-256-CBC, HMAC and
//! PBKDF2 over SHA-256 or SHA-512; SHA-1 (SQLCipher 1–3 stores, never written by Roam) is
//! refused, so such a store fails to open with an error instead of being misread.
//!
//! **Registration.** SQLCipher copies its registered provider into each connection it keys,
//! and drops the registration (falling back to its default) when the last keyed connection in
//! the process closes. So [`install`] keys an in-memory connection first, which activates
//! SQLCipher and is kept open for the life of the process, and then registers this provider:
//! every keyed connection opened after that uses it. The provider table below mirrors
//! SQLCipher 4.6's `sqlcipher_provider`; [`install`] checks the SQLCipher version it runs on
//! and leaves SQLCipher's own provider in place on any other.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use rand::RngCore;
use ring::{hmac as ring_hmac, pbkdf2};
use rusqlite::Connection;
use zeroize::Zeroizing;

/// SQLite's result codes, as the provider returns them.
const SQLITE_OK: c_int = 0;
const SQLITE_ERROR: c_int = 1;

/// SQLCipher's names for the HMAC and PBKDF2 digests (`SQLCIPHER_HMAC_*`,
/// `SQLCIPHER_PBKDF2_HMAC_*`: the same numbers).
const DIGEST_SHA1: c_int = 0;
const DIGEST_SHA256: c_int = 1;
const DIGEST_SHA512: c_int = 2;

/// SQLCipher's `CIPHER_ENCRYPT` (its `CIPHER_DECRYPT` is 0).
const ENCRYPT: c_int = 1;

const KEY_BYTES: usize = 32;
const BLOCK_BYTES: usize = 16;

/// The SQLCipher releases whose provider table is [`Provider`].
const LAYOUT_OF: &str = "4.6.";

/// What `PRAGMA cipher_provider` answers for a connection keyed through this provider.
pub(crate) const NAME: &CStr = c"roam";
const VERSION: &CStr = c"roam-core (aes, cbc, ring)";
const CIPHER: &CStr = c"aes-256-cbc";

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256Enc>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256Dec>;

/// SQLCipher 4.6's `sqlcipher_provider`, field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Provider {
    activate: unsafe extern "C" fn(*mut c_void) -> c_int,
    deactivate: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_provider_name: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    add_random: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int,
    random: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int,
    hmac: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *mut u8,
        c_int,
        *mut u8,
        c_int,
        *mut u8,
        c_int,
        *mut u8,
    ) -> c_int,
    kdf: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *const u8,
        c_int,
        *mut u8,
        c_int,
        c_int,
        c_int,
        *mut u8,
    ) -> c_int,
    cipher: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *mut u8,
        c_int,
        *mut u8,
        *mut u8,
        c_int,
        *mut u8,
    ) -> c_int,
    get_cipher: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    get_key_sz: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_iv_sz: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_block_sz: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_hmac_sz: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    ctx_init: unsafe extern "C" fn(*mut *mut c_void) -> c_int,
    ctx_free: unsafe extern "C" fn(*mut *mut c_void) -> c_int,
    fips_status: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_provider_version: unsafe extern "C" fn(*mut c_void) -> *const c_char,
}

unsafe extern "C" {
    /// Makes `p` the provider of connections keyed from now on; SQLCipher frees it with
    /// `sqlcipher_free` when it is replaced, so it must come from `sqlcipher_malloc`.
    fn sqlcipher_register_provider(p: *mut Provider) -> c_int;
    fn sqlcipher_malloc(size: u64) -> *mut c_void;
}

/// This provider's table.
pub(crate) const PROVIDER: Provider = Provider {
    activate: nothing,
    deactivate: nothing,
    get_provider_name: provider_name,
    add_random,
    random,
    hmac,
    kdf,
    cipher,
    get_cipher,
    get_key_sz,
    get_iv_sz,
    get_block_sz,
    get_hmac_sz,
    ctx_init,
    ctx_free,
    fips_status: nothing,
    get_provider_version: provider_version,
};

/// The keyed in-memory connection that keeps SQLCipher activated (see the module docs).
static ANCHOR: OnceLock<Option<Mutex<Connection>>> = OnceLock::new();

/// Registers this provider with SQLCipher, once per process; every connection keyed after it
/// returns uses it. Returns whether it is in place (`false`: SQLCipher's own provider is,
/// which writes and reads the same format, only slower; the reason is logged).
pub(crate) fn install() -> bool {
    ANCHOR
        .get_or_init(|| match register() {
            Ok(anchor) => Some(Mutex::new(anchor)),
            Err(reason) => {
                tracing::warn!(%reason, "the store's own crypto provider is not in use");
                None
            }
        })
        .is_some()
}

fn register() -> Result<Connection, String> {
    let anchor = Connection::open_in_memory().map_err(|e| e.to_string())?;
    let version: String = anchor
        .query_row("PRAGMA cipher_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !version.starts_with(LAYOUT_OF) {
        return Err(format!(
            "SQLCipher {version} is not the release this provider was written for ({LAYOUT_OF}x)"
        ));
    }
    anchor
        .pragma_update(None, "cipher_log_level", "NONE")
        .and_then(|()| anchor.pragma_update(None, "key", format!("x'{}'", "00".repeat(KEY_BYTES))))
        .map_err(|e| e.to_string())?;
    // SAFETY: `sqlcipher_malloc` returns memory for a `Provider` (or null), which is filled
    // before SQLCipher sees it and owned by SQLCipher from then on. SQLCipher was activated by
    // keying `anchor` above, so the registration runs under its provider mutex.
    unsafe {
        let p = sqlcipher_malloc(size_of::<Provider>() as u64).cast::<Provider>();
        if p.is_null() {
            return Err("out of memory".into());
        }
        p.write(PROVIDER);
        if sqlcipher_register_provider(p) != SQLITE_OK {
            return Err("SQLCipher refused the provider".into());
        }
    }
    Ok(anchor)
}

/// Runs `f`, turning a panic (there should be none) into `SQLITE_ERROR`: nothing unwinds into C.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(SQLITE_ERROR)
}

/// A byte slice from SQLCipher's pointer and length (`None` for a null pointer or a negative
/// length).
///
/// # Safety
/// `p` must point to `len` readable bytes that stay valid and unchanged for `'a`.
unsafe fn bytes<'a>(p: *const u8, len: c_int) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if p.is_null() {
        return (len == 0).then_some(&[]);
    }
    // SAFETY: the caller's promise.
    Some(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A mutable byte slice from SQLCipher's pointer and length (`None` for a null pointer or a
/// negative length).
///
/// # Safety
/// `p` must point to `len` writable bytes, used by nothing else for `'a`.
unsafe fn bytes_mut<'a>(p: *mut u8, len: c_int) -> Option<&'a mut [u8]> {
    let len = usize::try_from(len).ok()?;
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

unsafe extern "C" fn nothing(_ctx: *mut c_void) -> c_int {
    SQLITE_OK
}

unsafe extern "C" fn provider_name(_ctx: *mut c_void) -> *const c_char {
    NAME.as_ptr()
}

unsafe extern "C" fn provider_version(_ctx: *mut c_void) -> *const c_char {
    VERSION.as_ptr()
}

/// `PRAGMA cipher_add_random`: the thread CSPRNG reseeds itself from the OS, so extra entropy
/// from the app is accepted and not needed.
unsafe extern "C" fn add_random(_ctx: *mut c_void, _buffer: *mut c_void, _length: c_int) -> c_int {
    SQLITE_OK
}

unsafe extern "C" fn random(_ctx: *mut c_void, buffer: *mut c_void, length: c_int) -> c_int {
    guard(|| {
        // SAFETY: SQLCipher passes a buffer of `length` bytes to fill.
        let Some(out) = (unsafe { bytes_mut(buffer.cast(), length) }) else {
            return SQLITE_ERROR;
        };
        rand::rng().fill_bytes(out);
        SQLITE_OK
    })
}

/// The HMAC of `in` followed by `in2` (when not null) under `key`, written to `out` (which
/// has room for [`get_hmac_sz`] bytes).
unsafe extern "C" fn hmac(
    ctx: *mut c_void,
    algorithm: c_int,
    key: *mut u8,
    key_sz: c_int,
    input: *mut u8,
    in_sz: c_int,
    in2: *mut u8,
    in2_sz: c_int,
    out: *mut u8,
) -> c_int {
    guard(|| {
        // SAFETY: SQLCipher passes its buffers with their lengths, and `out` with room for the
        // digest of `algorithm` (checked through `digest_len` before writing).
        let (Some(key), Some(input)) = (unsafe { bytes(key, key_sz) }, unsafe {
            bytes(input, in_sz)
        }) else {
            return SQLITE_ERROR;
        };
        let second = if in2.is_null() {
            None
        } else {
            match unsafe { bytes(in2, in2_sz) } {
                Some(b) => Some(b),
                None => return SQLITE_ERROR,
            }
        };
        let Some(len) = digest_len(algorithm) else {
            return SQLITE_ERROR;
        };
        let Some(out) = (unsafe { bytes_mut(out, len as c_int) }) else {
            return SQLITE_ERROR;
        };
        let mut fresh = None;
        // SAFETY: `ctx` is null or the connection's `Keys` (see `ctx_init`).
        let hmac_key = match unsafe { ctx.cast::<Keys>().as_mut() } {
            Some(cached) => cached.hmac(algorithm, key),
            None => fresh.insert(HmacKey::new(algorithm, key)).as_ref(),
        };
        let Some(hmac_key) = hmac_key else {
            return SQLITE_ERROR;
        };
        let mut m = ring_hmac::Context::with_key(&hmac_key.key);
        m.update(input);
        if let Some(s) = second {
            m.update(s);
        }
        let tag = m.sign();
        if tag.as_ref().len() != out.len() {
            return SQLITE_ERROR;
        }
        out.copy_from_slice(tag.as_ref());
        SQLITE_OK
    })
}

/// PBKDF2 of `pass` and `salt` with `workfactor` iterations into `key_sz` bytes at `key`.
/// (With a raw key, SQLCipher runs it only to derive the page HMAC's key, with 2 iterations.)
unsafe extern "C" fn kdf(
    _ctx: *mut c_void,
    algorithm: c_int,
    pass: *const u8,
    pass_sz: c_int,
    salt: *mut u8,
    salt_sz: c_int,
    workfactor: c_int,
    key_sz: c_int,
    key: *mut u8,
) -> c_int {
    guard(|| {
        // SAFETY: SQLCipher passes its buffers with their lengths.
        let (Some(pass), Some(salt), Some(key)) = (
            unsafe { bytes(pass, pass_sz) },
            unsafe { bytes(salt, salt_sz) },
            unsafe { bytes_mut(key, key_sz) },
        ) else {
            return SQLITE_ERROR;
        };
        let Some(rounds) = u32::try_from(workfactor).ok().and_then(NonZeroU32::new) else {
            return SQLITE_ERROR;
        };
        let algorithm = match algorithm {
            DIGEST_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
            DIGEST_SHA512 => pbkdf2::PBKDF2_HMAC_SHA512,
            _ => return SQLITE_ERROR,
        };
        if key.is_empty() {
            return SQLITE_ERROR;
        }
        pbkdf2::derive(algorithm, rounds, salt, pass, key);
        SQLITE_OK
    })
}

/// AES-256-CBC without padding of `in_sz` bytes (whole blocks) from `input` to `out`.
unsafe extern "C" fn cipher(
    ctx: *mut c_void,
    mode: c_int,
    key: *mut u8,
    key_sz: c_int,
    iv: *mut u8,
    input: *mut u8,
    in_sz: c_int,
    out: *mut u8,
) -> c_int {
    guard(|| {
        if key_sz as usize != KEY_BYTES
            || in_sz < 0
            || !(in_sz as usize).is_multiple_of(BLOCK_BYTES)
        {
            return SQLITE_ERROR;
        }
        // SAFETY: SQLCipher passes a key of `key_sz` bytes, an IV of one block, and `in_sz`
        // bytes in and out. `input` and `out` are either the same buffer or apart. `ctx` is
        // null or the connection's `Keys` (see `ctx_init`), used by one thread at a time.
        let (Some(key), Some(iv)) = (unsafe { bytes(key, key_sz) }, unsafe {
            bytes(iv, BLOCK_BYTES as c_int)
        }) else {
            return SQLITE_ERROR;
        };
        let mut fresh = None;
        let keys = match unsafe { ctx.cast::<Keys>().as_mut() } {
            Some(cached) => cached.aes(key),
            None => fresh.insert(AesKeys::new(key)).as_ref(),
        };
        let Some(keys) = keys else {
            return SQLITE_ERROR;
        };
        // Always in place in `out`: the input is copied there first when it is elsewhere.
        let Some(buf) = (unsafe { bytes_mut(out, in_sz) }) else {
            return SQLITE_ERROR;
        };
        if input != out {
            let Some(src) = (unsafe { bytes(input, in_sz) }) else {
                return SQLITE_ERROR;
            };
            buf.copy_from_slice(src);
        }
        let len = buf.len();
        let done = match mode {
            ENCRYPT => Aes256CbcEnc::inner_iv_slice_init(keys.enc.clone(), iv)
                .ok()
                .and_then(|c| c.encrypt_padded_mut::<NoPadding>(buf, len).ok())
                .is_some(),
            _ => Aes256CbcDec::inner_iv_slice_init(keys.dec.clone(), iv)
                .ok()
                .and_then(|c| c.decrypt_padded_mut::<NoPadding>(buf).ok())
                .is_some(),
        };
        if done {
            SQLITE_OK
        } else {
            SQLITE_ERROR
        }
    })
}

unsafe extern "C" fn get_cipher(_ctx: *mut c_void) -> *const c_char {
    CIPHER.as_ptr()
}

unsafe extern "C" fn get_key_sz(_ctx: *mut c_void) -> c_int {
    KEY_BYTES as c_int
}

unsafe extern "C" fn get_iv_sz(_ctx: *mut c_void) -> c_int {
    BLOCK_BYTES as c_int
}

unsafe extern "C" fn get_block_sz(_ctx: *mut c_void) -> c_int {
    BLOCK_BYTES as c_int
}

/// Bytes of the digest SQLCipher names `algorithm` (SHA-1's too, though this provider
/// computes none: SQLCipher sizes its pages with it before asking for an HMAC).
fn digest_len(algorithm: c_int) -> Option<usize> {
    match algorithm {
        DIGEST_SHA1 => Some(20),
        DIGEST_SHA256 => Some(32),
        DIGEST_SHA512 => Some(64),
        _ => None,
    }
}

unsafe extern "C" fn get_hmac_sz(_ctx: *mut c_void, algorithm: c_int) -> c_int {
    digest_len(algorithm).map_or(0, |n| n as c_int)
}

/// What a connection's codec keeps between calls: the AES key schedules and the HMAC key
/// state of the keys it was last given. SQLCipher passes the same keys for every page of a
/// connection, and deriving them again for each page was a tenth of the work on 1 KiB pages.
/// Each is checked against the key bytes of the call, so a different key (a re-key's write
/// side) is derived, not mistaken for the cached one.
#[derive(Default)]
struct Keys {
    aes: Option<AesKeys>,
    hmac: Option<HmacKey>,
}

impl Keys {
    fn aes(&mut self, key: &[u8]) -> Option<&AesKeys> {
        if self.aes.as_ref().is_none_or(|k| k.key.as_slice() != key) {
            self.aes = Some(AesKeys::new(key)?);
        }
        self.aes.as_ref()
    }

    fn hmac(&mut self, algorithm: c_int, key: &[u8]) -> Option<&HmacKey> {
        if self
            .hmac
            .as_ref()
            .is_none_or(|k| k.algorithm != algorithm || k.raw.as_slice() != key)
        {
            self.hmac = Some(HmacKey::new(algorithm, key)?);
        }
        self.hmac.as_ref()
    }
}

/// An AES-256 key and its encryption and decryption schedules (wiped when dropped).
struct AesKeys {
    key: Zeroizing<[u8; KEY_BYTES]>,
    enc: aes::Aes256Enc,
    dec: aes::Aes256Dec,
}

impl AesKeys {
    fn new(key: &[u8]) -> Option<AesKeys> {
        let raw: [u8; KEY_BYTES] = key.try_into().ok()?;
        Some(AesKeys {
            enc: aes::Aes256Enc::new_from_slice(key).ok()?,
            dec: aes::Aes256Dec::new_from_slice(key).ok()?,
            key: Zeroizing::new(raw),
        })
    }
}

/// An HMAC key, as given (wiped when dropped) and as ring's padded state.
struct HmacKey {
    algorithm: c_int,
    raw: Zeroizing<Vec<u8>>,
    key: ring_hmac::Key,
}

impl HmacKey {
    fn new(algorithm: c_int, key: &[u8]) -> Option<HmacKey> {
        let digest = match algorithm {
            DIGEST_SHA256 => ring_hmac::HMAC_SHA256,
            DIGEST_SHA512 => ring_hmac::HMAC_SHA512,
            _ => return None,
        };
        Some(HmacKey {
            algorithm,
            raw: Zeroizing::new(key.to_vec()),
            key: ring_hmac::Key::new(digest, key),
        })
    }
}

/// A connection's [`Keys`], empty until its first page.
unsafe extern "C" fn ctx_init(ctx: *mut *mut c_void) -> c_int {
    if ctx.is_null() {
        return SQLITE_ERROR;
    }
    let keys = Box::into_raw(Box::<Keys>::default());
    // SAFETY: SQLCipher passes the address of its context pointer; `ctx_free` takes it back.
    unsafe { *ctx = keys.cast() };
    SQLITE_OK
}

unsafe extern "C" fn ctx_free(ctx: *mut *mut c_void) -> c_int {
    if ctx.is_null() {
        return SQLITE_OK;
    }
    // SAFETY: `*ctx` is null or what `ctx_init` made, freed once (it is nulled here).
    unsafe {
        let keys = (*ctx).cast::<Keys>();
        if !keys.is_null() {
            drop(Box::from_raw(keys));
        }
        *ctx = std::ptr::null_mut();
    }
    SQLITE_OK
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
