-- Version 6: a chat message's durable commit writes fewer pages.
--
-- Before, one message wrote about thirteen WAL pages: the room row (its head seq), the events
-- table and its (room, seq) index, the messages table and three indexes, the idempotency table
-- and three indexes. Now it adds one events row and three index entries:
--
-- * A message lives in its events: the `message_created` row is the message as sent (blanked
--   if it is deleted) and its newest `message_edited` row, if any, is the message as it is now.
--   The creation is found by id through `events_message_created`, which also keeps ids unique;
--   edits through `events_message_edits`. The `messages` table goes.
-- * The `message.send` that created a message keeps its idempotency key and fingerprint on the
--   creation's row (`sent_key`, `sent_fingerprint`, found through `events_sent`) for as long as
--   the message exists; its stored result is that row. Other mutations' keys stay in
--   `idempotency`.
-- * Event-log compaction never removes a message's creation or edits (they are the message); a
--   room's `log_from` is the seq up to which its log was compacted, so a client behind it is
--   still told to reset. Rows below `log_from` are messages only.
-- * A room's head seq is the largest seq of its events (the newest event always stays), read
--   through the primary key: nothing to write.
--
-- `events` stays a rowid table: rows are appended in commit order, and its B-trees of small
-- keys split far less often than one clustered on (room, seq) holding whole rows.

ALTER TABLE rooms ADD COLUMN log_from INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET log_from = coalesce((SELECT min(seq) FROM events e WHERE e.room = rooms.name), 1) - 1;
ALTER TABLE rooms DROP COLUMN head_seq;

CREATE TABLE events_v6 (
    room             TEXT    NOT NULL REFERENCES rooms (name),
    seq              INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    actor            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    data             TEXT    NOT NULL,
    -- The message a message event is about (its creation and its edits).
    message          TEXT,
    sent_key         TEXT,
    sent_fingerprint TEXT,
    PRIMARY KEY (room, seq)
);
INSERT INTO events_v6 (room, seq, at, actor, kind, data, message)
    SELECT room, seq, at, actor, kind, data, message FROM events ORDER BY room, seq;
UPDATE events_v6 SET message = json_extract(data, '$.id') WHERE kind = 'message_created';
-- A message whose edits compaction had removed keeps its text as it is now on its creation.
UPDATE events_v6 SET
    data = json_set(events_v6.data, '$.body', m.body, '$.edited_at', m.edited_at,
                    '$.deleted', json(CASE WHEN m.deleted THEN 'true' ELSE 'false' END))
    FROM messages m
    WHERE events_v6.room = m.room AND events_v6.seq = m.seq
      AND events_v6.kind = 'message_created' AND m.edited_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM events x WHERE x.message = m.id AND x.kind = 'message_edited');
-- Messages whose creation compaction had removed get it back, as they are now, below the
-- room's horizon.
INSERT INTO events_v6 (room, seq, at, actor, kind, data, message)
    SELECT m.room, m.seq, m.created_at, m.sender, 'message_created',
           json_object('id', m.id, 'room', m.room, 'seq', m.seq, 'sender', m.sender,
                       'body', m.body, 'reply_to', m.reply_to, 'created_at', m.created_at,
                       'edited_at', m.edited_at,
                       'deleted', json(CASE WHEN m.deleted THEN 'true' ELSE 'false' END)),
           m.id
    FROM messages m
    WHERE NOT EXISTS (SELECT 1 FROM events_v6 e WHERE e.room = m.room AND e.seq = m.seq);
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
CREATE UNIQUE INDEX events_message_created ON events (message) WHERE kind = 'message_created';
CREATE INDEX events_message_edits ON events (message) WHERE kind = 'message_edited';
CREATE UNIQUE INDEX events_sent ON events (actor, sent_key) WHERE sent_key IS NOT NULL;
DROP TABLE messages;
