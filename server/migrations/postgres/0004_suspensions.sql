-- Version 4: operators' suspensions (`roam-server admin users suspend`).
--
-- One row per user an operator ever suspended: while `suspended`, every token of the user is
-- refused; tokens issued (`iat`) before `not_before` (ms since the epoch) stay refused after
-- `unsuspend`. Servers keep every row in memory (a handful), so the table is read whole.
CREATE TABLE suspensions (
    user_id    text COLLATE "C" NOT NULL PRIMARY KEY,
    suspended  boolean NOT NULL,
    not_before bigint NOT NULL
);
