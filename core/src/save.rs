//! `Client::save_document`: a document edit as one async call that ends with the server's
//! answer.
//!
//! Every edit is queued (`put_document`), and how it ended reaches the document listeners: the
//! edit's local copy turns `Sent`, or a `Conflict` arrives with the server's version, or it
//! turns `Failed`. An app often wants that as the result of one `await`. A [`EditWaiter`] is a
//! document listener that recognises the outcome of one edit; it is subscribed before the edit
//! is queued, so nothing is missed.

use parking_lot::Mutex;
use roam_proto::ErrorCode;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::listeners::DocumentListener;
use crate::model::{Document, DocumentUpdate, SendState};

/// A document listener that waits for the outcome of one edit.
pub(crate) struct EditWaiter {
    room: String,
    doc: String,
    me: String,
    /// The version the edit makes.
    version: u64,
    content: String,
    tx: Mutex<Option<oneshot::Sender<Result<Document>>>>,
}

impl EditWaiter {
    /// Waits for the edit of `room`/`doc` by `me` on `base_version` with `content`.
    pub(crate) fn new(
        room: &str,
        doc: &str,
        me: &str,
        base_version: u64,
        content: &str,
    ) -> (Self, oneshot::Receiver<Result<Document>>) {
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

    fn ours(&self, d: &Document) -> bool {
        d.room == self.room && d.doc == self.doc
    }

    /// The outcome this update means for the awaited edit, if any.
    fn outcome(&self, update: DocumentUpdate) -> Option<Result<Document>> {
        match update {
            DocumentUpdate::Conflict { local, current } if self.ours(&local) => {
                Some(Err(Error::VersionConflict {
                    current: Box::new(current),
                }))
            }
            DocumentUpdate::Updated(d) if self.ours(&d) => match &d.send_state {
                SendState::Sent
                    if d.version == self.version
                        && d.updated_by == self.me
                        && d.content == self.content =>
                {
                    Some(Ok(d))
                }
                SendState::Failed { code, message } if d.version == self.version => {
                    Some(Err(refusal(code, message)))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// The error of an edit the server refused for good, from its stored code and message.
fn refusal(code: &str, message: &str) -> Error {
    match serde_json::from_value::<ErrorCode>(serde_json::Value::String(code.into())) {
        Ok(code) => Error::Server {
            code,
            message: message.to_owned(),
            retry_after_ms: None,
        },
        Err(_) => Error::InvalidState {
            reason: message.to_owned(),
        },
    }
}

impl DocumentListener for EditWaiter {
    fn on_document_update(&self, update: DocumentUpdate) {
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
    use crate::model::DocumentVersion;

    fn local(version: u64, content: &str, state: SendState) -> Document {
        Document {
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
        let current = DocumentVersion {
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
        assert!(
            matches!(&out, Some(Err(Error::VersionConflict { current })) if current.version == 3 && current.content == "v3"),
            "{out:?}"
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
            matches!(
                out,
                Some(Err(Error::Server {
                    code: ErrorCode::Forbidden,
                    ..
                }))
            ),
            "{out:?}"
        );
    }
}
