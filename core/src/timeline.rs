//! [`Timeline`]: the live, ordered window of one room's messages that a chat screen shows.
//!
//! A timeline holds a *window*: every message of the room from a floor sequence number up, and
//! after them the local messages not yet confirmed, in the order they were written (the order of
//! [`Client::messages`](crate::Client::messages)). Its listener receives the window first (one
//! [`TimelineDiff::Reset`]) and then, whenever something in the room changes, the diffs that
//! turn the previous window into the new one: insert, set or remove at an index. Applying the
//! diffs in order to a list reproduces the window exactly.
//!
//! How it stays right: the timeline is registered with the listener dispatcher like any other
//! listener, so it reacts to changes in commit order on the dispatcher thread. It does not try to
//! translate each room update into a diff; it reads the window again from the store (one SQL
//! statement, so one consistent snapshot) and compares it with the window it last delivered, by
//! local id. The events of one transaction (a catch-up batch, say) cause one read and one list
//! of diffs. A local echo sits at the end while it is pending; when the server confirms it, it
//! gets its sequence number and moves to its place (a remove and an insert), and an edit, a
//! delete or a send-state change is a set at its index. A room `Reset` starts a fresh window.
//!
//! [`Timeline::paginate_backwards`] lowers the floor: first to older messages already in the
//! store, then, when the store runs out, to a page fetched from the server. It reports whether
//! the start of the room was reached (the server had nothing older).

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;

use crate::context::Context;
use crate::db::{reads, writes};
use crate::diff::{steps, Step};
use crate::error::{Error, Result};
use crate::listeners::{AppEvent, Subscription, Target, TimelineSink};
use crate::model::{Message, RoomUpdate};

/// One change of a timeline's window. Indices refer to the window as it is when the diff is
/// applied (after the diffs before it in the same list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineDiff {
    /// The whole window: replace everything held with `messages`.
    Reset { messages: Vec<Message> },
    /// A message appears at `index` (the ones from `index` on move down by one).
    Insert { index: u32, message: Message },
    /// The message at `index` changed (body, deletion, send state, confirmation).
    Set { index: u32, message: Message },
    /// The message at `index` leaves the window.
    Remove { index: u32 },
}

/// Receives a timeline's diffs: first one `Reset` with the current window, then the changes.
pub trait TimelineListener: Send + Sync {
    fn on_diffs(&self, diffs: Vec<TimelineDiff>);
}

/// The state shared by a [`Timeline`] handle and its dispatcher registration.
struct Shared {
    ctx: Weak<Context>,
    room: String,
    /// The window size a fresh window starts with.
    initial: u32,
    listener: Arc<dyn TimelineListener>,
    window: Mutex<Window>,
    /// Counts refreshes, so `paginate_backwards` can wait until its diffs are delivered.
    refreshed: watch::Sender<u64>,
}

#[derive(Default)]
struct Window {
    /// Confirmed messages with `seq >= floor` are in the window; `None`: not read yet (or reset).
    floor: Option<u64>,
    items: Vec<Message>,
    start_reached: bool,
}

/// A live view of one room's messages. Diffs stop when it is closed or dropped.
pub struct Timeline {
    shared: Arc<Shared>,
    ctx: Arc<Context>,
    subscription: Subscription,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("room", &self.shared.room)
            .finish_non_exhaustive()
    }
}

impl Timeline {
    pub(crate) fn open(
        ctx: &Arc<Context>,
        room: String,
        initial: u32,
        listener: Arc<dyn TimelineListener>,
    ) -> Timeline {
        let shared = Arc::new(Shared {
            ctx: Arc::downgrade(ctx),
            room,
            initial,
            listener,
            window: Mutex::new(Window::default()),
            refreshed: watch::channel(0).0,
        });
        let subscription = ctx
            .dispatcher
            .register(Target::Timeline(shared.clone()), Vec::new());
        Timeline {
            shared,
            ctx: ctx.clone(),
            subscription,
        }
    }

    /// The room shown.
    pub fn room(&self) -> &str {
        &self.shared.room
    }

    /// The window as last delivered to the listener.
    pub fn items(&self) -> Vec<Message> {
        self.shared.window.lock().items.clone()
    }

    /// Extends the window with up to `count` older messages: from the store first, then from
    /// the server. The listener gets them as inserts at the top, before this returns. Returns
    /// `true` once the start of the room is reached (nothing older exists). `count` is 1–200.
    pub async fn paginate_backwards(&self, count: u32) -> Result<bool> {
        if count == 0 || count > roam_proto::validate::MAX_PAGE_SIZE {
            return Err(Error::invalid(format!(
                "count must be between 1 and {}",
                roam_proto::validate::MAX_PAGE_SIZE
            )));
        }
        let room = self.shared.room.clone();
        let (oldest, reached) = {
            let w = self.shared.window.lock();
            (oldest_seq(&w.items), w.start_reached)
        };
        if reached {
            return Ok(true);
        }
        let below = oldest.unwrap_or(u64::MAX);
        let mut older = self.ctx.db.read(|c| older_seqs(c, &room, below, count))?;
        let mut start_reached = false;
        if older.len() < count as usize {
            let from = self
                .ctx
                .db
                .read(|c| oldest_stored(c, &room))?
                .map_or(below, |s| s.min(below));
            if from > 1 {
                let before = (from != u64::MAX).then_some(from);
                let page = self.ctx.http.messages(&room, before, count).await?;
                start_reached = page.next_cursor.is_none();
                self.ctx.write(|tx, fx| {
                    for m in page.items.iter().filter(|m| m.room == room) {
                        if let writes::MessageChange::Added(msg) =
                            writes::upsert_server_message(tx, m)?
                        {
                            fx.room(RoomUpdate::MessageAdded(msg));
                        }
                    }
                    Ok(())
                })?;
            } else {
                start_reached = true;
            }
            older = self.ctx.db.read(|c| older_seqs(c, &room, below, count))?;
        }
        {
            let mut w = self.shared.window.lock();
            if let Some(lowest) = older.last() {
                w.floor = Some(w.floor.map_or(*lowest, |f| f.min(*lowest)));
            }
            if start_reached {
                w.floor = Some(0);
                w.start_reached = true;
            }
        }
        // The new floor takes effect on the dispatcher thread, in order with the room's changes;
        // return once that refresh has been delivered, so the caller sees the older messages.
        let mut refreshed = self.shared.refreshed.subscribe();
        let target = refreshed.borrow_and_update().saturating_add(1);
        self.ctx.dispatcher.emit(AppEvent::TimelineRefresh(room));
        // Ends when the refresh ran, or at once if the timeline was closed meanwhile.
        let _ = refreshed.wait_for(|n| *n >= target).await;
        Ok(start_reached)
    }

    /// Stops the diffs. When this returns no callback is running and none will be made (unless
    /// called from inside the listener).
    pub fn close(&self) {
        self.subscription.close();
        self.shared.refreshed.send_replace(u64::MAX);
    }
}

impl TimelineSink for Shared {
    fn room(&self) -> &str {
        &self.room
    }

    fn refresh(&self, reset: bool) {
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        let mut w = self.window.lock();
        let fresh = reset || w.floor.is_none();
        if reset {
            *w = Window::default();
        }
        let read = ctx.db.read(|c| {
            let floor = match w.floor {
                Some(f) => f,
                None => initial_floor(c, &self.room, self.initial)?,
            };
            Ok((floor, window(c, &self.room, floor)?))
        });
        let (floor, items) = match read {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(room = %self.room, error = %err, "cannot read the timeline");
                drop(w);
                self.refreshed.send_modify(|n| *n = n.saturating_add(1));
                return;
            }
        };
        w.floor = Some(floor);
        let diffs = if fresh {
            vec![TimelineDiff::Reset {
                messages: items.clone(),
            }]
        } else {
            diff(&w.items, &items)
        };
        w.items = items;
        drop(w);
        if !diffs.is_empty() {
            self.listener.on_diffs(diffs);
        }
        self.refreshed.send_modify(|n| *n = n.saturating_add(1));
    }
}

fn oldest_seq(items: &[Message]) -> Option<u64> {
    items.iter().filter_map(|m| m.seq).min()
}

/// The floor of a fresh window: the seq of the `initial`-th newest confirmed message, or 0 when
/// the store holds fewer.
fn initial_floor(c: &Connection, room: &str, initial: u32) -> Result<u64> {
    let seq: Option<i64> = c
        .prepare_cached(
            "SELECT seq FROM messages WHERE room = ?1 AND seq IS NOT NULL \
             ORDER BY seq DESC LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![room, i64::from(initial.max(1)) - 1], |r| r.get(0))
        .optional()?;
    Ok(seq.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
}

/// The window above `floor`, in one statement: confirmed by seq, then unconfirmed by the order
/// they were written.
fn window(c: &Connection, room: &str, floor: u64) -> Result<Vec<Message>> {
    let floor = i64::try_from(floor).unwrap_or(i64::MAX);
    reads::messages_from(c, room, floor)
}

/// Up to `count` seqs of stored messages below `below`, newest first.
fn older_seqs(c: &Connection, room: &str, below: u64, count: u32) -> Result<Vec<u64>> {
    let below = i64::try_from(below).unwrap_or(i64::MAX);
    let mut stmt = c.prepare_cached(
        "SELECT seq FROM messages WHERE room = ?1 AND seq IS NOT NULL AND seq < ?2 \
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![room, below, i64::from(count)], |r| {
        r.get::<_, i64>(0)
    })?;
    let mut out = Vec::new();
    for r in rows {
        out.push(u64::try_from(r?).unwrap_or(0));
    }
    Ok(out)
}

fn oldest_stored(c: &Connection, room: &str) -> Result<Option<u64>> {
    let v: Option<i64> = c
        .prepare_cached("SELECT MIN(seq) FROM messages WHERE room = ?1 AND seq IS NOT NULL")?
        .query_row([room], |r| r.get(0))?;
    Ok(v.map(|v| u64::try_from(v).unwrap_or(0)))
}

/// The diffs that turn `old` into `new`, matching messages by local id (see [`crate::diff`]).
pub(crate) fn diff(old: &[Message], new: &[Message]) -> Vec<TimelineDiff> {
    steps(old, new, |m| m.local_id.as_str())
        .into_iter()
        .map(|s| match s {
            Step::Insert(index, message) => TimelineDiff::Insert { index, message },
            Step::Set(index, message) => TimelineDiff::Set { index, message },
            Step::Remove(index) => TimelineDiff::Remove { index },
        })
        .collect()
}

/// Applies diffs to a list, as an app would (used by tests and documentation).
pub fn apply_diffs(list: &mut Vec<Message>, diffs: Vec<TimelineDiff>) {
    for d in diffs {
        let step = match d {
            TimelineDiff::Reset { messages } => {
                *list = messages;
                continue;
            }
            TimelineDiff::Insert { index, message } => Step::Insert(index, message),
            TimelineDiff::Set { index, message } => Step::Set(index, message),
            TimelineDiff::Remove { index } => Step::Remove(index),
        };
        crate::diff::apply(list, [step]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SendState;

    fn m(id: &str, seq: Option<u64>, body: &str) -> Message {
        Message {
            local_id: id.into(),
            id: seq.map(|s| format!("srv-{s}")),
            room: "r".into(),
            seq,
            sender: "a".into(),
            body: body.into(),
            reply_to: None,
            created_at: 0,
            edited_at: None,
            deleted: false,
            send_state: if seq.is_some() {
                SendState::Sent
            } else {
                SendState::Pending
            },
            outbox_entry_id: seq.is_none().then(|| id.to_owned()),
            attachment: None,
        }
    }

    fn check(old: Vec<Message>, new: Vec<Message>) -> Vec<TimelineDiff> {
        let diffs = diff(&old, &new);
        let mut list = old;
        apply_diffs(&mut list, diffs.clone());
        assert_eq!(list, new);
        diffs
    }

    #[test]
    fn appends_are_inserts_at_the_end() {
        let d = check(
            vec![m("a", Some(1), "x")],
            vec![m("a", Some(1), "x"), m("b", Some(2), "y")],
        );
        assert_eq!(
            d,
            vec![TimelineDiff::Insert {
                index: 1,
                message: m("b", Some(2), "y")
            }]
        );
    }

    #[test]
    fn a_confirmed_echo_moves_into_place() {
        let old = vec![m("a", Some(1), "x"), m("l", None, "mine")];
        let new = vec![
            m("a", Some(1), "x"),
            m("l", Some(3), "mine"),
            m("b", None, "later"),
        ];
        check(old, new);
        let old = vec![m("a", Some(1), "x"), m("l", None, "mine")];
        let new = vec![
            m("a", Some(1), "x"),
            m("c", Some(2), "theirs"),
            m("l", Some(3), "mine"),
        ];
        check(old, new);
    }

    #[test]
    fn edits_removals_and_older_pages() {
        let old = vec![
            m("a", Some(5), "x"),
            m("b", Some(6), "y"),
            m("c", None, "z"),
        ];
        let new = vec![
            m("o", Some(2), "older"),
            m("a", Some(5), "edited"),
            m("c", None, "z"),
        ];
        let d = check(old, new);
        assert!(d.contains(&TimelineDiff::Remove { index: 1 }));
    }

    #[test]
    fn unchanged_windows_give_no_diffs() {
        let w = vec![m("a", Some(1), "x"), m("b", None, "y")];
        assert!(check(w.clone(), w).is_empty());
    }

    #[test]
    fn shuffles_are_reproduced() {
        let all: Vec<Message> = (0..12)
            .map(|i| m(&format!("m{i}"), Some(i), &format!("b{i}")))
            .collect();
        // A deterministic spread of subsets, orders and edits.
        for k in 0..40usize {
            let old: Vec<Message> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| (i * 7 + k) % 3 != 0)
                .map(|(_, m)| m.clone())
                .collect();
            let mut new: Vec<Message> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| (i * 5 + k) % 4 != 0)
                .map(|(i, m)| {
                    let mut m = m.clone();
                    if (i + k) % 5 == 0 {
                        m.body.push('!');
                    }
                    m
                })
                .collect();
            let n = new.len().max(1);
            new.rotate_left(k % n);
            check(old, new);
        }
    }
}
