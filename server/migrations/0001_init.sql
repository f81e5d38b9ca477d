-- Roam server schema, version 1.
--
-- Tables whose rows can be large (event data, message bodies, document content, stored results,
-- room metadata) are rowid tables; small ones are WITHOUT ROWID.
--
-- Conventions: every timestamp is milliseconds since the Unix epoch (INTEGER); JSON values are
-- stored as TEXT; enums are stored by their wire names. Sequence numbers are INTEGER (SQLite's
-- signed 64-bit range is plenty for u64 counters that start at 1).

-- The user directory. `notif_seq` is the last per-user notification seq handed out: it only
-- grows, so notification seqs stay gap-free and never repeat even after retention deletes rows.
CREATE TABLE users (
    id         TEXT    NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER,
    notif_seq  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX users_created_at ON users (created_at, id);
-- A never-seen user sorts as last_seen 0; the expression must match the queries exactly.
CREATE INDEX users_last_seen ON users (coalesce(last_seen, 0), id);

-- Rooms. A deleted room keeps its row (with `deleted_at`) so that its event log and head_seq
-- stay readable for recovery, and so its name can never be reused for another seq stream.
CREATE TABLE rooms (
    name       TEXT    NOT NULL PRIMARY KEY,
    head_seq   INTEGER NOT NULL DEFAULT 0,
    kind       TEXT    NOT NULL CHECK (kind IN ('public', 'protected', 'private')),
    owner      TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    title      TEXT    NOT NULL,
    metadata   TEXT    NOT NULL
);

-- A left member has no row; a banned one has status 'banned'.
CREATE TABLE members (
    room      TEXT    NOT NULL REFERENCES rooms (name),
    user      TEXT    NOT NULL,
    role      TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    status    TEXT    NOT NULL CHECK (status IN ('active', 'banned')),
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
CREATE INDEX members_user_status ON members (user, status, room);
CREATE INDEX members_room_status ON members (room, status);

-- The room event log: one row per event, seq gap-free per room.
CREATE TABLE events (
    room  TEXT    NOT NULL REFERENCES rooms (name),
    seq   INTEGER NOT NULL,
    at    INTEGER NOT NULL,
    actor TEXT    NOT NULL,
    kind  TEXT    NOT NULL,
    data  TEXT    NOT NULL,
    PRIMARY KEY (room, seq)
);

-- Messages; `seq` is the seq of the message_created event.
CREATE TABLE messages (
    id         TEXT    NOT NULL PRIMARY KEY,
    room       TEXT    NOT NULL REFERENCES rooms (name),
    seq        INTEGER NOT NULL,
    sender     TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    reply_to   TEXT,
    created_at INTEGER NOT NULL,
    edited_at  INTEGER,
    deleted    INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX messages_room_seq ON messages (room, seq);
-- Covering index of the period analytics.
CREATE INDEX messages_room_created ON messages (room, created_at, sender);

-- Each document's current version; the content lives in document_versions.
CREATE TABLE documents (
    room    TEXT    NOT NULL REFERENCES rooms (name),
    doc     TEXT    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (room, doc)
) WITHOUT ROWID;

CREATE TABLE document_versions (
    room       TEXT    NOT NULL REFERENCES rooms (name),
    doc        TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    content    TEXT    NOT NULL,
    updated_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (room, doc, version)
);
CREATE INDEX document_versions_updated_at ON document_versions (updated_at);

-- Stored status is pending/accepted/rejected/expired; a pending row past expires_at reads expired.
CREATE TABLE invitations (
    id         TEXT    NOT NULL PRIMARY KEY,
    room       TEXT    NOT NULL REFERENCES rooms (name),
    invited_by TEXT    NOT NULL,
    invitee    TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    status     TEXT    NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected', 'expired')),
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX invitations_invitee ON invitations (invitee, created_at);
CREATE INDEX invitations_room_invitee ON invitations (room, invitee, status, created_at);
CREATE INDEX invitations_room_created ON invitations (room, created_at);
CREATE INDEX invitations_expires_at ON invitations (expires_at);

-- Per-user notifications; seq from users.notif_seq.
CREATE TABLE notifications (
    user       TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    id         TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    room       TEXT,
    actor      TEXT,
    data       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    read       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX notifications_user_id ON notifications (user, id);
-- Serves the unread count and unread-only pages.
CREATE INDEX notifications_unread ON notifications (user, read, seq);
CREATE INDEX notifications_created_at ON notifications (created_at);

-- Durable idempotency keys, scoped per user. Only successful results are recorded.
CREATE TABLE idempotency (
    user        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    op          TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    result      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user, key)
);
CREATE INDEX idempotency_created_at ON idempotency (created_at);

-- Presence persistence: each user's last-seen instant.
CREATE TABLE presence (
    user      TEXT    NOT NULL PRIMARY KEY,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX presence_last_seen ON presence (last_seen);
