-- Version 6: collaborative documents (protocol §12). The same tables as SQLite's
-- `0011_collab.sql` (see there). A write locks its document's row (`FOR UPDATE`) after the
-- room's, so the seq it takes is the next one whichever node writes.

CREATE TABLE collab_docs (
    room         text COLLATE "C" NOT NULL,
    doc          text COLLATE "C" NOT NULL,
    seq          bigint NOT NULL DEFAULT 0,
    snapshot     bytea,
    snapshot_seq bigint NOT NULL DEFAULT 0,
    size         bigint NOT NULL DEFAULT 0,
    log_bytes    bigint NOT NULL DEFAULT 0,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    PRIMARY KEY (room, doc)
);

CREATE TABLE collab_updates (
    room  text COLLATE "C" NOT NULL,
    doc   text COLLATE "C" NOT NULL,
    seq   bigint NOT NULL,
    actor text COLLATE "C" NOT NULL,
    data  bytea NOT NULL,
    at    bigint NOT NULL,
    PRIMARY KEY (room, doc, seq)
);
CREATE INDEX collab_updates_actor ON collab_updates (actor);
