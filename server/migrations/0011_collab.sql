-- Version 11: collaborative documents (protocol §12).
--
-- `collab_docs`: one row per (room, doc). `seq` is the seq of its last update (gap-free per
-- document; the row is locked by the write that takes the next one); `snapshot` (Yjs v2) holds
-- everything up to `snapshot_seq`; `size` is its size as one v1 update (an upper bound between
-- compactions); `log_bytes` counts the bytes logged since the snapshot.
-- `collab_updates`: the append-only log after the snapshot; compaction deletes what the new
-- snapshot holds. `actor` is emptied when the user is erased (the content is shared, it stays).

CREATE TABLE collab_docs (
    room         TEXT    NOT NULL,
    doc          TEXT    NOT NULL,
    seq          INTEGER NOT NULL DEFAULT 0,
    snapshot     BLOB,
    snapshot_seq INTEGER NOT NULL DEFAULT 0,
    size         INTEGER NOT NULL DEFAULT 0,
    log_bytes    INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (room, doc)
);

CREATE TABLE collab_updates (
    room  TEXT    NOT NULL,
    doc   TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    actor TEXT    NOT NULL,
    data  BLOB    NOT NULL,
    at    INTEGER NOT NULL,
    PRIMARY KEY (room, doc, seq)
) WITHOUT ROWID;
CREATE INDEX collab_updates_actor ON collab_updates (actor);
