//! Who may do what: one table (every op × every actor × every room kind → the expected answer)
//! drives one test against the server's rules, and the same table, rendered, is §6.1 of
//! docs/protocol.md (a second test checks the document against the table).
//!
//! Each case runs on a fresh room, set up by its owner `o`: admin `a`, member `m`, guest `g`
//! and member `t` (the target of role changes, bans and transfers, and the author of the
//! message that others edit or delete) joined by invitation; `i` holds a pending `member`
//! invitation from the owner; `b` and `bt` are banned; `x` has nothing to do with the room.
//! Mutations go through `Service::mutate`, the one path REST and WebSocket share; `read` is
//! `Service::readable_room`, the check every room read makes.

use std::sync::Arc;

use futures_util::future::join_all;
use roam_proto::{Mutation, Role, RoomKind};
use roam_server::service::Service;
use serde_json::json;

use crate::fixtures::{key, TestServer};

const KINDS: [RoomKind; 3] = [RoomKind::Public, RoomKind::Protected, RoomKind::Private];
const ACTORS: [(&str, &str); 7] = [
    ("owner", "o"),
    ("admin", "a"),
    ("member", "m"),
    ("guest", "g"),
    ("invited", "i"),
    ("banned", "b"),
    ("outsider", "x"),
];

/// `(op, [public, protected, private] → [owner, admin, member, guest, invited, banned, outsider])`.
/// `ok`, or the error code answered.
#[rustfmt::skip]
const TABLE: &[(&str, [[&str; 7]; 3])] = &[
    ("read (messages, events, documents)", [
        ["ok", "ok", "ok", "ok", "ok", "forbidden", "ok"],
        ["ok", "ok", "ok", "ok", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "ok", "not_found", "forbidden", "not_found"],
    ]),
    ("room.update", [
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("room.delete", [
        ["ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "forbidden", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("room.join", [
        ["conflict", "conflict", "conflict", "conflict", "ok", "forbidden", "ok"],
        ["conflict", "conflict", "conflict", "conflict", "ok", "forbidden", "forbidden"],
        ["conflict", "conflict", "conflict", "conflict", "ok", "forbidden", "not_found"],
    ]),
    ("room.leave", [
        ["conflict", "ok", "ok", "ok", "forbidden", "forbidden", "forbidden"],
        ["conflict", "ok", "ok", "ok", "forbidden", "forbidden", "forbidden"],
        ["conflict", "ok", "ok", "ok", "not_found", "forbidden", "not_found"],
    ]),
    ("room.transfer (to a member)", [
        ["ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "forbidden", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("member.invite (as guest)", [
        ["ok", "ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("member.invite (as member)", [
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("member.invite (as admin)", [
        ["ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "forbidden", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("invitation.accept (the owner's invitation of `invited`)", [
        ["not_found", "not_found", "not_found", "not_found", "ok", "not_found", "not_found"],
        ["not_found", "not_found", "not_found", "not_found", "ok", "not_found", "not_found"],
        ["not_found", "not_found", "not_found", "not_found", "ok", "not_found", "not_found"],
    ]),
    ("member.revoke_invitation (the owner's invitation of `invited`)", [
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("member.set_role (a member to guest)", [
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("member.set_role (a member to admin)", [
        ["ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "forbidden", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("member.ban (a member)", [
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("member.unban", [
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("message.send", [
        ["ok", "ok", "ok", "ok", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "ok", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "ok", "not_found", "forbidden", "not_found"],
    ]),
    ("room.mark_read", [
        ["ok", "ok", "ok", "ok", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "ok", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "ok", "not_found", "forbidden", "not_found"],
    ]),
    ("message.edit (someone else's)", [
        ["forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["forbidden", "forbidden", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("message.delete (someone else's)", [
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("message.import", [
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "forbidden", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("document.put", [
        ["ok", "ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
    ("collab.update", [
        ["ok", "ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "forbidden", "forbidden", "forbidden", "forbidden"],
        ["ok", "ok", "ok", "forbidden", "not_found", "forbidden", "not_found"],
    ]),
];

/// The table as the markdown of docs/protocol.md §6.1.
fn render() -> String {
    let mut out = String::new();
    for (k, kind) in KINDS.iter().enumerate() {
        out.push_str(&format!("**{} rooms**\n\n| op |", kind.as_str()));
        for (actor, _) in ACTORS {
            out.push_str(&format!(" {actor} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(ACTORS.len()));
        out.push('\n');
        for (op, cells) in TABLE {
            out.push_str(&format!("| {op} |"));
            for cell in cells[k] {
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

const BEGIN: &str = "<!-- authz-table:begin (rendered from server/tests/integration/authz.rs) -->";
const END: &str = "<!-- authz-table:end -->";

#[test]
fn the_protocol_document_shows_this_table() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("read docs/protocol.md");
    let start = doc.find(BEGIN).expect("the table's begin marker") + BEGIN.len();
    let end = doc.find(END).expect("the table's end marker");
    let shown = doc[start..end].trim();
    let expected = render();
    assert_eq!(
        shown,
        expected.trim(),
        "docs/protocol.md §6.1 differs from the table; it should read:\n{expected}"
    );
}

async fn mutate(svc: &Arc<Service>, user: &str, m: Mutation) -> Result<serde_json::Value, String> {
    svc.mutate(user, &key(), m)
        .await
        .map(|a| a.result)
        .map_err(|e| format!("{}: {}", e.code.as_str(), e.message))
}

async fn must(svc: &Arc<Service>, user: &str, m: Mutation) -> serde_json::Value {
    let what = format!("{m:?}");
    mutate(svc, user, m)
        .await
        .unwrap_or_else(|e| panic!("setup {what} by {user}: {e}"))
}

fn invite(room: &str, user: &str, role: Role) -> Mutation {
    Mutation::Invite {
        room: room.into(),
        user: user.into(),
        role,
        ttl_secs: None,
    }
}

fn accept(inv: &serde_json::Value) -> Mutation {
    Mutation::AcceptInvitation {
        invitation: inv["id"].as_str().expect("invitation id").into(),
    }
}

/// The fresh room of one case; returns the pending invitation of `i` and the id of `t`'s message.
async fn setup(svc: &Arc<Service>, room: &str, kind: RoomKind) -> (String, String) {
    must(
        svc,
        "o",
        Mutation::CreateRoom {
            room: room.into(),
            kind,
            title: String::new(),
            metadata: json!({}),
        },
    )
    .await;
    for (user, role) in [
        ("a", Role::Admin),
        ("m", Role::Member),
        ("g", Role::Guest),
        ("t", Role::Member),
    ] {
        let inv = must(svc, "o", invite(room, user, role)).await;
        must(svc, user, accept(&inv)).await;
    }
    let pending = must(svc, "o", invite(room, "i", Role::Member)).await;
    for user in ["b", "bt"] {
        must(
            svc,
            "o",
            Mutation::Ban {
                room: room.into(),
                user: user.into(),
            },
        )
        .await;
    }
    let msg = must(
        svc,
        "t",
        Mutation::SendMessage {
            room: room.into(),
            body: "t's words".into(),
            reply_to: None,
            id: None,
            attachment: None,
        },
    )
    .await;
    (
        pending["id"].as_str().expect("id").to_owned(),
        msg["id"].as_str().expect("id").to_owned(),
    )
}

/// Runs one case and answers `ok` or the error code.
async fn case(svc: Arc<Service>, n: usize, op: usize, kind: RoomKind, actor: &str) -> String {
    let room = format!("authz-{n}");
    let (invitation, message) = setup(&svc, &room, kind).await;
    let r = room.clone();
    let m = match TABLE[op].0.split(' ').next().unwrap_or_default() {
        "read" => {
            return match svc.readable_room(actor, &room).await {
                Ok(_) => "ok".into(),
                Err(e) => e.code.as_str().into(),
            }
        }
        "room.update" => Mutation::UpdateRoom {
            room: r,
            title: Some("renamed".into()),
            kind: None,
            metadata: None,
        },
        "room.delete" => Mutation::DeleteRoom { room: r },
        "room.join" => Mutation::JoinRoom { room: r },
        "room.leave" => Mutation::LeaveRoom { room: r },
        "room.transfer" => Mutation::TransferOwnership {
            room: r,
            user: "t".into(),
        },
        "member.invite" => {
            let role = match TABLE[op].0 {
                o if o.contains("as guest") => Role::Guest,
                o if o.contains("as member") => Role::Member,
                _ => Role::Admin,
            };
            invite(&r, "newcomer", role)
        }
        "invitation.accept" => Mutation::AcceptInvitation { invitation },
        "member.revoke_invitation" => Mutation::RevokeInvitation {
            room: r,
            invitation,
        },
        "member.set_role" => Mutation::SetRole {
            room: r,
            user: "t".into(),
            role: if TABLE[op].0.contains("to admin") {
                Role::Admin
            } else {
                Role::Guest
            },
        },
        "member.ban" => Mutation::Ban {
            room: r,
            user: "t".into(),
        },
        "member.unban" => Mutation::Unban {
            room: r,
            user: "bt".into(),
        },
        "message.send" => Mutation::SendMessage {
            room: r,
            body: "hello".into(),
            reply_to: None,
            id: None,
            attachment: None,
        },
        "room.mark_read" => Mutation::MarkRoomRead { room: r, seq: 1 },
        "message.edit" => Mutation::EditMessage {
            room: r,
            message,
            body: "changed".into(),
        },
        "message.delete" => Mutation::DeleteMessage { room: r, message },
        "message.import" => Mutation::ImportMessages {
            room: r,
            bodies: vec!["imported".into()],
        },
        "document.put" => Mutation::PutDocument {
            room: r,
            doc: "notes".into(),
            base_version: 0,
            content: "text".into(),
        },
        "collab.update" => Mutation::UpdateCollab {
            room: r,
            doc: "notes".into(),
            // The empty update (no clients, no deletions): applies to any document.
            update: "AAA=".into(),
        },
        other => panic!("no case for {other}"),
    };
    match svc.mutate(actor, &key(), m).await {
        Ok(_) => "ok".into(),
        Err(e) => e.code.as_str().into(),
    }
}

#[tokio::test]
async fn every_op_by_every_actor_in_every_room_kind_answers_as_the_table_says() {
    let t = TestServer::start_with(|c| {
        c.rate_mutations_per_sec = 1_000_000;
        c.rate_mutations_burst = 1_000_000;
    })
    .await;
    let svc = Arc::clone(&t.server().state().service);
    let mut cases = Vec::new();
    for op in 0..TABLE.len() {
        for (k, kind) in KINDS.iter().enumerate() {
            for (a, (_, actor)) in ACTORS.iter().enumerate() {
                cases.push((op, k, *kind, a, *actor));
            }
        }
    }
    let mut wrong = Vec::new();
    for chunk in cases.chunks(32) {
        let answers = join_all(chunk.iter().map(|&(op, k, kind, a, actor)| {
            let n = (op * KINDS.len() + k) * ACTORS.len() + a;
            case(Arc::clone(&svc), n, op, kind, actor)
        }))
        .await;
        for (&(op, k, kind, a, _), got) in chunk.iter().zip(answers) {
            let want = TABLE[op].1[k][a];
            if got != want {
                wrong.push(format!(
                    "{} by {} in a {} room: got {got}, the table says {want}",
                    TABLE[op].0,
                    ACTORS[a].0,
                    kind.as_str()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cases differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
