//! `save_document`: a document edit as one async call that ends with the server's answer.
//!
//! The core queues every edit (`put_document`) and reports how it ended through the document
//! listener: the edit's local copy turns `Sent`, or a `Conflict` arrives with the server's
//! version, or it turns `Failed`. Swift and Kotlin callers often want that as the result of
//! one `await`, with a typed error for the conflict. This module only adapts the two: it
//! subscribes (before queueing, so nothing is missed), queues through the core, and completes
//! with the first outcome of that edit. Dropping the future (a cancelled `Task` or coroutine)
//! drops the subscription; the queued edit stays queued.

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::error::RoamError;
use crate::types::Document;

/// How the awaited edit ended.
pub(crate) type Outcome = Result<Document, RoamError>;

/// A core document listener that recognises the outcome of one edit.
pub(crate) struct EditWaiter {
    room: String,
    doc: String,
    me: String,
    version: u64,
    content: String,
    tx: Mutex<Option<oneshot::Sender<Outcome>>>,
}

impl EditWaiter {
    /// Waits for the edit of `room`/`doc` by `me` that makes `version` with `content`.
    pub(crate) fn new(
        room: &str,
        doc: &str,
        me: &str,
        base_version: u64,
        content: &str,
    ) -> (Self, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let waiter = EditWaiter {
            room: room.to_owned(),
            doc: doc.to_owned(),
            me: me.to_owned(),
            version: base_version + 1,
            content: content.to_owned(),
            tx: Mutex::new(Some(tx)),
        };
        (waiter, rx)
    }

    fn ours(&self, d: &roam_core::Document) -> bool {
        d.room == self.room && d.doc == self.doc
    }

    /// The outcome this update means for the awaited edit, if any.
    fn outcome(&self, update: roam_core::DocumentUpdate) -> Option<Outcome> {
        match update {
            roam_core::DocumentUpdate::Conflict { local, current } if self.ours(&local) => {
                Some(Err(RoamError::VersionConflict {
                    current_version: current.version,
                    current_content: current.content,
                }))
            }
            roam_core::DocumentUpdate::Updated(d) if self.ours(&d) => match &d.send_state {
                roam_core::SendState::Sent
                    if d.version == self.version
                        && d.updated_by == self.me
                        && d.content == self.content =>
                {
                    Some(Ok(d.into()))
                }
                roam_core::SendState::Failed { code, message } if d.version == self.version => {
                    Some(Err(RoamError::from_failure(code, message)))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl roam_core::DocumentListener for EditWaiter {
    fn on_document_update(&self, update: roam_core::DocumentUpdate) {
        if let Some(outcome) = self.outcome(update) {
            if let Some(tx) = self.tx.lock().take() {
                let _ = tx.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_core::{DocumentUpdate, SendState};

    fn local(version: u64, content: &str, state: SendState) -> roam_core::Document {
        roam_core::Document {
            room: "team".into(),
            doc: "plan".into(),
            version,
            content: content.into(),
            updated_by: "alice".into(),
            updated_at: 0,
            send_state: state,
            conflict: None,
        }
    }

    #[test]
    fn recognises_its_own_edit_and_ignores_others() {
        let (w, _rx) = EditWaiter::new("team", "plan", "alice", 1, "v2");
        // The optimistic copy (pending) is not an outcome.
        assert!(w
            .outcome(DocumentUpdate::Updated(local(2, "v2", SendState::Pending)))
            .is_none());
        // Another document, or another content, is not ours.
        let mut other = local(2, "v2", SendState::Sent);
        other.doc = "notes".into();
        assert!(w.outcome(DocumentUpdate::Updated(other)).is_none());
        assert!(w
            .outcome(DocumentUpdate::Updated(local(2, "theirs", SendState::Sent)))
            .is_none());
        // Confirmed.
        let done = w.outcome(DocumentUpdate::Updated(local(2, "v2", SendState::Sent)));
        assert!(
            matches!(done, Some(Ok(ref d)) if d.version == 2),
            "{done:?}"
        );
    }

    #[test]
    fn a_conflict_carries_the_current_version() {
        let (w, _rx) = EditWaiter::new("team", "plan", "alice", 0, "stale");
        let current = roam_core::DocumentVersion {
            room: "team".into(),
            doc: "plan".into(),
            version: 3,
            content: "v3".into(),
            updated_by: "bob".into(),
            updated_at: 0,
        };
        let failed = SendState::Failed {
            code: "version_conflict".into(),
            message: "stale".into(),
        };
        let out = w.outcome(DocumentUpdate::Conflict {
            local: local(1, "stale", failed),
            current,
        });
        assert_eq!(
            out,
            Some(Err(RoamError::VersionConflict {
                current_version: 3,
                current_content: "v3".into()
            }))
        );
    }

    #[test]
    fn a_refusal_is_a_typed_error() {
        let (w, _rx) = EditWaiter::new("team", "plan", "alice", 0, "x");
        let failed = SendState::Failed {
            code: "forbidden".into(),
            message: "banned".into(),
        };
        let out = w.outcome(DocumentUpdate::Updated(local(1, "x", failed)));
        assert!(
            matches!(out, Some(Err(RoamError::Forbidden { .. }))),
            "{out:?}"
        );
    }
}
