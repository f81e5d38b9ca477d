-- Schema version 4: outbox entries by the message they change.
--
-- A message carries the id of the outbox entry holding its latest local change (so the app can
-- retry or discard it), and a confirmation of a message keeps the local text while a later edit
-- of it is still queued. Both look up the edits and deletes of a message by `target`. Only those
-- entries set `target`, so a queued send never writes this index.
CREATE INDEX outbox_target ON outbox (target) WHERE target IS NOT NULL;
