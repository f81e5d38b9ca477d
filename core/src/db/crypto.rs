//! The cryptography under SQLCipher, in Rust, registered as SQLCipher's crypto provider
//! ([`install`]), with two page formats ([`PageFormat`]).
//!
//! SQLCipher encrypts each page under a random IV kept in bytes reserved at the end of the page
//! and authenticates it with an HMAC that also covers the page number; it asks a *provider* for
//! the primitives. Its OpenSSL provider sets up everything again for every page: under OpenSSL 3
//! that is a lookup of the HMAC, of the digest and of the cipher by name (locks and reference
//! counts included), a new context for each, and a trip through the DRBG for the IV; that
//! set-up cost as much as the AES and the SHA-256 themselves on a small commit. This provider
//! needs no set-up and keeps, per connection, only the key schedules of the keys SQLCipher gives
//! it ([`Keys`]); AES (RustCrypto's `aes` and `cbc`, ring's AES-GCM) and SHA-2 (ring's HMAC and
//! PBKDF2) use the CPU's instructions where it has them (AES-NI, PCLMULQDQ and SHA-NI on x86,
//! the ARMv8 cryptography extensions — see `.cargo/config.toml` for RustCrypto's AES on 64-bit
//! ARM), and the IVs come from the thread's CSPRNG (`rand`'s ChaCha, seeded and reseeded from
//! the OS).
//!
//! **Two page formats**, chosen per codec when it is keyed ([`keying`]):
//! - [`PageFormat::Sqlcipher`], SQLCipher 4's own: AES-256-CBC under a 16-byte random IV, and an
//!   HMAC (SHA-256 or SHA-512) of the ciphertext, the IV and the page number. A store in it reads
//!   with any SQLCipher 4 (a test checks each primitive against OpenSSL's). Stores encrypted by
//!   earlier builds use it; SHA-1 (SQLCipher 1–3, never written by Roam) is refused, so such a
//!   store fails to open with an error instead of being misread.
//! - [`PageFormat::Sealed`], what this build writes: AES-256-GCM under a 96-bit random nonce,
//!   whose 128-bit tag authenticates the ciphertext, and an HMAC-SHA256, under SQLCipher's
//!   separate HMAC key, of the nonce, the tag and the page number, which binds the page to its
//!   place (pages cannot be swapped). SQLCipher's IV field is 32 bytes here: nonce, tag and 4
//!   unused bytes. Per page written it costs several times less than the other (CBC encryption is
//!   serial and its HMAC runs over the whole page; GCM runs its blocks in parallel and GHASH is
//!   a carry-less multiplication per block), which is what keeps an encrypted store's commits
//!   within a few per cent of a plain one's. Only this provider reads it: the `sqlcipher` shell does not.
//!   Random nonces are safe for far more page writes than a phone's store sees (NIST's bound for
//!   96-bit random nonces is 2^32 encryptions per key; a re-key starts a new key).
//!
//! **Registration.** SQLCipher copies its registered provider into each connection it keys,
//! and drops the registration (falling back to its default) when the last keyed connection in
//! the process closes. So [`install`] keys an in-memory connection first, which activates
//! SQLCipher and is kept open for the life of the process, and then registers this provider:
//! every keyed connection opened after that uses it. The provider table below mirrors
//! SQLCipher 4.6's `sqlcipher_provider`; [`install`] checks the SQLCipher version it runs on
//! and leaves SQLCipher's own provider in place on any other (then only the SQLCipher format
//! is written and read).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use rand::RngCore;
use ring::{aead, hmac as ring_hmac, pbkdf2};
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

/// The IV field of a [`PageFormat::Sealed`] page: the GCM nonce, its tag, 4 unused bytes
/// (SQLCipher fills them with random bytes, and the page HMAC covers them).
const SEALED_IV_BYTES: usize = 32;
const NONCE_BYTES: usize = aead::NONCE_LEN;
const TAG_BYTES: usize = aead::MAX_TAG_LEN;

/// The SQLCipher releases whose provider table is [`Provider`].
const LAYOUT_OF: &str = "4.6.";

/// What `PRAGMA cipher_provider` answers for a connection keyed through this provider.
pub(crate) const NAME: &CStr = c"roam";
const VERSION: &CStr = c"roam-core (aes, cbc, ring)";
const CBC: &CStr = c"aes-256-cbc";
const GCM: &CStr = c"aes-256-gcm";

/// How a codec's pages are encrypted and authenticated (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageFormat {
    /// SQLCipher 4's: AES-256-CBC and an HMAC of the ciphertext, IV and page number.
    Sqlcipher,
    /// Roam's: AES-256-GCM and an HMAC-SHA256 of the nonce, tag and page number.
    Sealed,
}

thread_local! {
    /// The format of the codecs SQLCipher creates on this thread (see [`keying`]).
    static KEYING: Cell<PageFormat> = const { Cell::new(PageFormat::Sqlcipher) };
}

/// Runs `f` (a `PRAGMA key` or an `ATTACH … KEY`) so that the codecs it creates use `format`.
/// SQLCipher creates a codec, and asks the provider for its context and its IV size, inside
/// the statement that keys the database, on the calling thread; every other codec (those keyed
/// outside this function) uses SQLCipher's format.
pub(crate) fn keying<T>(format: PageFormat, f: impl FnOnce() -> T) -> T {
    struct Restore(PageFormat);
    impl Drop for Restore {
        fn drop(&mut self) {
            KEYING.set(self.0);
        }
    }
    let _restore = Restore(KEYING.replace(format));
    f()
}

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
/// returns uses it. Returns whether it is in place (`false`: SQLCipher's own provider is, which
/// reads and writes only SQLCipher's format, more slowly; the reason is logged).
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
        let cached = unsafe { ctx.cast::<Keys>().as_mut() };
        let format = cached.as_ref().map_or(PageFormat::Sqlcipher, |k| k.format);
        let hmac_key = match cached {
            Some(cached) => cached.hmac(algorithm, key),
            None => fresh.insert(HmacKey::new(algorithm, key)).as_ref(),
        };
        let Some(hmac_key) = hmac_key else {
            return SQLITE_ERROR;
        };
        // SQLCipher passes the page's ciphertext followed by its IV field. A sealed page's
        // ciphertext is authenticated by its GCM tag, which is in the IV field: the HMAC covers
        // that field (nonce and tag) and the page number.
        let covered = match format {
            PageFormat::Sqlcipher => input,
            PageFormat::Sealed => match input.len().checked_sub(SEALED_IV_BYTES) {
                Some(start) => &input[start..],
                None => return SQLITE_ERROR,
            },
        };
        let mut m = ring_hmac::Context::with_key(&hmac_key.key);
        m.update(covered);
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

/// Encrypts or decrypts `in_sz` bytes from `input` to `out` under the IV field `iv`: AES-256-CBC
/// without padding (whole blocks) in SQLCipher's format, AES-256-GCM in the sealed one, whose
/// encryption writes the tag into the IV field and whose decryption fails on a wrong tag.
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
        if key_sz as usize != KEY_BYTES || in_sz < 0 {
            return SQLITE_ERROR;
        }
        // SAFETY: `ctx` is null or the connection's `Keys` (see `ctx_init`), used by one
        // thread at a time.
        let cached = unsafe { ctx.cast::<Keys>().as_mut() };
        let format = cached.as_ref().map_or(PageFormat::Sqlcipher, |k| k.format);
        if format == PageFormat::Sqlcipher && !(in_sz as usize).is_multiple_of(BLOCK_BYTES) {
            return SQLITE_ERROR;
        }
        // SAFETY: SQLCipher passes a key of `key_sz` bytes and `in_sz` bytes in and out.
        // `input` and `out` are either the same buffer or apart.
        let Some(key) = (unsafe { bytes(key, key_sz) }) else {
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
        let done = match format {
            PageFormat::Sqlcipher => {
                // SAFETY: the IV is one block, apart from the data (it follows it in the page).
                let Some(iv) = (unsafe { bytes(iv, BLOCK_BYTES as c_int) }) else {
                    return SQLITE_ERROR;
                };
                let mut fresh = None;
                let keys = match cached {
                    Some(cached) => cached.aes(key),
                    None => fresh.insert(AesKeys::new(key)).as_ref(),
                };
                let Some(keys) = keys else {
                    return SQLITE_ERROR;
                };
                cbc(keys, mode, iv, buf)
            }
            PageFormat::Sealed => {
                // SAFETY: a sealed codec's IV field is `SEALED_IV_BYTES` (see `get_iv_sz`),
                // apart from the data (it follows it in the page), writable when encrypting
                // (it is in the output page).
                let Some(iv) = (unsafe { bytes_mut(iv, SEALED_IV_BYTES as c_int) }) else {
                    return SQLITE_ERROR;
                };
                let Some(sealing) = cached.and_then(|k| k.gcm(key)) else {
                    return SQLITE_ERROR;
                };
                gcm(sealing, mode, iv, buf)
            }
        };
        if done {
            SQLITE_OK
        } else {
            SQLITE_ERROR
        }
    })
}

/// AES-256-CBC of `buf` in place.
fn cbc(keys: &AesKeys, mode: c_int, iv: &[u8], buf: &mut [u8]) -> bool {
    let len = buf.len();
    match mode {
        ENCRYPT => Aes256CbcEnc::inner_iv_slice_init(keys.enc.clone(), iv)
            .ok()
            .and_then(|c| c.encrypt_padded_mut::<NoPadding>(buf, len).ok())
            .is_some(),
        _ => Aes256CbcDec::inner_iv_slice_init(keys.dec.clone(), iv)
            .ok()
            .and_then(|c| c.decrypt_padded_mut::<NoPadding>(buf).ok())
            .is_some(),
    }
}

/// AES-256-GCM of `buf` in place, with the nonce and the tag in the IV field `iv`.
fn gcm(key: &aead::LessSafeKey, mode: c_int, iv: &mut [u8], buf: &mut [u8]) -> bool {
    let (nonce, rest) = iv.split_at_mut(NONCE_BYTES);
    let Some(nonce) = <[u8; NONCE_BYTES]>::try_from(&*nonce)
        .ok()
        .map(aead::Nonce::assume_unique_for_key)
    else {
        return false;
    };
    let Some(tag_field) = rest.get_mut(..TAG_BYTES) else {
        return false;
    };
    match mode {
        ENCRYPT => match key.seal_in_place_separate_tag(nonce, aead::Aad::empty(), buf) {
            Ok(tag) => {
                tag_field.copy_from_slice(tag.as_ref());
                true
            }
            Err(_) => false,
        },
        _ => {
            let Ok(tag) = <[u8; TAG_BYTES]>::try_from(&*tag_field) else {
                return false;
            };
            key.open_in_place_separate_tag(nonce, aead::Aad::empty(), tag.into(), buf, 0..)
                .is_ok()
        }
    }
}

/// The format of the codec `ctx` belongs to (null: SQLCipher's).
///
/// # Safety
/// `ctx` is null or a context made by `ctx_init`.
unsafe fn format_of(ctx: *mut c_void) -> PageFormat {
    // SAFETY: the caller's promise.
    unsafe { ctx.cast::<Keys>().as_ref() }.map_or(PageFormat::Sqlcipher, |k| k.format)
}

unsafe extern "C" fn get_cipher(ctx: *mut c_void) -> *const c_char {
    // SAFETY: SQLCipher passes the codec's context.
    match unsafe { format_of(ctx) } {
        PageFormat::Sqlcipher => CBC.as_ptr(),
        PageFormat::Sealed => GCM.as_ptr(),
    }
}

unsafe extern "C" fn get_key_sz(_ctx: *mut c_void) -> c_int {
    KEY_BYTES as c_int
}

unsafe extern "C" fn get_iv_sz(ctx: *mut c_void) -> c_int {
    // SAFETY: SQLCipher passes the codec's context.
    match unsafe { format_of(ctx) } {
        PageFormat::Sqlcipher => BLOCK_BYTES as c_int,
        PageFormat::Sealed => SEALED_IV_BYTES as c_int,
    }
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

/// What a connection's codec keeps between calls: its page format, and the key schedules and
/// HMAC key state of the keys it was last given. SQLCipher passes the same keys for every page
/// of a connection, and deriving them again for each page was a tenth of the work on 1 KiB
/// pages. Each is checked against the key bytes of the call, so a different key (a re-key's
/// write side) is derived, not mistaken for the cached one.
struct Keys {
    format: PageFormat,
    aes: Option<AesKeys>,
    gcm: Option<GcmKey>,
    hmac: Option<HmacKey>,
}

impl Keys {
    fn new(format: PageFormat) -> Keys {
        Keys {
            format,
            aes: None,
            gcm: None,
            hmac: None,
        }
    }

    fn gcm(&mut self, key: &[u8]) -> Option<&aead::LessSafeKey> {
        if self.gcm.as_ref().is_none_or(|k| k.raw.as_slice() != key) {
            self.gcm = Some(GcmKey::new(key)?);
        }
        self.gcm.as_ref().map(|k| &k.key)
    }

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

/// An AES-256-GCM key, as given (wiped when dropped) and as ring's key (ring keeps its AES
/// schedule and GHASH table in memory it does not wipe).
struct GcmKey {
    raw: Zeroizing<[u8; KEY_BYTES]>,
    key: aead::LessSafeKey,
}

impl GcmKey {
    fn new(key: &[u8]) -> Option<GcmKey> {
        let raw: [u8; KEY_BYTES] = key.try_into().ok()?;
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, key).ok()?;
        Some(GcmKey {
            raw: Zeroizing::new(raw),
            key: aead::LessSafeKey::new(unbound),
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

/// A connection's [`Keys`], empty until its first page, in the format [`keying`] set on this
/// thread (SQLCipher's when it set none).
unsafe extern "C" fn ctx_init(ctx: *mut *mut c_void) -> c_int {
    if ctx.is_null() {
        return SQLITE_ERROR;
    }
    let keys = Box::into_raw(Box::new(Keys::new(KEYING.get())));
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
