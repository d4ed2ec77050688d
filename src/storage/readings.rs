//! Meter readings, the conflicts between them, meter alarms and collection runs.
//!
//! A reading is stored once per meter and instant whatever brought it (a gateway, MQTT,
//! a provider's file). The same value again is a duplicate and stores nothing; another
//! value is a conflict: the stored one stays, the other is kept in `reading_conflicts`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::{Db, Page, PageRequest, Tx};
use crate::error::Result;

crate::domain::text_enum!(
    /// Where a reading came from.
    ReadingSource { Modbus => "modbus", Mqtt => "mqtt", File => "file", Manual => "manual" }
);

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Reading {
    pub meter_id: i64,
    pub read_at: DateTime<Utc>,
    /// Index in the meter's unit.
    pub value: f64,
    pub source: ReadingSource,
    /// Gateway and slot, or file and line.
    pub source_ref: String,
    pub received_at: DateTime<Utc>,
}

/// A reading about to be stored.
#[derive(Debug, Clone)]
pub struct NewReading<'a> {
    pub residence_id: i64,
    pub meter_id: i64,
    pub read_at: DateTime<Utc>,
    pub value: f64,
    pub source: ReadingSource,
    pub source_ref: &'a str,
}

/// What storing a reading did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stored {
    New,
    /// The same value was already there.
    Duplicate,
    /// Another value was there; it stays, this one went to the conflicts.
    Conflict {
        stored: f64,
    },
}

/// Two indexes are the same reading when they differ by less than a float32 can tell
/// (gateways of firmware 1.x send float32, files send decimals).
pub fn same_value(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-7 * a.abs().max(b.abs()).max(1.0)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReadingConflict {
    pub id: i64,
    pub meter_id: i64,
    pub read_at: DateTime<Utc>,
    pub stored_value: f64,
    pub offered_value: f64,
    pub source: String,
    pub source_ref: String,
    pub found_at: DateTime<Utc>,
}

crate::domain::text_enum!(
    /// Something wrong with a meter: said by its gateway (the first seven) or found by
    /// the service in what the gateway said (the last two).
    AlarmKind {
        NoAnswer => "no_answer",
        Leak => "leak",
        Burst => "burst",
        ReverseFlow => "reverse_flow",
        Tamper => "tamper",
        LowBattery => "low_battery",
        MeterError => "meter_error",
        StaleSlot => "stale_slot",
        BadValue => "bad_value",
    }
);

impl AlarmKind {
    pub const ALL: [AlarmKind; 9] = [
        AlarmKind::NoAnswer,
        AlarmKind::Leak,
        AlarmKind::Burst,
        AlarmKind::ReverseFlow,
        AlarmKind::Tamper,
        AlarmKind::LowBattery,
        AlarmKind::MeterError,
        AlarmKind::StaleSlot,
        AlarmKind::BadValue,
    ];
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MeterAlarm {
    pub id: i64,
    pub meter_id: i64,
    pub kind: AlarmKind,
    pub detail: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadingFilter {
    /// First day (local date), included.
    pub from: Option<NaiveDate>,
    /// Last day (local date), included.
    pub to: Option<NaiveDate>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// A whole collection, across gateways.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CollectionRun {
    pub id: i64,
    /// `schedule` (nightly) or `manual`.
    pub trigger: String,
    pub scheduled_for: Option<NaiveDate>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub gateways: i64,
    pub gateways_failed: i64,
    pub meters_expected: i64,
    pub meters_read: i64,
    pub meters_missing: i64,
    pub errors: i64,
}

/// One gateway's part of a collection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CollectionGateway {
    pub run_id: i64,
    pub gateway_id: i64,
    pub residence_id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub meters_expected: i64,
    pub meters_read: i64,
    pub meters_missing: i64,
    pub readings_new: i64,
    pub readings_duplicate: i64,
    pub conflicts: i64,
    pub rejected: i64,
    /// Modbus requests used.
    pub requests: i64,
    /// Why the gateway could not be read at all.
    pub error: Option<String>,
    /// What went wrong with single meters, as a JSON list of `{meter_id, mbus_id, problem}`.
    pub problems: String,
}

impl Tx {
    /// Stores a reading once; see [`Stored`].
    pub async fn store_reading(&mut self, reading: &NewReading<'_>) -> Result<Stored> {
        let now = Utc::now();
        let inserted = sqlx::query(
            "INSERT INTO meter_readings (meter_id, read_at, residence_id, value, source, source_ref, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (meter_id, read_at) DO NOTHING",
        )
        .bind(reading.meter_id)
        .bind(reading.read_at)
        .bind(reading.residence_id)
        .bind(reading.value)
        .bind(reading.source)
        .bind(reading.source_ref)
        .bind(now)
        .execute(self.conn())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Stored::New);
        }
        let stored: f64 = sqlx::query_scalar(
            "SELECT value FROM meter_readings WHERE meter_id = $1 AND read_at = $2",
        )
        .bind(reading.meter_id)
        .bind(reading.read_at)
        .fetch_one(self.conn())
        .await?;
        if same_value(stored, reading.value) {
            return Ok(Stored::Duplicate);
        }
        sqlx::query(
            "INSERT INTO reading_conflicts (residence_id, meter_id, read_at, stored_value, offered_value, source, source_ref, found_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (meter_id, read_at, offered_value) DO NOTHING",
        )
        .bind(reading.residence_id)
        .bind(reading.meter_id)
        .bind(reading.read_at)
        .bind(stored)
        .bind(reading.value)
        .bind(reading.source)
        .bind(reading.source_ref)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(Stored::Conflict { stored })
    }

    /// Readings of some meters between two instants, oldest first.
    pub async fn readings_between(
        &mut self,
        meter_ids: &[i64],
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<Reading>> {
        if meter_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = QueryBuilder::<Db>::new(
            "SELECT meter_id, read_at, value, source, source_ref, received_at FROM meter_readings WHERE meter_id IN (",
        );
        let mut ids = sql.separated(", ");
        for id in meter_ids {
            ids.push_bind(*id);
        }
        sql.push(")");
        if let Some(from) = from {
            sql.push(" AND read_at >= ").push_bind(from);
        }
        if let Some(to) = to {
            sql.push(" AND read_at < ").push_bind(to);
        }
        sql.push(" ORDER BY read_at, meter_id");
        Ok(sql.build_query_as().fetch_all(self.conn()).await?)
    }

    /// A page of a meter's readings, newest first.
    pub async fn readings_page(
        &mut self,
        meter_id: i64,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        page: PageRequest,
    ) -> Result<Page<Reading>> {
        self.fetch_page(
            "SELECT meter_id, read_at, value, source, source_ref, received_at",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM meter_readings WHERE meter_id = ")
                    .push_bind(meter_id);
                if let Some(from) = from {
                    sql.push(" AND read_at >= ").push_bind(from);
                }
                if let Some(to) = to {
                    sql.push(" AND read_at < ").push_bind(to);
                }
            },
            "read_at DESC",
            page,
        )
        .await
    }

    pub async fn reading_conflicts(
        &mut self,
        residence_id: i64,
        meter_id: Option<i64>,
    ) -> Result<Vec<ReadingConflict>> {
        let mut sql = QueryBuilder::<Db>::new(
            "SELECT id, meter_id, read_at, stored_value, offered_value, source, source_ref, found_at
             FROM reading_conflicts WHERE residence_id = ",
        );
        sql.push_bind(residence_id);
        if let Some(meter) = meter_id {
            sql.push(" AND meter_id = ").push_bind(meter);
        }
        sql.push(" ORDER BY id DESC LIMIT 1000");
        Ok(sql.build_query_as().fetch_all(self.conn()).await?)
    }

    /// Sets the open alarms of a meter to `present`: new kinds are raised, kinds still
    /// there are touched, kinds gone are cleared.
    pub async fn set_meter_alarms(
        &mut self,
        residence_id: i64,
        meter_id: i64,
        present: &[(AlarmKind, String)],
        at: DateTime<Utc>,
    ) -> Result<()> {
        let open: Vec<AlarmKind> = sqlx::query_scalar(
            "SELECT kind FROM meter_alarms WHERE meter_id = $1 AND cleared_at IS NULL",
        )
        .bind(meter_id)
        .fetch_all(self.conn())
        .await?;
        // Most meters have no alarm and get none: one statement, not one per kind.
        for kind in AlarmKind::ALL {
            let wanted = present.iter().any(|(k, _)| *k == kind);
            if !wanted && !open.contains(&kind) {
                continue;
            }
            match present.iter().find(|(k, _)| *k == kind) {
                Some((_, detail)) => {
                    let touched = sqlx::query(
                        "UPDATE meter_alarms SET last_seen_at = $1, detail = $2
                         WHERE meter_id = $3 AND kind = $4 AND cleared_at IS NULL",
                    )
                    .bind(at)
                    .bind(detail)
                    .bind(meter_id)
                    .bind(kind)
                    .execute(self.conn())
                    .await?;
                    if touched.rows_affected() == 0 {
                        sqlx::query(
                            "INSERT INTO meter_alarms (residence_id, meter_id, kind, detail, first_seen_at, last_seen_at)
                             VALUES ($1, $2, $3, $4, $5, $5)",
                        )
                        .bind(residence_id)
                        .bind(meter_id)
                        .bind(kind)
                        .bind(detail)
                        .bind(at)
                        .execute(self.conn())
                        .await?;
                    }
                }
                None => {
                    sqlx::query(
                        "UPDATE meter_alarms SET cleared_at = $1 WHERE meter_id = $2 AND kind = $3 AND cleared_at IS NULL",
                    )
                    .bind(at)
                    .bind(meter_id)
                    .bind(kind)
                    .execute(self.conn())
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Alarms of the residence (open ones only unless `all`), newest first.
    pub async fn meter_alarms(
        &mut self,
        residence_id: i64,
        meter_id: Option<i64>,
        all: bool,
    ) -> Result<Vec<MeterAlarm>> {
        let mut sql = QueryBuilder::<Db>::new(
            "SELECT id, meter_id, kind, detail, first_seen_at, last_seen_at, cleared_at FROM meter_alarms WHERE residence_id = ",
        );
        sql.push_bind(residence_id);
        if let Some(meter) = meter_id {
            sql.push(" AND meter_id = ").push_bind(meter);
        }
        if !all {
            sql.push(" AND cleared_at IS NULL");
        }
        sql.push(" ORDER BY id DESC LIMIT 1000");
        Ok(sql.build_query_as().fetch_all(self.conn()).await?)
    }

    /// Opens a collection run. A nightly one (`scheduled_for` set) is opened once per
    /// date, whichever instance gets there first: `None` if it already exists.
    pub async fn open_collection_run(
        &mut self,
        scheduled_for: Option<NaiveDate>,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let trigger = if scheduled_for.is_some() {
            "schedule"
        } else {
            "manual"
        };
        Ok(sqlx::query_scalar(
            "INSERT INTO collection_runs (trigger, scheduled_for, started_at) VALUES ($1, $2, $3)
             ON CONFLICT (scheduled_for) DO NOTHING RETURNING id",
        )
        .bind(trigger)
        .bind(scheduled_for)
        .bind(at)
        .fetch_optional(self.conn())
        .await?)
    }

    /// Records one gateway's part of a run.
    pub async fn record_collection_gateway(&mut self, part: &CollectionGateway) -> Result<()> {
        sqlx::query(
            "INSERT INTO collection_gateways (run_id, gateway_id, residence_id, started_at, finished_at, meters_expected,
                 meters_read, meters_missing, readings_new, readings_duplicate, conflicts, rejected, requests, error, problems)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (run_id, gateway_id) DO UPDATE SET finished_at = excluded.finished_at,
                 meters_expected = excluded.meters_expected, meters_read = excluded.meters_read,
                 meters_missing = excluded.meters_missing, readings_new = excluded.readings_new,
                 readings_duplicate = excluded.readings_duplicate, conflicts = excluded.conflicts,
                 rejected = excluded.rejected, requests = excluded.requests, error = excluded.error,
                 problems = excluded.problems",
        )
        .bind(part.run_id)
        .bind(part.gateway_id)
        .bind(part.residence_id)
        .bind(part.started_at)
        .bind(part.finished_at)
        .bind(part.meters_expected)
        .bind(part.meters_read)
        .bind(part.meters_missing)
        .bind(part.readings_new)
        .bind(part.readings_duplicate)
        .bind(part.conflicts)
        .bind(part.rejected)
        .bind(part.requests)
        .bind(&part.error)
        .bind(&part.problems)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Closes a run with the totals of its gateways.
    pub async fn close_collection_run(
        &mut self,
        run_id: i64,
        at: DateTime<Utc>,
    ) -> Result<CollectionRun> {
        sqlx::query(
            "UPDATE collection_runs SET finished_at = $1,
                 gateways = (SELECT COUNT(*) FROM collection_gateways WHERE run_id = $2),
                 gateways_failed = (SELECT COUNT(*) FROM collection_gateways WHERE run_id = $2 AND error IS NOT NULL),
                 meters_expected = (SELECT COALESCE(SUM(meters_expected), 0) FROM collection_gateways WHERE run_id = $2),
                 meters_read = (SELECT COALESCE(SUM(meters_read), 0) FROM collection_gateways WHERE run_id = $2),
                 meters_missing = (SELECT COALESCE(SUM(meters_missing), 0) FROM collection_gateways WHERE run_id = $2),
                 errors = (SELECT COALESCE(SUM(rejected + conflicts), 0) + COUNT(error) FROM collection_gateways WHERE run_id = $2)
             WHERE id = $2",
        )
        .bind(at)
        .bind(run_id)
        .execute(self.conn())
        .await?;
        self.collection_run(run_id).await
    }

    pub async fn collection_run(&mut self, run_id: i64) -> Result<CollectionRun> {
        sqlx::query_as("SELECT * FROM collection_runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(self.conn())
            .await?
            .ok_or(crate::error::Error::NotFound { what: "collecte" })
    }

    /// Runs that read gateways of the residence, newest first, with its gateways' parts.
    pub async fn collection_parts(
        &mut self,
        residence_id: i64,
        run_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<CollectionGateway>> {
        let mut sql =
            QueryBuilder::<Db>::new("SELECT * FROM collection_gateways WHERE residence_id = ");
        sql.push_bind(residence_id);
        if let Some(run) = run_id {
            sql.push(" AND run_id = ").push_bind(run);
        }
        sql.push(" ORDER BY run_id DESC, gateway_id LIMIT ")
            .push_bind(limit.clamp(1, 1000));
        Ok(sql.build_query_as().fetch_all(self.conn()).await?)
    }

    /// Runs that touched the residence, newest first.
    pub async fn collection_runs(
        &mut self,
        residence_id: i64,
        limit: i64,
    ) -> Result<Vec<CollectionRun>> {
        Ok(sqlx::query_as(
            "SELECT * FROM collection_runs WHERE id IN (SELECT run_id FROM collection_gateways WHERE residence_id = $1)
             ORDER BY id DESC LIMIT $2",
        )
        .bind(residence_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.conn())
        .await?)
    }
}
