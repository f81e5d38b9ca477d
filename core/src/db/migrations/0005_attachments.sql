-- Schema version 5: attachments.
--
-- A message may carry a file (`attachment`: the protocol's `Attachment` as JSON, NULL for a
-- plain message and once deleted). Adding a nullable column writes no existing row and no
-- index, so a queued plain message still writes the same three b-trees.

ALTER TABLE messages ADD COLUMN attachment TEXT;

-- The upload of a file this device sends, ahead of its message: one row per message (its
-- `local_id`, also the send's outbox entry) until the server holds the blob. The send's outbox
-- entry is held back while the row exists, and with it the rest of the room's queue.
CREATE TABLE uploads (
    local_id   TEXT PRIMARY KEY NOT NULL,
    room       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mime       TEXT NOT NULL,
    -- the server's upload id, once created (resumed with HEAD after a restart)
    upload     TEXT,
    -- bytes the server confirmed holding, as last heard
    sent       INTEGER NOT NULL DEFAULT 0,
    -- pending | failed
    state      TEXT NOT NULL DEFAULT 'pending',
    error_code TEXT,
    error      TEXT,
    created_at INTEGER NOT NULL
);

-- The media cache: the files in the media directory, named by their SHA-256, with when each
-- was last used (least recently used go first once the cache passes its cap). `path` is the
-- file's full path, so a message read names its local file; when the media directory moves
-- (an iOS app container changes path on update) the client rewrites them at open.
CREATE TABLE media (
    sha256    TEXT PRIMARY KEY NOT NULL,
    path      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    last_used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX media_last_used ON media (last_used);
