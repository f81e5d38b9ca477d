//! The SQL of push (protocol §11) on PostgreSQL: registrations and modes (called by the write
//! engine through `apply.rs`), and the push queue ([`PushStore`]), shared by every node: jobs
//! and entries are leased with `FOR UPDATE SKIP LOCKED`, so two nodes never take the same row,
//! and a lease that ends (its node died) frees the row for the others. The queue's own
//! transactions run on reader connections with `synchronous_commit` turned back on for them.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio_postgres::Row;

use roam_proto::{PushDevice, PushMode, PushPlatform, PushSettings};

use super::conn::Conn;
use super::rows::{col, count, int};
use super::PostgresStore;
use crate::store::push::{
    stored_kind, stored_mode, stored_platform, MissedMessage, NewPush, PushCandidate, PushEntry,
    PushJob, PushKey, PushStore, PushTarget, QueueStats, Settle, DEFAULT_ROOM, MAX_BADGE,
};
use crate::store::{StoreError, StoreResult};

const DROP_TOKEN_ELSEWHERE: &str = "DELETE FROM push_devices WHERE platform = $1 AND token = $2 \
     AND NOT (user_id = $3 AND device = $4)";
const UPSERT_DEVICE: &str = "INSERT INTO push_devices \
     (user_id, device, platform, token, app_id, locale, sandbox, registered_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (user_id, device) DO UPDATE SET platform = excluded.platform, \
     token = excluded.token, app_id = excluded.app_id, locale = excluded.locale, \
     sandbox = excluded.sandbox, registered_at = excluded.registered_at";

pub(super) async fn upsert_device(
    c: &Conn,
    user: &str,
    d: &PushDevice,
    token: &str,
) -> StoreResult<()> {
    let p = d.platform.as_str();
    c.execute(DROP_TOKEN_ELSEWHERE, &[&p, &token, &user, &d.device])
        .await?;
    c.execute(
        UPSERT_DEVICE,
        &[
            &user,
            &d.device,
            &p,
            &token,
            &d.app_id,
            &d.locale,
            &d.sandbox,
            &d.registered_at,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_device(c: &Conn, user: &str, device: &str) -> StoreResult<()> {
    c.execute(
        "DELETE FROM push_devices WHERE user_id = $1 AND device = $2",
        &[&user, &device],
    )
    .await?;
    Ok(())
}

pub(super) async fn set_mode(
    c: &Conn,
    user: &str,
    room: &str,
    m: Option<PushMode>,
) -> StoreResult<()> {
    match m {
        Some(m) => {
            c.execute(
                "INSERT INTO push_modes (user_id, room, mode) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, room) DO UPDATE SET mode = excluded.mode",
                &[&user, &room, &m.as_str()],
            )
            .await?
        }
        None => {
            c.execute(
                "DELETE FROM push_modes WHERE user_id = $1 AND room = $2",
                &[&user, &room],
            )
            .await?
        }
    };
    Ok(())
}

const SETTINGS: &str = "SELECT p.room, p.mode FROM push_modes p WHERE p.user_id = $1 \
     AND (p.room = '' OR EXISTS (SELECT 1 FROM rooms r WHERE r.name = p.room \
     AND r.deleted_at IS NULL)) ORDER BY p.room";

pub(super) async fn settings(c: &Conn, user: &str) -> StoreResult<PushSettings> {
    let mut out = PushSettings::default();
    for row in c.query(SETTINGS, &[&user]).await? {
        let room: String = col(&row, 0)?;
        let m = stored_mode(col(&row, 1)?)?;
        if room == DEFAULT_ROOM {
            out.default = m;
        } else {
            out.rooms.insert(room, m);
        }
    }
    Ok(out)
}

pub(super) async fn enqueue_job(
    c: &Conn,
    room: &str,
    seq: u64,
    message: &str,
    sender: &str,
    now: i64,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO push_jobs (room, seq, message, sender, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[&room, &int(seq), &message, &sender, &now],
    )
    .await?;
    Ok(())
}

const QUEUE_READ: &str = "INSERT INTO push_queue (user_id, room, kind, seq, due_at, created_at) \
     SELECT $1, $2, 'read', $3, $4, $4 WHERE EXISTS (SELECT 1 FROM push_devices WHERE user_id = $1) \
     ON CONFLICT (user_id, room, kind) DO UPDATE SET seq = GREATEST(push_queue.seq, excluded.seq), \
     version = push_queue.version + 1, coalesced = push_queue.coalesced + 1, \
     due_at = LEAST(push_queue.due_at, excluded.due_at)";
const DROP_READ_MESSAGES: &str = "DELETE FROM push_queue \
     WHERE user_id = $1 AND room = $2 AND kind = 'message' AND seq <= $3";

pub(super) async fn enqueue_read(
    c: &Conn,
    user: &str,
    room: &str,
    seq: u64,
    now: i64,
) -> StoreResult<()> {
    let seq = int(seq);
    c.execute(QUEUE_READ, &[&user, &room, &seq, &now]).await?;
    c.execute(DROP_READ_MESSAGES, &[&user, &room, &seq]).await?;
    Ok(())
}

const TARGETS: &str = "SELECT user_id, device, platform, token, app_id, locale, sandbox, \
     registered_at FROM push_devices WHERE user_id = $1 ORDER BY device";

fn target(row: &Row) -> StoreResult<(PushTarget, i64)> {
    let p: &str = col(row, 2)?;
    Ok((
        PushTarget {
            user: col(row, 0)?,
            device: col(row, 1)?,
            platform: stored_platform(p)?,
            token: col(row, 3)?,
            app_id: col(row, 4)?,
            locale: col(row, 5)?,
            sandbox: col(row, 6)?,
        },
        col(row, 7)?,
    ))
}

const CLAIM_JOB: &str = "UPDATE push_jobs SET lease_owner = $1, lease_until = $3 \
     WHERE id = (SELECT id FROM push_jobs WHERE lease_until <= $2 ORDER BY id LIMIT 1 \
       FOR UPDATE SKIP LOCKED) \
     RETURNING id, room, seq, message, sender, after_user, created_at";

const CANDIDATES: &str = "SELECT m.user_id, coalesce( \
       (SELECT mode FROM push_modes x WHERE x.user_id = m.user_id AND x.room = m.room), \
       (SELECT mode FROM push_modes x WHERE x.user_id = m.user_id AND x.room = ''), 'all') \
     FROM members m WHERE m.room = $1 AND m.status = 'active' AND m.user_id > $3 \
     AND m.user_id <> $2 \
     AND EXISTS (SELECT 1 FROM push_devices d WHERE d.user_id = m.user_id) \
     ORDER BY m.user_id LIMIT $4";

const HOLDS_JOB: &str = "SELECT id FROM push_jobs WHERE id = $1 AND lease_owner = $2 FOR UPDATE";
/// Entries of one batch, as arrays (one round trip for the whole batch).
const QUEUE_MESSAGES: &str = "INSERT INTO push_queue \
     (user_id, room, kind, seq, message, due_at, created_at) \
     SELECT u, $2, 'message', s, m, $5, $5 FROM unnest($1::text[], $3::bigint[], $4::text[]) \
       AS t(u, s, m) \
     ON CONFLICT (user_id, room, kind) DO UPDATE SET \
     message = CASE WHEN excluded.seq > push_queue.seq THEN excluded.message \
       ELSE push_queue.message END, \
     seq = GREATEST(push_queue.seq, excluded.seq), version = push_queue.version + 1, \
     coalesced = push_queue.coalesced + 1";

/// Entries of any users and rooms, as arrays.
const QUEUE_ANY: &str = "INSERT INTO push_queue \
     (user_id, room, kind, seq, message, due_at, created_at) \
     SELECT u, r, 'message', s, m, $5, $5 \
       FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS t(u, r, s, m) \
     ON CONFLICT (user_id, room, kind) DO UPDATE SET \
     message = CASE WHEN excluded.seq > push_queue.seq THEN excluded.message \
       ELSE push_queue.message END, \
     seq = GREATEST(push_queue.seq, excluded.seq), version = push_queue.version + 1, \
     coalesced = push_queue.coalesced + 1";

/// Through `messages_room_created`: only the room's messages of the window are read.
const MISSED: &str = "SELECT m.room, x.seq, x.id FROM members m \
     CROSS JOIN LATERAL (SELECT e.seq, e.id FROM messages e WHERE e.room = m.room \
       AND e.created_at >= $2 AND e.sender <> $1 AND NOT e.deleted \
       AND e.seq > coalesce((SELECT r.seq FROM read_markers r WHERE r.user_id = m.user_id \
         AND r.room = m.room), 0) \
       ORDER BY e.created_at DESC, e.seq DESC LIMIT $3) x \
     WHERE m.user_id = $1 AND m.status = 'active' ORDER BY m.room, x.seq DESC";

const CLAIM_ENTRIES: &str = "WITH c AS (SELECT user_id, room, kind FROM push_queue \
       WHERE due_at <= $2 AND lease_until <= $2 ORDER BY due_at LIMIT $4 \
       FOR UPDATE SKIP LOCKED) \
     UPDATE push_queue q SET lease_owner = $1, lease_until = $3 FROM c \
     WHERE q.user_id = c.user_id AND q.room = c.room AND q.kind = c.kind \
     RETURNING q.user_id, q.room, q.kind, q.seq, q.message, q.version, q.attempts, q.coalesced, \
     q.created_at, \
     coalesce((SELECT r.seq FROM read_markers r WHERE r.user_id = q.user_id \
       AND r.room = q.room), 0), \
     EXISTS (SELECT 1 FROM members m WHERE m.room = q.room AND m.user_id = q.user_id \
       AND m.status = 'active'), \
     coalesce((SELECT mode FROM push_modes x WHERE x.user_id = q.user_id AND x.room = q.room), \
       (SELECT mode FROM push_modes x WHERE x.user_id = q.user_id AND x.room = ''), 'all')";

/// Through `messages_room_seq`: only message rows are read.
const BADGE: &str = "SELECT count(*) FROM (SELECT 1 FROM members m \
     JOIN messages e ON e.room = m.room AND e.seq > coalesce((SELECT r.seq FROM read_markers r \
       WHERE r.user_id = m.user_id AND r.room = m.room), 0) \
     WHERE m.user_id = $1 AND m.status = 'active' AND e.sender <> $1 AND NOT e.deleted \
       LIMIT $2) t";

/// [`BADGE`] for every user of an array, in one round trip.
const BADGES: &str = "SELECT u.id, (SELECT count(*) FROM (SELECT 1 FROM members m \
       JOIN messages e ON e.room = m.room AND e.seq > coalesce((SELECT r.seq FROM read_markers r \
         WHERE r.user_id = m.user_id AND r.room = m.room), 0) \
       WHERE m.user_id = u.id AND m.status = 'active' AND e.sender <> u.id AND NOT e.deleted \
       LIMIT $2) t) \
     FROM unnest($1::text[]) AS u(id)";

const STATS: &str = "SELECT (SELECT count(*) FROM push_queue), (SELECT count(*) FROM push_jobs), \
     LEAST((SELECT min(created_at) FROM push_queue), (SELECT min(created_at) FROM push_jobs))";

/// Runs the queue's change `f` in a transaction whose commit waits for the WAL flush.
macro_rules! durable {
    ($c:expr, $body:expr) => {{
        let c = $c;
        c.begin().await?;
        let out = async {
            c.simple("SET LOCAL synchronous_commit = on").await?;
            $body
        }
        .await;
        match out {
            Ok(v) => {
                c.commit().await?;
                Ok(v)
            }
            Err(e) => {
                c.rollback().await;
                Err(e)
            }
        }
    }};
}

#[async_trait]
impl PushStore for PostgresStore {
    fn set_push_jobs(&self, on: bool) {
        self.lanes.set_push_jobs(on);
    }

    fn push_jobs(&self) -> bool {
        self.lanes.push_jobs()
    }

    async fn push_targets(&self, user: &str) -> StoreResult<Vec<PushTarget>> {
        let c = self.conn().await?;
        c.query(TARGETS, &[&user])
            .await?
            .iter()
            .map(|r| target(r).map(|(t, _)| t))
            .collect()
    }

    async fn push_devices(&self, user: &str) -> StoreResult<Vec<PushDevice>> {
        let c = self.conn().await?;
        c.query(TARGETS, &[&user])
            .await?
            .iter()
            .map(|r| {
                target(r).map(|(t, at)| PushDevice {
                    device: t.device,
                    platform: t.platform,
                    app_id: t.app_id,
                    locale: t.locale,
                    sandbox: t.sandbox,
                    registered_at: at,
                })
            })
            .collect()
    }

    async fn push_settings(&self, user: &str) -> StoreResult<PushSettings> {
        settings(&*self.conn().await?, user).await
    }

    async fn delete_push_devices(&self, user: &str) -> StoreResult<u64> {
        let c = self.conn().await?;
        durable!(&*c, {
            let n = c
                .execute("DELETE FROM push_devices WHERE user_id = $1", &[&user])
                .await?;
            c.execute("DELETE FROM push_queue WHERE user_id = $1", &[&user])
                .await?;
            Ok::<_, StoreError>(n)
        })
    }

    async fn drop_push_token(&self, p: PushPlatform, token: &str) -> StoreResult<bool> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "DELETE FROM push_devices WHERE platform = $1 AND token = $2",
                &[&p.as_str(), &token],
            )
            .await?;
        Ok(n > 0)
    }

    async fn claim_push_job(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Option<PushJob>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(CLAIM_JOB, &[&owner, &now, &lease_until])
            .await?;
        row.map(|r| {
            Ok(PushJob {
                id: col(&r, 0)?,
                room: col(&r, 1)?,
                seq: count(&r, 2)?,
                message: col(&r, 3)?,
                sender: col(&r, 4)?,
                after_user: col(&r, 5)?,
                created_at: col(&r, 6)?,
            })
        })
        .transpose()
    }

    async fn push_candidates(
        &self,
        room: &str,
        sender: &str,
        after_user: &str,
        limit: u32,
    ) -> StoreResult<Vec<PushCandidate>> {
        let c = self.conn().await?;
        let limit = i64::from(limit);
        c.query(CANDIDATES, &[&room, &sender, &after_user, &limit])
            .await?
            .iter()
            .map(|r| {
                Ok(PushCandidate {
                    user: col(r, 0)?,
                    mode: stored_mode(col(r, 1)?)?,
                })
            })
            .collect()
    }

    async fn active_members(&self, room: &str) -> StoreResult<u64> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT count(*) FROM members WHERE room = $1 AND status = 'active'",
                &[&room],
            )
            .await?;
        count(&row, 0)
    }

    async fn push_fanout(
        &self,
        job: i64,
        owner: &str,
        entries: &[NewPush],
        next: Option<&str>,
        now: i64,
    ) -> StoreResult<bool> {
        let c = self.conn().await?;
        durable!(&*c, {
            if c.query_opt(HOLDS_JOB, &[&job, &owner]).await?.is_none() {
                return Ok(false);
            }
            // One batch is one room's.
            if let Some(first) = entries.first() {
                let users: Vec<&str> = entries.iter().map(|e| e.user.as_str()).collect();
                let seqs: Vec<i64> = entries.iter().map(|e| int(e.seq)).collect();
                let msgs: Vec<&str> = entries.iter().map(|e| e.message.as_str()).collect();
                c.execute(QUEUE_MESSAGES, &[&users, &first.room, &seqs, &msgs, &now])
                    .await?;
            }
            match next {
                Some(after) => {
                    c.execute(
                        "UPDATE push_jobs SET after_user = $2 WHERE id = $1",
                        &[&job, &after],
                    )
                    .await?
                }
                None => {
                    c.execute("DELETE FROM push_jobs WHERE id = $1", &[&job])
                        .await?
                }
            };
            Ok::<_, StoreError>(true)
        })
    }

    async fn push_enqueue(&self, entries: &[NewPush], now: i64) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let users: Vec<&str> = entries.iter().map(|e| e.user.as_str()).collect();
        let rooms: Vec<&str> = entries.iter().map(|e| e.room.as_str()).collect();
        let seqs: Vec<i64> = entries.iter().map(|e| int(e.seq)).collect();
        let msgs: Vec<&str> = entries.iter().map(|e| e.message.as_str()).collect();
        let c = self.conn().await?;
        durable!(&*c, {
            c.execute(QUEUE_ANY, &[&users, &rooms, &seqs, &msgs, &now])
                .await?;
            Ok::<_, StoreError>(())
        })
    }

    async fn push_missed(
        &self,
        user: &str,
        since: i64,
        per_room: u32,
    ) -> StoreResult<Vec<MissedMessage>> {
        let c = self.conn().await?;
        c.query(MISSED, &[&user, &since, &i64::from(per_room)])
            .await?
            .iter()
            .map(|r| {
                Ok(MissedMessage {
                    room: col(r, 0)?,
                    seq: count(r, 1)?,
                    message: col(r, 2)?,
                })
            })
            .collect()
    }

    async fn claim_pushes(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<PushEntry>> {
        let c = self.conn().await?;
        let limit = i64::from(limit);
        let rows = c
            .query(CLAIM_ENTRIES, &[&owner, &now, &lease_until, &limit])
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let attempts: i32 = col(r, 6)?;
                Ok(PushEntry {
                    key: PushKey {
                        user: col(r, 0)?,
                        room: col(r, 1)?,
                        kind: stored_kind(col(r, 2)?)?,
                    },
                    seq: count(r, 3)?,
                    message: col(r, 4)?,
                    version: col(r, 5)?,
                    attempts: attempts.max(0) as u32,
                    coalesced: count(r, 7)?,
                    created_at: col(r, 8)?,
                    marker: count(r, 9)?,
                    member: col(r, 10)?,
                    mode: stored_mode(col(r, 11)?)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|e| e.created_at);
        Ok(out)
    }

    async fn settle_push(&self, key: &PushKey, version: i64, how: Settle) -> StoreResult<()> {
        let c = self.conn().await?;
        let k = key.kind.as_str();
        durable!(&*c, {
            match how {
                Settle::Done => {
                    let gone = c
                        .execute(
                            "DELETE FROM push_queue WHERE user_id = $1 AND room = $2 \
                             AND kind = $3 AND version = $4",
                            &[&key.user, &key.room, &k, &version],
                        )
                        .await?;
                    if gone == 0 {
                        c.execute(
                            "UPDATE push_queue SET lease_owner = NULL, lease_until = 0 \
                             WHERE user_id = $1 AND room = $2 AND kind = $3",
                            &[&key.user, &key.room, &k],
                        )
                        .await?;
                    }
                }
                Settle::Retry { due_at } => {
                    c.execute(
                        "UPDATE push_queue SET due_at = $4, attempts = attempts + 1, \
                         lease_owner = NULL, lease_until = 0 \
                         WHERE user_id = $1 AND room = $2 AND kind = $3",
                        &[&key.user, &key.room, &k, &due_at],
                    )
                    .await?;
                }
            }
            Ok::<_, StoreError>(())
        })
    }

    async fn push_badge(&self, user: &str) -> StoreResult<u64> {
        let c = self.conn().await?;
        let row = c.query_one(BADGE, &[&user, &int(MAX_BADGE)]).await?;
        count(&row, 0)
    }

    async fn push_badges(&self, users: &[String]) -> StoreResult<HashMap<String, u64>> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let c = self.conn().await?;
        c.query(BADGES, &[&users, &int(MAX_BADGE)])
            .await?
            .iter()
            .map(|r| Ok((col(r, 0)?, count(r, 1)?)))
            .collect()
    }

    async fn push_queue_stats(&self) -> StoreResult<QueueStats> {
        let c = self.conn().await?;
        let row = c.query_one(STATS, &[]).await?;
        Ok(QueueStats {
            entries: count(&row, 0)?,
            jobs: count(&row, 1)?,
            oldest_at: col(&row, 2)?,
        })
    }
}
