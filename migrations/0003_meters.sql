-- Meters: the gateways that read them, the meters and their replacements, what each
-- gateway must be programmed with, readings, alarms and nightly collection runs.
--
-- Indexes are REAL in the meter's own unit (m3, kWh, MWh, HCA units). Reading times
-- are UTC instants to the second, ISO-8601 text like every other timestamp.

CREATE TABLE meter_gateways (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    name          TEXT NOT NULL,
    search_key    TEXT NOT NULL DEFAULT '',
    model         TEXT NOT NULL,
    transport     TEXT NOT NULL CHECK (transport IN ('modbus_tcp', 'modbus_rtu', 'mqtt')),
    address       TEXT NOT NULL,
    modbus_unit   INTEGER,
    building_id   INTEGER,
    notes         TEXT NOT NULL DEFAULT '',
    UNIQUE (residence_id, name),
    UNIQUE (residence_id, id),
    FOREIGN KEY (residence_id, building_id) REFERENCES buildings (residence_id, id)
);

-- A meter in place, or one that was (removed_on set). A unit's meter (cold water, hot
-- water, heating, heat cost allocator) has unit_id; a building's has building_id.
CREATE TABLE meters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id   INTEGER NOT NULL REFERENCES residences (id),
    kind           TEXT NOT NULL CHECK (kind IN ('cold_water', 'hot_water', 'heating', 'heat_cost_allocator',
                                                 'general_water', 'gas', 'electricity')),
    unit_id        INTEGER,
    building_id    INTEGER,
    mbus_id        TEXT NOT NULL,
    manufacturer   TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version BETWEEN 0 AND 255),
    medium         INTEGER NOT NULL CHECK (medium BETWEEN 0 AND 255),
    measure_unit   TEXT NOT NULL CHECK (measure_unit IN ('m3', 'kwh', 'mwh', 'hca')),
    digits         INTEGER NOT NULL CHECK (digits BETWEEN 1 AND 12),
    installed_on   TEXT NOT NULL,
    initial_index  REAL NOT NULL,
    removed_on     TEXT,
    final_index    REAL,
    gateway_id     INTEGER,
    label          TEXT NOT NULL DEFAULT '',
    search_key     TEXT NOT NULL DEFAULT '',
    UNIQUE (residence_id, mbus_id),
    UNIQUE (residence_id, id),
    CHECK ((removed_on IS NULL) = (final_index IS NULL)),
    FOREIGN KEY (residence_id, unit_id) REFERENCES units (residence_id, id),
    FOREIGN KEY (residence_id, building_id) REFERENCES buildings (residence_id, id),
    FOREIGN KEY (residence_id, gateway_id) REFERENCES meter_gateways (residence_id, id)
);
CREATE INDEX meters_by_unit ON meters (unit_id);
CREATE INDEX meters_by_gateway ON meters (gateway_id);

-- A meter replaced by another on a date: the old one's last index, the new one's first.
CREATE TABLE meter_replacements (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id   INTEGER NOT NULL REFERENCES residences (id),
    old_meter_id   INTEGER NOT NULL UNIQUE,
    new_meter_id   INTEGER NOT NULL UNIQUE,
    replaced_on    TEXT NOT NULL,
    final_index    REAL NOT NULL,
    initial_index  REAL NOT NULL,
    reason         TEXT NOT NULL DEFAULT '',
    FOREIGN KEY (residence_id, old_meter_id) REFERENCES meters (residence_id, id),
    FOREIGN KEY (residence_id, new_meter_id) REFERENCES meters (residence_id, id)
);

-- The outbox of gateway programming: per gateway and meter, whether the meter must be
-- in the gateway's list (active) and where that stands. Written with the change that
-- causes it, like key_sync.
CREATE TABLE meter_sync (
    gateway_id    INTEGER NOT NULL REFERENCES meter_gateways (id),
    meter_id      INTEGER NOT NULL REFERENCES meters (id),
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    active        BOOLEAN NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'failed')),
    changed_at    TEXT NOT NULL,
    confirmed_at  TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    PRIMARY KEY (gateway_id, meter_id)
);
CREATE INDEX meter_sync_by_state ON meter_sync (state, gateway_id);

-- The gateway side, as last seen.
CREATE TABLE gateway_status (
    gateway_id            INTEGER PRIMARY KEY REFERENCES meter_gateways (id),
    profile_id            TEXT,
    firmware              TEXT,
    capacity              INTEGER,
    configured            INTEGER,
    last_seen_at          TEXT,
    last_error            TEXT,
    last_error_at         TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at       TEXT,
    verified_at           TEXT,
    lease_owner           TEXT,
    lease_until           TEXT
);

-- The meter list a gateway holds, as last read or written: slot and M-Bus identity.
CREATE TABLE gateway_slots (
    gateway_id    INTEGER NOT NULL REFERENCES meter_gateways (id),
    slot          INTEGER NOT NULL,
    mbus_id       TEXT NOT NULL,
    manufacturer  TEXT NOT NULL,
    version       INTEGER NOT NULL,
    medium        INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, slot)
);

-- One index per meter and instant, whatever brought it (gateway, MQTT, file).
CREATE TABLE meter_readings (
    meter_id      INTEGER NOT NULL REFERENCES meters (id),
    read_at       TEXT NOT NULL,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    value         REAL NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('modbus', 'mqtt', 'file', 'manual')),
    source_ref    TEXT NOT NULL DEFAULT '',
    received_at   TEXT NOT NULL,
    PRIMARY KEY (meter_id, read_at)
);

-- A reading that disagreed with the one stored for the same meter and instant. The
-- stored value stays; the other is kept here for someone to look at.
CREATE TABLE reading_conflicts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id   INTEGER NOT NULL REFERENCES residences (id),
    meter_id       INTEGER NOT NULL REFERENCES meters (id),
    read_at        TEXT NOT NULL,
    stored_value   REAL NOT NULL,
    offered_value  REAL NOT NULL,
    source         TEXT NOT NULL,
    source_ref     TEXT NOT NULL DEFAULT '',
    found_at       TEXT NOT NULL,
    UNIQUE (meter_id, read_at, offered_value)
);

-- What a gateway said about a meter (status bits) or what the service found wrong with
-- what it said (stale slot, bad value). One open row per meter and kind; cleared when
-- the condition is gone.
CREATE TABLE meter_alarms (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id   INTEGER NOT NULL REFERENCES residences (id),
    meter_id       INTEGER NOT NULL REFERENCES meters (id),
    kind           TEXT NOT NULL CHECK (kind IN ('no_answer', 'leak', 'burst', 'reverse_flow', 'tamper',
                                                 'low_battery', 'meter_error', 'stale_slot', 'bad_value')),
    detail         TEXT NOT NULL DEFAULT '',
    first_seen_at  TEXT NOT NULL,
    last_seen_at   TEXT NOT NULL,
    cleared_at     TEXT
);
CREATE INDEX meter_alarms_open ON meter_alarms (meter_id, kind, cleared_at);
CREATE INDEX meter_alarms_by_residence ON meter_alarms (residence_id, cleared_at);

-- A collection: every gateway asked for a read-out, then read. `scheduled_for` is the
-- local date of a nightly run (unique, so that one instance runs it), NULL by hand.
CREATE TABLE collection_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger         TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    scheduled_for   TEXT UNIQUE,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    gateways        INTEGER NOT NULL DEFAULT 0,
    gateways_failed INTEGER NOT NULL DEFAULT 0,
    meters_expected INTEGER NOT NULL DEFAULT 0,
    meters_read     INTEGER NOT NULL DEFAULT 0,
    meters_missing  INTEGER NOT NULL DEFAULT 0,
    errors          INTEGER NOT NULL DEFAULT 0
);

-- One gateway's part of a collection.
CREATE TABLE collection_gateways (
    run_id              INTEGER NOT NULL REFERENCES collection_runs (id),
    gateway_id          INTEGER NOT NULL REFERENCES meter_gateways (id),
    residence_id        INTEGER NOT NULL REFERENCES residences (id),
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    meters_expected     INTEGER NOT NULL DEFAULT 0,
    meters_read         INTEGER NOT NULL DEFAULT 0,
    meters_missing      INTEGER NOT NULL DEFAULT 0,
    readings_new        INTEGER NOT NULL DEFAULT 0,
    readings_duplicate  INTEGER NOT NULL DEFAULT 0,
    conflicts           INTEGER NOT NULL DEFAULT 0,
    rejected            INTEGER NOT NULL DEFAULT 0,
    requests            INTEGER NOT NULL DEFAULT 0,
    error               TEXT,
    problems            TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (run_id, gateway_id)
);
CREATE INDEX collection_gateways_by_residence ON collection_gateways (residence_id, run_id);
