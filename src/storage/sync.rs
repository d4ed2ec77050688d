//! The lock-programming outbox (`key_sync`) and what the service knows of each
//! controller: status, last known table, drift, access events, alerts.
//!
//! `refresh_access` is called by every write that can change what a lock accepts, in
//! the same transaction: it recomputes the door mask each controller must hold for the
//! keys concerned and marks the rows whose target changed as pending. Because a row
//! holds a target state, not an operation, "add then remove" leaves nothing to do.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use gardien_drivers::lock::KeyIdentity;
use serde::Serialize;
use sqlx::QueryBuilder;

use super::keys::push_key_in_force;
use super::{Db, Tx};
use crate::domain::key_id::KeyKind;
use crate::domain::{Policy, SyncState, Transport};
use crate::error::{Error, Result};

/// One row of the outbox.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct KeySync {
    pub controller_id: i64,
    pub key_id: i64,
    pub residence_id: i64,
    /// How the controller stores the key (`uid:04A22B91`, `card:2435555844`).
    pub credential: String,
    /// Door mask the controller must hold for the key; 0: the key must not be there.
    pub doors: i64,
    pub state: SyncState,
    /// When the target last changed.
    pub changed_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub error: Option<String>,
}

/// A controller with what the engine needs to talk to it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ControllerTarget {
    pub id: i64,
    pub residence_id: i64,
    pub name: String,
    pub profile_id: String,
    pub transport: Transport,
    pub address: String,
    pub modbus_unit: Option<i64>,
    pub policy: Policy,
}

/// What the service last saw of a controller.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ControllerStatus {
    pub controller_id: i64,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub firmware: Option<String>,
    pub capacity: Option<i64>,
    pub used: Option<i64>,
    pub fingerprint: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    pub audited_at: Option<DateTime<Utc>>,
    pub event_cursor: Option<i64>,
    #[serde(skip)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Drift {
    pub id: i64,
    pub residence_id: i64,
    pub controller_id: i64,
    pub credential: String,
    /// `ghost` (unknown to the database), `missing`, `wrong_doors`, `duplicate`.
    pub kind: String,
    pub expected_doors: Option<i64>,
    pub actual_doors: Option<i64>,
    pub found_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

/// A difference an audit found, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub credential: String,
    pub kind: &'static str,
    pub expected_doors: Option<i64>,
    pub actual_doors: Option<i64>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AccessEventRow {
    pub id: i64,
    pub residence_id: i64,
    pub controller_id: i64,
    /// By the controller's clock.
    pub at: DateTime<Utc>,
    pub door: i64,
    pub lock_id: Option<i64>,
    pub credential: String,
    pub key_id: Option<i64>,
    /// `granted`, `denied_unknown`, `denied_door`, or `gap` (events lost from the ring).
    pub result: String,
    pub lost_events: i64,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Alert {
    pub id: i64,
    pub residence_id: i64,
    pub kind: String,
    pub controller_id: Option<i64>,
    pub key_id: Option<i64>,
    pub access_event_id: Option<i64>,
    pub message: String,
    pub raised_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

/// Which access events to list, newest first.
#[derive(Debug, Clone)]
pub struct EventFilter {
    pub key_id: Option<i64>,
    pub lock_id: Option<i64>,
    /// `granted`, `denied_unknown`, `denied_door` or `gap`.
    pub result: Option<String>,
    /// Only events older than this one: the next page.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// A new access event, as the engine read it.
pub struct NewAccessEvent {
    pub residence_id: i64,
    pub controller_id: i64,
    pub at: DateTime<Utc>,
    pub door: i64,
    pub credential: String,
    pub result: &'static str,
    pub lost_events: i64,
}

/// How a device stores a key of this kind and identifier, if it can be programmed.
pub fn key_identity(kind: KeyKind, identifier: &str) -> Option<KeyIdentity> {
    match kind {
        KeyKind::VigikBadge => hex::decode(identifier).ok().map(KeyIdentity::Badge),
        KeyKind::Remote => identifier.parse().ok().map(KeyIdentity::Remote),
        KeyKind::Other => None,
    }
}

#[derive(sqlx::FromRow)]
struct Desired {
    key_id: i64,
    kind: KeyKind,
    identifier: String,
    controller_id: i64,
    doors: i64,
}

#[derive(sqlx::FromRow)]
struct ControllerCapacity {
    id: i64,
    name: String,
    profile_id: String,
    capacity: Option<i64>,
}

/// A device the engine visits under a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceRef {
    Controller(i64),
    Gateway(i64),
}

impl DeviceRef {
    /// The status table holding its lease, the key column, the id.
    fn status_row(self) -> (&'static str, &'static str, i64) {
        match self {
            DeviceRef::Controller(id) => ("controller_status", "controller_id", id),
            DeviceRef::Gateway(id) => ("gateway_status", "gateway_id", id),
        }
    }
}

impl Tx {
    /// Recomputes what each controller of the residence must hold for `keys` (all keys
    /// when `None`), refusing a key a controller cannot hold, and marks changed targets
    /// pending.
    pub(crate) async fn refresh_access(
        &mut self,
        residence_id: i64,
        keys: Option<&[i64]>,
    ) -> Result<()> {
        let now = Utc::now();
        let controllers: HashMap<i64, ControllerCapacity> = sqlx::query_as(
            "SELECT c.id, c.name, c.profile_id, s.capacity FROM controllers c
             LEFT JOIN controller_status s ON s.controller_id = c.id WHERE c.residence_id = $1",
        )
        .bind(residence_id)
        .fetch_all(self.conn())
        .await?
        .into_iter()
        .map(|c: ControllerCapacity| (c.id, c))
        .collect();

        let push_scope = |sql: &mut QueryBuilder<'static, Db>, column: &str| {
            if let Some(keys) = keys {
                sql.push(format!(" AND {column} IN ("));
                let mut list = sql.separated(", ");
                for key in keys {
                    list.push_bind(*key);
                }
                list.push_unseparated(")");
            }
        };
        // Each door is one bit; DISTINCT keeps a door reached by two profiles once.
        let mut sql = QueryBuilder::new(
            "SELECT k.id AS key_id, k.kind, k.identifier, l.controller_id, SUM(DISTINCT 1 << (l.door_number - 1)) AS doors
             FROM access_keys k
             JOIN key_profiles kp ON kp.key_id = k.id
             JOIN profile_locks pl ON pl.profile_id = kp.profile_id
             JOIN locks l ON l.id = pl.lock_id
             WHERE l.controller_id IS NOT NULL AND k.residence_id = ",
        );
        sql.push_bind(residence_id);
        push_scope(&mut sql, "k.id");
        push_key_in_force(&mut sql, now);
        sql.push(" GROUP BY k.id, k.kind, k.identifier, l.controller_id");
        let desired: Vec<Desired> = sql.build_query_as().fetch_all(self.conn()).await?;

        let mut sql = QueryBuilder::new(
            "SELECT controller_id, key_id, doors, credential FROM key_sync WHERE residence_id = ",
        );
        sql.push_bind(residence_id);
        push_scope(&mut sql, "key_id");
        let existing: HashMap<(i64, i64), (i64, String)> = sql
            .build_query_as::<(i64, i64, i64, String)>()
            .fetch_all(self.conn())
            .await?
            .into_iter()
            .map(|(controller, key, doors, credential)| ((controller, key), (doors, credential)))
            .collect();

        let mut targets: HashMap<(i64, i64), (i64, String)> = HashMap::new();
        for want in desired {
            let controller = controllers.get(&want.controller_id).ok_or_else(|| {
                Error::Internal(format!("lock on unknown controller {}", want.controller_id))
            })?;
            let credential = self.credential_for(controller, want.kind, &want.identifier)?;
            targets.insert((want.controller_id, want.key_id), (want.doors, credential));
        }
        for (place, (doors, credential)) in &existing {
            if *doors != 0 && !targets.contains_key(place) {
                targets.insert(*place, (0, credential.clone()));
            }
        }

        let mut touched = BTreeSet::new();
        for ((controller, key), (doors, credential)) in targets {
            if existing
                .get(&(controller, key))
                .is_some_and(|(old, old_credential)| *old == doors && *old_credential == credential)
            {
                continue;
            }
            sqlx::query(
                "INSERT INTO key_sync (controller_id, key_id, residence_id, credential, doors, state, changed_at, attempts)
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, 0)
                 ON CONFLICT (controller_id, key_id) DO UPDATE SET credential = $4, doors = $5, state = 'pending',
                     changed_at = $6, attempts = 0, error = NULL",
            )
            .bind(controller)
            .bind(key)
            .bind(residence_id)
            .bind(&credential)
            .bind(doors)
            .bind(now)
            .execute(self.conn())
            .await?;
            touched.insert(controller);
            self.wrote_sync_work = true;
        }
        for controller in touched {
            self.check_capacity(&controllers[&controller]).await?;
        }
        Ok(())
    }

    fn credential_for(
        &self,
        controller: &ControllerCapacity,
        kind: KeyKind,
        identifier: &str,
    ) -> Result<String> {
        let profile = self
            .device_profiles()
            .get(&controller.profile_id)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "controller {} has unknown profile {:?}",
                    controller.id, controller.profile_id
                ))
            })?;
        let identity = key_identity(kind, identifier).ok_or_else(|| {
            Error::invalid(
                "profile_ids",
                format!("la clé {identifier} (type « autre ») ne peut pas être programmée dans la centrale « {} »", controller.name),
            )
        })?;
        profile.credential_for(&identity).map(|c| c.to_string()).map_err(|_| {
            let why = match &identity {
                KeyIdentity::Badge(uid) => {
                    let lengths: Vec<String> = profile.key_support().badge_uid_lengths.iter().map(usize::to_string).collect();
                    format!("elle n'accepte que des badges à UID de {} octets, celui-ci en a {}", lengths.join(" ou "), uid.len())
                }
                KeyIdentity::Remote(_) => "elle n'accepte pas de télécommandes".to_owned(),
            };
            let message = format!("la clé {identifier} ne peut pas être programmée dans la centrale « {} » ({}) : {why}", controller.name, profile.model);
            Error::invalid("profile_ids", message)
        })
    }

    async fn check_capacity(&mut self, controller: &ControllerCapacity) -> Result<()> {
        let Some(capacity) = controller.capacity else {
            return Ok(());
        };
        let wanted: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM key_sync WHERE controller_id = $1 AND doors <> 0",
        )
        .bind(controller.id)
        .fetch_one(self.conn())
        .await?;
        if wanted > capacity {
            return Err(Error::invalid(
                "profile_ids",
                format!("la centrale « {} » est pleine : {wanted} clés demandées pour {capacity} places", controller.name),
            ));
        }
        Ok(())
    }

    /// The outbox rows of a controller.
    pub async fn key_sync_of_controller(&mut self, controller_id: i64) -> Result<Vec<KeySync>> {
        Ok(
            sqlx::query_as("SELECT * FROM key_sync WHERE controller_id = $1 ORDER BY key_id")
                .bind(controller_id)
                .fetch_all(self.conn())
                .await?,
        )
    }

    /// Marks a key's entries pending on controllers that keep validity dates (MQTT),
    /// after its dates changed: the visit writes them again with the new dates.
    pub async fn rewrite_dated_entries(&mut self, key_id: i64) -> Result<()> {
        let changed = sqlx::query(
            "UPDATE key_sync SET state = 'pending' WHERE key_id = $1 AND doors > 0
               AND controller_id IN (SELECT id FROM controllers WHERE transport = 'mqtt')",
        )
        .bind(key_id)
        .execute(self.conn())
        .await?;
        if changed.rows_affected() > 0 {
            self.wrote_sync_work = true;
        }
        Ok(())
    }

    /// Validity dates of the keys a controller must hold that have any, for devices
    /// that enforce dates themselves; a missing bound is open.
    pub async fn key_validities(
        &mut self,
        controller_id: i64,
    ) -> Result<HashMap<i64, gardien_drivers::Validity>> {
        type Dates = (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let rows: Vec<Dates> = sqlx::query_as(
            "SELECT k.id, k.valid_from, k.valid_until FROM key_sync s JOIN access_keys k ON k.id = s.key_id
             WHERE s.controller_id = $1 AND (k.valid_from IS NOT NULL OR k.valid_until IS NOT NULL)",
        )
        .bind(controller_id)
        .fetch_all(self.conn())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, from, until)| {
                let validity = gardien_drivers::Validity {
                    since: from.map_or(0, |at| at.timestamp()),
                    until: until.map_or(gardien_drivers::esprfid::NO_END, |at| at.timestamp()),
                };
                (key, validity)
            })
            .collect())
    }

    /// The outbox rows of a key, on every controller.
    pub async fn key_sync_of_key(
        &mut self,
        residence_id: i64,
        key_id: i64,
    ) -> Result<Vec<KeySync>> {
        Ok(sqlx::query_as(
            "SELECT * FROM key_sync WHERE residence_id = $1 AND key_id = $2 ORDER BY controller_id",
        )
        .bind(residence_id)
        .bind(key_id)
        .fetch_all(self.conn())
        .await?)
    }

    /// Marks a row confirmed, unless its target changed meanwhile.
    pub async fn confirm_key_sync(
        &mut self,
        controller_id: i64,
        key_id: i64,
        doors: i64,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE key_sync SET state = 'confirmed', confirmed_at = $1, attempts = 0, error = NULL
             WHERE controller_id = $2 AND key_id = $3 AND doors = $4",
        )
        .bind(at)
        .bind(controller_id)
        .bind(key_id)
        .bind(doors)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Records a failed attempt on a row; `permanent` when retrying cannot help
    /// (the device refused), so it shows as failed.
    pub async fn fail_key_sync(
        &mut self,
        controller_id: i64,
        key_id: i64,
        doors: i64,
        error: &str,
        permanent: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE key_sync SET attempts = attempts + 1, error = $1,
                 state = CASE WHEN $2 THEN 'failed' ELSE state END
             WHERE controller_id = $3 AND key_id = $4 AND doors = $5",
        )
        .bind(error)
        .bind(permanent)
        .bind(controller_id)
        .bind(key_id)
        .bind(doors)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn controller_target(&mut self, controller_id: i64) -> Result<ControllerTarget> {
        sqlx::query_as("SELECT id, residence_id, name, profile_id, transport, address, modbus_unit, policy FROM controllers WHERE id = $1")
            .bind(controller_id)
            .fetch_optional(self.conn())
            .await?
            .ok_or(Error::NotFound { what: "contrôleur" })
    }

    pub async fn controller_status(&mut self, controller_id: i64) -> Result<ControllerStatus> {
        let status: Option<ControllerStatus> =
            sqlx::query_as("SELECT * FROM controller_status WHERE controller_id = $1")
                .bind(controller_id)
                .fetch_optional(self.conn())
                .await?;
        Ok(status.unwrap_or(ControllerStatus {
            controller_id,
            ..ControllerStatus::default()
        }))
    }

    /// Writes back the whole status row.
    pub async fn save_controller_status(&mut self, status: &ControllerStatus) -> Result<()> {
        sqlx::query(
            "INSERT INTO controller_status (controller_id, last_seen_at, last_error, last_error_at, consecutive_failures,
                 next_attempt_at, firmware, capacity, used, fingerprint, verified_at, audited_at, event_cursor, lease_owner, lease_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (controller_id) DO UPDATE SET last_seen_at = $2, last_error = $3, last_error_at = $4,
                 consecutive_failures = $5, next_attempt_at = $6, firmware = $7, capacity = $8, used = $9,
                 fingerprint = $10, verified_at = $11, audited_at = $12, event_cursor = $13, lease_owner = $14, lease_until = $15",
        )
        .bind(status.controller_id)
        .bind(status.last_seen_at)
        .bind(&status.last_error)
        .bind(status.last_error_at)
        .bind(status.consecutive_failures)
        .bind(status.next_attempt_at)
        .bind(&status.firmware)
        .bind(status.capacity)
        .bind(status.used)
        .bind(&status.fingerprint)
        .bind(status.verified_at)
        .bind(status.audited_at)
        .bind(status.event_cursor)
        .bind(&status.lease_owner)
        .bind(status.lease_until)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Takes the device for `owner` until `until`, unless another instance holds it.
    pub async fn take_lease(
        &mut self,
        device: DeviceRef,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let (table, column, id) = device.status_row();
        sqlx::query(&format!(
            "INSERT INTO {table} ({column}) VALUES ($1) ON CONFLICT ({column}) DO NOTHING"
        ))
        .bind(id)
        .execute(self.conn())
        .await?;
        let taken = sqlx::query(&format!(
            "UPDATE {table} SET lease_owner = $1, lease_until = $2
             WHERE {column} = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until IS NULL OR lease_until < $4)"
        ))
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    pub async fn release_lease(&mut self, device: DeviceRef, owner: &str) -> Result<()> {
        let (table, column, id) = device.status_row();
        sqlx::query(&format!(
            "UPDATE {table} SET lease_owner = NULL, lease_until = NULL WHERE {column} = $1 AND lease_owner = $2"
        ))
        .bind(id)
        .bind(owner)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn due_controllers(
        &mut self,
        now: DateTime<Utc>,
        routine_before: DateTime<Utc>,
        owner: &str,
    ) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT c.id FROM controllers c LEFT JOIN controller_status s ON s.controller_id = c.id
             WHERE (s.next_attempt_at IS NULL OR s.next_attempt_at <= $1)
               AND (s.lease_owner IS NULL OR s.lease_owner = $3 OR s.lease_until IS NULL OR s.lease_until < $1)
               AND (EXISTS (SELECT 1 FROM key_sync k WHERE k.controller_id = c.id AND k.state = 'pending')
                    OR s.last_seen_at IS NULL OR s.last_seen_at < $2 OR s.audited_at IS NULL)
             ORDER BY c.id",
        )
        .bind(now)
        .bind(routine_before)
        .bind(owner)
        .fetch_all(self.conn())
        .await?)
    }

    /// The earliest instant after `now` when a key's validity starts or ends.
    pub async fn next_validity_boundary(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let from: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT MIN(valid_from) FROM access_keys WHERE valid_from > $1")
                .bind(now)
                .fetch_one(self.conn())
                .await?;
        let until: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT MIN(valid_until) FROM access_keys WHERE valid_until > $1")
                .bind(now)
                .fetch_one(self.conn())
                .await?;
        Ok([from, until].into_iter().flatten().min())
    }

    /// Residences with a key whose validity started or ended in `(after, upto]`.
    pub async fn residences_with_boundary(
        &mut self,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
    ) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT residence_id FROM access_keys
             WHERE (valid_from > $1 AND valid_from <= $2) OR (valid_until > $1 AND valid_until <= $2)",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(self.conn())
        .await?)
    }

    /// Recomputes every key of the residence (validity boundaries, clock-driven changes).
    pub async fn refresh_residence_access(&mut self, residence_id: i64) -> Result<()> {
        self.refresh_access(residence_id, None).await
    }

    /// The table the controller was last known to hold: credential → doors.
    pub async fn controller_entries(&mut self, controller_id: i64) -> Result<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT credential, doors FROM controller_entries WHERE controller_id = $1",
        )
        .bind(controller_id)
        .fetch_all(self.conn())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Record positions of the entries, where the client places them (KL-8).
    pub async fn controller_slots(&mut self, controller_id: i64) -> Result<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT credential, slot FROM controller_entries WHERE controller_id = $1 AND slot IS NOT NULL")
                .bind(controller_id)
                .fetch_all(self.conn())
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Replaces the known table of a controller: credential → doors, and the record
    /// positions when known.
    pub async fn replace_controller_entries(
        &mut self,
        controller_id: i64,
        entries: &HashMap<String, i64>,
        slots: &HashMap<String, i64>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM controller_entries WHERE controller_id = $1")
            .bind(controller_id)
            .execute(self.conn())
            .await?;
        for (credential, doors) in entries {
            sqlx::query("INSERT INTO controller_entries (controller_id, credential, doors, slot) VALUES ($1, $2, $3, $4)")
                .bind(controller_id)
                .bind(credential)
                .bind(doors)
                .bind(slots.get(credential))
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// Replaces the open drift of a controller with what the latest audit found.
    pub async fn record_drift(
        &mut self,
        residence_id: i64,
        controller_id: i64,
        findings: &[Finding],
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("UPDATE drift SET resolved_at = $1, resolution = 'no longer found' WHERE controller_id = $2 AND resolved_at IS NULL")
            .bind(now)
            .bind(controller_id)
            .execute(self.conn())
            .await?;
        for finding in findings {
            sqlx::query(
                "INSERT INTO drift (residence_id, controller_id, credential, kind, expected_doors, actual_doors, found_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(residence_id)
            .bind(controller_id)
            .bind(&finding.credential)
            .bind(finding.kind)
            .bind(finding.expected_doors)
            .bind(finding.actual_doors)
            .bind(now)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    pub async fn resolve_drift(
        &mut self,
        controller_id: i64,
        credential: &str,
        resolution: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE drift SET resolved_at = $1, resolution = $2 WHERE controller_id = $3 AND credential = $4 AND resolved_at IS NULL",
        )
        .bind(now)
        .bind(resolution)
        .bind(controller_id)
        .bind(credential)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn open_drift(
        &mut self,
        residence_id: i64,
        controller_id: i64,
    ) -> Result<Vec<Drift>> {
        Ok(sqlx::query_as(
            "SELECT * FROM drift WHERE residence_id = $1 AND controller_id = $2 AND resolved_at IS NULL ORDER BY id",
        )
        .bind(residence_id)
        .bind(controller_id)
        .fetch_all(self.conn())
        .await?)
    }

    pub async fn drift_item(&mut self, residence_id: i64, id: i64) -> Result<Drift> {
        sqlx::query_as("SELECT * FROM drift WHERE residence_id = $1 AND id = $2")
            .bind(residence_id)
            .bind(id)
            .fetch_optional(self.conn())
            .await?
            .ok_or(Error::NotFound { what: "écart" })
    }

    /// Stores an access event, linking the lock (controller and door) and the key
    /// (by its credential on that controller) when they are known.
    pub async fn insert_access_event(&mut self, event: &NewAccessEvent) -> Result<AccessEventRow> {
        Ok(sqlx::query_as(
            "INSERT INTO access_events (residence_id, controller_id, at, door, lock_id, credential, key_id, result, lost_events, recorded_at)
             VALUES ($1, $2, $3, $4,
                 (SELECT id FROM locks WHERE controller_id = $2 AND door_number = $4),
                 $5,
                 (SELECT key_id FROM key_sync WHERE controller_id = $2 AND credential = $5 ORDER BY changed_at DESC LIMIT 1),
                 $6, $7, $8)
             RETURNING *",
        )
        .bind(event.residence_id)
        .bind(event.controller_id)
        .bind(event.at)
        .bind(event.door)
        .bind(&event.credential)
        .bind(event.result)
        .bind(event.lost_events)
        .bind(Utc::now())
        .fetch_one(self.conn())
        .await?)
    }

    pub async fn raise_alert(
        &mut self,
        residence_id: i64,
        kind: &str,
        (controller_id, key_id, access_event_id): (Option<i64>, Option<i64>, Option<i64>),
        message: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO alerts (residence_id, kind, controller_id, key_id, access_event_id, message, raised_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(residence_id)
        .bind(kind)
        .bind(controller_id)
        .bind(key_id)
        .bind(access_event_id)
        .bind(message)
        .bind(Utc::now())
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn alerts(&mut self, residence_id: i64, open_only: bool) -> Result<Vec<Alert>> {
        let sql = if open_only {
            "SELECT * FROM alerts WHERE residence_id = $1 AND acknowledged_at IS NULL ORDER BY id DESC LIMIT 500"
        } else {
            "SELECT * FROM alerts WHERE residence_id = $1 ORDER BY id DESC LIMIT 500"
        };
        Ok(sqlx::query_as(sql)
            .bind(residence_id)
            .fetch_all(self.conn())
            .await?)
    }

    pub async fn acknowledge_alert(
        &mut self,
        residence_id: i64,
        id: i64,
        by: &str,
    ) -> Result<Alert> {
        sqlx::query_as(
            "UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, $1), acknowledged_by = COALESCE(acknowledged_by, $2)
             WHERE residence_id = $3 AND id = $4 RETURNING *",
        )
        .bind(Utc::now())
        .bind(by)
        .bind(residence_id)
        .bind(id)
        .fetch_optional(self.conn())
        .await?
        .ok_or(Error::NotFound { what: "alerte" })
    }

    pub async fn access_events(
        &mut self,
        residence_id: i64,
        filter: &EventFilter,
    ) -> Result<Vec<AccessEventRow>> {
        let mut sql = QueryBuilder::new("SELECT * FROM access_events WHERE residence_id = ");
        sql.push_bind(residence_id);
        if let Some(key) = filter.key_id {
            sql.push(" AND key_id = ").push_bind(key);
        }
        if let Some(lock) = filter.lock_id {
            sql.push(" AND lock_id = ").push_bind(lock);
        }
        if let Some(result) = &filter.result {
            sql.push(" AND result = ").push_bind(result.clone());
        }
        if let Some(before) = filter.before_id {
            sql.push(" AND id < ").push_bind(before);
        }
        let limit = filter.limit;
        sql.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        Ok(sql.build_query_as().fetch_all(self.conn()).await?)
    }
}

impl Tx {
    /// Asks for a full table read at the controller's next visit, and makes it due now.
    pub async fn request_audit(&mut self, residence_id: i64, controller_id: i64) -> Result<()> {
        self.controller(residence_id, controller_id).await?;
        sqlx::query("INSERT INTO controller_status (controller_id) VALUES ($1) ON CONFLICT (controller_id) DO NOTHING")
            .bind(controller_id)
            .execute(self.conn())
            .await?;
        sqlx::query("UPDATE controller_status SET audited_at = NULL, last_seen_at = NULL, next_attempt_at = NULL WHERE controller_id = $1")
            .bind(controller_id)
            .execute(self.conn())
            .await?;
        self.wrote_sync_work = true;
        Ok(())
    }

    /// Records an entry found on a controller (a "ghost") as a key with no holder,
    /// given a profile that opens the same doors so that nothing changes at the door.
    /// `kind` says what a KL-8 card number is (a badge or a remote); a UID is a badge.
    pub async fn import_ghost(
        &mut self,
        actor: &super::audit::Actor,
        residence_id: i64,
        drift_id: i64,
        kind: Option<KeyKind>,
    ) -> Result<super::keys::Key> {
        use gardien_drivers::Credential;
        let drift = self.drift_item(residence_id, drift_id).await?;
        if drift.kind != "ghost" || drift.resolved_at.is_some() {
            return Err(Error::conflict(
                None,
                "seules les clés inconnues encore présentes sur la centrale peuvent être importées",
            ));
        }
        let controller = self.controller(residence_id, drift.controller_id).await?;
        let (kind, identifier) = match (Credential::parse(&drift.credential), kind) {
            (Some(Credential::Uid(uid)), None | Some(KeyKind::VigikBadge)) => (KeyKind::VigikBadge, hex::encode_upper(uid)),
            (Some(Credential::Card(card)), Some(KeyKind::Remote)) => (KeyKind::Remote, card.to_string()),
            (Some(Credential::Card(card)), Some(KeyKind::VigikBadge)) => (KeyKind::VigikBadge, hex::encode_upper(card.to_le_bytes())),
            (Some(Credential::Card(_)), None) => {
                return Err(Error::invalid("kind", "un numéro de carte peut être un badge ou une télécommande : précisez kind (vigik_badge ou remote)"))
            }
            _ => return Err(Error::invalid("kind", "cette entrée ne peut être importée que comme badge (vigik_badge)")),
        };
        let doors = drift.actual_doors.unwrap_or_default();
        let lock_ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM locks WHERE controller_id = $1 AND door_number IS NOT NULL AND ((1 << (door_number - 1)) & $2) <> 0 ORDER BY door_number",
        )
        .bind(controller.id)
        .bind(doors)
        .fetch_all(self.conn())
        .await?;
        let door_list: Vec<String> = (0..16)
            .filter(|bit| doors & (1 << bit) != 0)
            .map(|bit| (bit + 1).to_string())
            .collect();
        let profile_name = format!(
            "Importé — {} portes {}",
            controller.name,
            door_list.join("+")
        );
        let profile = match self.profile_named(residence_id, &profile_name).await? {
            Some(profile) => profile,
            None => {
                let input = super::profiles::ProfileInput {
                    name: profile_name,
                    description: "créé par l'import des clés inconnues d'une centrale".into(),
                    lock_ids,
                }
                .validated()?;
                self.insert_profile(actor, residence_id, &input).await?
            }
        };
        let input = super::keys::KeyInput {
            kind,
            identifier,
            label: format!("Clé inconnue de « {} »", controller.name),
            status: None,
            holder_person_id: None,
            holder_provider_id: None,
            unit_id: None,
            handed_out_on: None,
            valid_from: None,
            valid_until: None,
            notes: format!(
                "trouvée sur la centrale « {} » (entrée {}), à attribuer",
                controller.name, drift.credential
            ),
            profile_ids: vec![profile.id],
        }
        .validated()?;
        let key = self.insert_key(actor, residence_id, &input).await?;
        self.resolve_drift(
            drift.controller_id,
            &drift.credential,
            &format!("imported as key {}", key.id),
            Utc::now(),
        )
        .await?;
        Ok(key)
    }
}
