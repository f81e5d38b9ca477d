-- Schema version 2: fewer b-trees written per outbox enqueue.
--
-- Every b-tree (table or index) that a transaction touches is at least one page appended to the
-- WAL at commit, and that page write is most of the cost of a durable enqueue. Version 1 wrote
-- nine of them to queue one message (outbox row, its two indexes and `sqlite_sequence`; message
-- row, its primary-key index, and three secondary indexes holding NULLs). This version writes
-- three: the outbox row, the message row (keyed by `local_id` itself), and the index of
-- unconfirmed messages.

-- outbox: `pos` is assigned by the core (see `Db::next_pos`: above every stored `pos` and every
-- unconfirmed message's `local_order`), so AUTOINCREMENT and its `sqlite_sequence` write go.
-- The core finds its entries by `pos` (the rowid, checked against `id`), so `id` has no index:
-- only the app's `retry` and `discard` look an entry up by id, and they read the outbox through
-- (ids are fresh UUIDv7s; a message's is also its `local_id`, the key of `messages`).
-- No query used the (queue, pos) index; the one query by queue (a new document edit drops the
-- failed edits of the same document) uses a partial index of failed entries, which pending
-- entries never touch.
CREATE TABLE outbox_v2 (
    pos        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL,
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
INSERT INTO outbox_v2 (pos, id, queue, op, mutation, target, undo, state, attempts, error_code,
                       error, created_at)
    SELECT pos, id, queue, op, mutation, target, undo, state, attempts, error_code, error,
           created_at
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
CREATE INDEX outbox_failed_queue ON outbox (queue) WHERE state = 'failed';

-- messages: clustered on `local_id` (WITHOUT ROWID: the row lives in the primary-key b-tree, no
-- separate rowid table). `server_id` and `(room, seq)` are indexed only where they are set, so a
-- local message (both NULL until confirmed) is in neither index; every query on them names a
-- non-NULL value (`server_id = ?`, `seq IS NOT NULL`), which lets SQLite use the partial index.
CREATE TABLE messages_v2 (
    local_id     TEXT PRIMARY KEY NOT NULL,
    server_id    TEXT,
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
) WITHOUT ROWID;
INSERT INTO messages_v2 (local_id, server_id, room, seq, sender, body, reply_to, created_at,
                         edited_at, deleted, send_state, failure_code, failure, local_order)
    SELECT local_id, server_id, room, seq, sender, body, reply_to, created_at, edited_at,
           deleted, send_state, failure_code, failure, local_order
    FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE UNIQUE INDEX messages_server_id ON messages (server_id) WHERE server_id IS NOT NULL;
CREATE INDEX messages_room_seq ON messages (room, seq) WHERE seq IS NOT NULL;
CREATE INDEX messages_room_unconfirmed ON messages (room, local_order) WHERE seq IS NULL;
