//! `RoamRoomList`: the account's rooms as a room-list screen shows them, handed out by
//! `RoamClient.room_list`.
//!
//! It wraps the core's `RoomList` (see `roam_core::room_list` for what a summary holds and how
//! the diffs are computed) and forwards its diffs to the app's [`RoomListListener`]. Swift turns
//! them into an `AsyncStream`, Kotlin into a `Flow`; both layers apply them to a list.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::RoamError;
use crate::listeners::Handle;
use crate::types::RoomSummary;

/// A live list of the account's rooms. `cancel()` (Kotlin also `close()`), or releasing it,
/// stops the diffs.
#[derive(uniffi::Object)]
pub struct RoamRoomList {
    open: Arc<AtomicBool>,
    inner: Mutex<Option<roam_core::RoomList>>,
}

impl std::fmt::Debug for RoamRoomList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoamRoomList")
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish()
    }
}

impl RoamRoomList {
    pub(crate) fn new(open: Arc<AtomicBool>, list: roam_core::RoomList) -> Arc<Self> {
        Arc::new(RoamRoomList {
            open,
            inner: Mutex::new(Some(list)),
        })
    }
}

#[uniffi::export]
impl RoamRoomList {
    /// The rooms as last delivered to the listener.
    pub fn items(&self) -> Result<Vec<RoomSummary>, RoamError> {
        let inner = self.inner.lock();
        let list = inner.as_ref().ok_or(RoamError::Closed)?;
        Ok(list.items().into_iter().map(RoomSummary::from).collect())
    }

    /// Stops the diffs. Safe to call more than once, and from inside the listener.
    pub fn cancel(&self) {
        self.open.store(false, Ordering::Release);
        let list = self.inner.lock().take();
        if let Some(list) = list {
            list.close();
        }
    }

    /// True until closed (or until the client shuts down).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

impl Handle for RoamRoomList {
    fn cancel(&self) {
        RoamRoomList::cancel(self);
    }

    fn is_open(&self) -> bool {
        RoamRoomList::is_open(self)
    }
}

impl Drop for RoamRoomList {
    fn drop(&mut self) {
        self.cancel();
    }
}
