//! Access events, however they arrive (polled from a Modbus controller's log, pushed
//! by an esp-rfid over MQTT): stored in one history, and an alert when a key that is
//! not active (lost, stolen, returned…) is presented.

use chrono::{DateTime, Utc};
use gardien_drivers::{AccessResult, Credential};

use crate::domain::key_status::KeyStatus;
use crate::storage::sync::{ControllerTarget, NewAccessEvent};
use crate::storage::Tx;

/// A credential presented at a door.
#[derive(Debug, Clone)]
pub struct Presented<'a> {
    pub at: DateTime<Utc>,
    pub door: u8,
    pub credential: &'a Credential,
    pub result: AccessResult,
}

/// Stores the event; raises `inactive_key_presented` for a key that is not active.
pub async fn record(
    tx: &mut Tx,
    controller: &ControllerTarget,
    event: &Presented<'_>,
) -> crate::Result<()> {
    let result = match event.result {
        AccessResult::Granted => "granted",
        AccessResult::DeniedUnknown => "denied_unknown",
        AccessResult::DeniedDoor => "denied_door",
    };
    let row = tx
        .insert_access_event(&NewAccessEvent {
            residence_id: controller.residence_id,
            controller_id: controller.id,
            at: event.at,
            door: i64::from(event.door),
            credential: event.credential.to_string(),
            result,
            lost_events: 0,
        })
        .await?;
    let Some(key_id) = row.key_id else {
        return Ok(());
    };
    let key = tx
        .key(
            controller.residence_id,
            key_id,
            crate::domain::roles::Visibility::Everything,
        )
        .await?;
    if key.status == KeyStatus::Active {
        return Ok(());
    }
    let message = format!(
        "clé {} ({}) présentée à la porte {} de « {} » le {} : {}",
        key.identifier,
        key.status.french(),
        event.door,
        controller.name,
        event
            .at
            .with_timezone(&crate::domain::text::LOCAL_TIME_ZONE)
            .format("%d/%m/%Y à %H:%M:%S"),
        if result == "granted" {
            "accès accordé"
        } else {
            "accès refusé"
        }
    );
    tx.raise_alert(
        controller.residence_id,
        "inactive_key_presented",
        (Some(controller.id), Some(key_id), Some(row.id)),
        &message,
    )
    .await
}
