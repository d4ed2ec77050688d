//! Gateway programming, as stored: the `meter_sync` outbox (which meters each gateway
//! must read, and where that stands), the meter list each gateway was last seen
//! holding (`gateway_slots`), and the gateway's status, backoff and lease.
//!
//! Every change that moves a meter on or off a gateway (a new meter, a replacement, a
//! meter moved to another gateway, a gateway moved to another address) calls
//! [`Tx::refresh_gateway_targets`] in the same transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Tx;
use crate::domain::SyncState;
use crate::error::Result;

/// A meter a gateway must read (or must no longer read), with where that stands.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MeterSync {
    pub gateway_id: i64,
    pub meter_id: i64,
    pub residence_id: i64,
    /// True: the meter must be in the gateway's list; false: it must leave it.
    pub active: bool,
    pub state: SyncState,
    pub changed_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub error: Option<String>,
    /// The meter's M-Bus identity, as the gateway must hold it.
    pub mbus_id: String,
    pub manufacturer: String,
    pub version: i64,
    pub medium: i64,
}

/// A slot of a gateway's meter list as last read or written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GatewaySlot {
    pub slot: i64,
    pub mbus_id: String,
    pub manufacturer: String,
    pub version: i64,
    pub medium: i64,
}

#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GatewayStatus {
    pub gateway_id: i64,
    /// The profile the firmware line resolved to (`mbg250-fw2`).
    pub profile_id: Option<String>,
    pub firmware: Option<String>,
    pub capacity: Option<i64>,
    /// Active slots, as the gateway last said.
    pub configured: Option<i64>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the meter list was last read and found as the database says.
    pub verified_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_until: Option<DateTime<Utc>>,
}

const SYNC_SELECT: &str =
    "SELECT s.gateway_id, s.meter_id, s.residence_id, s.active, s.state, s.changed_at,
        s.confirmed_at, s.attempts, s.error, m.mbus_id, m.manufacturer, m.version, m.medium
     FROM meter_sync s JOIN meters m ON m.id = s.meter_id";

impl Tx {
    /// Recomputes which meters gateway `gateway_id` must read: the meters in place
    /// assigned to it. A meter that must be added, or whose identity the gateway does
    /// not hold, goes pending; one that must leave goes pending inactive.
    pub async fn refresh_gateway_targets(
        &mut self,
        residence_id: i64,
        gateway_id: i64,
    ) -> Result<()> {
        let now = Utc::now();
        // Meters that must leave: no longer assigned here, or removed.
        let leaving = sqlx::query(
            "UPDATE meter_sync SET active = FALSE, state = 'pending', changed_at = $1, attempts = 0, error = NULL
             WHERE gateway_id = $2 AND active = TRUE AND meter_id NOT IN
                (SELECT id FROM meters WHERE gateway_id = $2 AND removed_on IS NULL)",
        )
        .bind(now)
        .bind(gateway_id)
        .execute(self.conn())
        .await?;
        // Meters that must be there and are not known to be.
        let arriving = sqlx::query(
            "INSERT INTO meter_sync (gateway_id, meter_id, residence_id, active, state, changed_at)
             SELECT $1, m.id, m.residence_id, TRUE, 'pending', $2 FROM meters m
             WHERE m.gateway_id = $1 AND m.residence_id = $3 AND m.removed_on IS NULL
               AND NOT EXISTS (SELECT 1 FROM gateway_slots g WHERE g.gateway_id = $1 AND g.mbus_id = m.mbus_id
                               AND g.manufacturer = m.manufacturer AND g.version = m.version AND g.medium = m.medium)
             ON CONFLICT (gateway_id, meter_id) DO UPDATE SET active = TRUE, state = 'pending',
                 changed_at = excluded.changed_at, attempts = 0, error = NULL
             WHERE meter_sync.state <> 'pending' OR meter_sync.active = FALSE",
        )
        .bind(gateway_id)
        .bind(now)
        .bind(residence_id)
        .execute(self.conn())
        .await?;
        // Meters the gateway already holds as they are: confirmed at once.
        sqlx::query(
            "INSERT INTO meter_sync (gateway_id, meter_id, residence_id, active, state, changed_at, confirmed_at)
             SELECT $1, m.id, m.residence_id, TRUE, 'confirmed', $2, $2 FROM meters m
             WHERE m.gateway_id = $1 AND m.residence_id = $3 AND m.removed_on IS NULL
             ON CONFLICT (gateway_id, meter_id) DO NOTHING",
        )
        .bind(gateway_id)
        .bind(now)
        .bind(residence_id)
        .execute(self.conn())
        .await?;
        if leaving.rows_affected() + arriving.rows_affected() > 0 {
            self.wrote_sync_work = true;
        }
        Ok(())
    }

    /// Forgets what was known of the device (another device may answer at a new
    /// address): its list is read again and every meter goes pending.
    pub(crate) async fn forget_gateway_device(&mut self, gateway_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM gateway_slots WHERE gateway_id = $1")
            .bind(gateway_id)
            .execute(self.conn())
            .await?;
        sqlx::query("UPDATE gateway_status SET verified_at = NULL, next_attempt_at = NULL, consecutive_failures = 0 WHERE gateway_id = $1")
            .bind(gateway_id)
            .execute(self.conn())
            .await?;
        sqlx::query("UPDATE meter_sync SET state = 'pending', attempts = 0, error = NULL WHERE gateway_id = $1")
            .bind(gateway_id)
            .execute(self.conn())
            .await?;
        self.wrote_sync_work = true;
        Ok(())
    }

    /// The outbox rows of a gateway, with the meters' identities.
    pub async fn meter_sync_of_gateway(&mut self, gateway_id: i64) -> Result<Vec<MeterSync>> {
        Ok(sqlx::query_as(&format!(
            "{SYNC_SELECT} WHERE s.gateway_id = $1 ORDER BY s.meter_id"
        ))
        .bind(gateway_id)
        .fetch_all(self.conn())
        .await?)
    }

    /// The outbox rows of a meter (one per gateway it was ever assigned to).
    pub async fn meter_sync_of_meter(
        &mut self,
        residence_id: i64,
        meter_id: i64,
    ) -> Result<Vec<MeterSync>> {
        Ok(sqlx::query_as(&format!(
            "{SYNC_SELECT} WHERE s.residence_id = $1 AND s.meter_id = $2 ORDER BY s.gateway_id"
        ))
        .bind(residence_id)
        .bind(meter_id)
        .fetch_all(self.conn())
        .await?)
    }

    /// Marks a row done, unless it changed since `seen` (then it stays pending).
    pub async fn confirm_meter_sync(&mut self, row: &MeterSync, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE meter_sync SET state = 'confirmed', confirmed_at = $1, error = NULL
             WHERE gateway_id = $2 AND meter_id = $3 AND active = $4 AND changed_at = $5",
        )
        .bind(at)
        .bind(row.gateway_id)
        .bind(row.meter_id)
        .bind(row.active)
        .bind(row.changed_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Records a failed attempt; `final_failure` when retrying cannot help (the
    /// gateway's list is full, the meter cannot be written).
    pub async fn fail_meter_sync(
        &mut self,
        row: &MeterSync,
        error: &str,
        final_failure: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE meter_sync SET attempts = attempts + 1, error = $1, state = $2
             WHERE gateway_id = $3 AND meter_id = $4 AND changed_at = $5",
        )
        .bind(error)
        .bind(if final_failure {
            SyncState::Failed
        } else {
            SyncState::Pending
        })
        .bind(row.gateway_id)
        .bind(row.meter_id)
        .bind(row.changed_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn gateway_slots(&mut self, gateway_id: i64) -> Result<Vec<GatewaySlot>> {
        Ok(sqlx::query_as(
            "SELECT slot, mbus_id, manufacturer, version, medium FROM gateway_slots WHERE gateway_id = $1 ORDER BY slot",
        )
        .bind(gateway_id)
        .fetch_all(self.conn())
        .await?)
    }

    /// Stores the list as read from the gateway.
    pub async fn replace_gateway_slots(
        &mut self,
        gateway_id: i64,
        slots: &[GatewaySlot],
    ) -> Result<()> {
        sqlx::query("DELETE FROM gateway_slots WHERE gateway_id = $1")
            .bind(gateway_id)
            .execute(self.conn())
            .await?;
        for slot in slots {
            self.set_gateway_slot(gateway_id, slot.slot, Some(slot))
                .await?;
        }
        Ok(())
    }

    /// Stores one slot after writing it: `None` for an emptied slot.
    pub async fn set_gateway_slot(
        &mut self,
        gateway_id: i64,
        slot: i64,
        meter: Option<&GatewaySlot>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM gateway_slots WHERE gateway_id = $1 AND slot = $2")
            .bind(gateway_id)
            .bind(slot)
            .execute(self.conn())
            .await?;
        if let Some(meter) = meter {
            sqlx::query(
                "INSERT INTO gateway_slots (gateway_id, slot, mbus_id, manufacturer, version, medium) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(gateway_id)
            .bind(slot)
            .bind(&meter.mbus_id)
            .bind(&meter.manufacturer)
            .bind(meter.version)
            .bind(meter.medium)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    pub async fn gateway_status(&mut self, gateway_id: i64) -> Result<GatewayStatus> {
        let status: Option<GatewayStatus> =
            sqlx::query_as("SELECT * FROM gateway_status WHERE gateway_id = $1")
                .bind(gateway_id)
                .fetch_optional(self.conn())
                .await?;
        Ok(status.unwrap_or(GatewayStatus {
            gateway_id,
            ..GatewayStatus::default()
        }))
    }

    pub async fn save_gateway_status(&mut self, status: &GatewayStatus) -> Result<()> {
        sqlx::query(
            "INSERT INTO gateway_status (gateway_id, profile_id, firmware, capacity, configured, last_seen_at, last_error,
                 last_error_at, consecutive_failures, next_attempt_at, verified_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (gateway_id) DO UPDATE SET profile_id = excluded.profile_id, firmware = excluded.firmware,
                 capacity = excluded.capacity, configured = excluded.configured, last_seen_at = excluded.last_seen_at,
                 last_error = excluded.last_error, last_error_at = excluded.last_error_at,
                 consecutive_failures = excluded.consecutive_failures, next_attempt_at = excluded.next_attempt_at,
                 verified_at = excluded.verified_at",
        )
        .bind(status.gateway_id)
        .bind(&status.profile_id)
        .bind(&status.firmware)
        .bind(status.capacity)
        .bind(status.configured)
        .bind(status.last_seen_at)
        .bind(&status.last_error)
        .bind(status.last_error_at)
        .bind(status.consecutive_failures)
        .bind(status.next_attempt_at)
        .bind(status.verified_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Gateways with programming to do whose backoff has passed and whose lease is
    /// free (or ours).
    pub async fn due_gateways(&mut self, now: DateTime<Utc>, owner: &str) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT g.id FROM meter_gateways g LEFT JOIN gateway_status s ON s.gateway_id = g.id
             WHERE g.transport <> 'mqtt'
               AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= $1)
               AND (s.lease_owner IS NULL OR s.lease_owner = $2 OR s.lease_until IS NULL OR s.lease_until < $1)
               AND EXISTS (SELECT 1 FROM meter_sync m WHERE m.gateway_id = g.id AND m.state = 'pending')
             ORDER BY g.id",
        )
        .bind(now)
        .bind(owner)
        .fetch_all(self.conn())
        .await?)
    }

    /// Every gateway read over Modbus, for a collection.
    pub async fn collectable_gateways(&mut self) -> Result<Vec<super::gateways::Gateway>> {
        Ok(sqlx::query_as(
            "SELECT * FROM meter_gateways WHERE transport <> 'mqtt' ORDER BY residence_id, id",
        )
        .fetch_all(self.conn())
        .await?)
    }

    /// A gateway by id alone, for the engine (which works across residences).
    pub async fn gateway_by_id(&mut self, gateway_id: i64) -> Result<super::gateways::Gateway> {
        sqlx::query_as("SELECT * FROM meter_gateways WHERE id = $1")
            .bind(gateway_id)
            .fetch_optional(self.conn())
            .await?
            .ok_or(crate::error::Error::NotFound {
                what: super::Table::Gateways.french(),
            })
    }
}
