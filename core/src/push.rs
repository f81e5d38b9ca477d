//! Push notifications on the device (protocol §11): registering for them, choosing what pushes,
//! and turning a received push into what the notification shows.
//!
//! **Registering.** [`Client::register_push`](crate::Client::register_push),
//! `unregister_push` and `set_push_mode` are mutations like any other: validated, written to the
//! outbox in one transaction, and sent when the link is up (a registration made offline goes out
//! on the next connect, with the same idempotency key). Registration uses the device id the core
//! makes once per store (a UUIDv7 kept in `kv` under `push.device`), so registering again after
//! the OS hands out a new token replaces this device's token on the server instead of adding a
//! device. The notification modes the server confirmed are kept in `kv` (`push.settings`);
//! [`Client::push_settings`](crate::Client::push_settings) answers them with the pending
//! `push.set_mode` entries of the outbox applied on top, so a change shows at once and a
//! discarded or refused one simply stops showing (there is nothing to undo).
//!
//! **Receiving.** A notification service extension (iOS) or a `FirebaseMessagingService`
//! (Android) runs in its own process, possibly while the app holds the store. It opens a
//! [`PushHandler`] on the same store path and token as the app: the store is opened read-only
//! next to the app (`db::shared`, which says why the handler writes nothing), so neither fails
//! nor waits for the other. [`PushHandler::handle_push`] then:
//!
//! 1. parses the payload: the APNs `userInfo` dictionary (`{"aps": …, "roam": {…}}`), the FCM
//!    data map (`{"roam": "<the roam object as a JSON string>"}`), or the `roam` object itself
//!    ([`parse_push_payload`]); anything else is an [`Error::InvalidInput`] that says what is
//!    wrong;
//! 2. `kind: read` → [`PushContentKind::Clear`] for the room up to `seq`;
//! 3. `kind: message` → looks the message up in the store; if it is not there yet, fetches it
//!    (`GET /v1/rooms/{room}/messages?after={seq-1}&limit=1`, and the room's record if the
//!    room is not known locally either), bounded by what is left of the deadline;
//! 4. answers [`PushContent`]: `Show` with the room title, sender and body (the caption, or a
//!    word for the file when there is none), or `Clear` when there is nothing to show any more
//!    (deleted, sent by the account itself, or read on another device already). When the
//!    deadline passes before the fetch answers, or the fetch fails, it answers the generic
//!    content it has (the payload's preview if the deployment sends one, else the room title
//!    and no body): a notification is never lost because the network was slow.
//!
//! **Badge.** Counted from the store when the store is complete for the pushed room (it has
//! followed the room up to the message before this one): unread messages above the read
//! markers in every joined room, as the room list counts them, plus the fetched message. Else
//! the payload's `unread`, which the server counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roam_proto::{
    Message as WireMessage, Mutation, Page, PushKind, PushMode, PushPayload, PushPlatform,
    PushSettings, Room, PUSH_PAYLOAD_VERSION,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::auth::TokenProvider;
use crate::config::ClientConfig;
use crate::context::Context;
use crate::db::shared::SharedDb;
use crate::db::{reads, writes};
use crate::error::{Error, Result};
use crate::http::{self, Fetched, Http};
use crate::model::{Message, SendState};
use crate::outbox;

/// `kv` key of the device id used for push registration.
pub(crate) const DEVICE_KEY: &str = "push.device";

use crate::optimistic::PUSH_SETTINGS_KEY as SETTINGS_KEY;

/// What a notification should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushContentKind {
    /// Show (or update) the room's notification with this content.
    Show,
    /// Remove the room's notifications up to `seq` (read elsewhere, deleted, or the account's
    /// own message); set the badge.
    Clear,
}

/// What to show for a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushContent {
    pub kind: PushContentKind,
    /// The room (use it as the notification's thread / group).
    pub room: String,
    /// The room's title, or its name when it has none or is not known.
    pub room_title: String,
    /// Who sent the message; `None` when it could not be had in time (generic content).
    pub sender: Option<String>,
    /// The message text: its body, or for a file without a caption a word for it ("Photo",
    /// "Video", "Audio", or the file name); `None` for generic content.
    pub body: Option<String>,
    /// The message's seq (`Show`), or the read marker (`Clear`).
    pub seq: u64,
    /// The message id when known.
    pub message: Option<String>,
    /// The app icon's badge: the account's unread count.
    pub badge: u64,
}

/// Parses a push as the platform delivers it: the APNs `userInfo` dictionary as JSON (the
/// `roam` key holds the object), the FCM data map as JSON (the `roam` key holds the object as a
/// JSON string), or the `roam` object itself. Checks the version and the room name.
pub fn parse_push_payload(json: &str) -> Result<PushPayload> {
    let top: Value = serde_json::from_str(json)
        .map_err(|e| Error::invalid(format!("the push payload is not JSON: {e}")))?;
    let Value::Object(map) = &top else {
        return Err(Error::invalid("the push payload is not a JSON object"));
    };
    let roam = match map.get("roam") {
        Some(Value::Object(_)) => map["roam"].clone(),
        Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
            Error::invalid(format!(
                "the push's \"roam\" string is not a JSON object: {e}"
            ))
        })?,
        Some(_) => {
            return Err(Error::invalid(
                "the push's \"roam\" is neither an object nor a JSON string",
            ))
        }
        None if map.contains_key("v") && map.contains_key("kind") => top.clone(),
        None => return Err(Error::invalid("the push has no \"roam\" object")),
    };
    let version = roam.get("v").and_then(Value::as_u64);
    if version != Some(u64::from(PUSH_PAYLOAD_VERSION)) {
        return Err(Error::invalid(format!(
            "push payload version {} is not supported (this build reads version {PUSH_PAYLOAD_VERSION})",
            roam.get("v").map_or_else(|| "none".to_owned(), Value::to_string)
        )));
    }
    let payload: PushPayload = serde_json::from_value(roam)
        .map_err(|e| Error::invalid(format!("the push's \"roam\" object: {e}")))?;
    roam_proto::validate::room_name(&payload.room)?;
    if payload.kind == PushKind::Message && payload.seq == 0 {
        return Err(Error::invalid("a message push needs its seq (at least 1)"));
    }
    Ok(payload)
}

/// Answers pushes in a process next to the app (see the module docs). Open one per push, or
/// keep one for the life of the extension process; it holds one read-only connection and an
/// HTTP client, nothing else.
pub struct PushHandler {
    db: Mutex<SharedDb>,
    http: Http,
    me: String,
}

impl std::fmt::Debug for PushHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHandler")
            .field("user", &self.me)
            .field("db", &self.db.lock().path())
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

/// What the store holds about a push.
#[derive(Debug, Default)]
struct Local {
    title: Option<String>,
    message: Option<Message>,
    marker: u64,
    /// Whether the store followed the room up to the message before the pushed one.
    complete: bool,
    /// Unread messages above the read markers in every joined room.
    unread: u64,
}

impl PushHandler {
    /// Opens the account's existing store read-only (it must have been created and migrated
    /// by the app: [`Error::NotFound`] and [`Error::SchemaMismatch`] otherwise) with the app's
    /// configuration (`db_path`, `server_url`, `user_id`, `http_timeout` are used) and a token
    /// provider the extension can use (for example the app's token from a shared keychain).
    /// Never fails with [`Error::AlreadyOpen`].
    pub fn open(config: &ClientConfig, tokens: Arc<dyn TokenProvider>) -> Result<PushHandler> {
        roam_proto::validate::user_id(&config.user_id)?;
        let base = http::base_url(&config.server_url)?;
        let db = SharedDb::open(&config.db_path, config.store_key.as_ref())?;
        let http = Http::new(base, tokens, config.http_timeout)?;
        Ok(PushHandler {
            db: Mutex::new(db),
            http,
            me: config.user_id.clone(),
        })
    }

    /// Turns a push into what to show, within `deadline` (see the module docs). Needs a Tokio
    /// runtime. Fails only on a payload it cannot read ([`Error::InvalidInput`]) or a store it
    /// cannot read; a slow or failed fetch gives generic content instead.
    #[tracing::instrument(skip_all)]
    pub async fn handle_push(&self, payload_json: &str, deadline: Duration) -> Result<PushContent> {
        let started = Instant::now();
        let payload = parse_push_payload(payload_json)?;
        let p = &payload;
        let local = self.db.lock().read(|c| local_view(c, &self.me, p))?;
        let title = |t: Option<String>| {
            t.filter(|t| !t.is_empty())
                .or_else(|| p.preview.as_ref().map(|v| v.room_title.clone()))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| p.room.clone())
        };
        if p.kind == PushKind::Read {
            return Ok(PushContent {
                kind: PushContentKind::Clear,
                room: p.room.clone(),
                room_title: title(local.title),
                sender: None,
                body: None,
                seq: p.seq,
                message: None,
                badge: if local.complete {
                    local.unread
                } else {
                    p.unread
                },
            });
        }
        let (message, fetched_title) = match local.message.clone() {
            Some(m) => (Some(m), None),
            None => {
                let left = deadline.saturating_sub(started.elapsed());
                let fetch = self.fetch(p, local.title.is_none());
                match tokio::time::timeout(left, fetch).await {
                    Ok((m, t)) => (m, t),
                    Err(_) => {
                        tracing::debug!(room = %p.room, seq = p.seq, "deadline passed before the fetch");
                        (None, None)
                    }
                }
            }
        };
        let was_local = local.message.is_some();
        let room_title = title(local.title.clone().or(fetched_title));
        let Some(m) = message else {
            // Generic content: what the payload says, and the room as the store knows it.
            let preview = p.preview.as_ref();
            return Ok(PushContent {
                kind: PushContentKind::Show,
                room: p.room.clone(),
                room_title,
                sender: preview.map(|v| v.sender.clone()),
                body: preview.map(|v| v.body.clone()),
                seq: p.seq,
                message: p.message.clone(),
                badge: p.unread,
            });
        };
        let counts = !m.deleted && m.sender != self.me && p.seq > local.marker;
        let badge = match (local.complete, was_local, counts) {
            (true, true, _) | (true, false, false) => local.unread,
            (true, false, true) => local.unread + 1,
            (false, _, _) => p.unread,
        };
        if !counts {
            return Ok(PushContent {
                kind: PushContentKind::Clear,
                room: p.room.clone(),
                room_title,
                sender: None,
                body: None,
                seq: p.seq,
                message: m.id.clone(),
                badge,
            });
        }
        Ok(PushContent {
            kind: PushContentKind::Show,
            room: p.room.clone(),
            room_title,
            body: Some(body_of(&m)),
            sender: Some(m.sender.clone()),
            seq: p.seq,
            message: m.id.clone().or_else(|| p.message.clone()),
            badge,
        })
    }

    /// Fetches the pushed message (and the room's record when `room` is set). Failures are
    /// logged and answered as `None`: the caller shows generic content.
    async fn fetch(&self, p: &PushPayload, room: bool) -> (Option<Message>, Option<String>) {
        let path = format!("/v1/rooms/{}/messages", p.room);
        let query = [
            ("after", (p.seq - 1).to_string()),
            ("limit", "1".to_owned()),
        ];
        let message = async {
            match self
                .http
                .get::<Page<WireMessage>>(&path, &query, None)
                .await
            {
                Ok(Fetched::Fresh { value, .. }) => value
                    .items
                    .into_iter()
                    .find(|m| m.seq == p.seq && p.message.as_ref().is_none_or(|id| *id == m.id))
                    .map(from_wire),
                Ok(Fetched::NotModified) => None,
                Err(err) => {
                    tracing::debug!(error = %err, room = %p.room, "fetching the pushed message failed");
                    None
                }
            }
        };
        let title = async {
            if !room {
                return None;
            }
            let path = format!("/v1/rooms/{}", p.room);
            match self.http.get::<Room>(&path, &[], None).await {
                Ok(Fetched::Fresh { value, .. }) => Some(value.title),
                Ok(Fetched::NotModified) => None,
                Err(err) => {
                    tracing::debug!(error = %err, room = %p.room, "fetching the pushed room failed");
                    None
                }
            }
        };
        tokio::join!(message, title)
    }
}

/// The store's view of a push, in one snapshot.
fn local_view(c: &Connection, me: &str, p: &PushPayload) -> Result<Local> {
    let room = reads::room(c, &p.room)?;
    let marker = reads::read_marker(c, &p.room)?;
    let cursor = reads::cursor(c, &p.room)?;
    let message = match (&p.message, p.kind) {
        (_, PushKind::Read) => None,
        (Some(id), _) => reads::message_by_server_id(c, id)?,
        (None, _) => message_at(c, &p.room, p.seq)?,
    };
    let joined = room.as_ref().is_some_and(|r| r.joined);
    // For a read push the marker it carries is applied; for a message the store must hold
    // everything of the room before it.
    let (complete, marker_override) = match p.kind {
        PushKind::Read => (joined, Some(p.seq)),
        PushKind::Message => (joined && cursor + 1 >= p.seq, None),
    };
    let unread = if complete {
        unread_count(c, me, &p.room, marker_override)?
    } else {
        0
    };
    Ok(Local {
        title: room.map(|r| r.title),
        message,
        marker,
        complete,
        unread,
    })
}

/// The confirmed message of `room` at `seq`.
fn message_at(c: &Connection, room: &str, seq: u64) -> Result<Option<Message>> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let id: Option<String> = c
        .prepare_cached(
            "SELECT local_id FROM messages WHERE room = ?1 AND seq IS NOT NULL AND seq = ?2",
        )?
        .query_row(params![room, seq], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => reads::message(c, &id),
        None => Ok(None),
    }
}

/// Unread messages of every joined room: above its read marker (for `room`, at least
/// `marker`), not deleted, not the account's own (the room list's rule).
fn unread_count(c: &Connection, me: &str, room: &str, marker: Option<u64>) -> Result<u64> {
    let marker = marker.map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX));
    let n: i64 = c
        .prepare_cached(
            "SELECT count(*) FROM rooms r \
             JOIN messages m ON m.room = r.name AND m.seq IS NOT NULL \
             LEFT JOIN read_markers k ON k.room = r.name \
             WHERE r.joined = 1 AND m.sender <> ?1 AND m.deleted = 0 \
               AND m.seq > max(COALESCE(k.seq, 0), CASE WHEN r.name = ?2 THEN ?3 ELSE 0 END)",
        )?
        .query_row(params![me, room, marker], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A message fetched over REST, as the store would hold it (it is not stored: see
/// `db::shared`).
fn from_wire(m: WireMessage) -> Message {
    Message {
        local_id: m.id.clone(),
        id: Some(m.id),
        room: m.room,
        seq: Some(m.seq),
        sender: m.sender,
        body: m.body,
        reply_to: m.reply_to,
        created_at: m.created_at,
        edited_at: m.edited_at,
        deleted: m.deleted,
        send_state: SendState::Sent,
        outbox_entry_id: None,
        attachment: m.attachment.map(|a| crate::model::Attachment {
            sha256: a.blob,
            name: a.name,
            mime: a.mime,
            size: a.size,
            width: a.width,
            height: a.height,
            duration_ms: a.duration_ms,
            thumbnail: None,
            local_path: None,
            upload: None,
        }),
    }
}

/// The text to show for a message: its body, or for a file without a caption a word for it.
fn body_of(m: &Message) -> String {
    if !m.body.is_empty() {
        return m.body.clone();
    }
    match &m.attachment {
        Some(a) if a.mime.starts_with("image/") => "Photo".to_owned(),
        Some(a) if a.mime.starts_with("video/") => "Video".to_owned(),
        Some(a) if a.mime.starts_with("audio/") => "Audio".to_owned(),
        Some(a) => a.name.clone(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Registration and modes (the app's client)

/// This store's device id, made (and kept) the first time it is asked for.
pub(crate) fn device_id(ctx: &Context) -> Result<String> {
    if let Some(id) = ctx.db.read(|c| reads::kv(c, DEVICE_KEY))? {
        return Ok(id);
    }
    ctx.write(|tx, _| {
        // Read again under the writer: two first calls at once make one id.
        if let Some(id) = reads::kv(tx, DEVICE_KEY)? {
            return Ok(id);
        }
        let id = uuid::Uuid::now_v7().to_string();
        writes::set_kv(tx, DEVICE_KEY, &id)?;
        Ok(id)
    })
}

/// Queues `push.register` for this device. Returns the outbox entry id.
pub(crate) fn register(
    ctx: &Context,
    platform: PushPlatform,
    token: String,
    app_id: String,
    sandbox: bool,
    locale: Option<String>,
) -> Result<String> {
    let device = device_id(ctx)?;
    let mutation = Mutation::RegisterPush {
        device,
        platform,
        token,
        app_id,
        locale,
        sandbox,
    };
    let (id, ()) = outbox::enqueue(ctx, mutation, None, |_, _, _| Ok(((), None)))?;
    Ok(id)
}

/// Queues `push.unregister` for this device (sign-out). Returns the outbox entry id.
pub(crate) fn unregister(ctx: &Context) -> Result<String> {
    let device = device_id(ctx)?;
    let (id, ()) = outbox::enqueue(ctx, Mutation::UnregisterPush { device }, None, |_, _, _| {
        Ok(((), None))
    })?;
    Ok(id)
}

/// Queues `push.set_mode`. Returns the outbox entry id.
pub(crate) fn set_mode(ctx: &Context, room: Option<String>, mode: PushMode) -> Result<String> {
    if let Some(r) = &room {
        roam_proto::validate::room_name(r)?;
    }
    let (id, ()) = outbox::enqueue(
        ctx,
        Mutation::SetPushMode { room, mode },
        None,
        |_, _, _| Ok(((), None)),
    )?;
    Ok(id)
}

/// The modes as the server last confirmed them, with the pending `push.set_mode` entries
/// applied in queue order.
pub(crate) fn settings(ctx: &Context) -> Result<PushSettings> {
    ctx.db.read(|c| {
        let mut s = confirmed_settings(c)?;
        for e in reads::pending_entries(c)? {
            if let Mutation::SetPushMode { room, mode } = e.mutation {
                apply_mode(&mut s, room, mode);
            }
        }
        Ok(s)
    })
}

fn confirmed_settings(c: &Connection) -> Result<PushSettings> {
    Ok(match reads::kv(c, SETTINGS_KEY)? {
        Some(json) => serde_json::from_str(&json).unwrap_or_default(),
        None => PushSettings::default(),
    })
}

fn apply_mode(s: &mut PushSettings, room: Option<String>, mode: PushMode) {
    match (room, mode) {
        (None, PushMode::Default) => {}
        (None, mode) => s.default = mode,
        (Some(room), PushMode::Default) => {
            s.rooms.remove(&room);
        }
        (Some(room), mode) => {
            s.rooms.insert(room, mode);
        }
    }
}

/// Fetches the modes (`GET /v1/push/settings`), stores them and answers them with the pending
/// changes applied.
pub(crate) async fn refresh_settings(ctx: &Context) -> Result<PushSettings> {
    let fetched = ctx
        .http
        .get::<PushSettings>("/v1/push/settings", &[], None)
        .await?;
    if let Fetched::Fresh { value, .. } = fetched {
        let json = serde_json::to_string(&value)?;
        ctx.write(|tx, _| writes::set_kv(tx, SETTINGS_KEY, &json))?;
    }
    settings(ctx)
}
