//! The scheduling priority of the library's own threads.
//!
//! Syncing is background work: a catch-up of thousands of events keeps a core busy for a few
//! hundred milliseconds, and on a phone the app's main thread must get a CPU first whenever it
//! wants one (a frame is 8–16 ms). So the threads that do the library's work (the bindings'
//! runtime workers, the store's checkpointer) ask the OS for a background priority when they
//! start, as Android's `THREAD_PRIORITY_BACKGROUND` and Apple's utility QoS class are meant for:
//! - Linux and Android: nice 10 for the calling thread (`setpriority` on its thread id; Linux
//!   niceness is per thread). Android's `THREAD_PRIORITY_BACKGROUND` is the same value.
//! - Apple platforms: `QOS_CLASS_UTILITY` for the calling thread.
//! - Elsewhere: nothing changes.
//!
//! The app's calls into the library run on the app's own threads at the app's priority; the
//! writer they may wait for is held by a background thread for at most one short transaction
//! (see `sync::apply`), and handed to them first when it is released.
//!
//! This is the only `unsafe` code of the core: two calls into the C library.

/// The niceness asked for on Linux and Android (Android's `THREAD_PRIORITY_BACKGROUND`).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread to the background priority described in the module docs (a thread
/// already lower stays where it is).
/// Returns whether the OS took it (a sandbox may refuse; the thread then keeps its priority,
/// which is only slower for the app, never wrong).
pub fn lower_current_thread() -> bool {
    let ok = imp::lower();
    if !ok {
        tracing::debug!("the OS kept this thread's priority");
    }
    ok
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
mod imp {
    pub(super) fn lower() -> bool {
        // SAFETY: `gettid` has no preconditions; `getpriority` and `setpriority` only read their
        // arguments, and `PRIO_PROCESS` with a thread id names that one thread on Linux.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            // Never raise a thread that is already lower (a process started under `nice 19`).
            // `getpriority` answers -1 on error as well as for niceness -1: both get lowered.
            if libc::getpriority(libc::PRIO_PROCESS, tid) >= super::BACKGROUND_NICE {
                return true;
            }
            libc::setpriority(libc::PRIO_PROCESS, tid, super::BACKGROUND_NICE) == 0
        }
    }
}

#[cfg(target_vendor = "apple")]
#[allow(unsafe_code)]
mod imp {
    pub(super) fn lower() -> bool {
        // SAFETY: changes the QoS class of the calling thread only; no pointers are passed.
        unsafe { libc::pthread_set_qos_class_self_np(libc::qos_class_t::QOS_CLASS_UTILITY, 0) == 0 }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
mod imp {
    pub(super) fn lower() -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The niceness of the calling thread, read back from the kernel.
    fn nice_of_this_thread() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        rest.split_whitespace()
            .nth(16)
            .expect("nice field")
            .parse()
            .expect("a number")
    }

    #[test]
    fn lowers_only_the_calling_thread() {
        let main_before = nice_of_this_thread();
        let lowered = std::thread::spawn(|| {
            let before = nice_of_this_thread();
            let ok = lower_current_thread();
            (before, ok, nice_of_this_thread())
        })
        .join()
        .expect("thread");
        let (before, ok, after) = lowered;
        assert!(ok, "setpriority refused");
        assert_eq!(
            after,
            BACKGROUND_NICE.max(before),
            "the thread is at background niceness"
        );
        assert_eq!(
            nice_of_this_thread(),
            main_before,
            "other threads keep theirs"
        );
    }
}
