//! Rooms, members, bans and room invitations.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use roam_proto::{Invitation, Member, Mutation, Page, Role, Room, RoomKind};
use serde::Deserialize;
use serde_json::Value;

use super::{applied, page_limit, IdemKey, J, Q};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::store::RoomQuery;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rooms", get(list).post(create))
        .route("/v1/rooms/{room}", get(show).patch(update).delete(remove))
        .route("/v1/rooms/{room}/join", post(join))
        .route("/v1/rooms/{room}/leave", post(leave))
        .route("/v1/rooms/{room}/read", post(mark_read))
        .route("/v1/rooms/{room}/transfer", post(transfer))
        .route("/v1/rooms/{room}/members", get(members))
        .route("/v1/rooms/{room}/members/{user}/role", put(set_role))
        .route("/v1/rooms/{room}/bans", post(ban))
        .route("/v1/rooms/{room}/bans/{user}", delete(unban))
        .route(
            "/v1/rooms/{room}/invitations",
            get(room_invitations).post(invite),
        )
        .route("/v1/rooms/{room}/invitations/{id}", delete(revoke))
}

async fn run(s: &AppState, caller: &Caller, key: &str, m: Mutation) -> ApiResult<Response> {
    Ok(applied(s.service.mutate(&caller.user, key, m).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    kind: Option<String>,
    joined: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q<ListQuery>,
) -> ApiResult<Json<Page<Room>>> {
    let limit = page_limit(q.limit)?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(
            RoomKind::parse(k)
                .ok_or_else(|| ApiError::invalid("kind must be public, protected or private"))?,
        ),
    };
    if let Some(c) = &q.cursor {
        roam_proto::validate::room_name(c).map_err(|_| ApiError::invalid("malformed cursor"))?;
    }
    let page = s
        .service
        .store
        .list_rooms(
            &caller.user,
            &RoomQuery {
                kind,
                joined_only: q.joined.unwrap_or(false),
                after_name: q.cursor,
                limit,
            },
        )
        .await?;
    let next_cursor = page
        .more(limit)
        .then(|| page.items.last().map(|r| r.name.clone()))
        .flatten();
    Ok(Json(Page {
        items: page.items,
        next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    room: String,
    kind: RoomKind,
    #[serde(default)]
    title: String,
    #[serde(default)]
    metadata: Option<Value>,
}

async fn create(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    J(b): J<CreateBody>,
) -> ApiResult<Response> {
    let m = Mutation::CreateRoom {
        room: b.room,
        kind: b.kind,
        title: b.title,
        metadata: b
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default())),
    };
    run(&s, &caller, &key, m).await
}

async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
) -> ApiResult<Json<Room>> {
    match s.service.readable_room(&caller.user, &room).await {
        Ok(_) => {}
        // A protected room is listed for everyone, so its metadata is not secret; its
        // messages are.
        Err(e) if e.code == roam_proto::ErrorCode::Forbidden => {
            let r = s
                .service
                .room(&room)
                .await?
                .ok_or_else(|| ApiError::not_found("room"))?;
            let banned = s
                .service
                .member(&room, &caller.user)
                .await?
                .is_some_and(|m| m.status == roam_proto::MemberStatus::Banned);
            if r.kind != RoomKind::Protected || banned {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    // The cached room serves permission checks only: it is not invalidated by messages, so
    // its `head_seq` would be stale. The answer comes from the store.
    s.service
        .store
        .room(&room)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("room"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    title: Option<String>,
    kind: Option<RoomKind>,
    metadata: Option<Value>,
}

async fn update(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
    J(b): J<UpdateBody>,
) -> ApiResult<Response> {
    let m = Mutation::UpdateRoom {
        room,
        title: b.title,
        kind: b.kind,
        metadata: b.metadata,
    };
    run(&s, &caller, &key, m).await
}

async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
) -> ApiResult<Response> {
    run(&s, &caller, &key, Mutation::DeleteRoom { room }).await
}

async fn join(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
) -> ApiResult<Response> {
    run(&s, &caller, &key, Mutation::JoinRoom { room }).await
}

async fn leave(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
) -> ApiResult<Response> {
    run(&s, &caller, &key, Mutation::LeaveRoom { room }).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    seq: u64,
}

async fn mark_read(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
    J(b): J<ReadBody>,
) -> ApiResult<Response> {
    run(
        &s,
        &caller,
        &key,
        Mutation::MarkRoomRead { room, seq: b.seq },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    user: String,
}

async fn transfer(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
    J(b): J<UserBody>,
) -> ApiResult<Response> {
    run(
        &s,
        &caller,
        &key,
        Mutation::TransferOwnership { room, user: b.user },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn members(
    State(s): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    Q(q): Q<PageQuery>,
) -> ApiResult<Json<Page<Member>>> {
    let limit = page_limit(q.limit)?;
    s.service.readable_room(&caller.user, &room).await?;
    if let Some(c) = &q.cursor {
        roam_proto::validate::user_id(c).map_err(|_| ApiError::invalid("malformed cursor"))?;
    }
    let items = s
        .service
        .store
        .list_members(&room, q.cursor.as_deref(), limit)
        .await?;
    let next_cursor = (items.len() as u32 == limit)
        .then(|| items.last().map(|m| m.user.clone()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: Role,
}

async fn set_role(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path((room, user)): Path<(String, String)>,
    J(b): J<RoleBody>,
) -> ApiResult<Response> {
    run(
        &s,
        &caller,
        &key,
        Mutation::SetRole {
            room,
            user,
            role: b.role,
        },
    )
    .await
}

async fn ban(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
    J(b): J<UserBody>,
) -> ApiResult<Response> {
    run(&s, &caller, &key, Mutation::Ban { room, user: b.user }).await
}

async fn unban(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path((room, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    run(&s, &caller, &key, Mutation::Unban { room, user }).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    user: String,
    role: Option<Role>,
    ttl_secs: Option<u64>,
}

async fn invite(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
    J(b): J<InviteBody>,
) -> ApiResult<Response> {
    let m = Mutation::Invite {
        room,
        user: b.user,
        role: b.role.unwrap_or(Role::Member),
        ttl_secs: b.ttl_secs,
    };
    run(&s, &caller, &key, m).await
}

async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path((room, invitation)): Path<(String, String)>,
) -> ApiResult<Response> {
    run(
        &s,
        &caller,
        &key,
        Mutation::RevokeInvitation { room, invitation },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<u32>,
}

async fn room_invitations(
    State(s): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    Q(q): Q<LimitQuery>,
) -> ApiResult<Json<Vec<Invitation>>> {
    let limit = page_limit(q.limit)?;
    roam_proto::validate::room_name(&room)?;
    let member = s.service.member(&room, &caller.user).await?;
    let allowed = member.is_some_and(|m| {
        m.status == roam_proto::MemberStatus::Active && m.role.rank() >= Role::Admin.rank()
    });
    if !allowed {
        return Err(ApiError::forbidden(
            "only the owner and admins see a room's invitations",
        ));
    }
    let now = crate::clock::now_ms();
    Ok(Json(
        s.service.store.room_invitations(&room, now, limit).await?,
    ))
}
