-- Schema version 3: read markers.
--
-- How far the account has read each room: the seq of the last event read, shared with the
-- account's other devices through the server (`room.mark_read`, `read_marker` frames,
-- `GET /v1/read-markers`). A marker only moves forward, whoever moves it. Unread and mention
-- counts are not stored: they are counted from `messages` above the marker when asked for.
CREATE TABLE read_markers (
    room       TEXT PRIMARY KEY NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
