//! [`RoomList`]: the account's rooms as a room-list screen shows them.
//!
//! Each entry is a [`RoomSummary`]: the room, its last message, and how many messages (and
//! mentions of the account's user) arrived after the account's read marker. The list holds the
//! rooms the account is a member of (or asked to join), newest activity first. Its listener
//! receives the whole list first (one [`RoomListDiff::Reset`]) and then the diffs that turn the
//! previous list into the new one (insert, set or remove at an index), like a
//! [`Timeline`](crate::Timeline).
//!
//! How it stays right: the list is registered with the listener dispatcher, so it sees changes
//! in commit order on the dispatcher thread. For the rooms that the events of one transaction
//! touch (a message, an edit, a send state, the room's data, its read marker), it reads their
//! summaries again from the store, each room in one read transaction (one snapshot), puts them
//! in place, sorts, and compares with the list it last delivered, by room name.
//!
//! **Counts.** A room's unread count is the number of messages above its read marker that are
//! not deleted and were not sent by the account's user; its mention count is how many of those
//! mention the user (`@user`, by the protocol's one rule, [`roam_proto::mentions`]). They are
//! counted from the store, not kept as counters, so they cannot drift: two devices of one
//! account that hold the same messages and the same marker (the server shares markers between
//! devices) show the same counts. [`Client::mark_room_read`](crate::Client::mark_room_read)
//! moves the marker.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use rusqlite::{params, Connection};

use crate::context::Context;
use crate::db::reads;
use crate::diff::{steps, Step};
use crate::error::Result;
use crate::listeners::{RoomListSink, Subscription, Target};
use crate::model::{Message, RoomInfo};

/// A room as the room list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub room: RoomInfo,
    /// The newest message that is not deleted: the newest local one not yet confirmed, else
    /// the confirmed one with the highest seq. `None` when the store holds none.
    pub last_message: Option<Message>,
    /// Messages after the read marker, not deleted, not sent by the account's user.
    pub unread_count: u64,
    /// Those of them that mention the account's user.
    pub mention_count: u64,
    /// The read marker: every message with a seq up to this is read (0: none).
    pub read_seq: u64,
    /// What the list is sorted by (newest first): the last message's time, else the room's
    /// creation time. Milliseconds since the Unix epoch.
    pub latest_activity: i64,
}

/// One change of a room list. Indices refer to the list as it is when the diff is applied
/// (after the diffs before it in the same list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomListDiff {
    /// The whole list: replace everything held with `rooms`.
    Reset { rooms: Vec<RoomSummary> },
    /// A room appears at `index`.
    Insert { index: u32, room: RoomSummary },
    /// The room at `index` changed (a message, its counts, its data).
    Set { index: u32, room: RoomSummary },
    /// The room at `index` leaves the list (left, deleted, or moving: an insert follows).
    Remove { index: u32 },
}

/// Receives a room list's diffs: first one `Reset` with the current list, then the changes.
pub trait RoomListListener: Send + Sync {
    fn on_diffs(&self, diffs: Vec<RoomListDiff>);
}

struct Shared {
    ctx: Weak<Context>,
    listener: Arc<dyn RoomListListener>,
    /// The list as last delivered; `None` before the first delivery.
    items: Mutex<Option<Vec<RoomSummary>>>,
}

/// A live list of the account's rooms. Diffs stop when it is closed or dropped.
pub struct RoomList {
    shared: Arc<Shared>,
    subscription: Subscription,
}

impl std::fmt::Debug for RoomList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomList").finish_non_exhaustive()
    }
}

impl RoomList {
    pub(crate) fn open(ctx: &Arc<Context>, listener: Arc<dyn RoomListListener>) -> RoomList {
        let shared = Arc::new(Shared {
            ctx: Arc::downgrade(ctx),
            listener,
            items: Mutex::new(None),
        });
        let subscription = ctx
            .dispatcher
            .register(Target::RoomList(shared.clone()), Vec::new());
        RoomList {
            shared,
            subscription,
        }
    }

    /// The list as last delivered to the listener (empty before the first delivery).
    pub fn items(&self) -> Vec<RoomSummary> {
        self.shared.items.lock().clone().unwrap_or_default()
    }

    /// Stops the diffs. When this returns no callback is running and none will be made (unless
    /// called from inside the listener).
    pub fn close(&self) {
        self.subscription.close();
    }
}

impl RoomListSink for Shared {
    fn refresh(&self, rooms: Option<&HashSet<String>>) {
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        let mut held = self.items.lock();
        let fresh = held.is_none() || rooms.is_none();
        let read = ctx.db.read(|c| match (&*held, rooms) {
            (Some(old), Some(touched)) => {
                let mut next: Vec<RoomSummary> = old
                    .iter()
                    .filter(|s| !touched.contains(&s.room.name))
                    .cloned()
                    .collect();
                for name in touched {
                    if let Some(s) = summary(c, &ctx.me, name)? {
                        next.push(s);
                    }
                }
                Ok(next)
            }
            _ => all(c, &ctx.me),
        });
        let mut next = match read {
            Ok(next) => next,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the room list");
                return;
            }
        };
        sort(&mut next);
        let diffs = match &*held {
            Some(old) if !fresh => steps(old, &next, |s| s.room.name.as_str())
                .into_iter()
                .map(|s| match s {
                    Step::Insert(index, room) => RoomListDiff::Insert { index, room },
                    Step::Set(index, room) => RoomListDiff::Set { index, room },
                    Step::Remove(index) => RoomListDiff::Remove { index },
                })
                .collect(),
            _ => vec![RoomListDiff::Reset {
                rooms: next.clone(),
            }],
        };
        *held = Some(next);
        drop(held);
        if !diffs.is_empty() {
            self.listener.on_diffs(diffs);
        }
    }
}

/// Newest activity first; rooms with the same instant by name.
fn sort(list: &mut [RoomSummary]) {
    list.sort_by(|a, b| {
        b.latest_activity
            .cmp(&a.latest_activity)
            .then_with(|| a.room.name.cmp(&b.room.name))
    });
}

/// Every joined room's summary.
fn all(c: &Connection, me: &str) -> Result<Vec<RoomSummary>> {
    let names: Vec<String> = c
        .prepare_cached("SELECT name FROM rooms WHERE joined = 1")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        if let Some(s) = summary(c, me, name)? {
            out.push(s);
        }
    }
    Ok(out)
}

/// The summary of one room, read in one transaction; `None` unless the account is a member.
pub(crate) fn summary(c: &Connection, me: &str, name: &str) -> Result<Option<RoomSummary>> {
    let tx = c.unchecked_transaction()?;
    let Some(room) = reads::room(&tx, name)?.filter(|r| r.joined) else {
        return Ok(None);
    };
    let read_seq = reads::read_marker(&tx, name)?;
    let last_message = last_message(&tx, name)?;
    let marker = i64::try_from(read_seq).unwrap_or(i64::MAX);
    let unread_count: u64 = tx
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE room = ?1 AND seq IS NOT NULL AND seq > ?2 \
             AND sender <> ?3 AND deleted = 0",
        )?
        .query_row(params![name, marker, me], |r| r.get(0))?;
    let mut mention_count = 0u64;
    if unread_count > 0 {
        // SQL narrows to bodies containing "@me"; the protocol's rule decides.
        let mut stmt = tx.prepare_cached(
            "SELECT body FROM messages WHERE room = ?1 AND seq IS NOT NULL AND seq > ?2 \
             AND sender <> ?3 AND deleted = 0 AND instr(body, ?4) > 0",
        )?;
        let mut rows = stmt.query(params![name, marker, me, format!("@{me}")])?;
        while let Some(row) = rows.next()? {
            let body: String = row.get(0)?;
            if roam_proto::mentions_user(&body, me) {
                mention_count += 1;
            }
        }
    }
    tx.finish()?;
    let latest_activity = last_message
        .as_ref()
        .map_or(room.created_at, |m| m.created_at);
    Ok(Some(RoomSummary {
        room,
        last_message,
        unread_count,
        mention_count,
        read_seq,
        latest_activity,
    }))
}

/// The newest message of a room that is not deleted (unconfirmed ones are the newest).
fn last_message(c: &Connection, room: &str) -> Result<Option<Message>> {
    if let Some(m) = reads::newest_unconfirmed(c, room)? {
        return Ok(Some(m));
    }
    reads::newest_confirmed(c, room)
}

/// The summary of one room right now (for `Client::room_summary`).
pub(crate) fn read_summary(ctx: &Context, room: &str) -> Result<Option<RoomSummary>> {
    ctx.db.read(|c| summary(c, &ctx.me, room))
}

/// Applies diffs to a list, as an app would (used by tests and documentation).
pub fn apply_room_list_diffs(list: &mut Vec<RoomSummary>, diffs: Vec<RoomListDiff>) {
    for d in diffs {
        let step = match d {
            RoomListDiff::Reset { rooms } => {
                *list = rooms;
                continue;
            }
            RoomListDiff::Insert { index, room } => Step::Insert(index, room),
            RoomListDiff::Set { index, room } => Step::Set(index, room),
            RoomListDiff::Remove { index } => Step::Remove(index),
        };
        crate::diff::apply(list, [step]);
    }
}
