//! Tests of the crypto provider (see `crypto`): known answers, the same bytes as SQLCipher's
//! OpenSSL provider for every primitive, refusals, and its use by every keyed connection.

#![allow(unsafe_code)]

use std::ffi::c_int;
use std::mem::MaybeUninit;

use rand::RngCore;
use rusqlite::Connection;

use super::{install, keying, PageFormat, Provider, ENCRYPT, NAME, SEALED_IV_BYTES};
use super::{DIGEST_SHA1, DIGEST_SHA256, DIGEST_SHA512, PROVIDER, SQLITE_OK};
use crate::config::StoreKey;
use crate::db::cipher::{self, Cipher};

const DECRYPT: c_int = 0;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// `p`'s cipher over `input` (a result code and the output), with no connection context.
fn run_cipher(p: &Provider, mode: c_int, key: &[u8], iv: &[u8], input: &[u8]) -> (c_int, Vec<u8>) {
    run_cipher_in(p, std::ptr::null_mut(), mode, key, iv, input)
}

/// [`run_cipher`] with the connection context `ctx`.
fn run_cipher_in(
    p: &Provider,
    ctx: *mut std::ffi::c_void,
    mode: c_int,
    key: &[u8],
    iv: &[u8],
    input: &[u8],
) -> (c_int, Vec<u8>) {
    call_cipher(p, ctx, mode, key, &mut iv.to_vec(), input)
}

/// `p`'s cipher over `input` with the context `ctx`, under the IV field `iv`, which the call may
/// rewrite (a sealed page's tag).
fn call_cipher(
    p: &Provider,
    ctx: *mut std::ffi::c_void,
    mode: c_int,
    key: &[u8],
    iv: &mut [u8],
    input: &[u8],
) -> (c_int, Vec<u8>) {
    let (mut key, mut input) = (key.to_vec(), input.to_vec());
    let mut out = vec![0; input.len()];
    // SAFETY: every buffer is as long as its length says; `iv` is the codec's IV field (one
    // block, or `SEALED_IV_BYTES` for a sealed codec: the callers' promise).
    let rc = unsafe {
        (p.cipher)(
            ctx,
            mode,
            key.as_mut_ptr(),
            key.len() as c_int,
            iv.as_mut_ptr(),
            input.as_mut_ptr(),
            input.len() as c_int,
            out.as_mut_ptr(),
        )
    };
    (rc, out)
}

/// `p`'s HMAC of `a` then `b` (a result code and the tag), with no connection context.
fn run_hmac(
    p: &Provider,
    algorithm: c_int,
    key: &[u8],
    a: &[u8],
    b: Option<&[u8]>,
) -> (c_int, Vec<u8>) {
    run_hmac_in(p, std::ptr::null_mut(), algorithm, key, a, b)
}

/// [`run_hmac`] with the connection context `ctx`.
fn run_hmac_in(
    p: &Provider,
    ctx: *mut std::ffi::c_void,
    algorithm: c_int,
    key: &[u8],
    a: &[u8],
    b: Option<&[u8]>,
) -> (c_int, Vec<u8>) {
    // SAFETY: a plain call into the provider's table.
    let len = unsafe { (p.get_hmac_sz)(std::ptr::null_mut(), algorithm) } as usize;
    let (mut key, mut a) = (key.to_vec(), a.to_vec());
    let mut b = b.map(<[u8]>::to_vec);
    let mut out = vec![0; len.max(1)];
    let (b_ptr, b_len) = match b.as_mut() {
        Some(b) => (b.as_mut_ptr(), b.len() as c_int),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: every buffer is as long as its length says; `out` holds the digest.
    let rc = unsafe {
        (p.hmac)(
            ctx,
            algorithm,
            key.as_mut_ptr(),
            key.len() as c_int,
            a.as_mut_ptr(),
            a.len() as c_int,
            b_ptr,
            b_len,
            out.as_mut_ptr(),
        )
    };
    out.truncate(len);
    (rc, out)
}

/// `p`'s PBKDF2 (a result code and the derived bytes).
fn run_kdf(
    p: &Provider,
    algorithm: c_int,
    pass: &[u8],
    salt: &[u8],
    rounds: c_int,
    n: usize,
) -> (c_int, Vec<u8>) {
    let mut salt = salt.to_vec();
    let mut out = vec![0; n];
    // SAFETY: every buffer is as long as its length says.
    let rc = unsafe {
        (p.kdf)(
            std::ptr::null_mut(),
            algorithm,
            pass.as_ptr(),
            pass.len() as c_int,
            salt.as_mut_ptr(),
            salt.len() as c_int,
            rounds,
            n as c_int,
            out.as_mut_ptr(),
        )
    };
    (rc, out)
}

#[test]
fn known_answers() {
    // NIST SP 800-38A, F.2.5 and F.2.6 (CBC-AES256).
    let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
    let iv = hex("000102030405060708090a0b0c0d0e0f");
    let plain = hex(concat!(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
    ));
    let sealed = hex(concat!(
        "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d",
        "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b"
    ));
    assert_eq!(
        run_cipher(&PROVIDER, ENCRYPT, &key, &iv, &plain),
        (SQLITE_OK, sealed.clone())
    );
    assert_eq!(
        run_cipher(&PROVIDER, DECRYPT, &key, &iv, &sealed),
        (SQLITE_OK, plain)
    );
    // RFC 4231, test case 2.
    let data = b"what do ya want for nothing?";
    assert_eq!(
        run_hmac(
            &PROVIDER,
            DIGEST_SHA256,
            b"Jefe",
            &data[..10],
            Some(&data[10..])
        ),
        (
            SQLITE_OK,
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        )
    );
    assert_eq!(
        run_hmac(&PROVIDER, DIGEST_SHA512, b"Jefe", data, None),
        (
            SQLITE_OK,
            hex(concat!(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554",
                "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
            ))
        )
    );
    // RFC 7914, section 11 (PBKDF2-HMAC-SHA256, one round).
    assert_eq!(
        run_kdf(&PROVIDER, DIGEST_SHA256, b"passwd", b"salt", 1, 64),
        (
            SQLITE_OK,
            hex(concat!(
                "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc",
                "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
            ))
        )
    );
}

unsafe extern "C" {
    /// SQLCipher's OpenSSL provider, which this one replaces (see `crypto`).
    fn sqlcipher_openssl_setup(p: *mut Provider) -> c_int;
}

/// Every primitive gives the bytes SQLCipher's own OpenSSL provider gives, so stores written
/// by earlier builds read, and stores written now read with any SQLCipher.
#[test]
fn the_same_bytes_as_sqlciphers_openssl_provider() {
    // The OpenSSL provider takes SQLCipher's mutexes, which exist once SQLCipher is active.
    assert!(install());
    let mut table = MaybeUninit::<Provider>::uninit();
    // SAFETY: `sqlcipher_openssl_setup` fills in every field of the table.
    let openssl = unsafe {
        assert_eq!(sqlcipher_openssl_setup(table.as_mut_ptr()), SQLITE_OK);
        table.assume_init()
    };
    for _ in 0..20 {
        let key = random_bytes(32);
        let iv = random_bytes(16);
        // A page's encrypted part: 1 KiB and 4 KiB pages less their IV and HMAC.
        for len in [1024 - 48, 4096 - 48, 4096 - 80, 16] {
            let page = random_bytes(len);
            let ours = run_cipher(&PROVIDER, ENCRYPT, &key, &iv, &page);
            assert_eq!(ours, run_cipher(&openssl, ENCRYPT, &key, &iv, &page));
            assert_eq!(
                run_cipher(&PROVIDER, DECRYPT, &key, &iv, &ours.1),
                run_cipher(&openssl, DECRYPT, &key, &iv, &ours.1)
            );
            for algorithm in [DIGEST_SHA256, DIGEST_SHA512] {
                let (rc, tag) = run_hmac(&PROVIDER, algorithm, &key, &page, Some(&iv));
                assert_eq!(rc, SQLITE_OK);
                assert_eq!(
                    (rc, tag),
                    run_hmac(&openssl, algorithm, &key, &page, Some(&iv))
                );
            }
        }
        for algorithm in [DIGEST_SHA256, DIGEST_SHA512] {
            for rounds in [1, 2, 7] {
                let ours = run_kdf(&PROVIDER, algorithm, &key, &iv, rounds, 32);
                assert_eq!(ours.0, SQLITE_OK);
                assert_eq!(ours, run_kdf(&openssl, algorithm, &key, &iv, rounds, 32));
            }
        }
    }
}

/// A connection's context keeps the keys it was last given; a call with other keys (a re-key
/// writes with a new key while it reads with the old one) gets its own keys, never the cached
/// ones, and the context is freed.
#[test]
fn a_connection_context_never_uses_the_wrong_cached_key() {
    let mut ctx: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: `ctx_init` sets `ctx`, which `ctx_free` frees below.
    assert_eq!(unsafe { (PROVIDER.ctx_init)(&mut ctx) }, SQLITE_OK);
    assert!(!ctx.is_null());
    let (a, b) = (random_bytes(32), random_bytes(32));
    let iv = random_bytes(16);
    let page = random_bytes(1024 - 80);
    for key in [&a, &b, &a, &a, &b] {
        for mode in [ENCRYPT, DECRYPT] {
            assert_eq!(
                run_cipher_in(&PROVIDER, ctx, mode, key, &iv, &page),
                run_cipher(&PROVIDER, mode, key, &iv, &page)
            );
        }
        for algorithm in [DIGEST_SHA256, DIGEST_SHA512, DIGEST_SHA256] {
            assert_eq!(
                run_hmac_in(&PROVIDER, ctx, algorithm, key, &page, Some(&iv)),
                run_hmac(&PROVIDER, algorithm, key, &page, Some(&iv))
            );
        }
    }
    // SAFETY: frees what `ctx_init` made, once.
    unsafe {
        assert_eq!((PROVIDER.ctx_free)(&mut ctx), SQLITE_OK);
    }
    assert!(ctx.is_null());
}

#[test]
fn what_it_does_not_provide_is_an_error() {
    let key = random_bytes(32);
    let iv = random_bytes(16);
    // SHA-1 (SQLCipher 1-3 stores) is refused.
    assert_ne!(
        run_hmac(&PROVIDER, DIGEST_SHA1, &key, b"page", None).0,
        SQLITE_OK
    );
    assert_ne!(
        run_kdf(&PROVIDER, DIGEST_SHA1, b"pass", b"salt", 2, 32).0,
        SQLITE_OK
    );
    assert_ne!(run_hmac(&PROVIDER, 9, &key, b"page", None).0, SQLITE_OK);
    // No whole number of blocks, a key of the wrong size, no rounds.
    assert_ne!(
        run_cipher(&PROVIDER, ENCRYPT, &key, &iv, &[0; 20]).0,
        SQLITE_OK
    );
    assert_ne!(
        run_cipher(&PROVIDER, ENCRYPT, &key[..16], &iv, &[0; 32]).0,
        SQLITE_OK
    );
    assert_ne!(
        run_kdf(&PROVIDER, DIGEST_SHA256, b"pass", b"salt", 0, 32).0,
        SQLITE_OK
    );
}

/// Every keyed connection uses this provider, and a store it wrote reads back.
#[test]
fn every_keyed_connection_uses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let c = Cipher::new(&StoreKey::new([5; 32]), false);
    for round in 0..2 {
        let conn = Connection::open(&path).expect("open");
        cipher::apply(&conn, Some(&c)).expect("key");
        let name: String = conn
            .query_row("PRAGMA cipher_provider", [], |r| r.get(0))
            .expect("provider");
        assert_eq!(name, NAME.to_str().expect("utf-8"));
        if round == 0 {
            conn.execute_batch("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('sealed-unique')")
                .expect("write");
        } else {
            let x: String = conn
                .query_row("SELECT x FROM t", [], |r| r.get(0))
                .expect("read");
            assert_eq!(x, "sealed-unique");
        }
    }
    let bytes = std::fs::read(&path).expect("file");
    assert!(!bytes.windows(13).any(|w| w == b"sealed-unique"));
}

/// The context of a codec keyed in the sealed format (what SQLCipher gets from `ctx_init` inside
/// [`keying`]), freed when dropped.
struct SealedCodec(*mut std::ffi::c_void);

impl SealedCodec {
    fn new() -> SealedCodec {
        let mut ctx: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: `ctx_init` sets `ctx`, which `drop` frees.
        let rc = keying(PageFormat::Sealed, || unsafe {
            (PROVIDER.ctx_init)(&mut ctx)
        });
        assert_eq!(rc, SQLITE_OK);
        SealedCodec(ctx)
    }

    /// The provider's cipher over `input` under the IV field `iv`, which it may rewrite (the tag).
    fn cipher(&self, mode: c_int, key: &[u8], iv: &mut [u8], input: &[u8]) -> (c_int, Vec<u8>) {
        assert_eq!(iv.len(), SEALED_IV_BYTES);
        call_cipher(&PROVIDER, self.0, mode, key, iv, input)
    }
}

impl Drop for SealedCodec {
    fn drop(&mut self) {
        // SAFETY: frees what `ctx_init` made, once.
        unsafe { (PROVIDER.ctx_free)(&mut self.0) };
    }
}

/// A sealed codec encrypts with AES-256-GCM (the known answer of the GCM specification's test
/// case 15, AES-256 with a 96-bit IV), writes the tag into the IV field after the nonce, and
/// opens a page only with its key, its nonce, its tag and its ciphertext unchanged.
#[test]
fn a_sealed_page_is_aes_256_gcm_and_opens_only_whole() {
    let codec = SealedCodec::new();
    // SAFETY: plain calls into the provider's table with the codec's context.
    unsafe {
        assert_eq!((PROVIDER.get_iv_sz)(codec.0), SEALED_IV_BYTES as c_int);
        let name = std::ffi::CStr::from_ptr((PROVIDER.get_cipher)(codec.0));
        assert_eq!(name.to_str().expect("utf-8"), "aes-256-gcm");
        assert_eq!((PROVIDER.get_iv_sz)(std::ptr::null_mut()), 16);
    }
    let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    let plain = hex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
    );
    let mut iv = hex("cafebabefacedbaddecaf888");
    iv.extend(random_bytes(SEALED_IV_BYTES - iv.len()));
    let spare = iv[28..].to_vec();
    let (rc, sealed) = codec.cipher(ENCRYPT, &key, &mut iv, &plain);
    assert_eq!(rc, SQLITE_OK);
    assert_eq!(
        sealed,
        hex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
        )
    );
    assert_eq!(
        iv[12..28],
        hex("b094dac5d93471bdec1a502270e3cc6c"),
        "the tag"
    );
    assert_eq!(iv[28..], spare, "the unused bytes are left as they were");
    let (rc, opened) = codec.cipher(DECRYPT, &key, &mut iv.clone(), &sealed);
    assert_eq!((rc, opened), (SQLITE_OK, plain.clone()));

    // A page of a store: any change to its ciphertext, nonce or tag, or another key, and it
    // does not open.
    let key = random_bytes(32);
    let page = random_bytes(2048 - 64);
    let mut iv = random_bytes(SEALED_IV_BYTES);
    let (rc, sealed) = codec.cipher(ENCRYPT, &key, &mut iv, &page);
    assert_eq!(rc, SQLITE_OK);
    assert_ne!(sealed, page);
    assert_eq!(
        codec.cipher(DECRYPT, &key, &mut iv.clone(), &sealed),
        (SQLITE_OK, page.clone())
    );
    for at in [0, 1000, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[at] ^= 1;
        assert_ne!(
            codec.cipher(DECRYPT, &key, &mut iv.clone(), &bad).0,
            SQLITE_OK
        );
    }
    for at in [0, 11, 12, 27] {
        let mut bad = iv.clone();
        bad[at] ^= 0x80;
        assert_ne!(codec.cipher(DECRYPT, &key, &mut bad, &sealed).0, SQLITE_OK);
    }
    let other = random_bytes(32);
    assert_ne!(
        codec.cipher(DECRYPT, &other, &mut iv.clone(), &sealed).0,
        SQLITE_OK
    );
    // Two seals of the same page under fresh IV fields differ.
    let mut iv2 = random_bytes(SEALED_IV_BYTES);
    assert_ne!(codec.cipher(ENCRYPT, &key, &mut iv2, &page).1, sealed);
}

/// A sealed page's HMAC is HMAC-SHA256 of its IV field (nonce, tag, unused bytes) and its page
/// number: it changes with the page number, so a page cannot be moved, and with the IV field,
/// through which the ciphertext is bound (by the tag).
#[test]
fn a_sealed_pages_hmac_binds_its_nonce_tag_and_number() {
    let codec = SealedCodec::new();
    let key = random_bytes(32);
    let ciphertext = random_bytes(2048 - 64);
    let iv = random_bytes(SEALED_IV_BYTES);
    let page = [ciphertext.clone(), iv.clone()].concat();
    let mac = |page: &[u8], pgno: u32| {
        let (rc, tag) = run_hmac_in(
            &PROVIDER,
            codec.0,
            DIGEST_SHA256,
            &key,
            page,
            Some(&pgno.to_le_bytes()),
        );
        assert_eq!(rc, SQLITE_OK);
        tag
    };
    let expected = {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        ring::hmac::sign(&k, &[&iv[..], &7u32.to_le_bytes()].concat())
    };
    assert_eq!(mac(&page, 7), expected.as_ref());
    assert_ne!(mac(&page, 8), mac(&page, 7));
    let mut moved_iv = page.clone();
    moved_iv[ciphertext.len() + 3] ^= 1;
    assert_ne!(mac(&moved_iv, 7), mac(&page, 7));
    // Shorter than an IV field: refused.
    assert_ne!(
        run_hmac_in(&PROVIDER, codec.0, DIGEST_SHA256, &key, &iv[..20], None).0,
        SQLITE_OK
    );
}
