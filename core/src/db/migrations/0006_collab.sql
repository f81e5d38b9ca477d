-- Schema version 6: collaborative documents (`crate::collab`).
--
-- A document is its state at the last compaction (`snapshot`: the whole document as one Yjs
-- update in the v2 encoding, empty before the first) plus the updates applied since, appended
-- one row each (v1 encoding, as they travel): a keystroke appends a few bytes instead of
-- rewriting the document. When the appended bytes outgrow the snapshot (and a floor), the
-- document is written again as one snapshot and its rows go, so opening reads one snapshot and
-- a bounded tail.

CREATE TABLE collab_docs (
    room      TEXT NOT NULL,
    doc       TEXT NOT NULL,
    snapshot  BLOB NOT NULL,
    -- bytes of the rows of `collab_updates` appended since the snapshot
    log_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room, doc)
) WITHOUT ROWID;

CREATE TABLE collab_updates (
    id    INTEGER PRIMARY KEY,
    room  TEXT NOT NULL,
    doc   TEXT NOT NULL,
    data  BLOB NOT NULL
);

CREATE INDEX collab_updates_by_doc ON collab_updates (room, doc, id);
