-- Version 9: operators' suspensions (`roam-server admin users suspend`).
--
-- One row per user an operator ever suspended: while `suspended` is 1 every token of the user
-- is refused; tokens issued (`iat`) before `not_before` (ms since the epoch) stay refused
-- after `unsuspend`. Servers keep every row in memory (a handful), so the table is read whole.
CREATE TABLE suspensions (
    user       TEXT    NOT NULL PRIMARY KEY,
    suspended  INTEGER NOT NULL CHECK (suspended IN (0, 1)),
    not_before INTEGER NOT NULL
) WITHOUT ROWID;
