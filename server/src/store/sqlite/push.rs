//! The SQL of push (protocol §11) on SQLite: registrations and modes (called by the write
//! engine through `apply.rs`), and the push queue ([`PushStore`]). Queue changes run on the
//! writer thread as jobs of their own ([`super::writer::Writer::task`]); one SQLite file is one
//! node, so a lease only guards against a worker that stopped mid-batch.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use roam_proto::{PushDevice, PushMode, PushPlatform, PushSettings};

use super::rows::int;
use super::SqliteStore;
use crate::store::push::{
    stored_kind, stored_mode, stored_platform, MissedMessage, NewPush, PushCandidate, PushEntry,
    PushJob, PushKey, PushStore, PushTarget, QueueStats, Settle, DEFAULT_ROOM, MAX_BADGE,
};
use crate::store::StoreResult;

const DROP_TOKEN_ELSEWHERE: &str = "DELETE FROM push_devices WHERE platform = ?1 AND token = ?2 \
     AND NOT (user = ?3 AND device = ?4)";
const UPSERT_DEVICE: &str = "INSERT INTO push_devices \
     (user, device, platform, token, app_id, locale, sandbox, registered_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (user, device) DO UPDATE SET platform = excluded.platform, \
     token = excluded.token, app_id = excluded.app_id, locale = excluded.locale, \
     sandbox = excluded.sandbox, registered_at = excluded.registered_at";

pub(super) fn upsert_device(
    c: &Connection,
    user: &str,
    d: &PushDevice,
    token: &str,
) -> StoreResult<()> {
    c.prepare_cached(DROP_TOKEN_ELSEWHERE)?.execute(params![
        d.platform.as_str(),
        token,
        user,
        d.device
    ])?;
    c.prepare_cached(UPSERT_DEVICE)?.execute(params![
        user,
        d.device,
        d.platform.as_str(),
        token,
        d.app_id,
        d.locale,
        d.sandbox,
        d.registered_at
    ])?;
    Ok(())
}

pub(super) fn delete_device(c: &Connection, user: &str, device: &str) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM push_devices WHERE user = ?1 AND device = ?2")?
        .execute(params![user, device])?;
    Ok(())
}

pub(super) fn set_mode(
    c: &Connection,
    user: &str,
    room: &str,
    m: Option<PushMode>,
) -> StoreResult<()> {
    match m {
        Some(m) => c
            .prepare_cached(
                "INSERT INTO push_modes (user, room, mode) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (user, room) DO UPDATE SET mode = excluded.mode",
            )?
            .execute(params![user, room, m.as_str()])?,
        None => c
            .prepare_cached("DELETE FROM push_modes WHERE user = ?1 AND room = ?2")?
            .execute(params![user, room])?,
    };
    Ok(())
}

/// The modes, with the overrides of live rooms only.
const SETTINGS: &str = "SELECT p.room, p.mode FROM push_modes p WHERE p.user = ?1 \
     AND (p.room = '' OR EXISTS (SELECT 1 FROM rooms r WHERE r.name = p.room \
     AND r.deleted_at IS NULL)) ORDER BY p.room";

pub(super) fn settings(c: &Connection, user: &str) -> StoreResult<PushSettings> {
    let mut out = PushSettings::default();
    let mut stmt = c.prepare_cached(SETTINGS)?;
    let rows = stmt.query_map(params![user], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (room, m) = row?;
        let m = stored_mode(&m)?;
        if room == DEFAULT_ROOM {
            out.default = m;
        } else {
            out.rooms.insert(room, m);
        }
    }
    Ok(out)
}

pub(super) fn enqueue_job(
    c: &Connection,
    room: &str,
    seq: u64,
    message: &str,
    sender: &str,
    now: i64,
) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO push_jobs (room, seq, message, sender, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![room, int(seq), message, sender, now])?;
    Ok(())
}

const QUEUE_READ: &str = "INSERT INTO push_queue (user, room, kind, seq, due_at, created_at) \
     SELECT ?1, ?2, 'read', ?3, ?4, ?4 WHERE EXISTS (SELECT 1 FROM push_devices WHERE user = ?1) \
     ON CONFLICT (user, room, kind) DO UPDATE SET seq = max(seq, excluded.seq), \
     version = version + 1, coalesced = coalesced + 1, due_at = min(due_at, excluded.due_at)";
const DROP_READ_MESSAGES: &str = "DELETE FROM push_queue \
     WHERE user = ?1 AND room = ?2 AND kind = 'message' AND seq <= ?3";

pub(super) fn enqueue_read(
    c: &Connection,
    user: &str,
    room: &str,
    seq: u64,
    now: i64,
) -> StoreResult<()> {
    c.prepare_cached(QUEUE_READ)?
        .execute(params![user, room, int(seq), now])?;
    c.prepare_cached(DROP_READ_MESSAGES)?
        .execute(params![user, room, int(seq)])?;
    Ok(())
}

const TARGETS: &str = "SELECT user, device, platform, token, app_id, locale, sandbox, \
     registered_at FROM push_devices WHERE user = ?1 ORDER BY device";

fn target_row(r: &Row<'_>) -> rusqlite::Result<(PushTarget, String, i64)> {
    let p: String = r.get(2)?;
    Ok((
        PushTarget {
            user: r.get(0)?,
            device: r.get(1)?,
            // Checked by the caller (a CHECK constraint keeps it one of the three).
            platform: PushPlatform::parse(&p).unwrap_or(PushPlatform::Webhook),
            token: r.get(3)?,
            app_id: r.get(4)?,
            locale: r.get(5)?,
            sandbox: r.get(6)?,
        },
        p,
        r.get(7)?,
    ))
}

fn targets(c: &Connection, user: &str) -> StoreResult<Vec<(PushTarget, i64)>> {
    let mut stmt = c.prepare_cached(TARGETS)?;
    let rows = stmt.query_map(params![user], target_row)?;
    let mut out = Vec::new();
    for row in rows {
        let (t, p, at) = row?;
        stored_platform(&p)?;
        out.push((t, at));
    }
    Ok(out)
}

const CLAIM_JOB: &str = "UPDATE push_jobs SET lease_owner = ?1, lease_until = ?3 \
     WHERE id = (SELECT id FROM push_jobs WHERE lease_until <= ?2 ORDER BY id LIMIT 1) \
     RETURNING id, room, seq, message, sender, after_user, created_at";

fn claim_job(c: &Connection, owner: &str, now: i64, until: i64) -> StoreResult<Option<PushJob>> {
    Ok(c.prepare_cached(CLAIM_JOB)?
        .query_row(params![owner, now, until], |r| {
            Ok(PushJob {
                id: r.get(0)?,
                room: r.get(1)?,
                seq: r.get(2)?,
                message: r.get(3)?,
                sender: r.get(4)?,
                after_user: r.get(5)?,
                created_at: r.get(6)?,
            })
        })
        .optional()?)
}

/// Active members with a device, after a user id, with their mode for the room.
const CANDIDATES: &str = "SELECT m.user, coalesce( \
       (SELECT mode FROM push_modes x WHERE x.user = m.user AND x.room = m.room), \
       (SELECT mode FROM push_modes x WHERE x.user = m.user AND x.room = ''), 'all') \
     FROM members m WHERE m.room = ?1 AND m.status = 'active' AND m.user > ?3 AND m.user <> ?2 \
     AND EXISTS (SELECT 1 FROM push_devices d WHERE d.user = m.user) \
     ORDER BY m.user LIMIT ?4";

fn candidates(
    c: &Connection,
    room: &str,
    sender: &str,
    after: &str,
    limit: u32,
) -> StoreResult<Vec<PushCandidate>> {
    let mut stmt = c.prepare_cached(CANDIDATES)?;
    let rows = stmt.query_map(params![room, sender, after, limit], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (user, m) = row?;
        out.push(PushCandidate {
            user,
            mode: stored_mode(&m)?,
        });
    }
    Ok(out)
}

const QUEUE_MESSAGE: &str = "INSERT INTO push_queue \
     (user, room, kind, seq, message, due_at, created_at) \
     VALUES (?1, ?2, 'message', ?3, ?4, ?5, ?5) \
     ON CONFLICT (user, room, kind) DO UPDATE SET \
     message = CASE WHEN excluded.seq > seq THEN excluded.message ELSE message END, \
     seq = max(seq, excluded.seq), version = version + 1, coalesced = coalesced + 1";

fn fanout(
    c: &Connection,
    job: i64,
    owner: &str,
    entries: &[NewPush],
    next: Option<&str>,
    now: i64,
) -> StoreResult<bool> {
    let held: Option<i64> = c
        .prepare_cached("SELECT id FROM push_jobs WHERE id = ?1 AND lease_owner = ?2")?
        .query_row(params![job, owner], |r| r.get(0))
        .optional()?;
    if held.is_none() {
        return Ok(false);
    }
    let mut stmt = c.prepare_cached(QUEUE_MESSAGE)?;
    for e in entries {
        stmt.execute(params![e.user, e.room, int(e.seq), e.message, now])?;
    }
    match next {
        Some(after) => c
            .prepare_cached("UPDATE push_jobs SET after_user = ?2 WHERE id = ?1")?
            .execute(params![job, after])?,
        None => c
            .prepare_cached("DELETE FROM push_jobs WHERE id = ?1")?
            .execute(params![job])?,
    };
    Ok(true)
}

fn enqueue(c: &Connection, entries: &[NewPush], now: i64) -> StoreResult<()> {
    let mut stmt = c.prepare_cached(QUEUE_MESSAGE)?;
    for e in entries {
        stmt.execute(params![e.user, e.room, int(e.seq), e.message, now])?;
    }
    Ok(())
}

/// The user's rooms with their read marker.
const MARKED_ROOMS: &str = "SELECT m.room, coalesce((SELECT r.seq FROM read_markers r \
       WHERE r.user = m.user AND r.room = m.room), 0) \
     FROM members m WHERE m.user = ?1 AND m.status = 'active' ORDER BY m.room";
/// A room's events after a seq, newest first (read until one is older than the window).
const RECENT_EVENTS: &str = "SELECT seq, at, kind, actor, message FROM events \
     WHERE room = ?1 AND seq > ?2 ORDER BY seq DESC";

fn missed(
    c: &Connection,
    user: &str,
    since: i64,
    per_room: u32,
) -> StoreResult<Vec<MissedMessage>> {
    let rooms: Vec<(String, i64)> = c
        .prepare_cached(MARKED_ROOMS)?
        .query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    let mut events = c.prepare_cached(RECENT_EVENTS)?;
    for (room, marker) in rooms {
        let mut rows = events.query(params![room, marker])?;
        let mut taken = 0;
        while let Some(r) = rows.next()? {
            let at: i64 = r.get(1)?;
            if at < since || taken >= per_room {
                break;
            }
            let kind: String = r.get(2)?;
            let actor: String = r.get(3)?;
            let message: Option<String> = r.get(4)?;
            if let (true, Some(message)) = (kind == "message_created" && actor != user, message) {
                let seq: i64 = r.get(0)?;
                out.push(MissedMessage {
                    room: room.clone(),
                    seq: seq.max(0) as u64,
                    message,
                });
                taken += 1;
            }
        }
    }
    Ok(out)
}

const CLAIM_ENTRIES: &str = "UPDATE push_queue SET lease_owner = ?1, lease_until = ?3 \
     WHERE (user, room, kind) IN (SELECT user, room, kind FROM push_queue \
       WHERE due_at <= ?2 AND lease_until <= ?2 ORDER BY due_at LIMIT ?4) \
     RETURNING user, room, kind, seq, message, version, attempts, coalesced, created_at, \
     coalesce((SELECT r.seq FROM read_markers r WHERE r.user = push_queue.user \
       AND r.room = push_queue.room), 0), \
     EXISTS (SELECT 1 FROM members m WHERE m.room = push_queue.room \
       AND m.user = push_queue.user AND m.status = 'active'), \
     coalesce((SELECT mode FROM push_modes x WHERE x.user = push_queue.user \
       AND x.room = push_queue.room), \
       (SELECT mode FROM push_modes x WHERE x.user = push_queue.user AND x.room = ''), 'all')";

fn claim_entries(
    c: &Connection,
    owner: &str,
    now: i64,
    until: i64,
    limit: u32,
) -> StoreResult<Vec<PushEntry>> {
    let mut stmt = c.prepare_cached(CLAIM_ENTRIES)?;
    let rows = stmt.query_map(params![owner, now, until, limit], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, i64>(9)?,
            r.get::<_, bool>(10)?,
            r.get::<_, String>(11)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            user,
            room,
            k,
            seq,
            message,
            version,
            attempts,
            coalesced,
            created_at,
            marker,
            member,
            m,
        ) = row?;
        out.push(PushEntry {
            key: PushKey {
                user,
                room,
                kind: stored_kind(&k)?,
            },
            seq: seq.max(0) as u64,
            message,
            version,
            attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
            coalesced: coalesced.max(0) as u64,
            created_at,
            marker: marker.max(0) as u64,
            member,
            mode: stored_mode(&m)?,
        });
    }
    out.sort_by_key(|e| e.created_at);
    Ok(out)
}

fn settle(c: &Connection, key: &PushKey, version: i64, how: Settle) -> StoreResult<()> {
    let k = key.kind.as_str();
    match how {
        Settle::Done => {
            let gone = c
                .prepare_cached(
                    "DELETE FROM push_queue WHERE user = ?1 AND room = ?2 AND kind = ?3 \
                     AND version = ?4",
                )?
                .execute(params![key.user, key.room, k, version])?;
            if gone == 0 {
                // A newer message coalesced into it meanwhile: due again now.
                c.prepare_cached(
                    "UPDATE push_queue SET lease_owner = NULL, lease_until = 0 \
                     WHERE user = ?1 AND room = ?2 AND kind = ?3",
                )?
                .execute(params![key.user, key.room, k])?;
            }
        }
        Settle::Retry { due_at } => {
            c.prepare_cached(
                "UPDATE push_queue SET due_at = ?4, attempts = attempts + 1, \
                 lease_owner = NULL, lease_until = 0 WHERE user = ?1 AND room = ?2 AND kind = ?3",
            )?
            .execute(params![key.user, key.room, k, due_at])?;
        }
    }
    Ok(())
}

/// Messages from others after the user's markers, over their rooms, counted up to the cap. It
/// reads a room's events after the marker by the (room, seq) key, other events included: no
/// index is kept up on every message for it (the message listing's plan depends on that).
const BADGE: &str = "SELECT count(*) FROM (SELECT 1 FROM members m \
     JOIN events e ON e.room = m.room AND e.seq > coalesce((SELECT r.seq FROM read_markers r \
       WHERE r.user = m.user AND r.room = m.room), 0) \
     WHERE m.user = ?1 AND m.status = 'active' AND e.kind = 'message_created' \
       AND e.actor <> ?1 LIMIT ?2)";

/// A room's messages after a seq, newest first, with their sender (read through the events'
/// (room, seq) key, other events skipped).
const ROOM_MESSAGES_AFTER: &str = "SELECT seq, actor FROM events \
     WHERE room = ?1 AND seq > ?2 AND kind = 'message_created' ORDER BY seq DESC";

/// [`PushStore::push_badges`]: each user's rooms with their markers, then each room read once
/// from the lowest marker among the users in it (newest first, and only until every one of
/// them has [`MAX_BADGE`] messages from others), and the messages after each user's marker
/// counted in memory. The room of a big fan-out, which every user of the batch shares, is
/// read once per batch instead of once per user.
fn badges(c: &Connection, users: &[String]) -> StoreResult<HashMap<String, u64>> {
    // room → (user, marker)
    let mut rooms: BTreeMap<String, Vec<(usize, i64)>> = BTreeMap::new();
    {
        let mut stmt = c.prepare_cached(MARKED_ROOMS)?;
        for (i, user) in users.iter().enumerate() {
            let rows = stmt.query_map(params![user], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (room, marker) = row?;
                rooms.entry(room).or_default().push((i, marker));
            }
        }
    }
    let mut counts = vec![0u64; users.len()];
    let mut stmt = c.prepare_cached(ROOM_MESSAGES_AFTER)?;
    let mut messages: Vec<(i64, String)> = Vec::new();
    for (room, readers) in rooms {
        let lowest = readers.iter().map(|(_, m)| *m).min().unwrap_or(0);
        let names: HashSet<&str> = readers.iter().map(|(i, _)| users[*i].as_str()).collect();
        messages.clear();
        // Messages from none of these users count for all of them: once there are enough of
        // those, every one of them is at the cap.
        let mut foreign = 0u64;
        let mut rows = stmt.query(params![room, lowest])?;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let actor: String = r.get(1)?;
            if !names.contains(actor.as_str()) {
                foreign += 1;
            }
            messages.push((seq, actor));
            if foreign >= MAX_BADGE {
                break;
            }
        }
        for (i, marker) in readers {
            let user = users[i].as_str();
            let n = messages
                .iter()
                .take_while(|(seq, _)| *seq > marker)
                .filter(|(_, actor)| actor != user)
                .count() as u64;
            counts[i] = (counts[i] + n).min(MAX_BADGE);
        }
    }
    Ok(users.iter().cloned().zip(counts).collect())
}

const STATS: &str = "SELECT (SELECT count(*) FROM push_queue), (SELECT count(*) FROM push_jobs), \
     (SELECT min(created_at) FROM push_queue), (SELECT min(created_at) FROM push_jobs)";

#[async_trait]
impl PushStore for SqliteStore {
    fn set_push_jobs(&self, on: bool) {
        self.writer.set_push_jobs(on);
    }

    fn push_jobs(&self) -> bool {
        self.writer.push_jobs()
    }

    async fn push_targets(&self, user: &str) -> StoreResult<Vec<PushTarget>> {
        let user = user.to_owned();
        let rows = self.read(move |c| targets(c, &user)).await?;
        Ok(rows.into_iter().map(|(t, _)| t).collect())
    }

    async fn push_devices(&self, user: &str) -> StoreResult<Vec<PushDevice>> {
        let user = user.to_owned();
        let rows = self.read(move |c| targets(c, &user)).await?;
        Ok(rows
            .into_iter()
            .map(|(t, at)| PushDevice {
                device: t.device,
                platform: t.platform,
                app_id: t.app_id,
                locale: t.locale,
                sandbox: t.sandbox,
                registered_at: at,
            })
            .collect())
    }

    async fn push_settings(&self, user: &str) -> StoreResult<PushSettings> {
        let user = user.to_owned();
        self.read(move |c| settings(c, &user)).await
    }

    async fn delete_push_devices(&self, user: &str) -> StoreResult<u64> {
        let user = user.to_owned();
        self.writer
            .task(move |tx| {
                let n = tx
                    .prepare_cached("DELETE FROM push_devices WHERE user = ?1")?
                    .execute(params![user])?;
                tx.prepare_cached("DELETE FROM push_queue WHERE user = ?1")?
                    .execute(params![user])?;
                Ok(n as u64)
            })
            .await
    }

    async fn drop_push_token(&self, p: PushPlatform, token: &str) -> StoreResult<bool> {
        let token = token.to_owned();
        self.writer
            .task(move |tx| {
                let n = tx
                    .prepare_cached("DELETE FROM push_devices WHERE platform = ?1 AND token = ?2")?
                    .execute(params![p.as_str(), token])?;
                Ok(n > 0)
            })
            .await
    }

    async fn claim_push_job(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Option<PushJob>> {
        let owner = owner.to_owned();
        self.writer
            .task(move |tx| claim_job(tx, &owner, now, lease_until))
            .await
    }

    async fn push_candidates(
        &self,
        room: &str,
        sender: &str,
        after_user: &str,
        limit: u32,
    ) -> StoreResult<Vec<PushCandidate>> {
        let (room, sender, after) = (room.to_owned(), sender.to_owned(), after_user.to_owned());
        self.read(move |c| candidates(c, &room, &sender, &after, limit))
            .await
    }

    async fn active_members(&self, room: &str) -> StoreResult<u64> {
        let room = room.to_owned();
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM members WHERE room = ?1 AND status = 'active'",
                )?
                .query_row(params![room], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn push_fanout(
        &self,
        job: i64,
        owner: &str,
        entries: &[NewPush],
        next: Option<&str>,
        now: i64,
    ) -> StoreResult<bool> {
        let owner = owner.to_owned();
        let entries = entries.to_vec();
        let next = next.map(str::to_owned);
        self.writer
            .task(move |tx| fanout(tx, job, &owner, &entries, next.as_deref(), now))
            .await
    }

    async fn push_enqueue(&self, entries: &[NewPush], now: i64) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.writer.task(move |tx| enqueue(tx, &entries, now)).await
    }

    async fn push_missed(
        &self,
        user: &str,
        since: i64,
        per_room: u32,
    ) -> StoreResult<Vec<MissedMessage>> {
        let user = user.to_owned();
        self.read(move |c| missed(c, &user, since, per_room)).await
    }

    async fn claim_pushes(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<PushEntry>> {
        let owner = owner.to_owned();
        self.writer
            .task(move |tx| claim_entries(tx, &owner, now, lease_until, limit))
            .await
    }

    async fn settle_push(&self, key: &PushKey, version: i64, how: Settle) -> StoreResult<()> {
        let key = key.clone();
        self.writer
            .task(move |tx| settle(tx, &key, version, how))
            .await
    }

    async fn push_badge(&self, user: &str) -> StoreResult<u64> {
        let user = user.to_owned();
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(BADGE)?
                .query_row(params![user, int(MAX_BADGE)], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn push_badges(&self, users: &[String]) -> StoreResult<HashMap<String, u64>> {
        let users = users.to_vec();
        self.read(move |c| badges(c, &users)).await
    }

    async fn push_queue_stats(&self) -> StoreResult<QueueStats> {
        self.read(|c| {
            let (entries, jobs, q, j): (i64, i64, Option<i64>, Option<i64>) = c
                .prepare_cached(STATS)?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(QueueStats {
                entries: entries.max(0) as u64,
                jobs: jobs.max(0) as u64,
                oldest_at: q.into_iter().chain(j).min(),
            })
        })
        .await
    }
}
