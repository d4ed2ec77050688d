//! What the service hears from esp-rfid controllers between visits: which controller
//! a message comes from, when it was last heard, and a boot that calls for a check.

use chrono::{DateTime, Utc};

use super::sync::ControllerTarget;
use super::Tx;
use crate::error::Result;

/// A controller as the engine sees it, with the host name it last gave.
const TARGET_NAMED: &str =
    "SELECT c.id, c.residence_id, c.name, c.profile_id, c.transport, c.address, c.modbus_unit, c.policy, s.device_name
     FROM controllers c LEFT JOIN controller_status s ON s.controller_id = c.id";

impl Tx {
    /// The topics (`TOPIC/send`) on which MQTT controllers speak.
    pub async fn esp_rfid_send_topics(&mut self) -> Result<Vec<String>> {
        let addresses: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT address FROM controllers WHERE transport = 'mqtt'")
                .fetch_all(self.conn())
                .await?;
        let mut topics: Vec<String> = addresses
            .iter()
            .filter_map(|address| gardien_drivers::esprfid::EspRfidAddress::parse(address).ok())
            .map(|address| address.send_topic())
            .collect();
        topics.sort();
        topics.dedup();
        Ok(topics)
    }

    /// The controller at `TOPIC@IP`.
    pub async fn esp_rfid_by_address(&mut self, address: &str) -> Result<Option<ControllerTarget>> {
        Ok(sqlx::query_as(&format!(
            "{TARGET_NAMED} WHERE c.transport = 'mqtt' AND c.address = $1"
        ))
        .bind(address)
        .fetch_optional(self.conn())
        .await?)
    }

    /// The controllers listening on `topic`, with the host name each last gave.
    pub async fn esp_rfid_on_topic(
        &mut self,
        topic: &str,
    ) -> Result<Vec<(ControllerTarget, Option<String>)>> {
        #[derive(sqlx::FromRow)]
        struct Named {
            #[sqlx(flatten)]
            target: ControllerTarget,
            device_name: Option<String>,
        }
        let prefix = format!("{topic}@");
        let rows: Vec<Named> = sqlx::query_as(&format!(
            "{TARGET_NAMED} WHERE c.transport = 'mqtt' AND substr(c.address, 1, length($1)) = $1 ORDER BY c.id"
        ))
        .bind(&prefix)
        .fetch_all(self.conn())
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.target, row.device_name))
            .collect())
    }

    /// The controller spoke (heartbeat, boot): last seen now, under this host name.
    pub async fn controller_heard(
        &mut self,
        controller_id: i64,
        at: DateTime<Utc>,
        device_name: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO controller_status (controller_id, last_seen_at, device_name) VALUES ($1, $2, $3)
             ON CONFLICT (controller_id) DO UPDATE SET last_seen_at = excluded.last_seen_at,
                 device_name = COALESCE(excluded.device_name, controller_status.device_name)",
        )
        .bind(controller_id)
        .bind(at)
        .bind(device_name)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// The controller restarted: visit it now and read its whole table (it may have
    /// lost or kept anything).
    pub async fn controller_booted(&mut self, controller_id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE controller_status SET audited_at = NULL, last_seen_at = NULL, verified_at = NULL, next_attempt_at = NULL
             WHERE controller_id = $1",
        )
        .bind(controller_id)
        .execute(self.conn())
        .await?;
        self.wrote_sync_work = true;
        Ok(())
    }
}
