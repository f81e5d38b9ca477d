//! Messages, the event log (recovery over REST), analytics, batch import and documents.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use roam_proto::{
    ActivityBucket, Attachment, Document, ErrorCode, Message, Mutation, Page, Role, RoomEvent,
};
use serde::Deserialize;

use super::{applied, page_limit, seq_cursor, IdemKey, J, Q};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::store::{MessageCursor, Period};
use crate::AppState;

/// Largest `message.import` body.
const IMPORT_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Largest page of `GET …/events`.
const MAX_EVENTS_PAGE: u32 = 1_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rooms/{room}/messages", get(list).post(send))
        .route("/v1/rooms/{room}/messages/{id}", patch(edit).delete(remove))
        .route(
            "/v1/rooms/{room}/messages/import",
            post(import).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)),
        )
        .route("/v1/rooms/{room}/events", get(events))
        .route("/v1/rooms/{room}/activity", get(activity))
        .route("/v1/rooms/{room}/documents", get(documents))
        .route(
            "/v1/rooms/{room}/documents/{doc}",
            get(document).put(put_document),
        )
        .route("/v1/rooms/{room}/documents/{doc}/history", get(history))
}

async fn run(s: &AppState, caller: &Caller, key: &str, m: Mutation) -> ApiResult<Response> {
    Ok(applied(s.service.mutate(&caller.user, key, m).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<u32>,
}

async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    Q(q): Q<MessagesQuery>,
) -> ApiResult<Json<Page<Message>>> {
    let limit = page_limit(q.limit)?;
    let (before, after) = (
        seq_cursor("before", q.before)?,
        seq_cursor("after", q.after)?,
    );
    s.service.readable_room(&caller.user, &room).await?;
    let cursor = match (before, after) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give before or after, not both")),
        (Some(b), None) => MessageCursor::Before(b),
        (None, Some(a)) => MessageCursor::After(a),
        (None, None) => MessageCursor::Before(u64::MAX),
    };
    let page = s.service.store.messages(&room, cursor, limit).await?;
    let next_cursor = page
        .more(limit)
        .then(|| page.items.last().map(|m| m.seq.to_string()))
        .flatten();
    Ok(Json(Page {
        items: page.items,
        next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    #[serde(default)]
    body: String,
    reply_to: Option<String>,
    id: Option<String>,
    attachment: Option<Attachment>,
}

async fn send(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
    J(b): J<SendBody>,
) -> ApiResult<Response> {
    let m = Mutation::SendMessage {
        room,
        body: b.body,
        reply_to: b.reply_to,
        id: b.id,
        attachment: b.attachment,
    };
    run(&s, &caller, &key, m).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    body: String,
}

async fn edit(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path((room, message)): Path<(String, String)>,
    J(b): J<EditBody>,
) -> ApiResult<Response> {
    let m = Mutation::EditMessage {
        room,
        message,
        body: b.body,
    };
    run(&s, &caller, &key, m).await
}

async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path((room, message)): Path<(String, String)>,
) -> ApiResult<Response> {
    run(&s, &caller, &key, Mutation::DeleteMessage { room, message }).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    bodies: Vec<String>,
}

async fn import(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
    J(b): J<ImportBody>,
) -> ApiResult<Response> {
    run(
        &s,
        &caller,
        &key,
        Mutation::ImportMessages {
            room,
            bodies: b.bodies,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

async fn events(
    State(s): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    Q(q): Q<EventsQuery>,
) -> ApiResult<Json<Page<RoomEvent>>> {
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=MAX_EVENTS_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "limit must be 1 to {MAX_EVENTS_PAGE}"
            )))
        }
    };
    let after = seq_cursor("after", q.after)?.unwrap_or(0);
    s.service.readable_room(&caller.user, &room).await?;
    let (oldest, head) = s.service.store.event_bounds(&room).await?;
    if oldest > 0 && after + 1 < oldest {
        return Err(ApiError::new(
            ErrorCode::Gone,
            "events before the oldest kept one are gone; reload the room",
        ));
    }
    // A page stops at `limit` events or at the store's byte budget, whichever comes first.
    let items = s.service.store.events_after(&room, after, limit).await?;
    let next_cursor = items
        .last()
        .filter(|e| e.seq < head)
        .map(|e| e.seq.to_string());
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityQuery {
    period: String,
    from: Option<i64>,
    to: Option<i64>,
}

async fn activity(
    State(s): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    Q(q): Q<ActivityQuery>,
) -> ApiResult<Json<Vec<ActivityBucket>>> {
    let period = match q.period.as_str() {
        "day" => Period::Day,
        "week" => Period::Week,
        "month" => Period::Month,
        "year" => Period::Year,
        _ => return Err(ApiError::invalid("period must be day, week, month or year")),
    };
    let from = q.from.unwrap_or(0);
    let to = q.to.unwrap_or(i64::MAX);
    if from < 0 || to <= from {
        return Err(ApiError::invalid("from must be >= 0 and before to"));
    }
    roam_proto::validate::room_name(&room)?;
    let role = s
        .service
        .member(&room, &caller.user)
        .await?
        .filter(|m| m.status == roam_proto::MemberStatus::Active)
        .map(|m| m.role);
    if role.is_none_or(|r| r.rank() < Role::Admin.rank()) {
        return Err(ApiError::forbidden(
            "room analytics are for the owner and admins",
        ));
    }
    Ok(Json(
        s.service
            .store
            .room_activity(&room, period, from, to)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentsQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn documents(
    State(s): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    Q(q): Q<DocumentsQuery>,
) -> ApiResult<Json<Page<Document>>> {
    let limit = page_limit(q.limit)?;
    if let Some(c) = &q.cursor {
        roam_proto::validate::document_name(c)
            .map_err(|_| ApiError::invalid("malformed cursor"))?;
    }
    s.service.readable_room(&caller.user, &room).await?;
    let page = s
        .service
        .store
        .documents(&room, q.cursor.as_deref(), limit)
        .await?;
    let next_cursor = page
        .more(limit)
        .then(|| page.items.last().map(|d| d.doc.clone()))
        .flatten();
    Ok(Json(Page {
        items: page.items,
        next_cursor,
    }))
}

async fn document(
    State(s): State<AppState>,
    caller: Caller,
    Path((room, doc)): Path<(String, String)>,
) -> ApiResult<Json<Document>> {
    s.service.readable_room(&caller.user, &room).await?;
    roam_proto::validate::document_name(&doc)?;
    s.service
        .store
        .document(&room, &doc)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("document"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    base_version: u64,
    content: String,
}

async fn put_document(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path((room, doc)): Path<(String, String)>,
    J(b): J<PutBody>,
) -> ApiResult<Response> {
    let m = Mutation::PutDocument {
        room,
        doc,
        base_version: b.base_version,
        content: b.content,
    };
    run(&s, &caller, &key, m).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

async fn history(
    State(s): State<AppState>,
    caller: Caller,
    Path((room, doc)): Path<(String, String)>,
    Q(q): Q<HistoryQuery>,
) -> ApiResult<Json<Page<Document>>> {
    let limit = page_limit(q.limit)?;
    let before = seq_cursor("before", q.before)?;
    s.service.readable_room(&caller.user, &room).await?;
    roam_proto::validate::document_name(&doc)?;
    let page = s
        .service
        .store
        .document_history(&room, &doc, before.unwrap_or(u64::MAX), limit)
        .await?;
    let next_cursor = page
        .more(limit)
        .then(|| page.items.last().map(|d| d.version.to_string()))
        .flatten();
    Ok(Json(Page {
        items: page.items,
        next_cursor,
    }))
}
