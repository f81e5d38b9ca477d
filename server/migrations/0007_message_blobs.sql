-- Version 7: messages that carry an attachment reference its blob.
--
-- A message's attachment lives with the message, in its `message_created` event's JSON, like
-- its body. This table only answers "who may download this blob": one row per message that
-- carries an attachment and is not deleted, written with the message, removed when it is
-- deleted and when its room is. A download is allowed when a row names the blob in a live room
-- the downloader may read (`blob_shared_with` in `src/store/sqlite/read.rs`).
--
-- Rows are small, so the table is `WITHOUT ROWID`, clustered on (room, seq): a message has at
-- most one attachment, deleting a message finds its row by its place, deleting a room by the
-- prefix. `message_blobs_blob` serves the access check. Messages without an attachment write
-- nothing here.

CREATE TABLE message_blobs (
    room TEXT    NOT NULL REFERENCES rooms (name),
    seq  INTEGER NOT NULL,
    blob TEXT    NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE INDEX message_blobs_blob ON message_blobs (blob, room);
