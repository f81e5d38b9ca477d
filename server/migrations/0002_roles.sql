-- Roam server schema, version 2: one role rule.
--
-- Invitations can be revoked (status 'revoked'): the status CHECK changes, which in SQLite
-- takes a table rebuild (see NOTES.md). Nothing references `invitations`, so the rebuild keeps
-- every foreign key intact.

CREATE TABLE invitations_v2 (
    id         TEXT    NOT NULL PRIMARY KEY,
    room       TEXT    NOT NULL REFERENCES rooms (name),
    invited_by TEXT    NOT NULL,
    invitee    TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    status     TEXT    NOT NULL
               CHECK (status IN ('pending', 'accepted', 'rejected', 'expired', 'revoked')),
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO invitations_v2 (id, room, invited_by, invitee, role, status, expires_at, created_at)
    SELECT id, room, invited_by, invitee, role, status, expires_at, created_at FROM invitations;
DROP TABLE invitations;
ALTER TABLE invitations_v2 RENAME TO invitations;
CREATE INDEX invitations_invitee ON invitations (invitee, created_at);
CREATE INDEX invitations_room_invitee ON invitations (room, invitee, status, created_at);
CREATE INDEX invitations_room_created ON invitations (room, created_at);
CREATE INDEX invitations_expires_at ON invitations (expires_at);

-- A member who leaves with a role below `member` (a demoted guest) leaves a row here, so that
-- joining a public room again does not promote them; joining deletes it.
CREATE TABLE role_caps (
    room TEXT NOT NULL REFERENCES rooms (name),
    user TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
