-- Version 8: push notifications (protocol §11).
--
-- `push_devices`: one row per (user, device); a token is held by one device (`push_devices_token`).
-- `push_modes`: a user's notification modes; the row with room '' is the account default (no
-- room has an empty name), the others override it per room.
-- `push_jobs`: one row per new message, written in the message's transaction; the push worker
-- turns it into `push_queue` rows in batches of users (`after_user` is how far it got) and then
-- deletes it. A message commit adds one small row here (and one index entry).
-- `push_queue`: what is still to be sent, one row per (user, room, kind): a newer message for the
-- same user and room coalesces into the queued row (`version` moves on, `coalesced` counts).
-- Rows are taken under a lease (`lease_until`); the worker deletes a row once sent or dropped.

CREATE TABLE push_devices (
    user          TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    platform      TEXT    NOT NULL CHECK (platform IN ('apns', 'fcm', 'webhook')),
    token         TEXT    NOT NULL,
    app_id        TEXT    NOT NULL,
    locale        TEXT,
    sandbox       INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (user, device)
);
CREATE UNIQUE INDEX push_devices_token ON push_devices (platform, token);

CREATE TABLE push_modes (
    user TEXT NOT NULL,
    room TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('all', 'mentions', 'mute')),
    PRIMARY KEY (user, room)
) WITHOUT ROWID;

CREATE TABLE push_jobs (
    id          INTEGER PRIMARY KEY,
    room        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    message     TEXT    NOT NULL,
    sender      TEXT    NOT NULL,
    after_user  TEXT    NOT NULL DEFAULT '',
    lease_owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE push_queue (
    user        TEXT    NOT NULL,
    room        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('message', 'read')),
    seq         INTEGER NOT NULL,
    message     TEXT,
    version     INTEGER NOT NULL DEFAULT 1,
    coalesced   INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_at      INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user, room, kind)
);
CREATE INDEX push_queue_due ON push_queue (due_at);
