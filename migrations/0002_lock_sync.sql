-- Lock programming: what each controller must hold, what it was last seen holding,
-- and what happened at its doors.

-- The device profile (firmware-config/) the controller's model resolved to, and what
-- to do with entries the database does not know: report them (audit) or remove them
-- (enforce).
ALTER TABLE controllers ADD COLUMN profile_id TEXT NOT NULL DEFAULT '';
ALTER TABLE controllers ADD COLUMN policy TEXT NOT NULL DEFAULT 'audit' CHECK (policy IN ('audit', 'enforce'));

-- The outbox: per controller and key, the door mask the controller must hold (0: the
-- key must not be there) and where that stands. Written in the same transaction as the
-- change that causes it; a new target replaces the old one, so pending work merges.
CREATE TABLE key_sync (
    controller_id  INTEGER NOT NULL REFERENCES controllers (id),
    key_id         INTEGER NOT NULL REFERENCES access_keys (id),
    residence_id   INTEGER NOT NULL REFERENCES residences (id),
    credential     TEXT NOT NULL,
    doors          INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'failed')),
    changed_at     TEXT NOT NULL,
    confirmed_at   TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    PRIMARY KEY (controller_id, key_id)
);
CREATE INDEX key_sync_by_state ON key_sync (state, controller_id);
CREATE INDEX key_sync_by_key ON key_sync (key_id);

-- The device side, as last seen.
CREATE TABLE controller_status (
    controller_id         INTEGER PRIMARY KEY REFERENCES controllers (id),
    last_seen_at          TEXT,
    last_error            TEXT,
    last_error_at         TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at       TEXT,
    firmware              TEXT,
    capacity              INTEGER,
    used                  INTEGER,
    fingerprint           TEXT,
    verified_at           TEXT,
    audited_at            TEXT,
    event_cursor          INTEGER,
    lease_owner           TEXT,
    lease_until           TEXT
);

-- The table the controller holds, as last read or changed by the service; `slot` where
-- the client places records (KL-8), so that the next visit writes without reading.
CREATE TABLE controller_entries (
    controller_id  INTEGER NOT NULL REFERENCES controllers (id),
    credential     TEXT NOT NULL,
    doors          INTEGER NOT NULL,
    slot           INTEGER,
    PRIMARY KEY (controller_id, credential)
);

-- Differences found by audits between a controller and the database.
CREATE TABLE drift (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id    INTEGER NOT NULL REFERENCES residences (id),
    controller_id   INTEGER NOT NULL REFERENCES controllers (id),
    credential      TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('ghost', 'missing', 'wrong_doors', 'duplicate')),
    expected_doors  INTEGER,
    actual_doors    INTEGER,
    found_at        TEXT NOT NULL,
    resolved_at     TEXT,
    resolution      TEXT
);
CREATE INDEX drift_open ON drift (controller_id, resolved_at);

-- Access events polled from controllers' logs.
CREATE TABLE access_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id   INTEGER NOT NULL REFERENCES residences (id),
    controller_id  INTEGER NOT NULL REFERENCES controllers (id),
    at             TEXT NOT NULL,
    door           INTEGER NOT NULL,
    lock_id        INTEGER REFERENCES locks (id),
    credential     TEXT NOT NULL,
    key_id         INTEGER REFERENCES access_keys (id),
    result         TEXT NOT NULL CHECK (result IN ('granted', 'denied_unknown', 'denied_door', 'gap')),
    lost_events    INTEGER NOT NULL DEFAULT 0,
    recorded_at    TEXT NOT NULL
);
CREATE INDEX access_events_by_residence ON access_events (residence_id, id);
CREATE INDEX access_events_by_key ON access_events (key_id);

-- Things the council must see: a lost key presented at a door, a controller that
-- lost its memory.
CREATE TABLE alerts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id     INTEGER NOT NULL REFERENCES residences (id),
    kind             TEXT NOT NULL,
    controller_id    INTEGER REFERENCES controllers (id),
    key_id           INTEGER REFERENCES access_keys (id),
    access_event_id  INTEGER REFERENCES access_events (id),
    message          TEXT NOT NULL,
    raised_at        TEXT NOT NULL,
    acknowledged_at  TEXT,
    acknowledged_by  TEXT
);
CREATE INDEX alerts_open ON alerts (residence_id, acknowledged_at);
