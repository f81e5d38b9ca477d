//! Collaborative documents across the FFI: [`RoamCollabDoc`] (from `RoamClient.open_collab`),
//! its records, and the [`CollabListener`] / [`AwarenessListener`] callbacks.
//!
//! Every offset and length is in UTF-16 code units (Swift `NSString`/`UITextView`, Kotlin
//! `String`). Values cross as JSON text: the app encodes what it stores and decodes what it
//! reads (a value that is not JSON is refused with `InvalidInput`). Edits are synchronous and
//! return once applied in memory (storing and sending happen in the background); `flush`
//! waits for the store. The listeners fit an `AsyncStream` (Swift) or a `callbackFlow`
//! (Kotlin): subscribe in the stream's builder, cancel the handle in its termination.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::client::RoamClient;
use crate::error::RoamError;
use crate::listeners::{Relay, SubscriptionHandle};

/// One piece of a text change, applied from the start of the text.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum TextDelta {
    /// Insert `text` here; `attributes_json` (a JSON object) formats it when set.
    Insert {
        text: String,
        attributes_json: Option<String>,
    },
    /// Delete `len` units here.
    Delete { len: u32 },
    /// Keep `len` units; `attributes_json` reformats them when set (`null` values remove).
    Retain {
        len: u32,
        attributes_json: Option<String>,
    },
}

impl From<roam_core::TextDelta> for TextDelta {
    fn from(d: roam_core::TextDelta) -> Self {
        match d {
            roam_core::TextDelta::Insert { text, attributes } => TextDelta::Insert {
                text,
                attributes_json: attributes,
            },
            roam_core::TextDelta::Delete { len } => TextDelta::Delete { len },
            roam_core::TextDelta::Retain { len, attributes } => TextDelta::Retain {
                len,
                attributes_json: attributes,
            },
        }
    }
}

/// One piece of a list change, applied from the start of the list.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ListDelta {
    /// These values (JSON text each) inserted here.
    Insert {
        values_json: Vec<String>,
    },
    Delete {
        len: u32,
    },
    Retain {
        len: u32,
    },
}

impl From<roam_core::ListDelta> for ListDelta {
    fn from(d: roam_core::ListDelta) -> Self {
        match d {
            roam_core::ListDelta::Insert { values } => ListDelta::Insert {
                values_json: values,
            },
            roam_core::ListDelta::Delete { len } => ListDelta::Delete { len },
            roam_core::ListDelta::Retain { len } => ListDelta::Retain { len },
        }
    }
}

/// A map key that changed: its new value (JSON text), or none when removed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MapKeyChange {
    pub key: String,
    pub value_json: Option<String>,
}

/// What changed in one value at the document's root.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum CollabValueChange {
    // Not `Text`/`List`/`Map`: Kotlin would take a variant named `List` or `Map` for its own
    // collections inside the generated sealed class.
    TextChange {
        name: String,
        delta: Vec<TextDelta>,
    },
    ListChange {
        name: String,
        delta: Vec<ListDelta>,
    },
    MapChange {
        name: String,
        keys: Vec<MapKeyChange>,
    },
}

impl From<roam_core::CollabValueChange> for CollabValueChange {
    fn from(c: roam_core::CollabValueChange) -> Self {
        match c {
            roam_core::CollabValueChange::Text { name, delta } => CollabValueChange::TextChange {
                name,
                delta: delta.into_iter().map(TextDelta::from).collect(),
            },
            roam_core::CollabValueChange::List { name, delta } => CollabValueChange::ListChange {
                name,
                delta: delta.into_iter().map(ListDelta::from).collect(),
            },
            roam_core::CollabValueChange::Map { name, keys } => CollabValueChange::MapChange {
                name,
                keys: keys
                    .into_iter()
                    .map(|k| MapKeyChange {
                        key: k.key,
                        value_json: k.value,
                    })
                    .collect(),
            },
        }
    }
}

/// The changes of one transaction: `local` for this device's own edits (and undo/redo).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CollabChange {
    pub room: String,
    pub doc: String,
    pub local: bool,
    pub changes: Vec<CollabValueChange>,
}

impl From<roam_core::CollabChange> for CollabChange {
    fn from(c: roam_core::CollabChange) -> Self {
        CollabChange {
            room: c.room,
            doc: c.doc,
            local: c.local,
            changes: c.changes.into_iter().map(CollabValueChange::from).collect(),
        }
    }
}

/// Edits the server refused for good (they stay local; the outbox entry `entry` waits for
/// `retry_outbox_entry`/`discard_outbox_entry`), or a refused follow (`entry` empty).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CollabError {
    pub room: String,
    pub doc: String,
    pub entry: String,
    pub code: String,
    pub message: String,
}

impl From<roam_core::CollabError> for CollabError {
    fn from(e: roam_core::CollabError) -> Self {
        CollabError {
            room: e.room,
            doc: e.doc,
            entry: e.entry,
            code: e.code,
            message: e.message,
        }
    }
}

/// A selection in a text: where it started and where the cursor is (equal for a caret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct TextSelection {
    pub anchor: u32,
    pub head: u32,
}

/// Someone else present in the document (one per session).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CollabPeer {
    pub user: String,
    pub session: String,
    /// The JSON state they set (name, colour, …).
    pub state_json: Option<String>,
    /// The text their selection is in, and where it is in the local document now.
    pub text: Option<String>,
    pub selection: Option<TextSelection>,
}

impl From<roam_core::CollabPeer> for CollabPeer {
    fn from(p: roam_core::CollabPeer) -> Self {
        CollabPeer {
            user: p.user,
            session: p.session,
            state_json: p.state,
            text: p.text,
            selection: p.selection.map(|s| TextSelection {
                anchor: s.anchor,
                head: s.head,
            }),
        }
    }
}

/// Changes of one collaborative document, and refusals of its edits.
#[uniffi::export(with_foreign)]
pub trait CollabListener: Send + Sync {
    fn on_change(&self, change: CollabChange);
    fn on_error(&self, error: CollabError);
}

/// The people present in one collaborative document: the whole list, the current one first.
#[uniffi::export(with_foreign)]
pub trait AwarenessListener: Send + Sync {
    fn on_peers(&self, peers: Vec<CollabPeer>);
}

impl roam_core::CollabListener for Relay<dyn CollabListener> {
    fn on_change(&self, change: roam_core::CollabChange) {
        if self.live() {
            self.listener.on_change(change.into());
        }
    }
    fn on_error(&self, error: roam_core::CollabError) {
        if self.live() {
            self.listener.on_error(error.into());
        }
    }
}

impl roam_core::AwarenessListener for Relay<dyn AwarenessListener> {
    fn on_peers(&self, peers: Vec<roam_core::CollabPeer>) {
        if self.live() {
            self.listener
                .on_peers(peers.into_iter().map(CollabPeer::from).collect());
        }
    }
}

fn json(what: &str, text: &str) -> Result<serde_json::Value, RoamError> {
    serde_json::from_str(text).map_err(|e| RoamError::InvalidInput {
        reason: format!("{what} is not JSON: {e}"),
    })
}

#[uniffi::export]
impl RoamClient {
    /// Opens the collaborative document `doc` of `room`: usable offline at once, followed on
    /// the server while connected. A second open returns the same live document.
    pub fn open_collab(&self, room: String, doc: String) -> Result<Arc<RoamCollabDoc>, RoamError> {
        let inner = self.call(|c| c.open_collab(&room, &doc))?;
        Ok(Arc::new(RoamCollabDoc {
            _client: self.core()?,
            inner,
        }))
    }
}

/// A live collaborative document (see `roam_core::collab`).
#[derive(uniffi::Object)]
pub struct RoamCollabDoc {
    /// Keeps the client (and its store) open while the document is held.
    _client: roam_core::Client,
    inner: roam_core::CollabDoc,
}

impl std::fmt::Debug for RoamCollabDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoamCollabDoc")
            .field("doc", &self.inner)
            .finish()
    }
}

fn core<T>(r: roam_core::Result<T>) -> Result<T, RoamError> {
    r.map_err(RoamError::from)
}

#[uniffi::export]
impl RoamCollabDoc {
    pub fn room(&self) -> String {
        self.inner.room().to_owned()
    }

    pub fn doc(&self) -> String {
        self.inner.doc().to_owned()
    }

    /// Inserts `text` at `index` of the text `name`, formatted by `attributes_json` if given.
    pub fn insert_text(
        &self,
        name: String,
        index: u32,
        text: String,
        attributes_json: Option<String>,
    ) -> Result<(), RoamError> {
        let attrs = attributes_json
            .as_deref()
            .map(|a| json("attributes", a))
            .transpose()?;
        core(self.inner.insert_text(&name, index, &text, attrs))
    }

    pub fn delete_text(&self, name: String, index: u32, len: u32) -> Result<(), RoamError> {
        core(self.inner.delete_text(&name, index, len))
    }

    /// Formats a range with `attributes_json` (a JSON object; `null` values remove).
    pub fn format_text(
        &self,
        name: String,
        index: u32,
        len: u32,
        attributes_json: String,
    ) -> Result<(), RoamError> {
        let attrs = json("attributes", &attributes_json)?;
        core(self.inner.format_text(&name, index, len, attrs))
    }

    pub fn text(&self, name: String) -> Result<String, RoamError> {
        core(self.inner.text(&name))
    }

    pub fn text_len(&self, name: String) -> Result<u32, RoamError> {
        core(self.inner.text_len(&name))
    }

    /// The text with its formatting, as inserts (an editor's initial content).
    pub fn text_content(&self, name: String) -> Result<Vec<TextDelta>, RoamError> {
        Ok(core(self.inner.text_content(&name))?
            .into_iter()
            .map(TextDelta::from)
            .collect())
    }

    pub fn list_insert(
        &self,
        name: String,
        index: u32,
        values_json: Vec<String>,
    ) -> Result<(), RoamError> {
        let values = values_json
            .iter()
            .map(|v| json("value", v))
            .collect::<Result<Vec<_>, _>>()?;
        core(self.inner.list_insert(&name, index, values))
    }

    pub fn list_push(&self, name: String, value_json: String) -> Result<(), RoamError> {
        core(self.inner.list_push(&name, json("value", &value_json)?))
    }

    pub fn list_delete(&self, name: String, index: u32, len: u32) -> Result<(), RoamError> {
        core(self.inner.list_delete(&name, index, len))
    }

    /// The list's items as JSON text.
    pub fn list(&self, name: String) -> Result<Vec<String>, RoamError> {
        core(self.inner.list(&name))
    }

    pub fn map_set(&self, name: String, key: String, value_json: String) -> Result<(), RoamError> {
        core(self.inner.map_set(&name, &key, json("value", &value_json)?))
    }

    pub fn map_delete(&self, name: String, key: String) -> Result<(), RoamError> {
        core(self.inner.map_delete(&name, &key))
    }

    pub fn map_get(&self, name: String, key: String) -> Result<Option<String>, RoamError> {
        core(self.inner.map_get(&name, &key))
    }

    /// The map's entries, values as JSON text.
    pub fn map(&self, name: String) -> Result<HashMap<String, String>, RoamError> {
        Ok(core(self.inner.map(&name))?.into_iter().collect())
    }

    /// Undoes this device's last step (never other people's edits). False: nothing to undo.
    pub fn undo(&self) -> Result<bool, RoamError> {
        core(self.inner.undo())
    }

    pub fn redo(&self) -> Result<bool, RoamError> {
        core(self.inner.redo())
    }

    pub fn can_undo(&self) -> bool {
        self.inner.can_undo()
    }

    pub fn can_redo(&self) -> bool {
        self.inner.can_redo()
    }

    /// Ends the current undo step now.
    pub fn stop_capturing(&self) {
        self.inner.stop_capturing()
    }

    /// Every change from now on, local and remote, as deltas, of the values this device has
    /// used (read or edited: a root value gets its kind — text, list, map — from its first use,
    /// so read what a view shows before subscribing); and refusals.
    pub fn subscribe(
        &self,
        listener: Arc<dyn CollabListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        let open = Arc::new(AtomicBool::new(true));
        let sub = self.inner.subscribe(Relay::new(listener, &open));
        Ok(SubscriptionHandle::new(open, sub))
    }

    /// The peers present: the current list first, then each change.
    pub fn subscribe_peers(
        &self,
        listener: Arc<dyn AwarenessListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        let open = Arc::new(AtomicBool::new(true));
        let sub = self.inner.subscribe_peers(Relay::new(listener, &open));
        Ok(SubscriptionHandle::new(open, sub))
    }

    pub fn peers(&self) -> Vec<CollabPeer> {
        self.inner
            .peers()
            .into_iter()
            .map(CollabPeer::from)
            .collect()
    }

    /// This device's awareness state (small JSON: name, colour…), or none to clear it.
    pub fn set_local_state(&self, state_json: Option<String>) -> Result<(), RoamError> {
        let state = state_json
            .as_deref()
            .map(|s| json("state", s))
            .transpose()?;
        core(self.inner.set_local_state(state))
    }

    /// This device's selection in the text `name` (`anchor == head`: a caret).
    pub fn set_selection(&self, name: String, anchor: u32, head: u32) -> Result<(), RoamError> {
        core(self.inner.set_selection(&name, anchor, head))
    }

    pub fn clear_selection(&self) -> Result<(), RoamError> {
        core(self.inner.clear_selection())
    }

    /// Waits until every edit so far is stored (blocks: call it off the main thread).
    pub fn flush(&self) -> Result<(), RoamError> {
        core(self.inner.flush())
    }

    /// Stores what is pending, clears this device's awareness and stops following; every
    /// handle of the document is closed. (Not `close`: Kotlin's generated objects have a
    /// `close()` of their own, which frees the handle.)
    pub fn close_document(&self) -> Result<(), RoamError> {
        core(self.inner.close())
    }
}
