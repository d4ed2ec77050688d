-- Foundation: residences and their structure, people, keys, locks, controllers,
-- access profiles, users and the append-only audit log.
--
-- Every row belongs to a residence. References between rows carry the residence id
-- too (composite foreign keys), so the database itself refuses to link a unit of one
-- residence to a key of another. Parents expose UNIQUE (residence_id, id) for that.
-- Timestamps are UTC, ISO-8601 text; dates are YYYY-MM-DD text.
-- `name_key` and `search_key` hold text folded by the service (lower case, accents
-- removed) for exact-name lookups and searches: SQL's LOWER only folds ASCII.

CREATE TABLE residences (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    address     TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);

CREATE TABLE buildings (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    name          TEXT NOT NULL,
    search_key    TEXT NOT NULL DEFAULT '',
    UNIQUE (residence_id, name),
    UNIQUE (residence_id, id)
);

CREATE TABLE units (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    building_id   INTEGER,
    lot_number    TEXT NOT NULL,
    search_key    TEXT NOT NULL DEFAULT '',
    kind          TEXT NOT NULL CHECK (kind IN ('flat', 'parking', 'cellar', 'shop')),
    floor         INTEGER,
    area_m2       REAL,
    UNIQUE (residence_id, lot_number),
    UNIQUE (residence_id, id),
    FOREIGN KEY (residence_id, building_id) REFERENCES buildings (residence_id, id)
);

CREATE TABLE people (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    full_name     TEXT NOT NULL,
    name_key      TEXT NOT NULL DEFAULT '',
    search_key    TEXT NOT NULL DEFAULT '',
    email         TEXT,
    phone         TEXT,
    is_caretaker  BOOLEAN NOT NULL DEFAULT FALSE,
    notes         TEXT NOT NULL DEFAULT '',
    UNIQUE (residence_id, id)
);
CREATE INDEX people_by_name ON people (residence_id, name_key);

CREATE TABLE providers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL DEFAULT '',
    search_key    TEXT NOT NULL DEFAULT '',
    trade         TEXT NOT NULL DEFAULT '',
    email         TEXT,
    phone         TEXT,
    notes         TEXT NOT NULL DEFAULT '',
    UNIQUE (residence_id, name),
    UNIQUE (residence_id, id)
);
CREATE INDEX providers_by_name ON providers (residence_id, name_key);

CREATE TABLE occupancies (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    unit_id       INTEGER NOT NULL,
    person_id     INTEGER NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'landlord', 'tenant', 'occupant')),
    start_date    TEXT,
    end_date      TEXT,
    FOREIGN KEY (residence_id, unit_id) REFERENCES units (residence_id, id),
    FOREIGN KEY (residence_id, person_id) REFERENCES people (residence_id, id)
);
CREATE INDEX occupancies_by_person ON occupancies (person_id);
CREATE INDEX occupancies_by_unit ON occupancies (unit_id);

CREATE TABLE controllers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    name          TEXT NOT NULL,
    search_key    TEXT NOT NULL DEFAULT '',
    model         TEXT NOT NULL,
    transport     TEXT NOT NULL CHECK (transport IN ('modbus_tcp', 'modbus_rtu', 'mqtt')),
    address       TEXT NOT NULL,
    modbus_unit   INTEGER,
    notes         TEXT NOT NULL DEFAULT '',
    UNIQUE (residence_id, name),
    UNIQUE (residence_id, id)
);

CREATE TABLE locks (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id   INTEGER NOT NULL REFERENCES residences (id),
    name           TEXT NOT NULL,
    search_key     TEXT NOT NULL DEFAULT '',
    kind           TEXT NOT NULL CHECK (kind IN ('door', 'gate')),
    building_id    INTEGER,
    controller_id  INTEGER,
    door_number    INTEGER CHECK (door_number BETWEEN 1 AND 16),
    UNIQUE (residence_id, name),
    UNIQUE (residence_id, id),
    UNIQUE (controller_id, door_number),
    CHECK ((controller_id IS NULL) = (door_number IS NULL)),
    FOREIGN KEY (residence_id, building_id) REFERENCES buildings (residence_id, id),
    FOREIGN KEY (residence_id, controller_id) REFERENCES controllers (residence_id, id)
);

CREATE TABLE access_profiles (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL DEFAULT '',
    search_key    TEXT NOT NULL DEFAULT '',
    description   TEXT NOT NULL DEFAULT '',
    UNIQUE (residence_id, name),
    UNIQUE (residence_id, id)
);

CREATE INDEX access_profiles_by_name ON access_profiles (residence_id, name_key);

CREATE TABLE profile_locks (
    residence_id  INTEGER NOT NULL,
    profile_id    INTEGER NOT NULL,
    lock_id       INTEGER NOT NULL,
    PRIMARY KEY (profile_id, lock_id),
    FOREIGN KEY (residence_id, profile_id) REFERENCES access_profiles (residence_id, id),
    FOREIGN KEY (residence_id, lock_id) REFERENCES locks (residence_id, id)
);
CREATE INDEX profile_locks_by_lock ON profile_locks (lock_id);

CREATE TABLE access_keys (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id        INTEGER NOT NULL REFERENCES residences (id),
    kind                TEXT NOT NULL CHECK (kind IN ('vigik_badge', 'remote', 'other')),
    identifier          TEXT NOT NULL,
    label               TEXT NOT NULL DEFAULT '',
    search_key          TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL CHECK (status IN ('active', 'lost', 'stolen', 'broken', 'returned', 'deactivated')),
    holder_person_id    INTEGER,
    holder_provider_id  INTEGER,
    unit_id             INTEGER,
    handed_out_on       TEXT,
    valid_from          TEXT,
    valid_until         TEXT,
    notes               TEXT NOT NULL DEFAULT '',
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (residence_id, kind, identifier),
    UNIQUE (residence_id, id),
    CHECK (holder_person_id IS NULL OR holder_provider_id IS NULL),
    FOREIGN KEY (residence_id, holder_person_id) REFERENCES people (residence_id, id),
    FOREIGN KEY (residence_id, holder_provider_id) REFERENCES providers (residence_id, id),
    FOREIGN KEY (residence_id, unit_id) REFERENCES units (residence_id, id)
);
CREATE INDEX access_keys_by_person ON access_keys (holder_person_id);
CREATE INDEX access_keys_by_provider ON access_keys (holder_provider_id);
CREATE INDEX access_keys_by_unit ON access_keys (unit_id);

CREATE TABLE key_profiles (
    residence_id  INTEGER NOT NULL,
    key_id        INTEGER NOT NULL,
    profile_id    INTEGER NOT NULL,
    PRIMARY KEY (key_id, profile_id),
    FOREIGN KEY (residence_id, key_id) REFERENCES access_keys (residence_id, id),
    FOREIGN KEY (residence_id, profile_id) REFERENCES access_profiles (residence_id, id)
);
CREATE INDEX key_profiles_by_profile ON key_profiles (profile_id);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    email          TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    is_admin       BOOLEAN NOT NULL DEFAULT FALSE,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     TEXT NOT NULL
);

CREATE TABLE memberships (
    user_id       INTEGER NOT NULL REFERENCES users (id),
    residence_id  INTEGER NOT NULL REFERENCES residences (id),
    role          TEXT NOT NULL CHECK (role IN ('council', 'syndic', 'resident', 'provider')),
    person_id     INTEGER,
    provider_id   INTEGER,
    PRIMARY KEY (user_id, residence_id),
    CHECK (role <> 'resident' OR person_id IS NOT NULL),
    CHECK (role <> 'provider' OR provider_id IS NOT NULL),
    FOREIGN KEY (residence_id, person_id) REFERENCES people (residence_id, id),
    FOREIGN KEY (residence_id, provider_id) REFERENCES providers (residence_id, id)
);

-- Login sessions and API tokens. Only a SHA-256 of the secret is stored.
CREATE TABLE auth_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    kind          TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    name          TEXT NOT NULL DEFAULT '',
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT
);
CREATE INDEX auth_tokens_by_user ON auth_tokens (user_id);

-- Who did what, when and why. Append-only: the triggers refuse edits and deletions.
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    residence_id   INTEGER REFERENCES residences (id),
    at             TEXT NOT NULL,
    actor_user_id  INTEGER REFERENCES users (id),
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    entity         TEXT NOT NULL,
    entity_id      INTEGER NOT NULL,
    reason         TEXT NOT NULL DEFAULT '',
    changes        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_by_entity ON audit_log (entity, entity_id);
CREATE INDEX audit_log_by_residence ON audit_log (residence_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
