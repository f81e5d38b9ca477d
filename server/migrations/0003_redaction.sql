-- Roam server schema, version 3: deleted means deleted.
--
-- Deleting a message blanks its text in every event that carried it and in the idempotency
-- results that echo it; document-history retention blanks the content of the events of the
-- versions it removes. These columns let the store find those rows without scanning.

-- The message an edit event belongs to (its creation is found by the message's seq).
ALTER TABLE events ADD COLUMN message TEXT;
UPDATE events SET message = json_extract(data, '$.id') WHERE kind = 'message_edited';
CREATE INDEX events_message ON events (message) WHERE message IS NOT NULL;

-- The message an idempotency result echoes.
ALTER TABLE idempotency ADD COLUMN message TEXT;
UPDATE idempotency SET message = json_extract(result, '$.id')
    WHERE op IN ('message.send', 'message.edit', 'message.delete');
CREATE INDEX idempotency_message ON idempotency (message) WHERE message IS NOT NULL;

-- The seq of the `document_updated` event of each kept version.
ALTER TABLE document_versions ADD COLUMN seq INTEGER;
UPDATE document_versions SET seq = e.seq
    FROM events e
    WHERE e.room = document_versions.room AND e.kind = 'document_updated'
      AND json_extract(e.data, '$.doc') = document_versions.doc
      AND json_extract(e.data, '$.version') = document_versions.version;

-- Messages deleted before this version: redact what was kept of them.
UPDATE events SET data = json_set(data, '$.body', '', '$.deleted', json('true'))
    WHERE kind IN ('message_created', 'message_edited')
      AND EXISTS (SELECT 1 FROM messages m
                  WHERE m.id = json_extract(events.data, '$.id') AND m.deleted = 1);
UPDATE idempotency SET result = json_set(result, '$.body', '', '$.deleted', json('true'))
    WHERE message IN (SELECT id FROM messages WHERE deleted = 1);
