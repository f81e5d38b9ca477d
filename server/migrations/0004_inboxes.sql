-- Roam server schema, version 4: the directory lists users who have been seen, nobody else.
--
-- The per-user notification counter moves out of `users` into `inboxes`, so that notifying an
-- id (an invitation to a made-up user) no longer creates a directory entry for it. The counter
-- only grows: notification seqs stay gap-free and never repeat.

CREATE TABLE inboxes (
    user      TEXT    NOT NULL PRIMARY KEY,
    notif_seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO inboxes (user, notif_seq) SELECT id, notif_seq FROM users WHERE notif_seq > 0;
ALTER TABLE users DROP COLUMN notif_seq;
