-- Roam server schema for PostgreSQL, version 1: the same tables as the SQLite schema at its
-- version 4 (see ../0001_init.sql … ../0004_inboxes.sql), written for Postgres.
--
-- Conventions: timestamps are milliseconds since the Unix epoch (bigint); JSON values are stored
-- as text, exactly as the SQLite store stores them; enums are stored by their wire names. Free
-- text that a user types (a room's title, a message body, a document's content) is bytea holding
-- its UTF-8: Postgres text cannot hold U+0000, and the store keeps what it is given verbatim. Every identifier column uses the "C" collation, so
-- text compares byte by byte as in SQLite: cursors (`name > $1`) and orderings agree between
-- the two stores, and the b-tree indexes serve range scans whatever the database's locale.
-- `user` is reserved in Postgres: the column is `user_id` here.

-- The user directory: users who have been seen.
CREATE TABLE users (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    created_at bigint NOT NULL,
    last_seen  bigint
);
CREATE INDEX users_created_at ON users (created_at, id);
-- A never-seen user sorts as last_seen 0; the expression must match the queries exactly.
CREATE INDEX users_last_seen ON users ((coalesce(last_seen, 0)), id);

-- Per-user notification counter: only grows, so notification seqs are gap-free and never repeat.
CREATE TABLE inboxes (
    user_id   text COLLATE "C" NOT NULL PRIMARY KEY,
    notif_seq bigint NOT NULL
);

-- Rooms. A deleted room keeps its row (with `deleted_at`) so that its event log and head_seq
-- stay readable for recovery and its name is never reused. `head_seq` is the room's sequence
-- counter: a write takes the next seqs with `UPDATE … SET head_seq = head_seq + n RETURNING`,
-- which holds the row lock until it commits, so seqs are gap-free and in commit order even
-- with writers on several servers.
CREATE TABLE rooms (
    name       text COLLATE "C" NOT NULL PRIMARY KEY,
    head_seq   bigint NOT NULL DEFAULT 0,
    kind       text NOT NULL CHECK (kind IN ('public', 'protected', 'private')),
    owner      text COLLATE "C" NOT NULL,
    created_by text COLLATE "C" NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    deleted_at bigint,
    title      bytea NOT NULL,
    metadata   text NOT NULL
);

-- A left member has no row; a banned one has status 'banned'.
CREATE TABLE members (
    room      text COLLATE "C" NOT NULL REFERENCES rooms (name),
    user_id   text COLLATE "C" NOT NULL,
    role      text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    status    text NOT NULL CHECK (status IN ('active', 'banned')),
    joined_at bigint NOT NULL,
    PRIMARY KEY (room, user_id)
);
CREATE INDEX members_user_status ON members (user_id, status, room);
CREATE INDEX members_room_status ON members (room, status);

-- A member who left with a role below `member` may rejoin with that role at most.
CREATE TABLE role_caps (
    room    text COLLATE "C" NOT NULL REFERENCES rooms (name),
    user_id text COLLATE "C" NOT NULL,
    role    text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    PRIMARY KEY (room, user_id)
);

-- The room event log: one row per event, seq gap-free per room. `message` names the message
-- of an edit event, so that deleting the message can redact it.
CREATE TABLE events (
    room    text COLLATE "C" NOT NULL REFERENCES rooms (name),
    seq     bigint NOT NULL,
    at      bigint NOT NULL,
    actor   text COLLATE "C" NOT NULL,
    kind    text NOT NULL,
    data    text NOT NULL,
    message text COLLATE "C",
    PRIMARY KEY (room, seq)
);
CREATE INDEX events_message ON events (message) WHERE message IS NOT NULL;

-- Messages; `seq` is the seq of the message_created event.
CREATE TABLE messages (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    room       text COLLATE "C" NOT NULL REFERENCES rooms (name),
    seq        bigint NOT NULL,
    sender     text COLLATE "C" NOT NULL,
    body       bytea NOT NULL,
    reply_to   text COLLATE "C",
    created_at bigint NOT NULL,
    edited_at  bigint,
    deleted    boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX messages_room_seq ON messages (room, seq);
-- Covering index of the period analytics.
CREATE INDEX messages_room_created ON messages (room, created_at, sender);

-- Each document's current version; the content lives in document_versions.
CREATE TABLE documents (
    room    text COLLATE "C" NOT NULL REFERENCES rooms (name),
    doc     text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (room, doc)
);

-- `seq` is the seq of the version's `document_updated` event.
CREATE TABLE document_versions (
    room       text COLLATE "C" NOT NULL REFERENCES rooms (name),
    doc        text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    content    bytea NOT NULL,
    updated_by text COLLATE "C" NOT NULL,
    updated_at bigint NOT NULL,
    seq        bigint,
    PRIMARY KEY (room, doc, version)
);
CREATE INDEX document_versions_updated_at ON document_versions (updated_at);

-- Stored status is pending/accepted/rejected/expired/revoked; a pending row past expires_at
-- reads expired.
CREATE TABLE invitations (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    room       text COLLATE "C" NOT NULL REFERENCES rooms (name),
    invited_by text COLLATE "C" NOT NULL,
    invitee    text COLLATE "C" NOT NULL,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    status     text NOT NULL
               CHECK (status IN ('pending', 'accepted', 'rejected', 'expired', 'revoked')),
    expires_at bigint NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX invitations_invitee ON invitations (invitee, created_at);
CREATE INDEX invitations_room_invitee ON invitations (room, invitee, status, created_at);
CREATE INDEX invitations_room_created ON invitations (room, created_at);
CREATE INDEX invitations_expires_at ON invitations (expires_at);

-- Per-user notifications; seq from inboxes.notif_seq.
CREATE TABLE notifications (
    user_id    text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    id         text COLLATE "C" NOT NULL,
    kind       text NOT NULL,
    room       text COLLATE "C",
    actor      text COLLATE "C",
    data       text NOT NULL,
    created_at bigint NOT NULL,
    read       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, seq)
);
CREATE UNIQUE INDEX notifications_user_id ON notifications (user_id, id);
-- Serves the unread count and unread-only pages (only unread rows are indexed).
CREATE INDEX notifications_unread ON notifications (user_id, seq) WHERE NOT read;
CREATE INDEX notifications_created_at ON notifications (created_at);

-- Durable idempotency keys, scoped per user. Only successful results are recorded; `message`
-- names the message a result echoes, so that deleting the message redacts the result too.
CREATE TABLE idempotency (
    user_id     text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    op          text NOT NULL,
    fingerprint text NOT NULL,
    result      text NOT NULL,
    created_at  bigint NOT NULL,
    message     text COLLATE "C",
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_created_at ON idempotency (created_at);
CREATE INDEX idempotency_message ON idempotency (message) WHERE message IS NOT NULL;

-- Presence persistence: each user's last-seen instant.
CREATE TABLE presence (
    user_id   text COLLATE "C" NOT NULL PRIMARY KEY,
    last_seen bigint NOT NULL
);
CREATE INDEX presence_last_seen ON presence (last_seen);

-- How far each user has read each room (`room.mark_read`): the seq of the last event read. One
-- row per (user, room), written only forward.
CREATE TABLE read_markers (
    user_id    text COLLATE "C" NOT NULL,
    room       text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (user_id, room)
);
