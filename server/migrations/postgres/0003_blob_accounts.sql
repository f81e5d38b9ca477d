-- Version 3: what each user's attachments weigh, and which blobs a send has just named.
--
-- The same tables as SQLite's `0008_blob_accounts.sql` (read that file's notes): per-user
-- charges for the storage quota, one row per (owner, `upload:<id>` or `blob:<sha256>`), and
-- the touch/doom stamps that keep retention from deleting a blob a send is naming. A charge
-- takes a transaction-scoped advisory lock on its owner, so two nodes cannot both pass the
-- quota with the last free bytes. Both start empty: nothing to backfill.

CREATE TABLE blob_charges (
    owner text COLLATE "C" NOT NULL,
    item  text COLLATE "C" NOT NULL,
    bytes bigint NOT NULL,
    PRIMARY KEY (owner, item)
);
CREATE INDEX blob_charges_item ON blob_charges (item);

CREATE TABLE blob_holds (
    blob       text COLLATE "C" NOT NULL PRIMARY KEY,
    touched_at bigint NOT NULL,
    doomed_at  bigint
);
