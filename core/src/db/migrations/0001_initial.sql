-- Schema version 1 of the roam-core account database.
-- Timestamps are milliseconds since the Unix epoch; sequence numbers are the server's.

-- Rooms the account knows about.
CREATE TABLE rooms (
    name         TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL DEFAULT 'public',
    title        TEXT NOT NULL DEFAULT '',
    metadata     TEXT NOT NULL DEFAULT '{}',
    owner        TEXT NOT NULL DEFAULT '',
    created_by   TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL DEFAULT 0,
    head_seq     INTEGER NOT NULL DEFAULT 0,
    member_count INTEGER NOT NULL DEFAULT 0,
    -- 1 while the local user is an active member (or asked to become one).
    joined       INTEGER NOT NULL DEFAULT 0,
    -- 1 while the socket should follow the room (subscribe after every connect).
    subscribed   INTEGER NOT NULL DEFAULT 0,
    -- pending | sent | failed: the latest local change to the room row itself.
    send_state   TEXT NOT NULL DEFAULT 'sent',
    failure_code TEXT,
    failure      TEXT
);

-- Per-room sync cursor: the highest event seq applied to this store.
CREATE TABLE room_cursors (
    room TEXT PRIMARY KEY NOT NULL,
    seq  INTEGER NOT NULL
);

CREATE TABLE members (
    room      TEXT NOT NULL,
    user      TEXT NOT NULL,
    role      TEXT NOT NULL,
    status    TEXT NOT NULL,
    joined_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room, user)
);

-- Messages, confirmed and local. `local_id` is what the app holds: the outbox key for
-- messages sent from this device, the server id otherwise.
CREATE TABLE messages (
    local_id     TEXT PRIMARY KEY NOT NULL,
    server_id    TEXT UNIQUE,
    room         TEXT NOT NULL,
    seq          INTEGER,
    sender       TEXT NOT NULL,
    body         TEXT NOT NULL,
    reply_to     TEXT,
    created_at   INTEGER NOT NULL,
    edited_at    INTEGER,
    deleted      INTEGER NOT NULL DEFAULT 0,
    send_state   TEXT NOT NULL DEFAULT 'sent',
    failure_code TEXT,
    failure      TEXT,
    -- insertion order of local messages (seq is NULL until confirmed)
    local_order  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_room_seq ON messages (room, seq);
CREATE INDEX messages_room_unconfirmed ON messages (room, local_order) WHERE seq IS NULL;

CREATE TABLE documents (
    room         TEXT NOT NULL,
    doc          TEXT NOT NULL,
    version      INTEGER NOT NULL,
    content      TEXT NOT NULL,
    updated_by   TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    send_state   TEXT NOT NULL DEFAULT 'sent',
    failure_code TEXT,
    failure      TEXT,
    -- the server's document (JSON) after a version_conflict
    conflict     TEXT,
    PRIMARY KEY (room, doc)
);

CREATE TABLE notifications (
    id         TEXT PRIMARY KEY NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    room       TEXT,
    actor      TEXT,
    data       TEXT NOT NULL DEFAULT 'null',
    created_at INTEGER NOT NULL,
    read       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX notifications_seq ON notifications (seq);

CREATE TABLE presence (
    user      TEXT PRIMARY KEY NOT NULL,
    status    TEXT NOT NULL,
    last_seen INTEGER,
    devices   INTEGER NOT NULL DEFAULT 0
);

-- Small account-wide values: inbox cursor, unread count.
CREATE TABLE kv (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- The durable outbox. `pos` orders entries; `queue` is the room (or '' for account-level ops).
CREATE TABLE outbox (
    pos        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    queue      TEXT NOT NULL,
    op         TEXT NOT NULL,
    mutation   TEXT NOT NULL,
    -- local_id of the message an edit/delete targets; resolved to the server id at send time
    target     TEXT,
    -- how to undo the optimistic change if the entry is discarded (JSON)
    undo       TEXT,
    state      TEXT NOT NULL DEFAULT 'pending',
    attempts   INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error      TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX outbox_queue ON outbox (queue, pos);

-- ETags of REST resources whose content is stored in the tables above.
CREATE TABLE http_etags (
    path TEXT PRIMARY KEY NOT NULL,
    etag TEXT NOT NULL
);
