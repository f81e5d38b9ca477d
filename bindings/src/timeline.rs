//! `RoamTimeline`: a room's live list of messages, handed out by `RoamClient.timeline`.
//!
//! It wraps the core's `Timeline` (see `roam_core::timeline` for how the window and the diffs
//! are computed) and forwards its diffs to the app's [`TimelineListener`]. Swift turns them
//! into an `AsyncStream`, Kotlin into a `Flow`; both layers apply them to a list.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::RoamError;
use crate::listeners::Handle;
use crate::runtime::run;
use crate::types::Message;

/// A live view of one room's messages. `cancel()` (Kotlin also `close()`), or releasing it,
/// stops the diffs.
#[derive(uniffi::Object)]
pub struct RoamTimeline {
    room: String,
    open: Arc<AtomicBool>,
    inner: Mutex<Option<Arc<roam_core::Timeline>>>,
}

impl std::fmt::Debug for RoamTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoamTimeline")
            .field("room", &self.room)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish()
    }
}

impl RoamTimeline {
    pub(crate) fn new(open: Arc<AtomicBool>, timeline: roam_core::Timeline) -> Arc<Self> {
        Arc::new(RoamTimeline {
            room: timeline.room().to_owned(),
            open,
            inner: Mutex::new(Some(Arc::new(timeline))),
        })
    }

    fn timeline(&self) -> Result<Arc<roam_core::Timeline>, RoamError> {
        self.inner.lock().clone().ok_or(RoamError::Closed)
    }
}

#[uniffi::export]
impl RoamTimeline {
    /// The room shown.
    pub fn room(&self) -> String {
        self.room.clone()
    }

    /// The messages as last delivered to the listener.
    pub fn items(&self) -> Result<Vec<Message>, RoamError> {
        Ok(self
            .timeline()?
            .items()
            .into_iter()
            .map(Message::from)
            .collect())
    }

    /// Loads up to `count` (1–200) older messages, from the local store first and then from
    /// the server; they arrive as inserts at the top. Returns true once the start of the room
    /// is reached.
    pub async fn paginate_backwards(&self, count: u32) -> Result<bool, RoamError> {
        let timeline = self.timeline()?;
        run(async move { timeline.paginate_backwards(count).await }).await
    }

    /// Stops the diffs. Safe to call more than once, and from inside the listener.
    pub fn cancel(&self) {
        self.open.store(false, Ordering::Release);
        let timeline = self.inner.lock().take();
        if let Some(timeline) = timeline {
            timeline.close();
        }
    }

    /// True until closed (or until the client shuts down).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

impl Handle for RoamTimeline {
    fn cancel(&self) {
        RoamTimeline::cancel(self);
    }

    fn is_open(&self) -> bool {
        RoamTimeline::is_open(self)
    }
}

impl Drop for RoamTimeline {
    fn drop(&mut self) {
        self.cancel();
    }
}
