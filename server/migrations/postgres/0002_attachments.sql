-- Version 2: messages that carry an attachment.
--
-- `messages.attachment` is the attachment as JSON text (NULL for none, and once the message is
-- deleted). `message_blobs` answers "who may download this blob": one row per message that
-- carries an attachment and is not deleted, written with the message, removed when it is
-- deleted and when its room is. A download is allowed when a row names the blob in a live room
-- the downloader may read (`blob_shared_with` in `src/store/postgres/read.rs`). Messages
-- without an attachment write nothing here. Both start empty: nothing to backfill.

ALTER TABLE messages ADD COLUMN attachment text;

CREATE TABLE message_blobs (
    room text COLLATE "C" NOT NULL REFERENCES rooms (name),
    seq  bigint NOT NULL,
    blob text COLLATE "C" NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE INDEX message_blobs_blob ON message_blobs (blob, room);
