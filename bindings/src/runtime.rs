//! The one tokio runtime of the library.
//!
//! The core runs on tokio, but Swift and Kotlin call in from their own threads and executors.
//! So the library owns one process-wide multi-threaded runtime, made on first use: synchronous
//! calls enter it (the core may spawn from them), and async calls run their core future as a
//! task on it and await the task's `JoinHandle`, a runtime-agnostic future that the foreign
//! executor can poll (and drop: cancelling a Swift `Task` or a Kotlin coroutine only drops the
//! handle; the core call still runs to its end, so no core state is left half-done).
//!
//! Its worker threads run at a background priority (nice 10 on Android, utility QoS on Apple
//! platforms; `roam_core::priority`), so a catch-up never takes a CPU from the app's main thread.

use std::future::Future;
use std::sync::OnceLock;

use crate::error::RoamError;

/// The runtime, made on first use (a failure to make it is reported on every call).
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime, RoamError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("roam")
            // Sync is background work: the app's threads get a CPU first (see the core's
            // `priority` module).
            .on_thread_start(|| {
                roam_core::priority::lower_current_thread();
            })
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|reason| RoamError::Internal {
        reason: format!("cannot start the runtime: {reason}"),
    })
}

/// Runs a core future on the runtime and waits for its result.
pub(crate) async fn run<T, F>(future: F) -> Result<T, RoamError>
where
    F: Future<Output = roam_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match runtime()?.spawn(future).await {
        Ok(result) => result.map_err(RoamError::from),
        Err(join) => Err(RoamError::Internal {
            reason: format!("the call's task ended abnormally: {join}"),
        }),
    }
}
