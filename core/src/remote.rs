//! REST reads the app asks for explicitly, through the [`Cache`] into the store.
//!
//! The room directory (`GET /v1/rooms`), a room's members (`GET /v1/rooms/{room}/members`) and
//! bulk presence (`GET /v1/presence?users=…`) are not pushed over the socket for rooms the
//! account does not follow, so the app refreshes them on demand. Each refresh goes through the
//! shared [`Cache`] (see [`crate::cache`]), keyed by the request path:
//!
//! - **fresh** (younger than [`CacheConfig::ttl`]): no request at all;
//! - **stale** (within [`CacheConfig::stale_ttl`] after that): answered at once from the store
//!   while one background request revalidates it (stale-while-revalidate);
//! - **expired or unknown**: one request, shared by concurrent callers (single flight), made
//!   conditional with the entry's `ETag` (`If-None-Match`), so an unchanged resource costs a
//!   `304` and no body.
//!
//! Whatever a request brings back is written into the store in one transaction (and its ETag
//! into `http_etags`, so conditional requests survive a restart: on the first refresh after
//! opening, the cache is seeded from the store with the stored ETag, already expired, so the
//! first request is conditional). Reads are then answered from the store like every other read.
//! The cache's counters feed the metrics snapshot's hit rate.
//!
//! Paging older history (`load_older_messages`) also lives here; it is not cached (each page is
//! fetched once and kept in the store).

use std::sync::Arc;
use std::time::Duration;

use roam_proto::{Member, Presence, Room};

use crate::cache::{Cache, CacheError, CachePolicy, CacheStats, Fetched as CacheFetched};
use crate::config::CacheConfig;
use crate::context::Context;
use crate::db::{reads, writes};
use crate::error::{Error, Result};
use crate::http::Fetched;
use crate::model::{Message, RoomUpdate};

/// A cached REST answer (also written to the store).
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    Rooms(Arc<Vec<Room>>),
    Members(Arc<Vec<Member>>),
    Presence(Arc<Vec<Presence>>),
}

/// An error shared by every caller of one cached request.
#[derive(Debug, Clone)]
pub(crate) struct SharedError(Arc<Error>);

impl From<CacheError> for SharedError {
    fn from(err: CacheError) -> Self {
        SharedError(Arc::new(Error::Network(err.to_string())))
    }
}

impl From<Error> for SharedError {
    fn from(err: Error) -> Self {
        SharedError(Arc::new(err))
    }
}

impl SharedError {
    fn into_error(self) -> Error {
        match Arc::try_unwrap(self.0) {
            Ok(err) => err,
            Err(shared) => match &*shared {
                Error::Network(s) => Error::Network(s.clone()),
                Error::Unauthorized(s) => Error::Unauthorized(s.clone()),
                Error::Server {
                    code,
                    message,
                    retry_after_ms,
                } => Error::Server {
                    code: *code,
                    message: message.clone(),
                    retry_after_ms: *retry_after_ms,
                },
                other => Error::Network(other.to_string()),
            },
        }
    }
}

/// The REST cache of one client.
#[derive(Debug)]
pub(crate) struct Remote {
    cache: Cache<Cached>,
    policy: CachePolicy,
}

impl Remote {
    pub(crate) fn new(config: CacheConfig) -> Self {
        Remote {
            cache: Cache::new(config.max_bytes),
            policy: CachePolicy::new(config.ttl, config.stale_ttl),
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

fn weight<T: serde::Serialize>(items: &[T]) -> usize {
    serde_json::to_string(items).map_or(0, |s| s.len())
}

/// Seeds the cache from the store after a restart, so the first request is conditional.
fn seed(ctx: &Context, remote: &Remote, key: &str, stored: impl FnOnce() -> Result<Cached>) {
    if remote.cache.get_entry(key).is_some() {
        return;
    }
    let etag = match ctx.db.read(|c| reads::etag(c, key)) {
        Ok(Some(tag)) => tag,
        _ => return,
    };
    match stored() {
        Ok(value) => {
            let expired = CachePolicy::new(Duration::ZERO, Duration::ZERO);
            remote.cache.insert(key, value, Some(etag), 0, expired);
        }
        Err(err) => tracing::debug!(error = %err, key, "cannot seed the cache from the store"),
    }
}

/// Fetches the room directory into the store (see the module docs for when a request is made).
/// Returns the names the directory lists, in its order.
#[tracing::instrument(skip_all)]
pub(crate) async fn refresh_rooms(ctx: &Arc<Context>, remote: &Remote) -> Result<Vec<String>> {
    const KEY: &str = "/v1/rooms";
    seed(ctx, remote, KEY, || {
        let rooms = ctx.db.read(reads::rooms)?;
        Ok(Cached::Rooms(Arc::new(
            rooms
                .into_iter()
                .map(|r| Room {
                    metadata: serde_json::from_str(&r.metadata_json).unwrap_or_default(),
                    name: r.name,
                    kind: r.kind,
                    title: r.title,
                    owner: r.owner.clone(),
                    created_by: r.owner,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                    head_seq: r.head_seq,
                    member_count: r.member_count,
                })
                .collect(),
        )))
    });
    let c = ctx.clone();
    remote
        .cache
        .get_or_fetch(KEY, remote.policy, move |etag| async move {
            match c.http.rooms(etag.as_deref()).await? {
                Fetched::NotModified => Ok(CacheFetched::NotModified),
                Fetched::Fresh { value, etag } => {
                    c.write(|tx, fx| {
                        for r in &value.items {
                            writes::upsert_room(tx, r)?;
                            if let Some(info) = reads::room(tx, &r.name)? {
                                fx.room(RoomUpdate::RoomChanged(info));
                            }
                        }
                        if let Some(tag) = &etag {
                            writes::set_etag(tx, KEY, tag)?;
                        }
                        Ok(())
                    })?;
                    Ok(CacheFetched::New {
                        weight: weight(&value.items),
                        value: Cached::Rooms(Arc::new(value.items)),
                        etag,
                    })
                }
            }
        })
        .await
        .map_err(SharedError::into_error)
        .map(|cached| match cached {
            Cached::Rooms(rooms) => rooms.iter().map(|r| r.name.clone()).collect(),
            _ => Vec::new(),
        })
}

/// Fetches a room's members into the store; returns the listing.
#[tracing::instrument(skip_all, fields(room = %room))]
pub(crate) async fn refresh_members(
    ctx: &Arc<Context>,
    remote: &Remote,
    room: String,
) -> Result<Vec<Member>> {
    let key = format!("/v1/rooms/{room}/members");
    seed(ctx, remote, &key, || {
        Ok(Cached::Members(Arc::new(
            ctx.db.read(|c| reads::members(c, &room))?,
        )))
    });
    let c = ctx.clone();
    let k = key.clone();
    remote
        .cache
        .get_or_fetch(&key, remote.policy, move |etag| async move {
            match c.http.members(&room, etag.as_deref()).await? {
                Fetched::NotModified => Ok(CacheFetched::NotModified),
                Fetched::Fresh { value, etag } => {
                    c.write(|tx, _| {
                        writes::replace_members(tx, &room, &value.items)?;
                        if let Some(tag) = &etag {
                            writes::set_etag(tx, &k, tag)?;
                        }
                        Ok(())
                    })?;
                    Ok(CacheFetched::New {
                        weight: weight(&value.items),
                        value: Cached::Members(Arc::new(value.items)),
                        etag,
                    })
                }
            }
        })
        .await
        .map_err(SharedError::into_error)
        .map(|cached| match cached {
            Cached::Members(members) => members.as_ref().clone(),
            _ => Vec::new(),
        })
}

/// Fetches the presence of up to 500 users into the store; returns the answer.
#[tracing::instrument(skip_all, fields(users = users.len()))]
pub(crate) async fn refresh_presence(
    ctx: &Arc<Context>,
    remote: &Remote,
    users: Vec<String>,
) -> Result<Vec<Presence>> {
    let key = format!("/v1/presence?users={}", users.join(","));
    seed(ctx, remote, &key, || {
        let stored = ctx.db.read(|c| {
            users
                .iter()
                .filter_map(|u| reads::presence(c, u).transpose())
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Cached::Presence(Arc::new(stored)))
    });
    let c = ctx.clone();
    let k = key.clone();
    remote
        .cache
        .get_or_fetch(&key, remote.policy, move |etag| async move {
            match c.http.presence(&users, etag.as_deref()).await? {
                Fetched::NotModified => Ok(CacheFetched::NotModified),
                Fetched::Fresh { value, etag } => {
                    c.write(|tx, fx| {
                        for p in &value {
                            writes::upsert_presence(tx, p)?;
                            fx.emit(crate::listeners::AppEvent::Presence(p.clone()));
                        }
                        if let Some(tag) = &etag {
                            writes::set_etag(tx, &k, tag)?;
                        }
                        Ok(())
                    })?;
                    Ok(CacheFetched::New {
                        weight: weight(&value),
                        value: Cached::Presence(Arc::new(value)),
                        etag,
                    })
                }
            }
        })
        .await
        .map_err(SharedError::into_error)
        .map(|cached| match cached {
            Cached::Presence(p) => p.as_ref().clone(),
            _ => Vec::new(),
        })
}

/// Fetches the page before the oldest message held locally and stores it. Returns the page
/// (oldest first) as stored.
#[tracing::instrument(skip_all, fields(room = %room))]
pub(crate) async fn load_older_messages(
    ctx: &Arc<Context>,
    room: String,
    limit: u32,
) -> Result<Vec<Message>> {
    let oldest: Option<u64> = ctx.db.read(|c| {
        Ok(c.query_row(
            "SELECT MIN(seq) FROM messages WHERE room = ?1 AND seq IS NOT NULL",
            [&room],
            |r| r.get::<_, Option<i64>>(0),
        )?
        .map(|v| u64::try_from(v).unwrap_or(0)))
    })?;
    if oldest == Some(1) {
        return Ok(Vec::new());
    }
    let page = ctx.http.messages(&room, oldest, limit).await?;
    ctx.write(|tx, fx| {
        for m in page.items.iter().filter(|m| m.room == room) {
            if let writes::MessageChange::Added(msg) = writes::upsert_server_message(tx, m)? {
                fx.room(RoomUpdate::MessageAdded(msg));
            }
        }
        Ok(())
    })?;
    ctx.db
        .read(|c| reads::messages(c, &room, Some(oldest.unwrap_or(u64::MAX)), limit))
}
