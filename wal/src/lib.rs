//! A SQLite VFS that writes each transaction's WAL frames with one write instead of two per
//! page ([`NAME`], wrapping the platform's default VFS). Roam's stores, the client's
//! (`roam-core`) and the server's embedded one (`roam-server`), open their connections through
//! it with [`open`].
//!
//! SQLite appends a commit to the WAL as a 24-byte frame header and then the page, one `pwrite`
//! each, for every page the transaction changed. On a small commit (a queued message changes
//! three to six pages, a chat message on the server five) those system calls were about 40 % of
//! the time of a client's commit and 15 % of the CPU of the server's durable one. Here
//! the WAL file's writes are gathered in memory while they follow one another, and written out
//! with one call when the frame that commits the transaction is complete (its header carries
//! the database size after the commit, which only a commit frame does), before SQLite publishes
//! the commit in the WAL index: no other connection can read a frame that is not in the file.
//!
//! Everything else that touches the WAL file (a read, a sync, a truncation, its size, a file
//! control, closing it) writes out what is gathered first, as does a write that does not follow
//! on, and more than 256 KiB. A failed write-out drops what was gathered and
//! returns the error to the write under way, so SQLite fails that transaction as it would have
//! for the `pwrite`; nothing a commit wrote is published before it is in the file. Files other
//! than WALs (the database, its shared memory) are the default VFS's own, untouched.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::{ffi, Connection, OpenFlags};

/// The name the VFS is registered under.
pub const NAME: &CStr = c"roam-wal";

/// Bytes gathered at most before they are written out even without a commit (a big transaction
/// writes its frames as it goes, as SQLite would).
const MAX_GATHERED: usize = 256 * 1024;

/// Most bytes given to one write of the default VFS: the unix VFS writes at most 128 KiB - 1
/// per call (it was made for pages of up to 64 KiB).
const MAX_WRITE: usize = 64 * 1024;

/// Bytes of a WAL frame header; bytes 4..8 of it are the database size after a commit frame,
/// zero in any other frame.
const FRAME_HEADER: usize = 24;

/// A WAL file opened through this VFS: SQLite's file object first, the default VFS's file after
/// [`HEADER`] bytes of the same allocation.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    /// The default VFS's file, inside this allocation.
    inner: *mut ffi::sqlite3_file,
    /// What is gathered (allocated at open, freed at close).
    gathered: *mut Gathered,
}

/// Writes gathered, contiguous from `start`.
#[derive(Debug, Default)]
struct Gathered {
    start: i64,
    bytes: Vec<u8>,
    /// The last write was the header of a commit frame: the next one, its page, completes the
    /// commit. Kept across a write-out (only a write changes it).
    commit_next: bool,
}

/// Bytes of [`WalFile`] rounded up to 16, where the default VFS's file begins.
const HEADER: usize = size_of::<WalFile>().div_ceil(16) * 16;

/// The default VFS (this one wraps it).
struct Vfs {
    root: *mut ffi::sqlite3_vfs,
}

// SAFETY: the pointer is to the default VFS, which lives for the whole process and is only read.
unsafe impl Send for Vfs {}
// SAFETY: as above.
unsafe impl Sync for Vfs {}

static VFS: OnceLock<Option<Vfs>> = OnceLock::new();

/// Opens a connection to the database file at `path` through this VFS (registered at the first
/// call), or through the default VFS if it could not be registered.
pub fn open(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    match name() {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs),
        None => Connection::open_with_flags(path, flags),
    }
}

/// Registers the VFS (once per process). Returns its name, or `None` when it could not be
/// registered (a connection then opens on the default VFS, with the two writes per page).
pub fn name() -> Option<&'static str> {
    VFS.get_or_init(register).as_ref()?;
    NAME.to_str().ok()
}

fn register() -> Option<Vfs> {
    // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS (initializing SQLite first), which
    // lives as long as the process. The VFS built here is leaked on purpose: SQLite keeps a
    // pointer to it for the same time.
    unsafe {
        if ffi::sqlite3_initialize() != ffi::SQLITE_OK {
            return None;
        }
        let root = ffi::sqlite3_vfs_find(std::ptr::null());
        // Version 2 has `xCurrentTimeInt64`, which this VFS forwards.
        if root.is_null() || (*root).iVersion < 2 {
            return None;
        }
        let sz = usize::try_from((*root).szOsFile).ok()?;
        let own = Box::into_raw(Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: c_int::try_from(HEADER + sz).ok()?,
            mxPathname: (*root).mxPathname,
            pNext: std::ptr::null_mut(),
            zName: NAME.as_ptr(),
            pAppData: std::ptr::null_mut(),
            xOpen: Some(vfs_open),
            xDelete: Some(delete),
            xAccess: Some(access),
            xFullPathname: Some(full_pathname),
            xDlOpen: Some(dl_open),
            xDlError: Some(dl_error),
            xDlSym: Some(dl_sym),
            xDlClose: Some(dl_close),
            xRandomness: Some(randomness),
            xSleep: Some(sleep),
            xCurrentTime: Some(current_time),
            xGetLastError: Some(get_last_error),
            xCurrentTimeInt64: Some(current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        }));
        if ffi::sqlite3_vfs_register(own, 0) != ffi::SQLITE_OK {
            drop(Box::from_raw(own));
            return None;
        }
        Some(Vfs { root })
    }
}

/// The default VFS (only called once [`register`] succeeded).
fn root() -> *mut ffi::sqlite3_vfs {
    VFS.get()
        .and_then(Option::as_ref)
        .map_or(std::ptr::null_mut(), |v| v.root)
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(wal_sector_size),
    xDeviceCharacteristics: Some(wal_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn vfs_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let root = root();
    // SAFETY: SQLite gives `file` room for `szOsFile` bytes (this VFS's, which holds the default
    // VFS's after `HEADER`); `root` is the default VFS.
    unsafe {
        let Some(root_open) = root.as_ref().and_then(|r| r.xOpen) else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Not a WAL: the default VFS's own file, in place.
            return root_open(root, name, file, flags, out_flags);
        }
        let wal = file.cast::<WalFile>();
        let inner = file.cast::<u8>().add(HEADER).cast::<ffi::sqlite3_file>();
        (*file).pMethods = std::ptr::null();
        let rc = root_open(root, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        (*wal).inner = inner;
        (*wal).gathered = Box::into_raw(Box::<Gathered>::default());
        (*file).pMethods = &WAL_METHODS;
        ffi::SQLITE_OK
    }
}

/// The parts of a WAL file opened by [`vfs_open`].
///
/// # Safety
/// `file` must be a file [`vfs_open`] opened as a WAL and not yet closed.
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, &'a mut Gathered) {
    // SAFETY: the caller's promise; SQLite uses a file from one thread at a time.
    unsafe {
        let wal = file.cast::<WalFile>();
        ((*wal).inner, &mut *(*wal).gathered)
    }
}

/// The default VFS file's methods.
///
/// # Safety
/// `inner` must be an open file of the default VFS.
unsafe fn methods<'a>(inner: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: the caller's promise: an open file has its methods.
    unsafe { &*(*inner).pMethods }
}

/// Writes out what is gathered; on failure it is dropped and the error returned.
///
/// # Safety
/// `inner` must be an open file of the default VFS.
unsafe fn flush(inner: *mut ffi::sqlite3_file, g: &mut Gathered) -> c_int {
    if g.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let mut rc = ffi::SQLITE_OK;
    match unsafe { methods(inner) }.xWrite {
        Some(write) => {
            let mut offset = g.start;
            for chunk in g.bytes.chunks(MAX_WRITE) {
                // SAFETY: `chunk` holds its length in bytes (at most `MAX_WRITE`) for the call.
                rc = unsafe { write(inner, chunk.as_ptr().cast(), chunk.len() as c_int, offset) };
                if rc != ffi::SQLITE_OK {
                    break;
                }
                offset += chunk.len() as i64;
            }
        }
        None => rc = ffi::SQLITE_IOERR_WRITE,
    }
    g.bytes.clear();
    if g.bytes.capacity() > 2 * MAX_GATHERED {
        g.bytes.shrink_to(MAX_WRITE);
    }
    rc
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this on a WAL file `vfs_open` made, with `amt` readable bytes at `data`.
    unsafe {
        let (inner, g) = parts(file);
        let Ok(len) = usize::try_from(amt) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let data = std::slice::from_raw_parts(data.cast::<u8>(), len);
        let follows = i64::try_from(g.bytes.len())
            .ok()
            .and_then(|n| g.start.checked_add(n))
            == Some(offset);
        if !g.bytes.is_empty() && !follows {
            let rc = flush(inner, g);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if g.bytes.is_empty() {
            g.start = offset;
        }
        g.bytes.extend_from_slice(data);
        // This write completes a commit frame if the one before was its header. Whether this
        // one is such a header is noted after any write-out below, which must not lose it (a
        // header that fills the gathering is written out alone, and its page must still be).
        let completes_commit = g.commit_next;
        let commit_header = len == FRAME_HEADER && data[4..8] != [0; 4];
        if completes_commit || g.bytes.len() >= MAX_GATHERED {
            let rc = flush(inner, g);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        g.commit_next = commit_header;
        ffi::SQLITE_OK
    }
}

/// Runs `f` on the default VFS's file after writing out what is gathered.
///
/// # Safety
/// `file` must be a WAL file [`vfs_open`] opened and not yet closed.
unsafe fn after_flush(
    file: *mut ffi::sqlite3_file,
    f: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        let (inner, g) = parts(file);
        let rc = flush(inner, g);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        f(inner, methods(inner))
    }
}

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file `vfs_open` made once; what it allocated is freed here.
    unsafe {
        let (inner, g) = parts(file);
        let flushed = flush(inner, g);
        let closed = methods(inner)
            .xClose
            .map_or(ffi::SQLITE_OK, |close| close(inner));
        let wal = file.cast::<WalFile>();
        drop(Box::from_raw((*wal).gathered));
        (*wal).gathered = std::ptr::null_mut();
        (*file).pMethods = std::ptr::null();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn wal_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        after_flush(file, |inner, m| {
            m.xRead
                .map_or(ffi::SQLITE_IOERR_READ, |read| read(inner, buf, amt, offset))
        })
    }
}

unsafe extern "C" fn wal_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        after_flush(file, |inner, m| {
            m.xTruncate
                .map_or(ffi::SQLITE_IOERR_TRUNCATE, |t| t(inner, size))
        })
    }
}

unsafe extern "C" fn wal_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        after_flush(file, |inner, m| {
            m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |s| s(inner, flags))
        })
    }
}

unsafe extern "C" fn wal_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        after_flush(file, |inner, m| {
            m.xFileSize
                .map_or(ffi::SQLITE_IOERR_FSTAT, |f| f(inner, size))
        })
    }
}

unsafe extern "C" fn wal_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        after_flush(file, |inner, m| {
            m.xFileControl
                .map_or(ffi::SQLITE_NOTFOUND, |f| f(inner, op, arg))
        })
    }
}

unsafe extern "C" fn wal_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        let (inner, _) = parts(file);
        methods(inner)
            .xLock
            .map_or(ffi::SQLITE_OK, |f| f(inner, level))
    }
}

unsafe extern "C" fn wal_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        let (inner, _) = parts(file);
        methods(inner)
            .xUnlock
            .map_or(ffi::SQLITE_OK, |f| f(inner, level))
    }
}

unsafe extern "C" fn wal_check_reserved_lock(
    file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        let (inner, _) = parts(file);
        methods(inner)
            .xCheckReservedLock
            .map_or(ffi::SQLITE_OK, |f| f(inner, out))
    }
}

unsafe extern "C" fn wal_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        let (inner, _) = parts(file);
        methods(inner).xSectorSize.map_or(4096, |f| f(inner))
    }
}

unsafe extern "C" fn wal_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        let (inner, _) = parts(file);
        methods(inner)
            .xDeviceCharacteristics
            .map_or(0, |f| f(inner))
    }
}

// The rest of the VFS is the default one's: each call goes to it, with its own VFS object.

/// Defines `$name`, which calls the default VFS's `$field` with the same arguments (or returns
/// `$none` if it has no such method).
macro_rules! to_root {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $none:expr) => {
        unsafe extern "C" fn $name(_vfs: *mut ffi::sqlite3_vfs, $($arg: $ty),*) -> $ret {
            let root = root();
            // SAFETY: forwarded to the default VFS as SQLite called it (`register` checked
            // that it has every method up to version 2).
            unsafe {
                match root.as_ref().and_then(|r| r.$field) {
                    Some(f) => f(root, $($arg),*),
                    None => $none,
                }
            }
        }
    };
}

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

to_root!(delete, xDelete, (name: *const c_char, sync: c_int) -> c_int, ffi::SQLITE_ERROR);
to_root!(access, xAccess, (name: *const c_char, flags: c_int, out: *mut c_int) -> c_int, ffi::SQLITE_ERROR);
to_root!(full_pathname, xFullPathname, (name: *const c_char, n: c_int, out: *mut c_char) -> c_int, ffi::SQLITE_ERROR);
to_root!(dl_open, xDlOpen, (name: *const c_char) -> *mut c_void, std::ptr::null_mut());
to_root!(dl_error, xDlError, (n: c_int, out: *mut c_char) -> (), ());
to_root!(dl_sym, xDlSym, (handle: *mut c_void, symbol: *const c_char) -> Option<DlSym>, None);
to_root!(dl_close, xDlClose, (handle: *mut c_void) -> (), ());
to_root!(randomness, xRandomness, (n: c_int, out: *mut c_char) -> c_int, 0);
to_root!(sleep, xSleep, (micros: c_int) -> c_int, 0);
to_root!(current_time, xCurrentTime, (out: *mut f64) -> c_int, ffi::SQLITE_ERROR);
to_root!(get_last_error, xGetLastError, (n: c_int, out: *mut c_char) -> c_int, 0);
to_root!(current_time_int64, xCurrentTimeInt64, (out: *mut i64) -> c_int, ffi::SQLITE_ERROR);

#[cfg(test)]
mod tests;
