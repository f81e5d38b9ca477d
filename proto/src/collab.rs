//! Collaborative documents: CRDT documents (Yjs's format) that several people edit at once,
//! offline too, and that always merge (docs/protocol.md §12).
//!
//! A collaborative document belongs to a room and is named like a versioned document, in a
//! namespace of its own (a versioned and a collaborative document may share a name). Its content
//! travels as Yjs binary: *updates* (lib0 v1 encoding, what `Y.encodeStateAsUpdate` and
//! `Y.applyUpdate` use) and *state vectors* (`Y.encodeStateVector`), each carried in JSON as
//! standard base64 with padding. This crate only checks their size and base64; the server
//! decodes and checks their content.
//!
//! The exchange:
//! - `collab_sync` (client frame, answered by an `ack` holding a [`CollabSync`]): the client
//!   sends its state vector; the answer holds exactly what it lacks and the document's `seq`.
//!   From then on the socket *follows* the document: every update applied after that `seq`
//!   reaches it as a `collab_update` frame, in `seq` order, and awareness frames of the
//!   document's other followers too.
//! - `collab.update` (a mutation, so it goes through the outbox with an idempotency key and
//!   `after`): one update, merged by the server, stored and fanned out. Result: [`CollabUpdated`].
//! - `collab_leave` (client frame, answered `{}`): stop following.
//! - `awareness` (client frame, not answered): the sender's cursor and selection, relayed to the
//!   document's other followers as an `awareness` frame; `state: null` (or leaving, or the socket
//!   closing) removes it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{self as v, Invalid};

/// The largest update a client may send in one `collab.update`, in bytes once decoded.
pub const MAX_COLLAB_UPDATE_BYTES: usize = 256 * 1024;

/// The largest a collaborative document may grow: its whole state encoded as one v1 update
/// (what a client with nothing receives), in bytes. Sized so that the `ack` of a `collab_sync`
/// carrying all of it fits in one frame (`MAX_FRAME_BYTES`) once in base64.
pub const MAX_COLLAB_DOC_BYTES: usize = 512 * 1024;

/// The largest state vector a client may send, in bytes once decoded.
pub const MAX_STATE_VECTOR_BYTES: usize = 64 * 1024;

/// The largest awareness state (its JSON text), in bytes.
pub const MAX_AWARENESS_BYTES: usize = 2 * 1024;

/// How many collaborative documents one socket may follow at once.
pub const MAX_FOLLOWED_DOCS: usize = 64;

/// The answer to `collab_sync`: what the client lacks, and where the document stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollabSync {
    pub room: String,
    pub doc: String,
    /// The document's sequence number: how many updates the server has applied to it (0: the
    /// document is empty or does not exist yet). `collab_update` frames after this answer
    /// carry `seq` + 1, + 2, … with no gaps.
    pub seq: u64,
    /// Base64 of a v1 update holding everything the server has that the client's state vector
    /// does not cover (an empty update, `AAA=`, when the client has everything).
    pub update: String,
    /// Base64 of the server's state vector, so the client can send what the server lacks.
    pub state_vector: String,
}

/// The result of a `collab.update` mutation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollabUpdated {
    pub room: String,
    pub doc: String,
    /// The document's sequence number once this update was applied (an update that added
    /// nothing new, such as a replay of one already merged, still takes a number).
    pub seq: u64,
    /// The document's size after the update (its whole state encoded as one v1 update, in
    /// bytes) as far as the server knows it without encoding the document per keystroke: an
    /// upper bound, measured exactly once it comes near [`MAX_COLLAB_DOC_BYTES`] (so it never
    /// passes that limit).
    pub size: u64,
}

/// One update applied by the server, as fanned out to the document's followers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollabUpdate {
    pub room: String,
    pub doc: String,
    /// The document's sequence number once this update was applied: one more than the
    /// previous frame's (or the `collab_sync` answer's). A gap means frames were lost: send
    /// `collab_sync` again with the local state vector.
    pub seq: u64,
    /// Who sent the update.
    pub actor: String,
    /// Base64 of the v1 update.
    pub update: String,
}

/// Someone's cursor and selection in a document (or their leaving it: `state` absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwarenessUpdate {
    pub room: String,
    pub doc: String,
    pub user: String,
    /// The sending socket's session (from its `hello`): a user with two devices has two.
    pub session: String,
    /// What the client put there (cursor, selection, name, colour), at most
    /// [`MAX_AWARENESS_BYTES`] of JSON; absent when the session left the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

/// Decodes standard base64 (with padding) of at most `max` bytes, refusing longer text before
/// decoding it.
pub fn decode_base64(what: &str, s: &str, max: usize) -> Result<Vec<u8>, Invalid> {
    use base64::Engine as _;
    if s.len() > max.div_ceil(3) * 4 {
        return Err(Invalid(format!("{what} must be at most {max} bytes")));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Invalid(format!("{what} must be standard base64 with padding")))?;
    if bytes.len() > max {
        return Err(Invalid(format!("{what} must be at most {max} bytes")));
    }
    Ok(bytes)
}

/// Encodes bytes as standard base64 with padding, as every collab field carries them.
pub fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A `collab.update`'s arguments: the document's name and an update of 1 to
/// [`MAX_COLLAB_UPDATE_BYTES`] bytes.
pub fn update(doc: &str, update: &str) -> Result<(), Invalid> {
    v::document_name(doc)?;
    let bytes = decode_base64("update", update, MAX_COLLAB_UPDATE_BYTES)?;
    if bytes.is_empty() {
        return Err(Invalid::new("update must not be empty"));
    }
    Ok(())
}

/// A `collab_sync`'s arguments: room and document names and a state vector of at most
/// [`MAX_STATE_VECTOR_BYTES`] (empty: the client has nothing).
pub fn sync(room: &str, doc: &str, state_vector: &str) -> Result<(), Invalid> {
    v::room_name(room)?;
    v::document_name(doc)?;
    decode_base64("state_vector", state_vector, MAX_STATE_VECTOR_BYTES).map(|_| ())
}

/// An awareness state: at most [`MAX_AWARENESS_BYTES`] once serialized.
pub fn awareness(room: &str, doc: &str, state: Option<&Value>) -> Result<(), Invalid> {
    v::room_name(room)?;
    v::document_name(doc)?;
    if let Some(state) = state {
        let len = serde_json::to_string(state)
            .map_err(|e| Invalid(format!("awareness state: {e}")))?
            .len();
        if len > MAX_AWARENESS_BYTES {
            return Err(Invalid(format!(
                "awareness state must be at most {MAX_AWARENESS_BYTES} bytes of JSON"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_bounded_before_decoding() {
        assert!(decode_base64("u", &"A".repeat(8), 3).is_err());
        assert_eq!(decode_base64("u", "AAA=", 3).expect("ok"), vec![0, 0]);
        assert!(decode_base64("u", "not base64!", 100).is_err());
    }

    #[test]
    fn updates_are_checked() {
        assert!(update("notes", "").is_err(), "empty");
        assert!(update("bad name!", "AAA=").is_err());
        assert!(update("notes", "AAA=").is_ok());
        let big = encode_base64(&vec![1u8; MAX_COLLAB_UPDATE_BYTES + 1]);
        assert!(update("notes", &big).is_err());
    }

    #[test]
    fn awareness_is_bounded() {
        let big = Value::String("x".repeat(MAX_AWARENESS_BYTES));
        assert!(awareness("r", "d", Some(&big)).is_err());
        assert!(awareness("r", "d", None).is_ok());
        assert!(awareness("r", "d", Some(&serde_json::json!({"anchor": 3}))).is_ok());
    }
}
