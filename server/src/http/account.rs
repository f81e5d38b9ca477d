//! The caller's own things and the directory: `/v1/me`, users, invitations, notifications,
//! presence.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use roam_proto::{Invitation, Mutation, Notification, Page, Presence, ReadMarker, User};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{applied, page_limit, seq_cursor, IdemKey, J, Q};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::store::{NotificationQuery, Order, UserQuery, UserSort};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/users", get(users))
        .route("/v1/invitations", get(invitations))
        .route("/v1/invitations/{id}/accept", post(accept))
        .route("/v1/invitations/{id}/reject", post(reject))
        .route("/v1/notifications", get(notifications))
        .route("/v1/notifications/read", post(read))
        .route("/v1/notifications/read-all", post(read_all))
        .route("/v1/presence", get(presence))
        .route("/v1/read-markers", get(read_markers))
}

async fn me(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let unread = s.service.store.unread_count(&caller.user).await?;
    Ok(Json(json!({ "user": caller.user, "unread": unread })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    q: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn users(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q<UsersQuery>,
) -> ApiResult<Json<Page<User>>> {
    let limit = page_limit(q.limit)?;
    let sort = match q.sort.as_deref() {
        None | Some("id") => UserSort::Id,
        Some("created_at") => UserSort::CreatedAt,
        Some("last_seen") => UserSort::LastSeen,
        Some(_) => {
            return Err(ApiError::invalid(
                "sort must be id, created_at or last_seen",
            ))
        }
    };
    let order = match q.order.as_deref() {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(_) => return Err(ApiError::invalid("order must be asc or desc")),
    };
    let text = q.q.unwrap_or_default();
    if text.len() > 128 {
        return Err(ApiError::invalid("q must be at most 128 bytes"));
    }
    if let Some(c) = &q.cursor {
        if c.len() > 512 {
            return Err(ApiError::invalid("malformed cursor"));
        }
    }
    let page = s
        .service
        .store
        .search_users(&UserQuery {
            viewer: Some(caller.user.clone()),
            q: text,
            sort,
            order,
            cursor: q.cursor,
            limit,
        })
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound("cursor") => ApiError::invalid("malformed cursor"),
            other => other.into(),
        })?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<u32>,
}

async fn invitations(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q<LimitQuery>,
) -> ApiResult<Json<Vec<Invitation>>> {
    let limit = page_limit(q.limit)?;
    let now = crate::clock::now_ms();
    Ok(Json(
        s.service
            .store
            .invitations_for(&caller.user, now, limit)
            .await?,
    ))
}

async fn accept(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let m = Mutation::AcceptInvitation { invitation: id };
    Ok(applied(s.service.mutate(&caller.user, &key, m).await?))
}

async fn reject(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let m = Mutation::RejectInvitation { invitation: id };
    Ok(applied(s.service.mutate(&caller.user, &key, m).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationsQuery {
    after: Option<u64>,
    unread: Option<bool>,
    limit: Option<u32>,
}

async fn notifications(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q<NotificationsQuery>,
) -> ApiResult<Json<Page<Notification>>> {
    let limit = page_limit(q.limit)?;
    let after = seq_cursor("after", q.after)?;
    let items = s
        .service
        .store
        .notifications(
            &caller.user,
            &NotificationQuery {
                after_seq: after.unwrap_or(0),
                unread_only: q.unread.unwrap_or(false),
                limit,
            },
        )
        .await?;
    let next_cursor = (items.len() as u32 == limit)
        .then(|| items.last().map(|n| n.seq.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// The caller's read markers of every room they are an active member of, in one page (one row
/// per room the user is in).
async fn read_markers(
    State(s): State<AppState>,
    caller: Caller,
    Q(_): Q<NoQuery>,
) -> ApiResult<Json<Page<ReadMarker>>> {
    let items = s.service.store.read_markers(&caller.user).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    ids: Vec<String>,
}

async fn read(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    J(b): J<ReadBody>,
) -> ApiResult<Response> {
    let m = Mutation::MarkRead { ids: b.ids };
    Ok(applied(s.service.mutate(&caller.user, &key, m).await?))
}

async fn read_all(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
) -> ApiResult<Response> {
    Ok(applied(
        s.service
            .mutate(&caller.user, &key, Mutation::MarkAllRead {})
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceQuery {
    users: String,
}

async fn presence(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q<PresenceQuery>,
) -> ApiResult<Json<Vec<Presence>>> {
    let users: Vec<String> = q
        .users
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if users.is_empty() || users.len() > roam_proto::validate::MAX_IDS_PER_CALL {
        return Err(ApiError::invalid(format!(
            "users must list 1 to {} user ids",
            roam_proto::validate::MAX_IDS_PER_CALL
        )));
    }
    for u in &users {
        roam_proto::validate::user_id(u)?;
    }
    // Only users who share a room with the caller: anyone else reads as offline and never
    // seen, exactly like an id nobody uses.
    let visible = s.service.store.co_members(&caller.user, &users).await?;
    let shown = s.service.presence_of(&visible).await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| {
                shown
                    .iter()
                    .find(|p| p.user == u)
                    .cloned()
                    .unwrap_or(Presence {
                        user: u,
                        status: roam_proto::PresenceStatus::Offline,
                        last_seen: None,
                        devices: 0,
                    })
            })
            .collect(),
    ))
}
