-- Version 5: push notifications (protocol §11). The same tables as SQLite's `0010_push.sql`
-- (see there); jobs and queue rows are taken with `FOR UPDATE SKIP LOCKED` under a lease, so
-- each is handled by one node at a time and a dead node's rows go to the others when the lease
-- ends.

CREATE TABLE push_devices (
    user_id       text COLLATE "C" NOT NULL,
    device        text COLLATE "C" NOT NULL,
    platform      text NOT NULL CHECK (platform IN ('apns', 'fcm', 'webhook')),
    token         text NOT NULL,
    app_id        text NOT NULL,
    locale        text,
    sandbox       boolean NOT NULL DEFAULT false,
    registered_at bigint NOT NULL,
    PRIMARY KEY (user_id, device)
);
CREATE UNIQUE INDEX push_devices_token ON push_devices (platform, token);

CREATE TABLE push_modes (
    user_id text COLLATE "C" NOT NULL,
    room    text COLLATE "C" NOT NULL,
    mode    text NOT NULL CHECK (mode IN ('all', 'mentions', 'mute')),
    PRIMARY KEY (user_id, room)
);

CREATE TABLE push_jobs (
    id          bigserial PRIMARY KEY,
    room        text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL,
    message     text COLLATE "C" NOT NULL,
    sender      text COLLATE "C" NOT NULL,
    after_user  text COLLATE "C" NOT NULL DEFAULT '',
    lease_owner text,
    lease_until bigint NOT NULL DEFAULT 0,
    created_at  bigint NOT NULL
);

CREATE TABLE push_queue (
    user_id     text COLLATE "C" NOT NULL,
    room        text COLLATE "C" NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('message', 'read')),
    seq         bigint NOT NULL,
    message     text,
    version     bigint NOT NULL DEFAULT 1,
    coalesced   bigint NOT NULL DEFAULT 0,
    attempts    integer NOT NULL DEFAULT 0,
    due_at      bigint NOT NULL,
    lease_owner text,
    lease_until bigint NOT NULL DEFAULT 0,
    created_at  bigint NOT NULL,
    PRIMARY KEY (user_id, room, kind)
);
CREATE INDEX push_queue_due ON push_queue (due_at);
