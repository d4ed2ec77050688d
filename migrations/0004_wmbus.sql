-- Wireless M-Bus meters heard through wmbusmeters over MQTT: the ids heard that match
-- no meter of the residence, and the messages refused. Readings themselves go to
-- meter_readings (source 'mqtt', source_ref 'wmbus:<topic>').
--
-- Both tables are bounded whatever is published: one row per residence and id heard
-- (the storage layer stops adding ids past a cap and counts the rest as rejections),
-- and one row per residence, source, topic and reason code (a fixed set; past a cap
-- of rows, new topics are counted on the topic '*').

CREATE TABLE wmbus_unknown_meters (
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    mbus_id       TEXT NOT NULL,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    telegrams     INTEGER NOT NULL DEFAULT 1,
    last_topic    TEXT NOT NULL,
    driver        TEXT NOT NULL DEFAULT '',
    media         TEXT NOT NULL DEFAULT '',
    name          TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (residence_id, mbus_id)
);

-- A message refused, grouped: `reason` is a code (malformed_json, future_timestamp…),
-- `detail` the last message's explanation, in English, for whoever sets up the
-- publisher. residence_id is NULL for a topic that belongs to no residence.
CREATE TABLE mqtt_rejections (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id          INTEGER REFERENCES residences (id),
    source                TEXT NOT NULL,
    topic                 TEXT NOT NULL,
    reason                TEXT NOT NULL,
    detail                TEXT NOT NULL DEFAULT '',
    count                 INTEGER NOT NULL DEFAULT 1,
    first_at              TEXT NOT NULL,
    last_at               TEXT NOT NULL,
    last_payload_excerpt  TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX mqtt_rejections_key ON mqtt_rejections (COALESCE(residence_id, 0), source, topic, reason);
