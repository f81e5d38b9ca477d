//! Operators' actions on users and rooms: list and show them, suspend and unsuspend a user,
//! erase a user, delete a room or hand it to someone else.
//!
//! Changes to rooms and memberships go through the service as ordinary writes
//! ([`crate::service::Service::submit`]), so they are ordered with the users' own writes,
//! redact what a deletion redacts, and are announced on the bus like any other: every
//! instance's caches and sockets hear of them. In a room's log an operator's write reads as
//! done by the room's owner (transfer, delete) or, during an erase, by the erased user (their
//! messages deleted, their memberships left).

use std::collections::BTreeSet;

use roam_proto::{Member, MemberStatus, Message, Role, Room, User};
use serde::{Deserialize, Serialize};

use super::{count, failed, AdminError};
use crate::blob::{hex, keys};
use crate::bus::BusMessage;
use crate::clock::now_ms;
use crate::service::Prepared;
use crate::store::{Change, Forgotten, Order, StoreError, Suspension, UserQuery, UserSort, Write};
use crate::AppState;

/// Items a listing answers at most per page.
pub const MAX_PAGE: u32 = 500;
/// Messages read per step when an erase or an export walks a user's messages.
pub(super) const MESSAGE_BATCH: u32 = 200;

pub(super) fn store_err(e: StoreError) -> AdminError {
    match e {
        StoreError::NotFound(what) => AdminError::NotFound(format!("{what} not found")),
        StoreError::Conflict(why) => AdminError::Refused(why),
        other => failed(other),
    }
}

fn api_err(e: crate::error::ApiError) -> AdminError {
    match e.code {
        roam_proto::ErrorCode::NotFound => AdminError::NotFound(e.message),
        roam_proto::ErrorCode::Internal | roam_proto::ErrorCode::Unavailable => {
            AdminError::Failed(e.message)
        }
        _ => AdminError::Refused(e.message),
    }
}

fn check_user(user: &str) -> Result<(), AdminError> {
    roam_proto::validate::user_id(user).map_err(|e| AdminError::Refused(e.0))
}

/// `GET /admin/v1/users`: one page of the directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Pass it as `cursor` for the next page (`None`: the last page).
    pub next_cursor: Option<String>,
}

/// Lists every user (`q`: a case-insensitive part of the id).
pub async fn list_users(
    state: &AppState,
    q: String,
    cursor: Option<String>,
    limit: u32,
) -> Result<UserPage, AdminError> {
    let page = state
        .service
        .store
        .search_users(&UserQuery {
            viewer: None,
            q,
            sort: UserSort::Id,
            order: Order::Asc,
            cursor,
            limit: limit.clamp(1, MAX_PAGE),
        })
        .await
        .map_err(store_err)?;
    count(state, "users_list");
    Ok(UserPage {
        users: page.items,
        next_cursor: page.next_cursor,
    })
}

/// What `admin users show` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserDetails {
    pub user: String,
    /// The directory entry (`None`: never seen, or erased).
    pub profile: Option<User>,
    /// Member rows in live rooms, banned ones included, with roles.
    pub memberships: Vec<Member>,
    /// Sockets open now on every instance (as the cluster's presence counts them).
    pub devices_online: u32,
    pub presence: String,
    /// Messages sent (deleted ones included).
    pub messages: u64,
    /// Distinct attachments of those messages, and their bytes.
    pub attachments: u64,
    pub attachment_bytes: u64,
    pub unread_notifications: u64,
    pub suspension: Option<Suspension>,
}

/// Shows a user.
pub async fn show_user(state: &AppState, user: &str) -> Result<UserDetails, AdminError> {
    check_user(user)?;
    let store = &state.service.store;
    let profile = profile(state, user).await?;
    let memberships = store.memberships(user).await.map_err(store_err)?;
    let mut messages = 0u64;
    let mut blobs = BTreeSet::new();
    let mut attachment_bytes = 0u64;
    walk_messages(state, user, |m| {
        messages += 1;
        if let Some(a) = &m.attachment {
            if blobs.insert(a.blob.clone()) {
                attachment_bytes += a.size;
            }
        }
    })
    .await?;
    let presence = state
        .service
        .presence_of(&[user.to_owned()])
        .await
        .map_err(api_err)?
        .into_iter()
        .next();
    let unread = store.unread_count(user).await.map_err(store_err)?;
    count(state, "users_show");
    Ok(UserDetails {
        user: user.to_owned(),
        profile,
        memberships,
        devices_online: presence.as_ref().map_or(0, |p| p.devices),
        presence: presence.map_or_else(|| "offline".to_owned(), |p| p.status.as_str().to_owned()),
        messages,
        attachments: blobs.len() as u64,
        attachment_bytes,
        unread_notifications: unread,
        suspension: state.service.suspensions.get(user),
    })
}

/// The user's directory entry (`None`: never seen, or erased).
pub(super) async fn profile(state: &AppState, user: &str) -> Result<Option<User>, AdminError> {
    let mut cursor = None;
    loop {
        let page = state
            .service
            .store
            .search_users(&UserQuery {
                viewer: None,
                q: user.to_owned(),
                sort: UserSort::Id,
                order: Order::Asc,
                cursor,
                limit: MAX_PAGE,
            })
            .await
            .map_err(store_err)?;
        if let Some(u) = page.items.into_iter().find(|u| u.id == user) {
            return Ok(Some(u));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(None),
        }
    }
}

/// Calls `each` with every message the user sent, page by page.
pub(super) async fn walk_messages(
    state: &AppState,
    user: &str,
    mut each: impl FnMut(&Message),
) -> Result<(), AdminError> {
    let mut after = (String::new(), 0u64);
    loop {
        let page = state
            .service
            .store
            .messages_by(user, (&after.0, after.1), MESSAGE_BATCH)
            .await
            .map_err(store_err)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = (last.room.clone(), last.seq);
        for m in &page {
            each(m);
        }
    }
}

/// Suspends (`true`) or unsuspends a user on every instance: the stamp is written to the
/// store, held here, the user's sockets here close, and the other instances are told.
pub async fn suspend(state: &AppState, user: &str, on: bool) -> Result<Suspension, AdminError> {
    check_user(user)?;
    let stamp = Suspension {
        user: user.to_owned(),
        suspended: on,
        not_before: now_ms(),
    };
    state
        .service
        .store
        .set_suspension(&stamp)
        .await
        .map_err(store_err)?;
    state.service.suspensions.put(stamp.clone());
    let closed = state.hub.close_user(user, roam_proto::close::TOKEN_EXPIRED);
    state
        .service
        .bus
        .publish(BusMessage::UserChanged {
            user: user.to_owned(),
        })
        .await;
    let action = if on { "suspend" } else { "unsuspend" };
    count(state, action);
    tracing::info!(%user, sockets_closed = closed, "admin: user {action}ed");
    Ok(stamp)
}

/// An operator's write, as the service applies the users' own.
async fn write(
    state: &AppState,
    op: &'static str,
    actor: &str,
    change: Change,
) -> Result<(), AdminError> {
    let prepared = Prepared::Write {
        op,
        write: Box::new(Write {
            actor: actor.to_owned(),
            now: now_ms(),
            idem: None,
            guard: None,
            after: None,
            change,
            notify: Vec::new(),
        }),
        permit: None,
    };
    state
        .service
        .submit(prepared)
        .await
        .map(drop)
        .map_err(api_err)
}

async fn live_room(state: &AppState, room: &str) -> Result<Room, AdminError> {
    state
        .service
        .store
        .room(room)
        .await
        .map_err(store_err)?
        .ok_or_else(|| AdminError::NotFound(format!("room {room} not found")))
}

/// Every member row of a room, by user.
async fn members(state: &AppState, room: &str) -> Result<Vec<Member>, AdminError> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|m: &Member| m.user.clone());
        let page = state
            .service
            .store
            .list_members(room, after.as_deref(), MAX_PAGE)
            .await
            .map_err(store_err)?;
        let done = page.len() < MAX_PAGE as usize;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Who gets a room when its owner goes: the active admin who joined first, else the active
/// member (of any other role) who joined first; `None` when nobody else is in it.
pub fn successor(members: &[Member], owner: &str) -> Option<String> {
    let others = members
        .iter()
        .filter(|m| m.user != owner && m.status == MemberStatus::Active);
    let oldest = |role: Option<Role>| {
        others
            .clone()
            .filter(|m| role.is_none_or(|r| m.role == r))
            .min_by(|a, b| (a.joined_at, &a.user).cmp(&(b.joined_at, &b.user)))
            .map(|m| m.user.clone())
    };
    oldest(Some(Role::Admin)).or_else(|| oldest(None))
}

/// What `admin rooms show` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomDetails {
    pub room: Room,
    pub members: Vec<Member>,
}

pub async fn list_rooms(
    state: &AppState,
    after: &str,
    limit: u32,
) -> Result<Vec<Room>, AdminError> {
    let rooms = state
        .service
        .store
        .all_rooms(after, limit.clamp(1, MAX_PAGE))
        .await
        .map_err(store_err)?;
    count(state, "rooms_list");
    Ok(rooms)
}

pub async fn show_room(state: &AppState, room: &str) -> Result<RoomDetails, AdminError> {
    let details = RoomDetails {
        room: live_room(state, room).await?,
        members: members(state, room).await?,
    };
    count(state, "rooms_show");
    Ok(details)
}

/// Deletes a room as an operator.
pub async fn delete_room(state: &AppState, room: &str) -> Result<(), AdminError> {
    let r = live_room(state, room).await?;
    write(
        state,
        "admin.room.delete",
        &r.owner,
        Change::DeleteRoom {
            name: room.to_owned(),
        },
    )
    .await?;
    count(state, "room_delete");
    tracing::info!(%room, owner = %r.owner, "admin: room deleted");
    Ok(())
}

/// Hands a room to `to` (an active member), or to [`successor`]'s choice; answers the room.
pub async fn transfer_room(
    state: &AppState,
    room: &str,
    to: Option<String>,
) -> Result<Room, AdminError> {
    let r = live_room(state, room).await?;
    let to = match to {
        Some(to) => to,
        None => successor(&members(state, room).await?, &r.owner).ok_or_else(|| {
            AdminError::Refused(format!("{room} has no other active member to hand it to"))
        })?,
    };
    if to == r.owner {
        return Err(AdminError::Refused(format!("{to} owns {room} already")));
    }
    write(
        state,
        "admin.room.transfer",
        &r.owner,
        Change::TransferOwnership {
            room: room.to_owned(),
            from: r.owner.clone(),
            to: to.clone(),
        },
    )
    .await?;
    count(state, "room_transfer");
    tracing::info!(%room, from = %r.owner, %to, "admin: room transferred");
    live_room(state, room).await
}

/// What happens to the rooms an erased user owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OwnedRooms {
    /// To the oldest active admin, else the oldest active member; deleted when nobody is left.
    #[default]
    Transfer,
    /// Deleted.
    Delete,
}

/// `POST /admin/v1/users/{user}/erase`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    #[serde(default)]
    pub rooms: OwnedRooms,
}

/// What an erase did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Erased {
    pub user: String,
    pub messages_deleted: u64,
    /// `(room, new owner)`.
    pub rooms_transferred: Vec<(String, String)>,
    pub rooms_deleted: Vec<String>,
    pub memberships_left: u64,
    pub blobs_deleted: u64,
    pub forgotten: Forgotten,
    /// The store's files were rewritten so that removed rows are not in them any more.
    pub scrubbed: bool,
}

/// Erases a user everywhere; see docs/admin.md for what goes and what stays.
///
/// 1. The user is suspended (their sockets close on every instance; nothing they send is
///    accepted any more).
/// 2. Each of their messages is deleted as a deletion does (the text blanked in its events
///    and in the idempotency results that echo it, attachment references dropped, announced
///    to every instance and client).
/// 3. Rooms they own are transferred ([`successor`]) or deleted; the others they leave.
/// 4. [`crate::store::Store::forget_user`] removes the rest of their rows.
/// 5. Attachments they sent or uploaded that nothing else references are deleted.
/// 6. The store's files are scrubbed ([`crate::store::Store::scrub`]).
///
/// `forget_user` also deletes the user's push registrations, modes and queued pushes.
pub async fn erase(state: &AppState, user: &str, rooms: OwnedRooms) -> Result<Erased, AdminError> {
    check_user(user)?;
    let started = now_ms();
    let mut out = Erased {
        user: user.to_owned(),
        ..Erased::default()
    };
    suspend(state, user, true).await?;
    let store = &state.service.store;

    let mut sent = Vec::new();
    walk_messages(state, user, |m| {
        sent.push((
            m.room.clone(),
            m.id.clone(),
            m.deleted,
            m.attachment.as_ref().map(|a| a.blob.clone()),
        ))
    })
    .await?;
    let mut blobs = BTreeSet::new();
    for (room, id, deleted, blob) in sent {
        blobs.extend(blob);
        if deleted {
            continue;
        }
        match write(
            state,
            "admin.erase.message",
            user,
            Change::DeleteMessage { room, id },
        )
        .await
        {
            Ok(()) => out.messages_deleted += 1,
            // A deleted room's messages are blanked by `forget_user`.
            Err(AdminError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }

    for m in store.memberships(user).await.map_err(store_err)? {
        if m.status != MemberStatus::Active {
            continue;
        }
        if m.role == Role::Owner {
            let next = match rooms {
                OwnedRooms::Transfer => successor(&members(state, &m.room).await?, user),
                OwnedRooms::Delete => None,
            };
            match next {
                Some(to) => {
                    write(
                        state,
                        "admin.erase.transfer",
                        user,
                        Change::TransferOwnership {
                            room: m.room.clone(),
                            from: user.to_owned(),
                            to: to.clone(),
                        },
                    )
                    .await?;
                    out.rooms_transferred.push((m.room.clone(), to));
                }
                None => {
                    write(
                        state,
                        "admin.erase.room",
                        user,
                        Change::DeleteRoom {
                            name: m.room.clone(),
                        },
                    )
                    .await?;
                    out.rooms_deleted.push(m.room);
                    continue;
                }
            }
        }
        write(
            state,
            "admin.erase.leave",
            user,
            Change::RemoveMember {
                room: m.room.clone(),
                user: user.to_owned(),
            },
        )
        .await?;
        out.memberships_left += 1;
    }

    out.forgotten = store.forget_user(user).await.map_err(store_err)?;
    out.blobs_deleted = delete_blobs(state, user, blobs, started).await?;
    store.scrub().await.map_err(store_err)?;
    out.scrubbed = true;
    // Their presence row may have been written again as their sockets closed.
    store.forget_user(user).await.map_err(store_err)?;
    state
        .service
        .bus
        .publish(BusMessage::UserChanged {
            user: user.to_owned(),
        })
        .await;
    count(state, "erase");
    tracing::info!(%user, messages = out.messages_deleted, rooms_transferred = out.rooms_transferred.len(), rooms_deleted = out.rooms_deleted.len(), blobs = out.blobs_deleted, "admin: user erased");
    Ok(out)
}

/// Deletes the attachments of `sent` that no message carries any more, and the user's uploader
/// markers (with the blobs only they uploaded and nothing carries); answers the blobs deleted.
async fn delete_blobs(
    state: &AppState,
    user: &str,
    mut candidates: BTreeSet<String>,
    started: i64,
) -> Result<u64, AdminError> {
    let Some(blobs) = state.service.attachments.read().clone() else {
        return Ok(0);
    };
    let objects = &blobs.store;
    let mine = format!("/{}", hex(user.as_bytes()));
    for marker in objects.list("owners/").await.map_err(failed)? {
        if let Some(sha) = marker
            .key
            .strip_suffix(&mine)
            .and_then(|k| k.strip_prefix("owners/"))
        {
            candidates.insert(sha.to_owned());
            objects.delete(&marker.key).await.map_err(failed)?;
        }
    }
    let mut deleted = 0;
    for sha in candidates {
        let in_use = state
            .service
            .store
            .blob_in_use(&sha)
            .await
            .map_err(store_err)?;
        let uploaders = objects
            .list(&format!("{}/", keys::owners(&sha)))
            .await
            .map_err(failed)?;
        if in_use || !uploaders.is_empty() {
            continue;
        }
        // Marked as being deleted first, as retention does: a send naming the blob since the
        // erase began keeps it, and one that comes after the mark fails instead of committing
        // a message whose attachment is gone.
        let store = &state.service.store;
        if !store
            .doom_blob(&sha, now_ms(), started)
            .await
            .map_err(store_err)?
        {
            continue;
        }
        objects.delete(&keys::blob(&sha)).await.map_err(failed)?;
        store.forget_blob(&sha).await.map_err(store_err)?;
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(user: &str, role: Role, joined_at: i64) -> Member {
        Member {
            room: "r".into(),
            user: user.into(),
            role,
            status: MemberStatus::Active,
            joined_at,
        }
    }

    #[test]
    fn the_oldest_admin_then_the_oldest_member_inherits() {
        let all = vec![
            m("owner", Role::Owner, 1),
            m("early", Role::Member, 2),
            m("admin2", Role::Admin, 5),
            m("admin1", Role::Admin, 4),
        ];
        assert_eq!(successor(&all, "owner").as_deref(), Some("admin1"));
        let no_admin = vec![
            m("owner", Role::Owner, 1),
            m("b", Role::Guest, 3),
            m("a", Role::Member, 2),
        ];
        assert_eq!(successor(&no_admin, "owner").as_deref(), Some("a"));
        assert_eq!(successor(&[m("owner", Role::Owner, 1)], "owner"), None);
    }
}
