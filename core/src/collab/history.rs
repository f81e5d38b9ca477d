//! A document's undo history, bounded in steps and in the size of a step.
//!
//! yrs's `UndoManager` keeps every step for as long as it lives, and keeps the content of every
//! item a step deleted (so undo can bring it back): in a document typed for hours, the deleted
//! text stays in memory and in the item list every index-based edit walks. Editors bound their
//! history instead; so does this: a step ends after [`MAX_STEP_EDITS`] edits even when they come
//! without a pause, and only the last [`MAX_UNDO_STEPS`] steps (at least; at most twice as many
//! between trims) can be undone. When the history is trimmed, the content the dropped steps
//! kept is released and garbage-collected, as if it had never been kept.

use std::collections::HashSet;

use yrs::undo::{Options, StackItem, UndoManager};
use yrs::{Doc, IdSet, Origin, Transact};

use super::{Root, CAPTURE_MILLIS, LOCAL, REMOTE};

/// The undo steps kept at least (the oldest go once there are twice as many).
pub const MAX_UNDO_STEPS: usize = 100;

/// The most edits one undo step holds: typing without a pause still undoes in pieces.
pub const MAX_STEP_EDITS: usize = 100;

pub(crate) struct History {
    undo: UndoManager<()>,
    /// The values in the undo scope, to give a rebuilt manager the same scope.
    scope: Vec<Root>,
    /// Undo steps after the last edit, and edits in the newest step.
    steps: usize,
    step_edits: usize,
}

fn options(undo: Vec<StackItem<()>>, redo: Vec<StackItem<()>>) -> Options<()> {
    let mut tracked = HashSet::new();
    tracked.insert(Origin::from(LOCAL));
    Options {
        capture_timeout_millis: CAPTURE_MILLIS,
        tracked_origins: tracked,
        init_undo_stack: undo,
        init_redo_stack: redo,
        ..Default::default()
    }
}

fn expand(undo: &mut UndoManager<()>, doc: &Doc, root: &Root) {
    match root {
        Root::Text(t) => undo.expand_scope(doc, t),
        Root::List(l) => undo.expand_scope(doc, l),
        Root::Map(m) => undo.expand_scope(doc, m),
    }
}

impl History {
    pub(crate) fn new() -> History {
        History {
            undo: UndoManager::with_options(options(Vec::new(), Vec::new())),
            scope: Vec::new(),
            steps: 0,
            step_edits: 0,
        }
    }

    /// Puts `root` in the undo scope.
    pub(crate) fn expand_scope(&mut self, doc: &Doc, root: &Root) {
        expand(&mut self.undo, doc, root);
        self.scope.push(root.clone());
    }

    pub(crate) fn undo(&mut self) -> bool {
        self.undo.undo_blocking()
    }

    pub(crate) fn redo(&mut self) -> bool {
        self.undo.redo_blocking()
    }

    pub(crate) fn can_undo(&self) -> bool {
        self.undo.can_undo()
    }

    pub(crate) fn can_redo(&self) -> bool {
        self.undo.can_redo()
    }

    /// Ends the current step: the next edit starts a new one.
    pub(crate) fn stop_capturing(&mut self) {
        self.undo.reset();
        self.step_edits = 0;
    }

    /// Called after every local edit, undo and redo (no transaction open): ends a step that
    /// reached [`MAX_STEP_EDITS`], and trims the history past twice [`MAX_UNDO_STEPS`].
    pub(crate) fn after_edit(&mut self, doc: &Doc) {
        let steps = self.undo.undo_stack().len();
        if steps == self.steps {
            self.step_edits += 1;
            if self.step_edits >= MAX_STEP_EDITS {
                self.stop_capturing();
            }
        } else {
            self.steps = steps;
            self.step_edits = 1;
        }
        if steps > 2 * MAX_UNDO_STEPS {
            self.trim(doc);
        }
    }

    /// Keeps the newest [`MAX_UNDO_STEPS`] steps; releases and collects what the others kept.
    fn trim(&mut self, doc: &Doc) {
        let stack = self.undo.undo_stack();
        let split = stack.len() - MAX_UNDO_STEPS;
        let dropped = stack[..split].to_vec();
        let kept = stack[split..].to_vec();
        let redo = self.undo.redo_stack().to_vec();
        let mut released = IdSet::new();
        for step in &dropped {
            released.merge_with(step.deletions().clone());
        }
        // A manager holding only the dropped steps, cleared: yrs clears the "keep" mark of the
        // items they deleted (they may be collected again).
        let mut old = UndoManager::with_options(options(dropped, Vec::new()));
        for root in &self.scope {
            expand(&mut old, doc, root);
        }
        old.clear_undo();
        drop(old);
        let mut undo = UndoManager::with_options(options(kept, redo));
        for root in &self.scope {
            expand(&mut undo, doc, root);
        }
        self.undo = undo;
        self.steps = self.undo.undo_stack().len();
        self.step_edits = 0;
        // Not a local edit: nothing is stored or sent (collection changes no state).
        let mut txn = doc.transact_mut_with(REMOTE);
        txn.gc(Some(&released));
    }
}
