-- Roam server schema, version 5: read markers.
--
-- How far each user has read each room (`room.mark_read`): the seq of the last event read.
-- One row per (user, room), written only forward. Keyed by user first: the reads are "all of
-- this user's markers" (`GET /v1/read-markers`) and "this user's marker of this room".

CREATE TABLE read_markers (
    user       TEXT    NOT NULL,
    room       TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user, room)
) WITHOUT ROWID;
