//! The behaviour every store must have, written once and run against each backend: rooms,
//! members, roles, bans and invitations, messages and their pages, documents, notifications,
//! read markers, idempotency (across a restart), concurrency, imports, the user directory,
//! activity buckets and retention. `sqlite/tests.rs` runs it on a fresh SQLite file, and
//! `postgres/tests.rs` on a fresh PostgreSQL schema; each backend keeps beside it only the tests
//! of what is its own (SQLite's group commit and indexes, PostgreSQL's lanes and servers).
//!
//! A backend provides a [`Harness`]: a place a store lives, opened again to play a restart.

#![allow(clippy::unwrap_used)]

pub(crate) use std::collections::HashSet;
pub(crate) use std::sync::Arc;

pub(crate) use crate::rules::Refusal;
pub(crate) use roam_proto::{EventBody, InvitationStatus, MemberStatus, Role, RoomEvent, RoomKind};
pub(crate) use serde_json::json;

pub(crate) use crate::store::{
    Change, Committed, IdemRecord, MessageCursor, NewNotification, NotificationQuery, Order,
    Output, Period, RetentionCutoffs, RoomQuery, Store, StoreError, UserQuery, UserSort, Write,
};

/// Where a store under test lives; every `open` gives a store on the same data.
#[async_trait::async_trait]
pub(crate) trait Harness: Send + Sync {
    async fn open(&self) -> Arc<dyn Store>;
}

pub(crate) const T0: i64 = 1_704_103_200_000; // 2024-01-01T10:00Z, a Monday

pub(crate) fn write(actor: &str, now: i64, change: Change) -> Write {
    Write {
        actor: actor.into(),
        now,
        guard: None,
        after: None,
        idem: None,
        change,
        notify: Vec::new(),
    }
}

pub(crate) fn create_room(name: &str, kind: RoomKind, owner: &str) -> Change {
    Change::CreateRoom {
        name: name.into(),
        kind,
        title: format!("{name} title"),
        metadata: json!({ "topic": name }),
        owner: owner.into(),
    }
}

pub(crate) fn message(room: &str, id: &str, body: &str) -> Change {
    Change::InsertMessage {
        id: id.into(),
        room: room.into(),
        body: body.into(),
        reply_to: None,
        attachment: None,
    }
}

/// Commits and expects the change to be applied.
pub(crate) async fn apply(store: &dyn Store, w: Write) -> (Output, Vec<RoomEvent>) {
    match store.commit(w).await.unwrap() {
        Committed::Applied { output, events, .. } => (output, events),
        other => panic!("expected Applied, got {other:?}"),
    }
}

pub(crate) async fn apply_err(store: &dyn Store, w: Write) -> StoreError {
    match store.commit(w).await {
        Err(e) => e,
        Ok(c) => panic!("expected an error, got {c:?}"),
    }
}

pub(crate) fn seq_of(output: &Output) -> u64 {
    match output {
        Output::Message(m) => m.seq,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Cutoffs that remove nothing but what a test sets.
pub(crate) fn nothing_expires() -> RetentionCutoffs {
    RetentionCutoffs {
        presence_before: i64::MIN,
        document_history_before: i64::MIN,
        notifications_before: i64::MIN,
        idempotency_before: i64::MIN,
        invitations_before: i64::MIN,
        events_before: None,
        batch_rows: 1_000,
    }
}

/// The suite, for a backend whose harness `$harness` (an expression giving a future of a
/// [`Harness`]) makes. Expand it in a module of its own that imports `suite::*`.
macro_rules! store_suite {
    ($harness:expr) => {
        #[tokio::test]
        async fn create_room_appends_created_then_joined() {
            let h = $harness.await;
            let store = h.open().await;
            let (output, events) = apply(
                &*store,
                write(
                    "alice",
                    T0,
                    create_room("general", RoomKind::Public, "alice"),
                ),
            )
            .await;

            let Output::Room(room) = output else {
                panic!("expected a room")
            };
            assert_eq!(room.head_seq, 2);
            assert_eq!(room.member_count, 1);
            assert_eq!(room.owner, "alice");
            assert_eq!(room.metadata, json!({ "topic": "general" }));

            assert_eq!(events.len(), 2);
            assert_eq!(events[0].seq, 1);
            assert!(matches!(&events[0].body, EventBody::RoomCreated(r) if r.name == "general"));
            assert_eq!(events[1].seq, 2);
            assert!(matches!(&events[1].body,
                EventBody::MemberJoined(m) if m.user == "alice" && m.role == Role::Owner));

            // The log as stored matches what commit answered.
            assert_eq!(store.events_after("general", 0, 100).await.unwrap(), events);
            assert_eq!(store.event_bounds("general").await.unwrap(), (1, 2));
            let stored = store.room("general").await.unwrap().unwrap();
            assert_eq!(stored, room);
            let member = store.member("general", "alice").await.unwrap().unwrap();
            assert_eq!(member.role, Role::Owner);
            assert_eq!(store.rooms_of("alice").await.unwrap(), vec!["general"]);

            let taken = apply_err(
                &*store,
                write("bob", T0, create_room("general", RoomKind::Private, "bob")),
            )
            .await;
            assert!(matches!(taken, StoreError::Conflict(_)), "{taken:?}");
        }

        #[tokio::test]
        async fn push_badges_count_as_push_badge_does() {
            let h = $harness.await;
            let store = h.open().await;
            let join = |user: &str, room: &str| {
                write(
                    user,
                    T0,
                    Change::AddMember {
                        room: room.into(),
                        user: user.into(),
                        role: Role::Member,
                        invitation: None,
                    },
                )
            };
            apply(&*store, write("alice", T0, create_room("a", RoomKind::Public, "alice"))).await;
            apply(&*store, write("bob", T0, create_room("b", RoomKind::Public, "bob"))).await;
            for (user, room) in [("bob", "a"), ("carol", "a"), ("carol", "b")] {
                apply(&*store, join(user, room)).await;
            }
            let mut seqs = Vec::new();
            for (who, room, id) in [
                ("alice", "a", "m1"),
                ("bob", "a", "m2"),
                ("carol", "a", "m3"),
                ("alice", "a", "m4"),
                ("bob", "b", "n1"),
                ("bob", "b", "n2"),
                ("carol", "b", "n3"),
            ] {
                seqs.push(seq_of(&apply(&*store, write(who, T0, message(room, id, "x"))).await.0));
            }
            // dave joins after every message (an event after them that is not one).
            apply(&*store, join("dave", "a")).await;
            let read = Change::MarkRoomRead {
                room: "a".into(),
                seq: seqs[1],
            };
            apply(&*store, write("carol", T0, read)).await;
            let users: Vec<String> = ["alice", "bob", "carol", "dave", "nobody"]
                .iter()
                .map(|u| (*u).to_owned())
                .collect();
            let badges = store.push_badges(&users).await.unwrap();
            let want = [("alice", 2), ("bob", 4), ("carol", 3), ("dave", 4), ("nobody", 0)];
            for (user, n) in want {
                assert_eq!(badges.get(user), Some(&n), "{user}: {badges:?}");
                assert_eq!(store.push_badge(user).await.unwrap(), n, "{user} alone");
            }
            assert!(store.push_badges(&[]).await.unwrap().is_empty());
        }

        #[tokio::test]
        async fn a_message_queues_a_push_job_only_while_jobs_are_on() {
            let h = $harness.await;
            let store = h.open().await;
            assert!(store.push_jobs(), "a store records push jobs until told otherwise");
            apply(&*store, write("alice", T0, create_room("p", RoomKind::Public, "alice"))).await;
            apply(&*store, write("alice", T0, message("p", "on1", "x"))).await;
            assert_eq!(store.push_queue_stats().await.unwrap().jobs, 1);

            store.set_push_jobs(false);
            assert!(!store.push_jobs());
            let seq = seq_of(&apply(&*store, write("alice", T0, message("p", "off", "x"))).await.0);
            assert_eq!(store.push_queue_stats().await.unwrap().jobs, 1, "no job for `off`");
            // The message itself is committed as ever.
            let stored = store.message("p", "off").await.unwrap().unwrap();
            assert_eq!(stored.seq, seq);

            store.set_push_jobs(true);
            apply(&*store, write("alice", T0, message("p", "on2", "x"))).await;
            assert_eq!(store.push_queue_stats().await.unwrap().jobs, 2);
            let mut queued = Vec::new();
            while let Some(job) = store.claim_push_job("node", T0, T0 + 60_000).await.unwrap() {
                queued.push(job.message);
            }
            assert_eq!(queued, ["on1", "on2"]);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_messages_get_contiguous_seqs() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("busy", RoomKind::Public, "alice")),
            )
            .await;

            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let w = write(
                            &format!("user{i}"),
                            T0 + i,
                            message("busy", &format!("m{i}"), "hi"),
                        );
                        apply(&*store, w).await
                    })
                })
                .collect();
            let mut seqs = Vec::new();
            for t in tasks {
                let (output, events) = t.await.unwrap();
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].seq, seq_of(&output));
                seqs.push(seq_of(&output));
            }
            seqs.sort_unstable();
            assert_eq!(seqs, (3..=22).collect::<Vec<u64>>());
            assert_eq!(store.room("busy").await.unwrap().unwrap().head_seq, 22);
            let page = store
                .messages("busy", MessageCursor::After(0), 100)
                .await
                .unwrap()
                .items;
            assert_eq!(page.len(), 20);
            assert!(page.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        }

        #[tokio::test]
        async fn commit_order_is_call_order() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write(
                    "alice",
                    T0,
                    create_room("ordered", RoomKind::Public, "alice"),
                ),
            )
            .await;
            // Queued at call time: awaiting in reverse must not change the order.
            let futures: Vec<_> = (0..10)
                .map(|i| {
                    store.commit(write(
                        "alice",
                        T0,
                        message("ordered", &format!("o{i}"), "x"),
                    ))
                })
                .collect();
            let mut seqs = Vec::new();
            for f in futures.into_iter().rev() {
                match f.await.unwrap() {
                    Committed::Applied { output, .. } => seqs.push(seq_of(&output)),
                    other => panic!("{other:?}"),
                }
            }
            seqs.reverse();
            assert_eq!(seqs, (3..=12).collect::<Vec<u64>>());
        }

        #[tokio::test]
        async fn idempotent_replay_survives_reopen() {
            let h = $harness.await;
            let idem = IdemRecord {
                user: "alice".into(),
                key: "k1".into(),
                op: "message.send".into(),
                fingerprint: "f1".into(),
            };
            let send = |id: &str| Write {
                guard: None,
                after: None,
                idem: Some(idem.clone()),
                ..write("alice", T0 + 5, message("general", id, "once"))
            };
            let first_json;
            {
                let store = h.open().await;
                apply(
                    &*store,
                    write(
                        "alice",
                        T0,
                        create_room("general", RoomKind::Public, "alice"),
                    ),
                )
                .await;
                let (output, _) = apply(&*store, send("m1")).await;
                first_json = output.to_json();

                // Same key: replayed even with another message id, nothing written.
                match store.commit(send("m2")).await.unwrap() {
                    Committed::Replayed(stored) => {
                        assert_eq!(stored.result, first_json);
                        assert_eq!(stored.op, "message.send");
                        assert_eq!(stored.fingerprint, "f1");
                        assert_eq!(stored.created_at, T0 + 5);
                    }
                    other => panic!("expected Replayed, got {other:?}"),
                }
                let all = store
                    .messages("general", MessageCursor::Before(u64::MAX), 10)
                    .await
                    .unwrap()
                    .items;
                assert_eq!(all.len(), 1);
                assert_eq!(store.room("general").await.unwrap().unwrap().head_seq, 3);

                // A failed write records nothing: the key stays free.
                let failing = Write {
                    guard: None,
                    after: None,
                    idem: Some(IdemRecord {
                        key: "k2".into(),
                        ..idem.clone()
                    }),
                    ..write("alice", T0, message("nowhere", "m3", "x"))
                };
                assert!(matches!(
                    apply_err(&*store, failing).await,
                    StoreError::NotFound("room")
                ));
                assert!(store
                    .idempotent_result("alice", "k2")
                    .await
                    .unwrap()
                    .is_none());
            }
            let store = h.open().await;
            match store.commit(send("m4")).await.unwrap() {
                Committed::Replayed(stored) => assert_eq!(stored.result, first_json),
                other => panic!("expected Replayed after reopen, got {other:?}"),
            }
            let stored = store
                .idempotent_result("alice", "k1")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.result, first_json);
            // Keys are per user.
            assert!(store
                .idempotent_result("bob", "k1")
                .await
                .unwrap()
                .is_none());
            assert_eq!(
                store
                    .messages("general", MessageCursor::After(0), 10)
                    .await
                    .unwrap()
                    .items
                    .len(),
                1
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_failures_leave_good_writes() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("mixed", RoomKind::Public, "alice")),
            )
            .await;
            let futures: Vec<_> = (0..40)
                .map(|i| {
                    let change = if i % 10 == 5 {
                        Change::EditMessage {
                            room: "mixed".into(),
                            id: "missing".into(),
                            body: "x".into(),
                        }
                    } else {
                        message("mixed", &format!("c{i}"), "ok")
                    };
                    tokio::spawn(store.commit(write("alice", T0, change)))
                })
                .collect();
            let (mut ok, mut failed) = (0, 0);
            for f in futures {
                match f.await.unwrap() {
                    Ok(_) => ok += 1,
                    Err(StoreError::NotFound("message")) => failed += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!((ok, failed), (36, 4));
            let msgs = store
                .messages("mixed", MessageCursor::After(0), 100)
                .await
                .unwrap()
                .items;
            assert_eq!(msgs.len(), 36);
            assert_eq!(store.event_bounds("mixed").await.unwrap(), (1, 38));
        }

        #[tokio::test]
        async fn messages_edit_delete_and_pages() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("chat", RoomKind::Public, "alice")),
            )
            .await;
            for i in 0..5 {
                apply(
                    &*store,
                    write("alice", T0 + i, message("chat", &format!("m{i}"), "b")),
                )
                .await;
            }
            let reply = Change::InsertMessage {
                id: "r".into(),
                room: "chat".into(),
                body: "re".into(),
                reply_to: Some("nope".into()),
                attachment: None,
            };
            assert!(matches!(
                apply_err(&*store, write("alice", T0, reply)).await,
                StoreError::NotFound(_)
            ));

            let (edited, events) = apply(
                &*store,
                write(
                    "alice",
                    T0 + 50,
                    Change::EditMessage {
                        room: "chat".into(),
                        id: "m1".into(),
                        body: "new".into(),
                    },
                ),
            )
            .await;
            let Output::Message(edited) = edited else {
                panic!()
            };
            assert_eq!(
                (edited.body.as_str(), edited.edited_at),
                ("new", Some(T0 + 50))
            );
            assert!(matches!(&events[0].body, EventBody::MessageEdited(m) if m.body == "new"));

            let (deleted, _) = apply(
                &*store,
                write(
                    "alice",
                    T0 + 60,
                    Change::DeleteMessage {
                        room: "chat".into(),
                        id: "m2".into(),
                    },
                ),
            )
            .await;
            assert!(matches!(deleted, Output::Message(ref m) if m.deleted && m.body.is_empty()));
            let again = Change::DeleteMessage {
                room: "chat".into(),
                id: "m2".into(),
            };
            assert!(matches!(
                apply_err(&*store, write("alice", T0, again)).await,
                StoreError::NotFound("message")
            ));

            // seqs 3..=7. Newest first before 7; oldest first after 3.
            let before = store
                .messages("chat", MessageCursor::Before(7), 2)
                .await
                .unwrap()
                .items;
            assert_eq!(before.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![6, 5]);
            let after = store
                .messages("chat", MessageCursor::After(3), 10)
                .await
                .unwrap()
                .items;
            assert_eq!(
                after.iter().map(|m| m.seq).collect::<Vec<_>>(),
                vec![4, 5, 6, 7]
            );
            let m2 = store.message("chat", "m2").await.unwrap().unwrap();
            assert!(m2.deleted && m2.body.is_empty());
            assert!(store.message("other", "m2").await.unwrap().is_none());
        }

        #[tokio::test]
        async fn document_compare_and_swap() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("docs", RoomKind::Public, "alice")),
            )
            .await;
            let put = |base: u64, content: &str| {
                write(
                    "alice",
                    T0 + base as i64,
                    Change::PutDocument {
                        room: "docs".into(),
                        doc: "plan".into(),
                        base_version: base,
                        content: content.into(),
                    },
                )
            };
            let (v1, _) = apply(&*store, put(0, "one")).await;
            assert!(matches!(v1, Output::Document(ref d) if d.version == 1));
            let (v2, events) = apply(&*store, put(1, "two")).await;
            assert!(matches!(v2, Output::Document(ref d) if d.version == 2 && d.content == "two"));
            assert!(matches!(&events[0].body, EventBody::DocumentUpdated(d) if d.version == 2));

            match apply_err(&*store, put(1, "stale")).await {
                StoreError::VersionConflict(current) => {
                    assert_eq!(current.version, 2);
                    assert_eq!(current.content, "two");
                }
                other => panic!("{other:?}"),
            }
            match apply_err(&*store, put(0, "again")).await {
                StoreError::VersionConflict(current) => assert_eq!(current.version, 2),
                other => panic!("{other:?}"),
            }
            let current = store.document("docs", "plan").await.unwrap().unwrap();
            assert_eq!((current.version, current.content.as_str()), (2, "two"));
            assert_eq!(
                store.documents("docs", None, 10).await.unwrap().items,
                vec![current]
            );
            let history = store
                .document_history("docs", "plan", u64::MAX, 10)
                .await
                .unwrap()
                .items;
            assert_eq!(
                history.iter().map(|d| d.version).collect::<Vec<_>>(),
                vec![2, 1]
            );
        }

        #[tokio::test]
        async fn invitations_expire_and_gate_joining() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("club", RoomKind::Private, "alice")),
            )
            .await;
            let invite = |id: &str, expires_at: i64| {
                write(
                    "alice",
                    T0,
                    Change::CreateInvitation {
                        id: id.into(),
                        room: "club".into(),
                        invitee: "bob".into(),
                        role: Role::Member,
                        expires_at,
                    },
                )
            };
            let (inv, events) = apply(&*store, invite("i1", T0 + 1000)).await;
            assert!(events.is_empty());
            assert!(matches!(inv, Output::Invitation(ref i) if i.status == InvitationStatus::Pending));
            // A second pending one for the same invitee is refused.
            assert!(matches!(
                apply_err(&*store, invite("i2", T0 + 1000)).await,
                StoreError::Refused(Refusal::PendingInvitationExists)
            ));

            let read_at = |now| store.invitation("i1", now);
            assert_eq!(
                read_at(T0 + 1000).await.unwrap().unwrap().status,
                InvitationStatus::Pending
            );
            assert_eq!(
                read_at(T0 + 1001).await.unwrap().unwrap().status,
                InvitationStatus::Expired
            );
            assert!(store
                .pending_invitation("club", "bob", T0 + 1001)
                .await
                .unwrap()
                .is_none());
            assert_eq!(
                store.invitations_for("bob", T0 + 2000, 10).await.unwrap()[0].status,
                InvitationStatus::Expired
            );

            let join = |now: i64, invitation: &str| {
                write(
                    "bob",
                    now,
                    Change::AddMember {
                        room: "club".into(),
                        user: "bob".into(),
                        role: Role::Member,
                        invitation: Some(invitation.into()),
                    },
                )
            };
            assert!(matches!(
                apply_err(&*store, join(T0 + 1001, "i1")).await,
                StoreError::Refused(Refusal::InvitationExpired)
            ));
            assert!(store.member("club", "bob").await.unwrap().is_none());

            // Expired no longer blocks a new invitation, which can be accepted in time.
            apply(
                &*store,
                write(
                    "alice",
                    T0 + 2000,
                    Change::CreateInvitation {
                        id: "i3".into(),
                        room: "club".into(),
                        invitee: "bob".into(),
                        role: Role::Admin,
                        expires_at: T0 + 5000,
                    },
                ),
            )
            .await;
            let (member, events) = apply(&*store, join(T0 + 3000, "i3")).await;
            // The role is the invitation's, as read under the lock (not the change's).
            assert!(matches!(member, Output::Member(ref m) if m.role == Role::Admin));
            assert!(matches!(&events[0].body, EventBody::MemberJoined(m) if m.user == "bob"));
            assert_eq!(
                store
                    .invitation("i3", T0 + 9000)
                    .await
                    .unwrap()
                    .unwrap()
                    .status,
                InvitationStatus::Accepted
            );
            let statuses: Vec<_> = store
                .room_invitations("club", T0 + 3000, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|i| (i.id, i.status))
                .collect();
            assert_eq!(
                statuses,
                vec![
                    ("i3".to_owned(), InvitationStatus::Accepted),
                    ("i1".to_owned(), InvitationStatus::Expired)
                ]
            );
            // Rejecting an accepted invitation is refused.
            assert!(matches!(
                apply_err(
                    &*store,
                    write(
                        "bob",
                        T0 + 3000,
                        Change::RejectInvitation { id: "i3".into() }
                    )
                )
                .await,
                StoreError::Refused(Refusal::InvitationClosed(InvitationStatus::Accepted))
            ));
        }

        #[tokio::test]
        async fn members_roles_bans_and_visibility() {
            let h = $harness.await;
            let store = h.open().await;
            for (name, kind) in [
                ("a-public", RoomKind::Public),
                ("b-private", RoomKind::Private),
                ("c-protected", RoomKind::Protected),
            ] {
                apply(&*store, write("alice", T0, create_room(name, kind, "alice"))).await;
            }
            let add = |room: &str, user: &str| {
                write(
                    user,
                    T0 + 1,
                    Change::AddMember {
                        room: room.into(),
                        user: user.into(),
                        role: Role::Member,
                        invitation: None,
                    },
                )
            };
            apply(&*store, add("a-public", "bob")).await;
            assert!(matches!(
                apply_err(&*store, add("a-public", "bob")).await,
                StoreError::Refused(Refusal::AlreadyMember)
            ));

            let names =
                |rooms: Vec<roam_proto::Room>| rooms.into_iter().map(|r| r.name).collect::<Vec<_>>();
            let all = RoomQuery {
                limit: 10,
                ..RoomQuery::default()
            };
            assert_eq!(
                names(store.list_rooms("bob", &all).await.unwrap().items),
                vec!["a-public", "c-protected"]
            );
            assert_eq!(
                names(store.list_rooms("alice", &all).await.unwrap().items),
                vec!["a-public", "b-private", "c-protected"]
            );
            let joined = RoomQuery {
                joined_only: true,
                ..all.clone()
            };
            assert_eq!(
                names(store.list_rooms("bob", &joined).await.unwrap().items),
                vec!["a-public"]
            );
            let paged = RoomQuery {
                after_name: Some("a-public".into()),
                limit: 1,
                ..all.clone()
            };
            assert_eq!(
                names(store.list_rooms("alice", &paged).await.unwrap().items),
                vec!["b-private"]
            );
            let kind = RoomQuery {
                kind: Some(RoomKind::Protected),
                ..all.clone()
            };
            assert_eq!(
                names(store.list_rooms("bob", &kind).await.unwrap().items),
                vec!["c-protected"]
            );
            assert_eq!(
                store.list_rooms("bob", &all).await.unwrap().items[0].member_count,
                2
            );

            // Roles and ownership.
            let set_role = Change::SetRole {
                room: "a-public".into(),
                user: "bob".into(),
                role: Role::Admin,
            };
            let (m, _) = apply(&*store, write("alice", T0 + 2, set_role)).await;
            assert!(matches!(m, Output::Member(ref m) if m.role == Role::Admin));
            let leave_owner = Change::RemoveMember {
                room: "a-public".into(),
                user: "alice".into(),
            };
            assert!(matches!(
                apply_err(&*store, write("alice", T0, leave_owner.clone())).await,
                StoreError::Refused(Refusal::OwnerMustTransfer)
            ));
            let transfer = Change::TransferOwnership {
                room: "a-public".into(),
                from: "alice".into(),
                to: "bob".into(),
            };
            let (room, events) = apply(&*store, write("alice", T0 + 3, transfer)).await;
            assert!(matches!(room, Output::Room(ref r) if r.owner == "bob"));
            let [to, from] = &events[..] else {
                panic!("two events expected: {events:?}")
            };
            assert_eq!(from.seq, to.seq + 1);
            assert!(matches!(&to.body,
                EventBody::MemberUpdated(m) if m.user == "bob" && m.role == Role::Owner));
            assert!(matches!(&from.body,
                EventBody::MemberUpdated(m) if m.user == "alice" && m.role == Role::Admin));
            apply(&*store, write("alice", T0 + 4, leave_owner)).await;
            assert!(store.member("a-public", "alice").await.unwrap().is_none());
            assert!(store.rooms_of("alice").await.unwrap().len() == 2);

            // Bans: withdraw pending invitations, block joining, lift with unban.
            apply(
                &*store,
                write(
                    "alice",
                    T0,
                    Change::CreateInvitation {
                        id: "inv-carol".into(),
                        room: "b-private".into(),
                        invitee: "carol".into(),
                        role: Role::Member,
                        expires_at: T0 + 100_000,
                    },
                ),
            )
            .await;
            let ban = Change::Ban {
                room: "b-private".into(),
                user: "carol".into(),
            };
            let (_, events) = apply(&*store, write("alice", T0 + 5, ban.clone())).await;
            assert!(matches!(&events[0].body, EventBody::MemberBanned { user } if user == "carol"));
            assert!(matches!(
                apply_err(&*store, write("alice", T0 + 5, ban)).await,
                StoreError::Refused(Refusal::AlreadyBanned)
            ));
            let banned = store.member("b-private", "carol").await.unwrap().unwrap();
            assert_eq!(banned.status, MemberStatus::Banned);
            assert!(store
                .pending_invitation("b-private", "carol", T0 + 6)
                .await
                .unwrap()
                .is_none());
            assert!(matches!(
                apply_err(&*store, add("b-private", "carol")).await,
                StoreError::Refused(Refusal::Banned)
            ));
            let unban = Change::Unban {
                room: "b-private".into(),
                user: "carol".into(),
            };
            apply(&*store, write("alice", T0 + 7, unban.clone())).await;
            assert!(matches!(
                apply_err(&*store, write("alice", T0 + 7, unban)).await,
                StoreError::Refused(Refusal::NotBanned)
            ));
            apply(&*store, add("b-private", "carol")).await;
            let members = store.list_members("b-private", None, 10).await.unwrap();
            assert_eq!(
                members.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
                vec!["alice", "carol"]
            );
            let after = store
                .list_members("b-private", Some("alice"), 10)
                .await
                .unwrap();
            assert_eq!(after.len(), 1);
        }

        #[tokio::test]
        async fn notifications_are_per_user_and_counted() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("n", RoomKind::Public, "alice")),
            )
            .await;
            let mention = |id: &str, user: &str| NewNotification {
                user: user.into(),
                id: id.into(),
                kind: "mentioned".into(),
                room: Some("n".into()),
                data: json!({ "message": id }),
            };
            let w = Write {
                notify: vec![
                    mention("n1", "bob"),
                    mention("n2", "carol"),
                    mention("n3", "bob"),
                ],
                ..write("alice", T0, message("n", "msg1", "@bob @carol"))
            };
            let Committed::Applied {
                notifications,
                unread,
                ..
            } = store.commit(w).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(
                notifications
                    .iter()
                    .map(|n| (n.user.as_str(), n.seq))
                    .collect::<Vec<_>>(),
                vec![("bob", 1), ("carol", 1), ("bob", 2)]
            );
            assert_eq!(notifications[0].actor.as_deref(), Some("alice"));
            assert_eq!(unread, vec![("bob".to_owned(), 2), ("carol".to_owned(), 1)]);

            let page = store
                .notifications(
                    "bob",
                    &NotificationQuery {
                        after_seq: 1,
                        unread_only: false,
                        limit: 10,
                    },
                )
                .await
                .unwrap();
            assert_eq!(page.len(), 1);
            assert_eq!(page[0].id, "n3");
            assert_eq!(page[0].data, json!({ "message": "n3" }));

            let mark = write(
                "bob",
                T0,
                Change::MarkRead {
                    ids: Some(vec!["n1".into(), "n2".into()]), // n2 is carol's: untouched
                },
            );
            let Committed::Applied { output, unread, .. } = store.commit(mark).await.unwrap() else {
                panic!()
            };
            assert_eq!(output, Output::Unread { unread: 1 });
            assert_eq!(unread, vec![("bob".to_owned(), 1)]);
            assert_eq!(store.unread_count("carol").await.unwrap(), 1);
            let unread_only = NotificationQuery {
                after_seq: 0,
                unread_only: true,
                limit: 10,
            };
            let left = store.notifications("bob", &unread_only).await.unwrap();
            assert_eq!(left.iter().map(|n| n.seq).collect::<Vec<_>>(), vec![2]);

            let (output, _) = apply(&*store, write("bob", T0, Change::MarkRead { ids: None })).await;
            assert_eq!(output, Output::Unread { unread: 0 });
            assert!(store
                .notifications("bob", &unread_only)
                .await
                .unwrap()
                .is_empty());
        }

        #[tokio::test]
        async fn read_markers_move_forward_and_clear_covered_mentions() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("r", RoomKind::Public, "alice")),
            )
            .await;
            apply(
                &*store,
                write(
                    "bob",
                    T0,
                    Change::AddMember {
                        room: "r".into(),
                        user: "bob".into(),
                        role: Role::Member,
                        invitation: None,
                    },
                ),
            )
            .await;
            let mut seqs = Vec::new();
            for id in ["m1", "m2"] {
                let w = Write {
                    notify: vec![NewNotification {
                        user: "bob".into(),
                        id: format!("n-{id}"),
                        kind: "mentioned".into(),
                        room: Some("r".into()),
                        data: json!({ "message": id }),
                    }],
                    ..write("alice", T0, message("r", id, "@bob"))
                };
                seqs.push(seq_of(&apply(&*store, w).await.0));
            }
            assert_eq!(store.unread_count("bob").await.unwrap(), 2);
            let mark = |seq: u64, now: i64| {
                write(
                    "bob",
                    now,
                    Change::MarkRoomRead {
                        room: "r".into(),
                        seq,
                    },
                )
            };

            let Committed::Applied {
                output,
                events,
                unread,
                ..
            } = store.commit(mark(seqs[0], T0 + 1)).await.unwrap()
            else {
                panic!()
            };
            let marker = roam_proto::ReadMarker {
                room: "r".into(),
                seq: seqs[0],
                updated_at: T0 + 1,
            };
            assert_eq!(output, Output::ReadMarker(marker.clone()));
            assert!(events.is_empty(), "a marker is no room event");
            assert_eq!(unread, vec![("bob".to_owned(), 1)]);

            // Behind the marker: nothing moves, nothing is re-stamped, no unread announced.
            let Committed::Applied { output, unread, .. } =
                store.commit(mark(seqs[0] - 1, T0 + 2)).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(output, Output::ReadMarker(marker.clone()));
            assert!(unread.is_empty());
            assert_eq!(store.read_markers("bob").await.unwrap(), vec![marker]);
            assert!(store.read_markers("alice").await.unwrap().is_empty());

            let (output, _) = apply(&*store, mark(seqs[1], T0 + 3)).await;
            assert!(matches!(output, Output::ReadMarker(m) if m.seq == seqs[1]));
            assert_eq!(store.unread_count("bob").await.unwrap(), 0);

            // Leaving hides the marker; deleting the room removes it; a gone room is NotFound.
            apply(
                &*store,
                write(
                    "bob",
                    T0,
                    Change::RemoveMember {
                        room: "r".into(),
                        user: "bob".into(),
                    },
                ),
            )
            .await;
            assert!(store.read_markers("bob").await.unwrap().is_empty());
            apply(
                &*store,
                write("alice", T0, Change::DeleteRoom { name: "r".into() }),
            )
            .await;
            assert!(matches!(
                apply_err(&*store, mark(1, T0 + 4)).await,
                StoreError::NotFound("room")
            ));
        }

        #[tokio::test]
        async fn events_survive_reopen_and_room_deletion() {
            let h = $harness.await;
            {
                let store = h.open().await;
                apply(
                    &*store,
                    write("alice", T0, create_room("gone", RoomKind::Public, "alice")),
                )
                .await;
                for i in 0..3 {
                    apply(
                        &*store,
                        write("alice", T0, message("gone", &format!("g{i}"), "x")),
                    )
                    .await;
                }
            }
            let store = h.open().await;
            assert_eq!(store.event_bounds("gone").await.unwrap(), (1, 5));
            let tail = store.events_after("gone", 3, 10).await.unwrap();
            assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
            assert!(matches!(&tail[0].body, EventBody::MessageCreated(m) if m.id == "g1" && m.seq == 4));
            assert_eq!(store.events_after("gone", 1, 2).await.unwrap().len(), 2);

            let (output, events) = apply(
                &*store,
                write(
                    "alice",
                    T0 + 9,
                    Change::DeleteRoom {
                        name: "gone".into(),
                    },
                ),
            )
            .await;
            assert_eq!(output, Output::Empty);
            assert_eq!(events[0].seq, 6);

            assert!(store.room("gone").await.unwrap().is_none());
            assert!(store.rooms_of("alice").await.unwrap().is_empty());
            assert!(store
                .messages("gone", MessageCursor::After(0), 10)
                .await
                .unwrap()
                .items
                .is_empty());
            assert_eq!(store.event_bounds("gone").await.unwrap(), (1, 6));
            let all = store.events_after("gone", 0, 100).await.unwrap();
            assert_eq!(all.len(), 6);
            assert!(matches!(&all[5].body, EventBody::RoomDeleted { name } if name == "gone"));
            assert!(store
                .list_rooms(
                    "alice",
                    &RoomQuery {
                        limit: 10,
                        ..RoomQuery::default()
                    }
                )
                .await
                .unwrap()
                .items
                .is_empty());

            // Writes to a deleted room, and reusing its name, are refused.
            assert!(matches!(
                apply_err(&*store, write("alice", T0, message("gone", "late", "x"))).await,
                StoreError::NotFound("room")
            ));
            assert!(matches!(
                apply_err(
                    &*store,
                    write("bob", T0, create_room("gone", RoomKind::Public, "bob"))
                )
                .await,
                StoreError::Conflict(_)
            ));
            assert_eq!(store.event_bounds("never").await.unwrap(), (0, 0));
        }

        #[tokio::test]
        async fn import_writes_one_event_per_message() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("bulk", RoomKind::Public, "alice")),
            )
            .await;
            let messages: Vec<_> = (0..450)
                .map(|i| (format!("imp{i:04}"), format!("body {i}")))
                .collect();
            let (output, events) = apply(
                &*store,
                write(
                    "alice",
                    T0,
                    Change::ImportMessages {
                        room: "bulk".into(),
                        messages,
                    },
                ),
            )
            .await;
            assert_eq!(
                output,
                Output::Imported {
                    imported: 450,
                    first_seq: 3,
                    last_seq: 452
                }
            );
            assert_eq!(events.len(), 450);
            assert!(events.iter().zip(3..).all(|(e, s)| e.seq == s));
            let last = store
                .messages("bulk", MessageCursor::Before(u64::MAX), 1)
                .await
                .unwrap()
                .items;
            assert_eq!((last[0].seq, last[0].id.as_str()), (452, "imp0449"));
            assert_eq!(store.event_bounds("bulk").await.unwrap(), (1, 452));

            // One duplicate id fails the whole import and takes no seqs.
            let dup = Change::ImportMessages {
                room: "bulk".into(),
                messages: vec![("new1".into(), "a".into()), ("imp0001".into(), "b".into())],
            };
            assert!(matches!(
                apply_err(&*store, write("alice", T0, dup)).await,
                StoreError::Conflict(_)
            ));
            assert_eq!(store.room("bulk").await.unwrap().unwrap().head_seq, 452);
            assert!(store.message("bulk", "new1").await.unwrap().is_none());
        }

        #[tokio::test]
        async fn search_users_pages_every_user_once() {
            let h = $harness.await;
            let store = h.open().await;
            let mut ids = Vec::new();
            for i in 0..23_i64 {
                let id = format!("user{i:02}");
                // Created in a shuffled order, some sharing a timestamp.
                store.touch_user(&id, T0 + (i * 7) % 5).await.unwrap();
                if i % 3 != 0 {
                    store.save_last_seen(&id, T0).await.unwrap();
                }
                ids.push(id);
            }
            // A user known only as a write's actor has no last_seen.
            apply(
                &*store,
                write("zed", T0 + 3, create_room("r", RoomKind::Public, "zed")),
            )
            .await;
            ids.push("zed".into());
            store.touch_user("user01", T0 + 100).await.unwrap();
            store.touch_user("user01", T0 + 50).await.unwrap(); // never backwards

            for sort in [UserSort::Id, UserSort::CreatedAt, UserSort::LastSeen] {
                for order in [Order::Asc, Order::Desc] {
                    let mut seen = Vec::new();
                    let mut cursor = None;
                    let mut pages = 0;
                    loop {
                        let page = store
                            .search_users(&UserQuery {
                                viewer: None,
                                q: String::new(),
                                sort,
                                order,
                                cursor: cursor.clone(),
                                limit: 4,
                            })
                            .await
                            .unwrap();
                        pages += 1;
                        assert!(page.items.len() <= 4);
                        seen.extend(page.items);
                        match page.next_cursor {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                    assert_eq!(pages, 6, "{sort:?} {order:?}: 24 users in pages of 4");
                    let got: Vec<_> = seen.iter().map(|u| u.id.clone()).collect();
                    let unique: HashSet<_> = got.iter().collect();
                    assert_eq!(unique.len(), 24, "{sort:?} {order:?}: {got:?}");
                    let key = |u: &roam_proto::User| match sort {
                        UserSort::Id => (0, u.id.clone()),
                        UserSort::CreatedAt => (u.created_at, u.id.clone()),
                        UserSort::LastSeen => (u.last_seen.unwrap_or(0), u.id.clone()),
                    };
                    let mut sorted = seen.clone();
                    sorted.sort_by_key(key);
                    if order == Order::Desc {
                        sorted.reverse();
                    }
                    assert_eq!(seen, sorted, "{sort:?} {order:?}");
                }
            }
            let user01 = store
                .search_users(&UserQuery {
                    q: "user01".into(),
                    limit: 10,
                    ..UserQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(user01.items[0].last_seen, Some(T0 + 100));
            assert_eq!(user01.next_cursor, None);

            assert!(matches!(
                store
                    .search_users(&UserQuery {
                        cursor: Some("not hex!".into()),
                        limit: 5,
                        ..UserQuery::default()
                    })
                    .await,
                Err(StoreError::NotFound("cursor"))
            ));
        }

        #[tokio::test]
        async fn search_users_treats_like_wildcards_literally() {
            let h = $harness.await;
            let store = h.open().await;
            for id in ["a_b", "axb", "a%c", "abc", "Mixed\\Case"] {
                store.touch_user(id, T0).await.unwrap();
            }
            let store = &*store;
            let search = |q: &str| {
                let q = UserQuery {
                    q: q.into(),
                    limit: 10,
                    ..UserQuery::default()
                };
                async move {
                    let page = store.search_users(&q).await.unwrap();
                    page.items.into_iter().map(|u| u.id).collect::<Vec<_>>()
                }
            };
            assert_eq!(search("_").await, vec!["a_b"]);
            assert_eq!(search("%").await, vec!["a%c"]);
            assert_eq!(search("a_").await, vec!["a_b"]);
            assert_eq!(search("\\").await, vec!["Mixed\\Case"]);
            assert_eq!(search("XB").await, vec!["axb"]);
            assert_eq!(search("mixed\\c").await, vec!["Mixed\\Case"]);
            assert_eq!(search("").await.len(), 5);
        }

        #[tokio::test]
        async fn room_activity_buckets_by_period() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("stats", RoomKind::Public, "alice")),
            )
            .await;
            let sent = [
                (1_704_063_600_000_i64, "alice"), // 2023-12-31 23:00, outside the range
                (1_704_103_200_000, "alice"),     // 2024-01-01 Mon
                (1_704_103_200_001, "bob"),       // 2024-01-01 Mon
                (1_704_326_340_000, "alice"),     // 2024-01-03 Wed
                (1_704_628_800_000, "carol"),     // 2024-01-07 Sun
                (1_704_672_000_000, "alice"),     // 2024-01-08 Mon
                (1_707_984_000_000, "bob"),       // 2024-02-15 Thu
                (1_740_819_600_000, "bob"),       // 2025-03-01 Sat
                (1_740_819_600_001, "bob"),       // 2025-03-01 Sat, deleted below
            ];
            for (i, (at, who)) in sent.iter().enumerate() {
                apply(
                    &*store,
                    write(who, *at, message("stats", &format!("s{i}"), "x")),
                )
                .await;
            }
            apply(
                &*store,
                write(
                    "bob",
                    T0,
                    Change::DeleteMessage {
                        room: "stats".into(),
                        id: "s8".into(),
                    },
                ),
            )
            .await;
            let from = 1_704_067_200_000; // 2024-01-01T00:00Z
            let to = 1_740_819_600_001; // excludes the last one
            let buckets = |period| store.room_activity("stats", period, from, to);
            let rows = |b: Vec<roam_proto::ActivityBucket>| {
                b.into_iter()
                    .map(|b| (b.period, b.messages, b.senders))
                    .collect::<Vec<_>>()
            };
            let s = |p: &str, m, n| (p.to_owned(), m, n);
            assert_eq!(
                rows(buckets(Period::Day).await.unwrap()),
                vec![
                    s("2024-01-01", 2, 2),
                    s("2024-01-03", 1, 1),
                    s("2024-01-07", 1, 1),
                    s("2024-01-08", 1, 1),
                    s("2024-02-15", 1, 1),
                    s("2025-03-01", 1, 1),
                ]
            );
            assert_eq!(
                rows(buckets(Period::Week).await.unwrap()),
                vec![
                    s("2024-01-01", 4, 3),
                    s("2024-01-08", 1, 1),
                    s("2024-02-12", 1, 1),
                    s("2025-02-24", 1, 1),
                ]
            );
            assert_eq!(
                rows(buckets(Period::Month).await.unwrap()),
                vec![s("2024-01", 5, 3), s("2024-02", 1, 1), s("2025-03", 1, 1)]
            );
            assert_eq!(
                rows(buckets(Period::Year).await.unwrap()),
                vec![s("2024", 6, 3), s("2025", 1, 1)]
            );
            // The deleted message still counts once the range includes it.
            let all = store
                .room_activity("stats", Period::Year, 0, i64::MAX)
                .await
                .unwrap();
            assert_eq!(
                rows(all),
                vec![s("2023", 1, 1), s("2024", 6, 3), s("2025", 2, 1)]
            );
        }

        #[tokio::test]
        async fn purge_removes_old_rows_but_keeps_current_documents() {
            let h = $harness.await;
            let store = h.open().await;
            apply(
                &*store,
                write("alice", T0, create_room("p", RoomKind::Public, "alice")),
            )
            .await;
            let put = |now: i64, doc: &str, base: u64| {
                write(
                    "alice",
                    now,
                    Change::PutDocument {
                        room: "p".into(),
                        doc: doc.into(),
                        base_version: base,
                        content: format!("{doc} v{}", base + 1),
                    },
                )
            };
            // "old": three old versions. "new": an old version then a recent one.
            apply(&*store, put(T0, "old", 0)).await;
            apply(&*store, put(T0 + 1, "old", 1)).await;
            apply(&*store, put(T0 + 2, "old", 2)).await;
            apply(&*store, put(T0, "new", 0)).await;
            apply(&*store, put(T0 + 500, "new", 1)).await;

            store.save_last_seen("old-user", T0).await.unwrap();
            store.save_last_seen("new-user", T0 + 500).await.unwrap();

            let notify = |id: &str| NewNotification {
                user: "bob".into(),
                id: id.into(),
                kind: "banned".into(),
                room: None,
                data: json!({}),
            };
            // Not `message.send`: a store may keep a send's key on the message it created, as
            // long as the message exists (longer than retention asks, never shorter).
            let idem = |key: &str| IdemRecord {
                user: "alice".into(),
                key: key.into(),
                op: "message.forward".into(),
                fingerprint: "f".into(),
            };
            apply(
                &*store,
                Write {
                    guard: None,
                    after: None,
                    idem: Some(idem("old-key")),
                    notify: vec![notify("old-n")],
                    ..write("alice", T0, message("p", "m1", "x"))
                },
            )
            .await;
            apply(
                &*store,
                Write {
                    guard: None,
                    after: None,
                    idem: Some(idem("new-key")),
                    notify: vec![notify("new-n")],
                    ..write("alice", T0 + 500, message("p", "m2", "x"))
                },
            )
            .await;
            for (id, expires_at) in [("inv-old", T0 + 10), ("inv-new", T0 + 1000)] {
                apply(
                    &*store,
                    write(
                        "alice",
                        T0,
                        Change::CreateInvitation {
                            id: id.into(),
                            room: "p".into(),
                            invitee: format!("{id}-user"),
                            role: Role::Member,
                            expires_at,
                        },
                    ),
                )
                .await;
            }

            let cutoff = T0 + 100;
            let purged = store
                .purge(RetentionCutoffs {
                    presence_before: cutoff,
                    document_history_before: cutoff,
                    notifications_before: cutoff,
                    idempotency_before: cutoff,
                    invitations_before: cutoff,
                    events_before: None,
                    batch_rows: 1_000,
                })
                .await
                .unwrap();
            assert_eq!(purged.presence, 1);
            assert_eq!(purged.document_versions, 3); // old v1, v2 and new v1
            assert_eq!(purged.notifications, 1);
            assert_eq!(purged.idempotency_keys, 1);
            assert_eq!(purged.invitations, 1);

            let old = store.document("p", "old").await.unwrap().unwrap();
            assert_eq!(
                (old.version, old.content.as_str()),
                ("3".parse().unwrap(), "old v3")
            );
            let history = store
                .document_history("p", "old", u64::MAX, 10)
                .await
                .unwrap()
                .items;
            assert_eq!(
                history.iter().map(|d| d.version).collect::<Vec<_>>(),
                vec![3]
            );
            assert_eq!(
                store.document("p", "new").await.unwrap().unwrap().version,
                2
            );
            assert_eq!(
                store
                    .last_seen(&["old-user".into(), "new-user".into()])
                    .await
                    .unwrap(),
                vec![("new-user".to_owned(), T0 + 500)]
            );
            assert!(store
                .idempotent_result("alice", "old-key")
                .await
                .unwrap()
                .is_none());
            assert!(store
                .idempotent_result("alice", "new-key")
                .await
                .unwrap()
                .is_some());
            assert!(store.invitation("inv-old", T0).await.unwrap().is_none());
            assert!(store.invitation("inv-new", T0).await.unwrap().is_some());
            // Notification seqs keep growing after a purge.
            let Committed::Applied { notifications, .. } = store
                .commit(Write {
                    notify: vec![notify("later")],
                    ..write("alice", T0 + 600, message("p", "m3", "x"))
                })
                .await
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(notifications[0].seq, 3);

            // A second pass finds nothing.
            let again = store
                .purge(RetentionCutoffs {
                    presence_before: cutoff,
                    document_history_before: cutoff,
                    notifications_before: cutoff,
                    idempotency_before: cutoff,
                    invitations_before: cutoff,
                    events_before: None,
                    batch_rows: 1_000,
                })
                .await
                .unwrap();
            assert_eq!(
                again,
                crate::store::Purged {
                    batches: 1,
                    ..Default::default()
                }
            );
        }

        #[tokio::test]
        async fn a_replayed_send_answers_its_first_result_blanked_once_deleted() {
            let h = $harness.await;
            let store = h.open().await;
            apply(&*store, write("alice", T0, create_room("r", RoomKind::Public, "alice"))).await;
            let send = |key: &str, id: &str, body: &str| Write {
                idem: Some(IdemRecord {
                    user: "alice".into(),
                    key: key.into(),
                    op: "message.send".into(),
                    fingerprint: format!("fp-{key}"),
                }),
                ..write("alice", T0, message("r", id, body))
            };
            let (first, _) = apply(&*store, send("k1", "m1", "hello")).await;
            // The same key again changes nothing and answers what was stored.
            match store.commit(send("k1", "m1", "hello")).await.unwrap() {
                Committed::Replayed(stored) => {
                    assert_eq!(stored.op, "message.send");
                    assert_eq!(stored.fingerprint, "fp-k1");
                    assert_eq!(stored.result, first.to_json());
                }
                other => panic!("expected a replay, got {other:?}"),
            }
            let edit = Change::EditMessage {
                room: "r".into(),
                id: "m1".into(),
                body: "hello, edited".into(),
            };
            apply(&*store, write("alice", T0 + 1, edit)).await;
            // The replay is the first answer, whatever changed since; the message reads as now.
            let replay = store.idempotent_result("alice", "k1").await.unwrap().unwrap();
            assert_eq!(replay.result, first.to_json());
            let now = store.message("r", "m1").await.unwrap().unwrap();
            assert_eq!((now.body.as_str(), now.edited_at), ("hello, edited", Some(T0 + 1)));
            let page = store.messages("r", MessageCursor::After(0), 10).await.unwrap();
            assert_eq!(page.items[0].body, "hello, edited");
            let delete = Change::DeleteMessage {
                room: "r".into(),
                id: "m1".into(),
            };
            apply(&*store, write("alice", T0 + 2, delete)).await;
            // Deleted means deleted: the stored answer too.
            let replay = store.idempotent_result("alice", "k1").await.unwrap().unwrap();
            assert_eq!((replay.result["body"].as_str(), replay.result["deleted"].as_bool()), (Some(""), Some(true)));
            let gone = store.message("r", "m1").await.unwrap().unwrap();
            assert_eq!((gone.body.as_str(), gone.deleted), ("", true));
            // Keys are the user's: bob's k1 is another key.
            assert!(store.idempotent_result("bob", "k1").await.unwrap().is_none());
            // A write that follows a send names it, and it counts as applied.
            let after = Write {
                after: Some("k1".into()),
                ..send("k2", "m2", "second")
            };
            apply(&*store, after).await;
            let missing = Write {
                after: Some("never-sent".into()),
                ..send("k3", "m3", "third")
            };
            assert!(matches!(apply_err(&*store, missing).await, StoreError::OutOfOrder(_)));
        }

        #[tokio::test]
        async fn co_members_documents_and_ping() {
            let h = $harness.await;
            let store = h.open().await;
            store.ping().await.unwrap();
            apply(&*store, write("alice", T0, create_room("r", RoomKind::Public, "alice"))).await;
            let join = Change::AddMember {
                room: "r".into(),
                user: "bob".into(),
                role: Role::Member,
                invitation: None,
            };
            apply(&*store, write("bob", T0, join)).await;
            apply(&*store, write("carol", T0, create_room("c", RoomKind::Public, "carol"))).await;
            let asked = ["bob".to_owned(), "carol".to_owned(), "alice".to_owned()];
            let mut shared = store.co_members("alice", &asked).await.unwrap();
            shared.sort();
            // alice shares a room with bob and is herself; carol is in none of hers.
            assert!(shared.contains(&"bob".to_owned()), "{shared:?}");
            assert!(!shared.contains(&"carol".to_owned()), "{shared:?}");
            // Documents list by name, in pages.
            for name in ["d1", "d2", "d3"] {
                let put = Change::PutDocument {
                    room: "r".into(),
                    doc: name.into(),
                    base_version: 0,
                    content: format!("{name} v1"),
                };
                apply(&*store, write("alice", T0, put)).await;
            }
            let first = store.documents("r", None, 2).await.unwrap();
            assert_eq!(
                first.items.iter().map(|d| d.doc.as_str()).collect::<Vec<_>>(),
                vec!["d1", "d2"]
            );
            let rest = store.documents("r", Some("d2"), 2).await.unwrap();
            assert_eq!(
                rest.items.iter().map(|d| (d.doc.as_str(), d.version)).collect::<Vec<_>>(),
                vec![("d3", 1)]
            );
        }

        #[tokio::test]
        async fn event_log_compaction_keeps_each_rooms_newest_event_and_no_holes() {
            let h = $harness.await;
            let store = h.open().await;
            for room in ["a", "b", "c"] {
                apply(
                    &*store,
                    write("alice", T0, create_room(room, RoomKind::Public, "alice")),
                )
                .await;
            }
            // Room a: 25 old messages then 5 recent; b: only old ones; c: nothing more.
            for i in 0..25 {
                apply(
                    &*store,
                    write("alice", T0 + i, message("a", &format!("a{i}"), "x")),
                )
                .await;
                apply(
                    &*store,
                    write("alice", T0 + i, message("b", &format!("b{i}"), "x")),
                )
                .await;
            }
            for i in 0..5 {
                apply(
                    &*store,
                    write(
                        "alice",
                        T0 + 1_000 + i,
                        message("a", &format!("a-new{i}"), "x"),
                    ),
                )
                .await;
            }
            let purged = store
                .purge(RetentionCutoffs {
                    events_before: Some(T0 + 500),
                    batch_rows: 7,
                    ..nothing_expires()
                })
                .await
                .unwrap();
            // a: seqs 1..=27 are old (created, joined, 25 messages), 28..=32 recent.
            assert_eq!(store.event_bounds("a").await.unwrap(), (28, 32));
            // b: everything is old; its newest event stays.
            assert_eq!(store.event_bounds("b").await.unwrap(), (27, 27));
            // c: created and joined, both old; the newest stays.
            assert_eq!(store.event_bounds("c").await.unwrap(), (2, 2));
            assert_eq!(purged.events, 27 + 26 + 1);
            assert!(purged.batches > 1, "{purged:?}");
            // Messages are not events: they all stay.
            let page = store
                .messages("a", MessageCursor::After(0), 100)
                .await
                .unwrap();
            assert_eq!(page.items.len(), 30);
        }

        #[tokio::test]
        async fn attachments_are_kept_shared_with_readers_and_dropped_with_their_message() {
            let h = $harness.await;
            let store = h.open().await;
            let (blob, other, third) = ("ab".repeat(32), "cd".repeat(32), "ef".repeat(32));
            for (name, kind) in [
                ("priv", RoomKind::Private),
                ("prot", RoomKind::Protected),
                ("pub", RoomKind::Public),
            ] {
                apply(&*store, write("alice", T0, create_room(name, kind, "alice"))).await;
            }
            let join = |room: &str, user: &str| {
                write(
                    user,
                    T0 + 1,
                    Change::AddMember {
                        room: room.into(),
                        user: user.into(),
                        role: Role::Member,
                        invitation: None,
                    },
                )
            };
            apply(&*store, join("priv", "bob")).await;
            let photo = roam_proto::Attachment {
                blob: blob.clone(),
                name: "cat.jpg".into(),
                mime: "image/jpeg".into(),
                size: 1234,
                width: Some(640),
                height: Some(480),
                duration_ms: None,
                thumbnail: Some("/9j/4A==".into()),
            };
            let with_blob = |b: &str| roam_proto::Attachment {
                blob: b.to_owned(),
                ..photo.clone()
            };
            let send = |room: &str, id: &str, body: &str, a: roam_proto::Attachment| {
                write(
                    "alice",
                    T0 + 2,
                    Change::InsertMessage {
                        id: id.into(),
                        room: room.into(),
                        body: body.into(),
                        reply_to: None,
                        attachment: Some(a),
                    },
                )
            };
            assert!(!store.blob_shared_with("alice", &blob).await.unwrap());

            // Kept with the message: answered, in the log, read back one by one and in pages.
            let idem = IdemRecord {
                user: "alice".into(),
                key: "s1".into(),
                op: "message.send".into(),
                fingerprint: "f1".into(),
            };
            let first = Write {
                idem: Some(idem.clone()),
                ..send("priv", "m1", "", photo.clone())
            };
            let (out, events) = apply(&*store, first.clone()).await;
            let Output::Message(sent) = out else {
                panic!("expected a message, got {out:?}")
            };
            assert_eq!(sent.attachment.as_ref(), Some(&photo));
            assert_eq!(sent.body, "", "a caption may be empty");
            assert!(matches!(&events[0].body, EventBody::MessageCreated(m) if *m == sent));
            assert_eq!(store.message("priv", "m1").await.unwrap(), Some(sent.clone()));
            let page = store
                .messages("priv", MessageCursor::After(0), 10)
                .await
                .unwrap();
            assert_eq!(page.items, vec![sent.clone()]);
            let log = store.events_after("priv", sent.seq - 1, 10).await.unwrap();
            assert!(matches!(&log[0].body, EventBody::MessageCreated(m) if *m == sent));
            match store.commit(first).await.unwrap() {
                Committed::Replayed(r) => assert_eq!(r.result["attachment"]["blob"], blob),
                other => panic!("expected Replayed, got {other:?}"),
            }

            // Shared with the room's active members only.
            assert!(store.blob_shared_with("alice", &blob).await.unwrap());
            assert!(store.blob_shared_with("bob", &blob).await.unwrap());
            assert!(!store.blob_shared_with("carol", &blob).await.unwrap());
            assert!(!store.blob_shared_with("bob", &other).await.unwrap());
            // A protected room's blobs need membership too; a public room's do not, but a ban
            // takes them away.
            apply(&*store, send("prot", "p1", "x", with_blob(&other))).await;
            assert!(!store.blob_shared_with("carol", &other).await.unwrap());
            apply(&*store, join("prot", "carol")).await;
            assert!(store.blob_shared_with("carol", &other).await.unwrap());
            apply(&*store, send("pub", "u1", "x", with_blob(&third))).await;
            assert!(store.blob_shared_with("erin", &third).await.unwrap());
            let ban = Change::Ban {
                room: "pub".into(),
                user: "erin".into(),
            };
            apply(&*store, write("alice", T0 + 3, ban)).await;
            assert!(!store.blob_shared_with("erin", &third).await.unwrap());
            assert!(store.blob_shared_with("dave", &third).await.unwrap());

            // An edit keeps the attachment.
            let edit = Change::EditMessage {
                room: "priv".into(),
                id: "m1".into(),
                body: "a cat".into(),
            };
            let (out, _) = apply(&*store, write("alice", T0 + 4, edit)).await;
            let Output::Message(edited) = out else {
                panic!("expected a message, got {out:?}")
            };
            assert_eq!(edited.attachment.as_ref(), Some(&photo));
            let stored = store.message("priv", "m1").await.unwrap().unwrap();
            assert_eq!(stored.attachment.as_ref(), Some(&photo));

            // Deleting the message drops its attachment everywhere, and the reference with it.
            let delete = Change::DeleteMessage {
                room: "priv".into(),
                id: "m1".into(),
            };
            let (out, _) = apply(&*store, write("alice", T0 + 5, delete)).await;
            let Output::Message(deleted) = out else {
                panic!("expected a message, got {out:?}")
            };
            assert_eq!((deleted.attachment, deleted.deleted), (None, true));
            let stored = store.message("priv", "m1").await.unwrap().unwrap();
            assert_eq!(stored.attachment, None);
            for e in store.events_after("priv", 0, 100).await.unwrap() {
                if let EventBody::MessageCreated(m)
                | EventBody::MessageEdited(m)
                | EventBody::MessageDeleted(m) = &e.body
                {
                    assert_eq!(m.attachment, None, "event {} still carries it", e.seq);
                }
            }
            let replay = store.idempotent_result("alice", "s1").await.unwrap().unwrap();
            assert!(replay.result.get("attachment").is_none(), "{:?}", replay.result);
            assert!(!store.blob_shared_with("bob", &blob).await.unwrap());
            assert!(!store.blob_shared_with("alice", &blob).await.unwrap());

            // Another message with the same blob shares it again; deleting its room unshares.
            apply(&*store, send("priv", "m2", "again", photo.clone())).await;
            assert!(store.blob_shared_with("bob", &blob).await.unwrap());
            let drop_room = Change::DeleteRoom {
                name: "priv".into(),
            };
            apply(&*store, write("alice", T0 + 6, drop_room)).await;
            assert!(!store.blob_shared_with("bob", &blob).await.unwrap());
            assert!(!store.blob_shared_with("alice", &blob).await.unwrap());

            // Everything else stays, across a restart.
            let store = h.open().await;
            assert!(store.blob_shared_with("carol", &other).await.unwrap());
            let kept = store.message("prot", "p1").await.unwrap().unwrap();
            assert_eq!(kept.attachment, Some(with_blob(&other)));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn blob_charges_keep_each_owner_within_the_quota() {
            use crate::store::{blob_item, Charge};
            let h = $harness.await;
            let store = h.open().await;
            let (up1, up2) = (blob_item("upload", "u1"), blob_item("upload", "u2"));
            let blob = blob_item("blob", &"ab".repeat(32));
            assert_eq!(store.blob_bytes_used("alice").await.unwrap(), 0);
            assert_eq!(
                store.charge_blob_bytes("alice", &up1, 60, 100).await.unwrap(),
                Charge::Charged
            );
            // Charging an item again changes nothing, even past the limit.
            assert_eq!(
                store.charge_blob_bytes("alice", &up1, 60, 100).await.unwrap(),
                Charge::Charged
            );
            assert_eq!(store.blob_bytes_used("alice").await.unwrap(), 60);
            assert_eq!(
                store.charge_blob_bytes("alice", &up2, 41, 100).await.unwrap(),
                Charge::Refused { used: 60 }
            );
            assert_eq!(
                store.charge_blob_bytes("alice", &up2, 40, 100).await.unwrap(),
                Charge::Charged
            );
            // Another owner has a quota of their own; 0 is no limit.
            assert_eq!(
                store.charge_blob_bytes("bob", &blob, 100, 100).await.unwrap(),
                Charge::Charged
            );
            assert_eq!(
                store.charge_blob_bytes("carol", &blob, 1 << 40, 0).await.unwrap(),
                Charge::Charged
            );
            // An upload's charge goes; a blob's charges go when it is forgotten.
            store.release_blob_bytes(&up1).await.unwrap();
            assert_eq!(store.blob_bytes_used("alice").await.unwrap(), 40);
            assert_eq!(
                store.charge_blob_bytes("alice", &blob, 60, 100).await.unwrap(),
                Charge::Charged
            );
            assert_eq!(store.blob_bytes_used("alice").await.unwrap(), 100);
            store.forget_blob(&"ab".repeat(32)).await.unwrap();
            for (who, used) in [("alice", 40), ("bob", 0), ("carol", 0)] {
                assert_eq!(store.blob_bytes_used(who).await.unwrap(), used, "{who}");
            }
            store.release_blob_bytes("upload:none").await.unwrap();

            // Charges racing for the last bytes: exactly as many pass as fit.
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let item = blob_item("upload", &format!("race{i}"));
                        store.charge_blob_bytes("dave", &item, 10, 95).await.unwrap()
                    })
                })
                .collect();
            let mut passed = 0;
            for t in tasks {
                if t.await.unwrap() == Charge::Charged {
                    passed += 1;
                }
            }
            assert_eq!(passed, 9);
            let store = h.open().await;
            assert_eq!(store.blob_bytes_used("dave").await.unwrap(), 90);
            assert_eq!(store.blob_bytes_used("alice").await.unwrap(), 40);
        }

        #[tokio::test]
        async fn a_doomed_blob_refuses_touches_and_a_touched_or_used_one_refuses_dooms() {
            let h = $harness.await;
            let store = h.open().await;
            let (idle, touched, used) = ("a1".repeat(32), "b2".repeat(32), "c3".repeat(32));
            let stale = 600_000;
            // Never touched, not used: doomed; then touches fail until the doom is stale.
            assert!(store.doom_blob(&idle, T0, T0 - 10).await.unwrap());
            assert!(!store.touch_blob(&idle, T0 + 1, T0 + 1 - stale).await.unwrap());
            assert!(
                store.touch_blob(&idle, T0 + stale, T0).await.unwrap(),
                "a stale doom is lifted"
            );
            assert!(!store.doom_blob(&idle, T0 + stale, T0).await.unwrap());
            // Touched after the cut: kept; touched before it: doomed.
            assert!(store.touch_blob(&touched, T0, T0 - stale).await.unwrap());
            assert!(!store.doom_blob(&touched, T0 + 5, T0 - 1).await.unwrap());
            assert!(store.doom_blob(&touched, T0 + 5, T0 + 1).await.unwrap());
            // Forgotten once deleted: a new upload of the same bytes can be touched.
            store.forget_blob(&touched).await.unwrap();
            assert!(store.touch_blob(&touched, T0 + 6, T0 + 6 - stale).await.unwrap());
            // Carried by a live message: never doomed, however old the touch.
            apply(&*store, write("alice", T0, create_room("r", RoomKind::Public, "alice"))).await;
            let send = Change::InsertMessage {
                id: "m1".into(),
                room: "r".into(),
                body: String::new(),
                reply_to: None,
                attachment: Some(roam_proto::Attachment {
                    blob: used.clone(),
                    name: "a.bin".into(),
                    mime: "application/octet-stream".into(),
                    size: 3,
                    width: None,
                    height: None,
                    duration_ms: None,
                    thumbnail: None,
                }),
            };
            apply(&*store, write("alice", T0, send)).await;
            assert!(!store.doom_blob(&used, T0 + stale, T0 + stale).await.unwrap());
            // Its room deleted, nothing carries it any more.
            let drop_room = Change::DeleteRoom { name: "r".into() };
            apply(&*store, write("alice", T0 + 1, drop_room)).await;
            assert!(store.doom_blob(&used, T0 + stale, T0 + stale).await.unwrap());
        }

        /// The operator's reads and changes: suspension stamps, every room, a user's
        /// memberships and messages, and forgetting a user.
        #[tokio::test]
        async fn operators_read_and_forget_users() {
            use crate::store::Suspension;
            let h = $harness.await;
            let store = h.open().await;
            assert!(store.suspensions().await.unwrap().is_empty());
            let stamp = |suspended, not_before| Suspension {
                user: "zed".into(),
                suspended,
                not_before,
            };
            store.set_suspension(&stamp(true, T0)).await.unwrap();
            store.set_suspension(&stamp(false, T0 + 5)).await.unwrap();
            assert_eq!(store.suspensions().await.unwrap(), vec![stamp(false, T0 + 5)]);

            store.touch_user("zed", T0).await.unwrap();
            store.save_last_seen("zed", T0).await.unwrap();
            apply(&*store, write("zed", T0, create_room("zeds", RoomKind::Private, "zed"))).await;
            apply(&*store, write("bob", T0, create_room("bobs", RoomKind::Public, "bob"))).await;
            apply(&*store, write("bob", T0, create_room("gone", RoomKind::Public, "bob"))).await;
            for room in ["bobs", "gone"] {
                let join = Change::AddMember {
                    room: room.into(),
                    user: "zed".into(),
                    role: Role::Member,
                    invitation: None,
                };
                apply(&*store, write("zed", T0 + 1, join)).await;
            }
            apply(&*store, write("zed", T0 + 2, message("zeds", "z1", "zebra one"))).await;
            apply(&*store, write("zed", T0 + 3, message("bobs", "z2", "zebra two"))).await;
            apply(&*store, write("bob", T0 + 3, message("bobs", "b1", "bob's"))).await;
            apply(&*store, write("zed", T0 + 4, message("gone", "z3", "zebra three"))).await;
            let edit = Change::EditMessage {
                room: "zeds".into(),
                id: "z1".into(),
                body: "zebra edited".into(),
            };
            apply(&*store, write("zed", T0 + 5, edit)).await;

            let names: Vec<String> = store
                .all_rooms("", 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.name)
                .collect();
            assert_eq!(names, ["bobs", "gone", "zeds"], "private rooms too");
            assert_eq!(store.all_rooms("bobs", 1).await.unwrap()[0].name, "gone");
            let rooms: Vec<(String, Role)> = store
                .memberships("zed")
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.room, m.role))
                .collect();
            assert_eq!(
                rooms,
                [
                    ("bobs".into(), Role::Member),
                    ("gone".into(), Role::Member),
                    ("zeds".into(), Role::Owner)
                ]
            );
            let mine = store.messages_by("zed", ("", 0), 10).await.unwrap();
            let ids: Vec<&str> = mine.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, ["z2", "z3", "z1"], "by room, then seq");
            assert_eq!(mine[2].body, "zebra edited", "as it stands");
            let rest = store
                .messages_by("zed", (&mine[0].room, mine[0].seq), 10)
                .await
                .unwrap();
            assert_eq!(rest.len(), 2);

            // A deleted room keeps its events; forgetting blanks zed's text in them.
            let drop_room = Change::DeleteRoom {
                name: "gone".into(),
            };
            apply(&*store, write("bob", T0 + 6, drop_room)).await;
            let forgotten = store.forget_user("zed").await.unwrap();
            assert!(forgotten.rows_deleted > 0, "{forgotten:?}");
            assert!(store.memberships("zed").await.unwrap().is_empty());
            assert!(store.last_seen(&["zed".into()]).await.unwrap().is_empty());
            let gone = store.events_after("gone", 0, 100).await.unwrap();
            assert!(
                !format!("{gone:?}").contains("zebra three"),
                "{gone:?}"
            );
            let bobs = store.message("bobs", "b1").await.unwrap().unwrap();
            assert_eq!(bobs.body, "bob's", "others' messages stay");
            store.scrub().await.unwrap();
            assert_eq!(store.suspensions().await.unwrap(), vec![stamp(false, T0 + 5)]);
        }
    };
}
pub(crate) use store_suite;
