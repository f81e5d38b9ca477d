//! Mutations: every change a client can ask for, in one enum shared by REST and WebSocket.
//!
//! On the socket a mutation travels in a `mutate` frame, `{"op": …, "args": {…}}`, with its
//! idempotency key; over REST each one has its own route and the key in the `Idempotency-Key`
//! header. Either way the server runs the same code, and the client's outbox stores exactly this
//! JSON, so a queued mutation is replayed byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Attachment, PresenceStatus, Role, RoomKind};
use crate::push::{PushMode, PushPlatform};

/// A change asked for by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args")]
pub enum Mutation {
    /// Result: `Room`.
    #[serde(rename = "room.create")]
    CreateRoom {
        room: String,
        kind: RoomKind,
        #[serde(default)]
        title: String,
        #[serde(default = "empty_object")]
        metadata: Value,
    },
    /// Owner or admin. Result: `Room`.
    #[serde(rename = "room.update")]
    UpdateRoom {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<RoomKind>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Value>,
    },
    /// Owner only. Result: `{}`.
    #[serde(rename = "room.delete")]
    DeleteRoom { room: String },
    /// Public rooms, or any room with a pending invitation. Result: `Member`.
    #[serde(rename = "room.join")]
    JoinRoom { room: String },
    /// Not for the owner (transfer first). Result: `{}`.
    #[serde(rename = "room.leave")]
    LeaveRoom { room: String },
    /// Owner only; the old owner becomes admin. Result: `Room`.
    #[serde(rename = "room.transfer")]
    TransferOwnership { room: String, user: String },
    /// Result: `Invitation`. `ttl_secs` defaults to 7 days, at most 30 days.
    #[serde(rename = "member.invite")]
    Invite {
        room: String,
        user: String,
        #[serde(default = "default_role")]
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
    },
    /// The invitee only. Result: `Member`.
    #[serde(rename = "invitation.accept")]
    AcceptInvitation { invitation: String },
    /// The invitee only. Result: `Invitation`.
    #[serde(rename = "invitation.reject")]
    RejectInvitation { invitation: String },
    /// Withdraws a pending invitation of the room: its inviter, or an owner or admin.
    /// Result: `Invitation` (status `revoked`).
    #[serde(rename = "member.revoke_invitation")]
    RevokeInvitation { room: String, invitation: String },
    /// Owner or admin, on a weaker member, to a role below their own. Result: `Member`.
    #[serde(rename = "member.set_role")]
    SetRole {
        room: String,
        user: String,
        role: Role,
    },
    /// Owner or admin, on a weaker member. Result: `{}`.
    #[serde(rename = "member.ban")]
    Ban { room: String, user: String },
    /// Owner or admin. Result: `{}`.
    #[serde(rename = "member.unban")]
    Unban { room: String, user: String },
    /// Any active member, except where banned. `id` lets the client name the message itself
    /// (the core uses a UUIDv7), so it can refer to it (edit, delete, reply) before the server
    /// answered; without it the server makes one. An id already taken by another message is a
    /// `conflict`. `attachment` names a blob the sender uploaded, or may already read; with
    /// it, `body` is a caption and may be empty. Result: `Message`.
    #[serde(rename = "message.send")]
    SendMessage {
        room: String,
        #[serde(default)]
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<Attachment>,
    },
    /// The author only. Result: `Message`.
    #[serde(rename = "message.edit")]
    EditMessage {
        room: String,
        message: String,
        body: String,
    },
    /// The author, or an owner or admin. Result: `Message`.
    #[serde(rename = "message.delete")]
    DeleteMessage { room: String, message: String },
    /// Owner or admin: many messages in one transaction (the sender of each is the caller).
    /// Result: `{"imported": n, "first_seq": a, "last_seq": b}`.
    #[serde(rename = "message.import")]
    ImportMessages { room: String, bodies: Vec<String> },
    /// Members and above: merge one update (base64 of Yjs v1 binary, 1 B–256 KiB decoded) into
    /// the room's collaborative document `doc`, creating it. Result: `CollabUpdated` (§12).
    #[serde(rename = "collab.update")]
    UpdateCollab {
        room: String,
        doc: String,
        update: String,
    },
    /// Members and above. `base_version` 0 creates the document. A stale base version fails
    /// with `conflict` and the current document. Result: `Document`.
    #[serde(rename = "document.put")]
    PutDocument {
        room: String,
        doc: String,
        base_version: u64,
        content: String,
    },
    /// Active members: the caller has read `room` up to `seq` (at most the room's head). The
    /// marker only moves forward (a lower `seq` leaves it as it is); the caller's `mentioned`
    /// notifications of messages up to `seq` in the room are marked read with it. Every socket
    /// of the caller receives a `read_marker` frame. Result: `ReadMarker`.
    #[serde(rename = "room.mark_read")]
    MarkRoomRead { room: String, seq: u64 },
    /// The caller's own notifications; unknown ids are ignored. Result: `{"unread": n}`.
    #[serde(rename = "notification.read")]
    MarkRead { ids: Vec<String> },
    /// Result: `{"unread": 0}`.
    #[serde(rename = "notification.read_all")]
    MarkAllRead {},
    /// The device's own status (`online` or `away`). Result: `Presence`.
    #[serde(rename = "presence.set")]
    SetPresence { status: PresenceStatus },
    /// Registers (or re-registers) the caller's device for push (§11): a device registered
    /// again gets the new token, and a token held by another device or user moves to this one.
    /// Result: `PushDevice`.
    #[serde(rename = "push.register")]
    RegisterPush {
        device: String,
        platform: PushPlatform,
        token: String,
        app_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        locale: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        sandbox: bool,
    },
    /// Removes the caller's device's registration (an unknown device too). Result: `{}`.
    #[serde(rename = "push.unregister")]
    UnregisterPush { device: String },
    /// The caller's notification mode: the account default without `room` (`default` is
    /// refused there), else the room's override (`default` removes it). Result: `PushSettings`.
    #[serde(rename = "push.set_mode")]
    SetPushMode {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        mode: PushMode,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn default_role() -> Role {
    Role::Member
}

impl Mutation {
    /// The `op` name on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Mutation::CreateRoom { .. } => "room.create",
            Mutation::UpdateRoom { .. } => "room.update",
            Mutation::DeleteRoom { .. } => "room.delete",
            Mutation::JoinRoom { .. } => "room.join",
            Mutation::LeaveRoom { .. } => "room.leave",
            Mutation::TransferOwnership { .. } => "room.transfer",
            Mutation::MarkRoomRead { .. } => "room.mark_read",
            Mutation::Invite { .. } => "member.invite",
            Mutation::AcceptInvitation { .. } => "invitation.accept",
            Mutation::RejectInvitation { .. } => "invitation.reject",
            Mutation::RevokeInvitation { .. } => "member.revoke_invitation",
            Mutation::SetRole { .. } => "member.set_role",
            Mutation::Ban { .. } => "member.ban",
            Mutation::Unban { .. } => "member.unban",
            Mutation::SendMessage { .. } => "message.send",
            Mutation::EditMessage { .. } => "message.edit",
            Mutation::DeleteMessage { .. } => "message.delete",
            Mutation::ImportMessages { .. } => "message.import",
            Mutation::PutDocument { .. } => "document.put",
            Mutation::UpdateCollab { .. } => "collab.update",
            Mutation::MarkRead { .. } => "notification.read",
            Mutation::MarkAllRead {} => "notification.read_all",
            Mutation::SetPresence { .. } => "presence.set",
            Mutation::RegisterPush { .. } => "push.register",
            Mutation::UnregisterPush { .. } => "push.unregister",
            Mutation::SetPushMode { .. } => "push.set_mode",
        }
    }

    /// The room the mutation acts on, if any: the client keeps order per room by this.
    pub fn room(&self) -> Option<&str> {
        match self {
            Mutation::CreateRoom { room, .. }
            | Mutation::UpdateRoom { room, .. }
            | Mutation::DeleteRoom { room }
            | Mutation::JoinRoom { room }
            | Mutation::LeaveRoom { room }
            | Mutation::TransferOwnership { room, .. }
            | Mutation::MarkRoomRead { room, .. }
            | Mutation::Invite { room, .. }
            | Mutation::RevokeInvitation { room, .. }
            | Mutation::SetRole { room, .. }
            | Mutation::Ban { room, .. }
            | Mutation::Unban { room, .. }
            | Mutation::SendMessage { room, .. }
            | Mutation::EditMessage { room, .. }
            | Mutation::DeleteMessage { room, .. }
            | Mutation::ImportMessages { room, .. }
            | Mutation::PutDocument { room, .. }
            | Mutation::UpdateCollab { room, .. } => Some(room),
            Mutation::SetPushMode { room, .. } => room.as_deref(),
            Mutation::AcceptInvitation { .. }
            | Mutation::RegisterPush { .. }
            | Mutation::UnregisterPush { .. }
            | Mutation::RejectInvitation { .. }
            | Mutation::MarkRead { .. }
            | Mutation::MarkAllRead {}
            | Mutation::SetPresence { .. } => None,
        }
    }

    /// Checks every field against the limits of [`crate::validate`], so that a bad mutation is
    /// refused before it is queued or applied.
    pub fn validate(&self) -> Result<(), crate::validate::Invalid> {
        use crate::validate as v;
        if let Some(room) = self.room() {
            v::room_name(room)?;
        }
        match self {
            Mutation::CreateRoom {
                title, metadata, ..
            } => {
                v::title(title)?;
                v::metadata(metadata)
            }
            Mutation::UpdateRoom {
                title,
                metadata,
                kind,
                ..
            } => {
                if title.is_none() && metadata.is_none() && kind.is_none() {
                    return Err(v::Invalid::new("nothing to update"));
                }
                if let Some(t) = title {
                    v::title(t)?;
                }
                if let Some(m) = metadata {
                    v::metadata(m)?;
                }
                Ok(())
            }
            Mutation::TransferOwnership { user, .. }
            | Mutation::Ban { user, .. }
            | Mutation::Unban { user, .. } => v::user_id(user),
            Mutation::Invite {
                user,
                role,
                ttl_secs,
                ..
            } => {
                v::user_id(user)?;
                if *role == Role::Owner {
                    return Err(v::Invalid::new("an invitation cannot grant the owner role"));
                }
                match ttl_secs {
                    Some(0) => Err(v::Invalid::new("ttl_secs must be at least 1")),
                    Some(t) if *t > v::MAX_INVITATION_TTL_SECS => Err(v::Invalid::new(format!(
                        "ttl_secs must be at most {}",
                        v::MAX_INVITATION_TTL_SECS
                    ))),
                    _ => Ok(()),
                }
            }
            Mutation::SetRole { user, role, .. } => {
                v::user_id(user)?;
                if *role == Role::Owner {
                    return Err(v::Invalid::new(
                        "use room.transfer to make someone the owner",
                    ));
                }
                Ok(())
            }
            Mutation::AcceptInvitation { invitation }
            | Mutation::RejectInvitation { invitation }
            | Mutation::RevokeInvitation { invitation, .. } => {
                v::identifier("invitation", invitation)
            }
            Mutation::SendMessage {
                body,
                reply_to,
                id,
                attachment,
                ..
            } => {
                match attachment {
                    Some(a) => {
                        v::caption(body)?;
                        v::attachment(a)?;
                    }
                    None => v::body(body)?,
                }
                if let Some(r) = reply_to {
                    v::identifier("reply_to", r)?;
                }
                if let Some(i) = id {
                    v::identifier("id", i)?;
                }
                Ok(())
            }
            Mutation::EditMessage { message, body, .. } => {
                v::identifier("message", message)?;
                v::body(body)
            }
            Mutation::DeleteMessage { message, .. } => v::identifier("message", message),
            Mutation::ImportMessages { bodies, .. } => {
                if bodies.is_empty() {
                    return Err(v::Invalid::new("bodies must not be empty"));
                }
                if bodies.len() > v::MAX_IMPORT_BATCH {
                    return Err(v::Invalid::new(format!(
                        "at most {} messages per import",
                        v::MAX_IMPORT_BATCH
                    )));
                }
                bodies.iter().try_for_each(|b| v::body(b))
            }
            Mutation::PutDocument { doc, content, .. } => {
                v::document_name(doc)?;
                v::document_content(content)
            }
            Mutation::UpdateCollab { doc, update, .. } => crate::collab::update(doc, update),
            Mutation::MarkRead { ids } => {
                if ids.len() > v::MAX_IDS_PER_CALL {
                    return Err(v::Invalid::new(format!(
                        "at most {} ids per call",
                        v::MAX_IDS_PER_CALL
                    )));
                }
                ids.iter().try_for_each(|i| v::identifier("ids", i))
            }
            Mutation::SetPresence { status } => {
                if *status == PresenceStatus::Offline {
                    return Err(v::Invalid::new(
                        "a connected device is online or away; close the socket to go offline",
                    ));
                }
                Ok(())
            }
            Mutation::MarkRoomRead { seq, .. } => v::cursor("seq", *seq),
            Mutation::RegisterPush {
                device,
                token,
                app_id,
                locale,
                ..
            } => {
                v::push_device(device)?;
                v::push_token(token)?;
                v::push_app_id(app_id)?;
                if let Some(l) = locale {
                    v::locale(l)?;
                }
                Ok(())
            }
            Mutation::UnregisterPush { device } => v::push_device(device),
            Mutation::SetPushMode { room, mode } => {
                if room.is_none() && *mode == PushMode::Default {
                    return Err(v::Invalid::new(
                        "the account default mode must be all, mentions or mute",
                    ));
                }
                Ok(())
            }
            Mutation::DeleteRoom { .. }
            | Mutation::JoinRoom { .. }
            | Mutation::LeaveRoom { .. }
            | Mutation::MarkAllRead {} => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_op_and_args() {
        let m = Mutation::SendMessage {
            room: "general".into(),
            body: "hi".into(),
            reply_to: None,
            id: None,
            attachment: None,
        };
        let json = serde_json::to_value(&m).expect("serialise");
        assert_eq!(
            json,
            serde_json::json!({"op": "message.send", "args": {"room": "general", "body": "hi"}})
        );
        let back: Mutation = serde_json::from_value(json).expect("parse");
        assert_eq!(back, m);
        assert_eq!(back.op(), "message.send");
    }

    #[test]
    fn a_send_with_an_attachment_may_have_no_body() {
        let json = serde_json::json!({"op": "message.send", "args": {
            "room": "general",
            "attachment": {"blob": "ab".repeat(32), "name": "a.pdf", "mime": "application/pdf", "size": 10},
        }});
        let m: Mutation = serde_json::from_value(json.clone()).expect("parse");
        assert_eq!(m.validate(), Ok(()));
        let Mutation::SendMessage {
            body, attachment, ..
        } = &m
        else {
            panic!("not a send: {m:?}");
        };
        assert_eq!(body, "");
        assert_eq!(attachment.as_ref().map(|a| a.size), Some(10));
        let mut back = serde_json::to_value(&m).expect("serialise");
        back["args"].as_object_mut().expect("args").remove("body");
        assert_eq!(back, json);

        let no_body = Mutation::SendMessage {
            room: "general".into(),
            body: String::new(),
            reply_to: None,
            id: None,
            attachment: None,
        };
        assert!(no_body.validate().is_err(), "no body and no attachment");
        let bad_name = serde_json::json!({"op": "message.send", "args": {
            "room": "general", "body": "see",
            "attachment": {"blob": "ab".repeat(32), "name": "../etc/passwd", "mime": "text/plain", "size": 10},
        }});
        let m: Mutation = serde_json::from_value(bad_name).expect("parse");
        assert!(m.validate().is_err());
    }

    #[test]
    fn old_messages_read_and_write_as_before() {
        let old = serde_json::json!({"id": "m1", "room": "general", "seq": 3, "sender": "alice",
            "body": "hi", "created_at": 5, "deleted": false});
        let m: crate::Message = serde_json::from_value(old.clone()).expect("parse");
        assert_eq!(m.attachment, None);
        assert_eq!(serde_json::to_value(&m).expect("serialise"), old);
    }

    #[test]
    fn push_mutations() {
        let json = serde_json::json!({"op": "push.register", "args": {
            "device": "d1", "platform": "apns", "token": "ab".repeat(32),
            "app_id": "com.example.roam", "locale": "en-GB", "sandbox": true,
        }});
        let m: Mutation = serde_json::from_value(json.clone()).expect("parse");
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.room(), None);
        assert_eq!(serde_json::to_value(&m).expect("serialise"), json);
        let no_sandbox = serde_json::json!({"op": "push.register", "args": {
            "device": "d1", "platform": "fcm", "token": "t", "app_id": "a"}});
        let m: Mutation = serde_json::from_value(no_sandbox.clone()).expect("parse");
        assert_eq!(serde_json::to_value(&m).expect("serialise"), no_sandbox);
        let bad: Mutation = serde_json::from_value(serde_json::json!({"op": "push.register",
            "args": {"device": "d1", "platform": "fcm", "token": "t", "app_id": "a", "locale": "x y"}}))
        .expect("parse");
        assert!(bad.validate().is_err());
        assert!(
            serde_json::from_value::<Mutation>(serde_json::json!({"op": "push.register",
            "args": {"device": "d1", "platform": "sms", "token": "t", "app_id": "a"}}))
            .is_err()
        );

        let account = Mutation::SetPushMode {
            room: None,
            mode: PushMode::Mentions,
        };
        assert_eq!(account.validate(), Ok(()));
        assert_eq!(account.room(), None);
        let reset = Mutation::SetPushMode {
            room: None,
            mode: PushMode::Default,
        };
        assert!(reset.validate().is_err());
        let room = Mutation::SetPushMode {
            room: Some("general".into()),
            mode: PushMode::Default,
        };
        assert_eq!(room.validate(), Ok(()));
        assert_eq!(room.room(), Some("general"));
        assert_eq!(
            serde_json::to_value(&room).expect("serialise"),
            serde_json::json!({"op": "push.set_mode", "args": {"room": "general", "mode": "default"}})
        );
        let bad_room = Mutation::SetPushMode {
            room: Some("a b".into()),
            mode: PushMode::Mute,
        };
        assert!(bad_room.validate().is_err());
        assert!(Mutation::UnregisterPush {
            device: String::new()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn validation_rejects_bad_names_and_owner_grants() {
        let bad = Mutation::JoinRoom {
            room: "x'; DROP TABLE rooms;--".into(),
        };
        assert!(bad.validate().is_err());
        let owner = Mutation::SetRole {
            room: "r".into(),
            user: "u".into(),
            role: Role::Owner,
        };
        assert!(owner.validate().is_err());
        let ok = Mutation::CreateRoom {
            room: "team-1".into(),
            kind: RoomKind::Private,
            title: "Team".into(),
            metadata: serde_json::json!({}),
        };
        assert!(ok.validate().is_ok());
    }
}
