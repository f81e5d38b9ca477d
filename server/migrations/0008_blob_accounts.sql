-- Version 8: what each user's attachments weigh, and which blobs a send has just named.
--
-- `blob_charges` is the per-user storage quota (`--blob-quota-mb-per-user`): one row per
-- (owner, item), where an item is `upload:<id>` (an unfinished upload, charged its declared
-- size when it is created) or `blob:<sha256>` (a finished blob the owner uploaded or proved to
-- hold). A user's usage is the sum of their rows. An upload's row goes when it finishes (its
-- blob's row replaces it), is aborted or expires; a blob's rows go when retention deletes it.
-- The charge is checked and written in one step under the writer (see `charge_blob_bytes`).
--
-- `blob_holds` closes the race between retention and `message.send`: a send (and an upload
-- that finds or makes the blob) stamps `touched_at` before it checks that the blob exists, and
-- retention may only mark a blob `doomed_at` (then delete it) when no message in a live room
-- carries it and it was not touched within the upload expiry. A touch fails while a fresh doom
-- stands, so either the send sees "gone" or retention leaves the blob. Both steps are single
-- statements on one row. Blobs held before this version start untouched: nothing to backfill,
-- and their bytes are not charged to anyone.

CREATE TABLE blob_charges (
    owner TEXT    NOT NULL,
    item  TEXT    NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (owner, item)
) WITHOUT ROWID;
CREATE INDEX blob_charges_item ON blob_charges (item);

CREATE TABLE blob_holds (
    blob       TEXT    NOT NULL PRIMARY KEY,
    touched_at INTEGER NOT NULL,
    doomed_at  INTEGER
) WITHOUT ROWID;
