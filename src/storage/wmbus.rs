//! What MQTT ingestion of wireless M-Bus telegrams keeps besides readings: the ids
//! heard that match no meter (`wmbus_unknown_meters`) and the messages refused
//! (`mqtt_rejections`, which other MQTT sources share through `source`), both bounded
//! whatever a publisher floods the broker with.
//! Also the look-up of the meters a batch of telegrams names, in one statement, since
//! it runs inside the batch's write transaction.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::{Db, Page, PageRequest, Tx};
use crate::domain::meter::{MeasureUnit, MeterKind};
use crate::error::Result;

/// Distinct unknown ids listed per residence; past this, telegrams of new ids are
/// counted as rejections instead (a radio hears the neighbours' meters too, but not
/// thousands).
pub const MAX_UNKNOWN_METERS: i64 = 5000;

/// Rejection rows per residence (topic × reason); past this, new topics are counted on
/// the topic [`OVERFLOW_TOPIC`].
pub const MAX_REJECTION_ROWS: i64 = 1000;

/// Where rejections of topics past [`MAX_REJECTION_ROWS`] are counted.
pub const OVERFLOW_TOPIC: &str = "*";

/// What the ingestion needs to know of a meter, with where its readings and alarms
/// stand.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MeterRef {
    pub id: i64,
    pub kind: MeterKind,
    pub mbus_id: String,
    pub measure_unit: MeasureUnit,
    pub digits: i64,
    pub installed_on: NaiveDate,
    pub removed_on: Option<NaiveDate>,
    /// Its newest reading, whatever the source.
    pub latest_read_at: Option<DateTime<Utc>>,
    /// Whether it has an open alarm.
    pub alarmed: bool,
}

/// Ids looked up per statement (SQLite bounds the number of parameters).
const IDS_PER_QUERY: usize = 500;

/// An M-Bus id heard on MQTT that is no meter of the residence.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UnknownMeter {
    /// 8 digits.
    pub mbus_id: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Telegrams received from it.
    pub telegrams: i64,
    /// The MQTT topic of the last one.
    pub last_topic: String,
    /// wmbusmeters driver (`iperl`, `kamheat`…), media and name, as last published.
    pub driver: String,
    pub media: String,
    pub name: String,
}

/// Messages refused on one topic for one reason.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MqttRejection {
    pub id: i64,
    /// What received it (`wmbus`, `esp-rfid`).
    pub source: String,
    /// `*` gathers the topics past the limit of rows per residence.
    pub topic: String,
    /// Reason code (`malformed_json`, `future_timestamp`…).
    pub reason: String,
    /// The last message's explanation, in English (for whoever sets up the publisher).
    pub detail: String,
    pub count: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// The start of the last refused payload.
    pub last_payload_excerpt: String,
}

/// A telegram from an id no meter has.
#[derive(Debug, Clone)]
pub struct UnknownSighting<'a> {
    pub residence_id: i64,
    pub mbus_id: &'a str,
    pub topic: &'a str,
    pub driver: &'a str,
    pub media: &'a str,
    pub name: &'a str,
    pub at: DateTime<Utc>,
}

/// A refused message, about to be counted.
#[derive(Debug, Clone)]
pub struct NewRejection<'a> {
    /// `None` for a topic that belongs to no residence.
    pub residence_id: Option<i64>,
    pub source: &'a str,
    pub topic: &'a str,
    pub reason: &'a str,
    pub detail: &'a str,
    pub payload_excerpt: &'a str,
    pub at: DateTime<Utc>,
}

impl Tx {
    /// The meters of the residence with these M-Bus ids, removed or not (ids are
    /// unique per residence); ids of no meter are left out. One statement per 500 ids:
    /// a batch of telegrams costs one look-up, not one per telegram.
    pub async fn meters_by_mbus_ids(
        &mut self,
        residence_id: i64,
        mbus_ids: &[&str],
    ) -> Result<Vec<MeterRef>> {
        let mut found = Vec::with_capacity(mbus_ids.len());
        for ids in mbus_ids.chunks(IDS_PER_QUERY) {
            let mut sql = QueryBuilder::<Db>::new(
                "SELECT m.id, m.kind, m.mbus_id, m.measure_unit, m.digits, m.installed_on, m.removed_on,
                     (SELECT r.read_at FROM meter_readings r WHERE r.meter_id = m.id ORDER BY r.read_at DESC LIMIT 1)
                         AS latest_read_at,
                     EXISTS (SELECT 1 FROM meter_alarms a WHERE a.meter_id = m.id AND a.cleared_at IS NULL) AS alarmed
                 FROM meters m WHERE m.residence_id = ",
            );
            sql.push_bind(residence_id).push(" AND m.mbus_id IN (");
            let mut list = sql.separated(", ");
            for id in ids {
                list.push_bind(id.to_string());
            }
            sql.push(")");
            found.extend(
                sql.build_query_as::<MeterRef>()
                    .fetch_all(self.conn())
                    .await?,
            );
        }
        Ok(found)
    }

    /// Counts a telegram of an unknown id: the number of telegrams heard from it, or
    /// `None` when the residence already lists [`MAX_UNKNOWN_METERS`] other ids.
    pub async fn record_unknown_meter(
        &mut self,
        sighting: &UnknownSighting<'_>,
    ) -> Result<Option<i64>> {
        let seen: Option<i64> = sqlx::query_scalar(
            "UPDATE wmbus_unknown_meters SET last_seen = $1, telegrams = telegrams + 1, last_topic = $2,
                 driver = $3, media = $4, name = $5
             WHERE residence_id = $6 AND mbus_id = $7 RETURNING telegrams",
        )
        .bind(sighting.at)
        .bind(sighting.topic)
        .bind(sighting.driver)
        .bind(sighting.media)
        .bind(sighting.name)
        .bind(sighting.residence_id)
        .bind(sighting.mbus_id)
        .fetch_optional(self.conn())
        .await?;
        if seen.is_some() {
            return Ok(seen);
        }
        let listed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM wmbus_unknown_meters WHERE residence_id = $1")
                .bind(sighting.residence_id)
                .fetch_one(self.conn())
                .await?;
        if listed >= MAX_UNKNOWN_METERS {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO wmbus_unknown_meters (residence_id, mbus_id, first_seen, last_seen, telegrams, last_topic, driver, media, name)
             VALUES ($1, $2, $3, $3, 1, $4, $5, $6, $7)",
        )
        .bind(sighting.residence_id)
        .bind(sighting.mbus_id)
        .bind(sighting.at)
        .bind(sighting.topic)
        .bind(sighting.driver)
        .bind(sighting.media)
        .bind(sighting.name)
        .execute(self.conn())
        .await?;
        Ok(Some(1))
    }

    /// Counts a refused message on its (residence, source, topic, reason) row and
    /// answers how many that row has counted.
    pub async fn record_mqtt_rejection(&mut self, rejection: &NewRejection<'_>) -> Result<i64> {
        // NULL residence ids group together, as 0 (no residence has id 0).
        let group = rejection.residence_id.unwrap_or(0);
        if let Some(count) = self
            .count_rejection(rejection, group, rejection.topic)
            .await?
        {
            return Ok(count);
        }
        let rows: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mqtt_rejections WHERE COALESCE(residence_id, 0) = $1",
        )
        .bind(group)
        .fetch_one(self.conn())
        .await?;
        let topic = if rows >= MAX_REJECTION_ROWS {
            if let Some(count) = self
                .count_rejection(rejection, group, OVERFLOW_TOPIC)
                .await?
            {
                return Ok(count);
            }
            OVERFLOW_TOPIC
        } else {
            rejection.topic
        };
        sqlx::query(
            "INSERT INTO mqtt_rejections (residence_id, source, topic, reason, detail, count, first_at, last_at, last_payload_excerpt)
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7)",
        )
        .bind(rejection.residence_id)
        .bind(rejection.source)
        .bind(topic)
        .bind(rejection.reason)
        .bind(rejection.detail)
        .bind(rejection.at)
        .bind(rejection.payload_excerpt)
        .execute(self.conn())
        .await?;
        Ok(1)
    }

    async fn count_rejection(
        &mut self,
        rejection: &NewRejection<'_>,
        group: i64,
        topic: &str,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "UPDATE mqtt_rejections SET count = count + 1, last_at = $1, detail = $2, last_payload_excerpt = $3
             WHERE COALESCE(residence_id, 0) = $4 AND source = $5 AND topic = $6 AND reason = $7
             RETURNING count",
        )
        .bind(rejection.at)
        .bind(rejection.detail)
        .bind(rejection.payload_excerpt)
        .bind(group)
        .bind(rejection.source)
        .bind(topic)
        .bind(rejection.reason)
        .fetch_optional(self.conn())
        .await?)
    }

    /// Unknown ids heard in the residence, most recently heard first. An id declared
    /// since as a meter is no longer listed.
    pub async fn wmbus_unknown_meters(
        &mut self,
        residence_id: i64,
        page: PageRequest,
    ) -> Result<Page<UnknownMeter>> {
        self.fetch_page(
            "SELECT u.mbus_id, u.first_seen, u.last_seen, u.telegrams, u.last_topic, u.driver, u.media, u.name",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM wmbus_unknown_meters u WHERE u.residence_id = ")
                    .push_bind(residence_id)
                    .push(" AND NOT EXISTS (SELECT 1 FROM meters m WHERE m.residence_id = ")
                    .push_bind(residence_id)
                    .push(" AND m.mbus_id = u.mbus_id)");
            },
            "u.last_seen DESC, u.mbus_id",
            page,
        )
        .await
    }

    /// MQTT messages refused in the residence (of one `source` if given: `wmbus`,
    /// `esp-rfid`…), most recent first.
    pub async fn mqtt_rejections(
        &mut self,
        residence_id: i64,
        source: Option<String>,
        page: PageRequest,
    ) -> Result<Page<MqttRejection>> {
        self.fetch_page(
            "SELECT id, source, topic, reason, detail, count, first_at, last_at, last_payload_excerpt",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM mqtt_rejections WHERE residence_id = ")
                    .push_bind(residence_id);
                if let Some(source) = &source {
                    sql.push(" AND source = ").push_bind(source.clone());
                }
            },
            "last_at DESC, id DESC",
            page,
        )
        .await
    }
}
