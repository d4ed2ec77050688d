//! Keeping each gateway's meter list true: the meters the database assigns to it, in
//! place, each once, and nothing else.
//!
//! The stored copy of the list (`gateway_slots`) is trusted while the gateway's own
//! count of active slots agrees and the firmware line is the same; otherwise the list
//! is read. A slot freed by a leaving meter is reused by an arriving one, so a meter
//! replacement costs one write. After any write the list is read back before anything
//! counts as confirmed.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use gardien_drivers::{DriverError, Endpoint, MeterGateway, SlotMeter};

use crate::domain::meter::MbusId;
use crate::domain::{SyncState, Transport};
use crate::error::Error;
use crate::storage::gateways::Gateway;
use crate::storage::meter_sync::{GatewaySlot, GatewayStatus, MeterSync};
use crate::storage::Store;
use crate::sync::visit::VisitError;

/// What a programming visit did, for logs and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct ProgramReport {
    pub transactions: u64,
    pub slots_written: usize,
    pub list_read: bool,
}

/// Connects to `gateway`; the driver picks the profile from the firmware line.
pub async fn connect(
    store: &Store,
    gateway: &Gateway,
) -> Result<(MeterGateway, gardien_drivers::GatewayStatus), VisitError> {
    let registry = store.profiles();
    let serial_defaults = registry
        .for_model(
            gardien_drivers::DeviceRole::MeterGateway,
            &gateway.model,
            None,
        )
        .and_then(|profile| profile.modbus.as_ref().map(|modbus| modbus.serial))
        .ok_or_else(|| {
            Error::Internal(format!(
                "gateway {}: no profile for model {:?}",
                gateway.id, gateway.model
            ))
        })?;
    let endpoint = match gateway.transport {
        Transport::ModbusTcp => Endpoint::Tcp(gateway.address.clone()),
        Transport::ModbusRtu => Endpoint::rtu(&gateway.address, serial_defaults)?,
        Transport::Mqtt => {
            return Err(DriverError::Unsupported(
                "MQTT gateways publish their readings; they are not read over Modbus".into(),
            )
            .into())
        }
    };
    let unit = gateway.modbus_unit.and_then(|unit| u8::try_from(unit).ok());
    Ok(MeterGateway::connect(registry, &gateway.model, &endpoint, unit).await?)
}

/// A programming visit by the engine: connect, then make the list true.
pub async fn program(store: &Store, gateway_id: i64) -> Result<ProgramReport, VisitError> {
    let gateway = store.read().await?.gateway_by_id(gateway_id).await?;
    let (mut device, status) = connect(store, &gateway).await?;
    ensure_list(store, &gateway, &mut device, &status).await
}

/// Makes the gateway's list what the database says, and records it.
pub async fn ensure_list(
    store: &Store,
    gateway: &Gateway,
    device: &mut MeterGateway,
    device_status: &gardien_drivers::GatewayStatus,
) -> Result<ProgramReport, VisitError> {
    let (rows, known, stored) = {
        let mut tx = store.read().await?;
        (
            tx.meter_sync_of_gateway(gateway.id).await?,
            tx.gateway_slots(gateway.id).await?,
            tx.gateway_status(gateway.id).await?,
        )
    };
    let mut report = ProgramReport::default();
    let trusted = stored.verified_at.is_some()
        && stored.profile_id.as_deref() == Some(device_status.profile_id.as_str())
        && usize::from(device_status.configured) == known.len();
    let mut slots: BTreeMap<u16, SlotMeter> = if trusted {
        known.iter().filter_map(slot_meter_of).collect()
    } else {
        report.list_read = true;
        device
            .read_slots(device_status.capacity)
            .await?
            .into_iter()
            .collect()
    };

    let wanted: Vec<(&MeterSync, SlotMeter)> = rows
        .iter()
        .filter(|row| row.active)
        .filter_map(|row| Some((row, wanted_meter(row)?)))
        .collect();
    let plan = plan_slots(&slots, &wanted, device_status.capacity);
    for (slot, meter) in &plan.writes {
        device.write_slot(*slot, meter.as_ref()).await?;
        report.slots_written += 1;
        match meter {
            Some(meter) => slots.insert(*slot, meter.clone()),
            None => slots.remove(slot),
        };
    }
    // Read back what was written: only then does it count as done.
    if report.slots_written > 0 {
        let status = device.status().await?;
        let read: BTreeMap<u16, SlotMeter> = device
            .read_slots(status.capacity)
            .await?
            .into_iter()
            .collect();
        if read != slots {
            return Err(DriverError::Protocol(format!(
                "the meter list read back differs from what was written ({} slots expected, {} found)",
                slots.len(),
                read.len()
            ))
            .into());
        }
    }
    report.transactions = device.transactions();

    let now = Utc::now();
    let mut tx = store.write().await?;
    if report.list_read || report.slots_written > 0 {
        let stored_slots: Vec<GatewaySlot> = slots
            .iter()
            .map(|(slot, meter)| gateway_slot(*slot, meter))
            .collect();
        tx.replace_gateway_slots(gateway.id, &stored_slots).await?;
    }
    let held: Vec<&SlotMeter> = slots.values().collect();
    for row in &rows {
        let in_list = wanted_meter(row).is_some_and(|meter| held.contains(&&meter));
        if plan.full.contains(&row.meter_id) {
            let reason = format!(
                "liste de la passerelle pleine ({} compteurs au plus)",
                device_status.capacity
            );
            tx.fail_meter_sync(row, &reason, true).await?;
        } else if row.active == in_list && row.state != SyncState::Confirmed {
            tx.confirm_meter_sync(row, now).await?;
        }
    }
    tx.save_gateway_status(&GatewayStatus {
        gateway_id: gateway.id,
        profile_id: Some(device_status.profile_id.clone()),
        firmware: Some(format!(
            "{}.{}",
            device_status.firmware.0, device_status.firmware.1
        )),
        capacity: Some(i64::from(device_status.capacity)),
        configured: Some(slots.len() as i64),
        last_seen_at: Some(now),
        verified_at: Some(now),
        consecutive_failures: 0,
        ..stored
    })
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// What to write: `(slot, Some(meter))` to program, `(slot, None)` to empty; and the
/// meters that did not fit.
#[derive(Debug, Default, PartialEq)]
pub struct SlotPlan {
    pub writes: Vec<(u16, Option<SlotMeter>)>,
    pub full: Vec<i64>,
}

/// The writes that turn `slots` into exactly `wanted`: meters already held stay where
/// they are (the first slot if held twice), slots of meters that must go are reused
/// for meters that must come, then the lowest free slots.
pub fn plan_slots(
    slots: &BTreeMap<u16, SlotMeter>,
    wanted: &[(&MeterSync, SlotMeter)],
    capacity: u16,
) -> SlotPlan {
    let mut plan = SlotPlan::default();
    let mut kept: Vec<&SlotMeter> = Vec::new();
    let mut freed: Vec<u16> = Vec::new();
    for (slot, meter) in slots {
        let is_wanted = wanted.iter().any(|(_, w)| w == meter);
        if is_wanted && !kept.contains(&meter) {
            kept.push(meter);
        } else {
            freed.push(*slot);
        }
    }
    let mut free = (0..capacity).filter(|slot| !slots.contains_key(slot));
    let mut freed = freed.into_iter();
    for (row, meter) in wanted {
        if kept.contains(&meter) {
            continue;
        }
        kept.push(meter);
        match freed.next().or_else(|| free.next()) {
            Some(slot) => plan.writes.push((slot, Some(meter.clone()))),
            None => plan.full.push(row.meter_id),
        }
    }
    plan.writes.extend(freed.map(|slot| (slot, None)));
    plan
}

fn wanted_meter(row: &MeterSync) -> Option<SlotMeter> {
    Some(SlotMeter {
        id: MbusId::parse("mbus_id", &row.mbus_id).ok()?.number(),
        manufacturer: row.manufacturer.clone(),
        version: u8::try_from(row.version).ok()?,
        medium: u8::try_from(row.medium).ok()?,
    })
}

fn slot_meter_of(slot: &GatewaySlot) -> Option<(u16, SlotMeter)> {
    Some((
        u16::try_from(slot.slot).ok()?,
        SlotMeter {
            id: MbusId::parse("mbus_id", &slot.mbus_id).ok()?.number(),
            manufacturer: slot.manufacturer.clone(),
            version: u8::try_from(slot.version).ok()?,
            medium: u8::try_from(slot.medium).ok()?,
        },
    ))
}

pub fn gateway_slot(slot: u16, meter: &SlotMeter) -> GatewaySlot {
    GatewaySlot {
        slot: i64::from(slot),
        mbus_id: MbusId::from_number(meter.id)
            .map(|id| id.to_string())
            .unwrap_or_default(),
        manufacturer: meter.manufacturer.clone(),
        version: i64::from(meter.version),
        medium: i64::from(meter.medium),
    }
}

/// Records a failed visit: pending rows keep their state with the error, the gateway
/// backs off.
pub async fn record_failure(store: &Store, gateway_id: i64, error: &str) -> Result<(), Error> {
    let mut tx = store.write().await?;
    let status = tx.gateway_status(gateway_id).await?;
    for row in tx.meter_sync_of_gateway(gateway_id).await? {
        if row.state == SyncState::Pending {
            tx.fail_meter_sync(&row, error, false).await?;
        }
    }
    let failures = status.consecutive_failures + 1;
    tx.save_gateway_status(&GatewayStatus {
        last_error: Some(error.to_owned()),
        last_error_at: Some(Utc::now()),
        consecutive_failures: failures,
        next_attempt_at: Some(Utc::now() + crate::sync::backoff(failures)),
        ..status
    })
    .await?;
    tx.commit().await
}

/// How long to wait for a gateway's read-out beyond its expected duration.
pub const READOUT_GRACE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(id: u32) -> SlotMeter {
        SlotMeter {
            id,
            manufacturer: "KAM".into(),
            version: 1,
            medium: 7,
        }
    }

    fn row(meter_id: i64) -> MeterSync {
        MeterSync {
            gateway_id: 1,
            meter_id,
            residence_id: 1,
            active: true,
            state: SyncState::Pending,
            changed_at: Utc::now(),
            confirmed_at: None,
            attempts: 0,
            error: None,
            mbus_id: String::new(),
            manufacturer: "KAM".into(),
            version: 1,
            medium: 7,
        }
    }

    #[test]
    fn a_replacement_reuses_the_freed_slot() {
        let slots = BTreeMap::from([(0, meter(1)), (1, meter(2)), (2, meter(3))]);
        let (r1, r3, r9) = (row(1), row(3), row(9));
        let wanted = [(&r1, meter(1)), (&r3, meter(3)), (&r9, meter(9))];
        let plan = plan_slots(&slots, &wanted, 250);
        assert_eq!(plan.writes, vec![(1, Some(meter(9)))]);
    }

    #[test]
    fn duplicates_and_strangers_are_emptied_and_full_lists_reported() {
        let slots = BTreeMap::from([(0, meter(1)), (1, meter(1)), (2, meter(7))]);
        let (r1, r2, r3) = (row(1), row(2), row(3));
        let wanted = [(&r1, meter(1)), (&r2, meter(2)), (&r3, meter(3))];
        let plan = plan_slots(&slots, &wanted, 3);
        assert_eq!(plan.writes, vec![(1, Some(meter(2))), (2, Some(meter(3)))]);
        let plan = plan_slots(&BTreeMap::new(), &wanted, 2);
        assert_eq!(plan.full, vec![3]);
        assert_eq!(plan.writes.len(), 2);
    }
}
