//! One visit to one controller: connect, identify, learn what it holds (trusting the
//! stored table only while the device's fingerprint says nothing changed), apply the
//! plan, verify, record. Also polls access events and sets the clock on routine visits.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gardien_drivers::digest::table_digest;
use gardien_drivers::esprfid::EspRfid;
use gardien_drivers::{
    connect_lock_controller, Applied, Credential, DriverError, Endpoint, Entry, Fingerprint,
    LockController, MqttChannel, Validity,
};

use super::plan::{plan, Change, Op};
use crate::domain::Transport;
use crate::error::Error;
use crate::storage::sync::{ControllerStatus, ControllerTarget, NewAccessEvent};
use crate::storage::Store;

/// What a visit did, for logs and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct VisitReport {
    pub transactions: u64,
    pub changes_applied: usize,
    pub table_read: bool,
    pub events: usize,
}

/// Why a visit stopped early.
#[derive(Debug, thiserror::Error)]
pub enum VisitError {
    #[error("{0}")]
    Device(#[from] DriverError),
    #[error("{0}")]
    Storage(#[from] Error),
}

/// What the visit is for, besides pending work.
#[derive(Debug, Clone, Copy)]
pub struct VisitKind {
    /// Read the whole table and report drift, whatever the fingerprint says.
    pub audit: bool,
    /// Poll events and check the clock.
    pub routine: bool,
}

/// Seconds of clock difference tolerated before the service sets the device clock.
const CLOCK_TOLERANCE_SECONDS: i64 = 2;

pub async fn visit(
    store: &Store,
    mqtt: Option<&MqttChannel>,
    controller_id: i64,
    kind: VisitKind,
) -> Result<VisitReport, VisitError> {
    let (target, status, rows, known, known_slots) = {
        let mut tx = store.read().await?;
        let target = tx.controller_target(controller_id).await?;
        let status = tx.controller_status(controller_id).await?;
        let rows = tx.key_sync_of_controller(controller_id).await?;
        let known = tx.controller_entries(controller_id).await?;
        let known_slots = tx.controller_slots(controller_id).await?;
        (target, status, rows, known, known_slots)
    };
    let profile = store
        .profiles()
        .get(&target.profile_id)
        .ok_or_else(|| {
            Error::Internal(format!(
                "controller {controller_id}: unknown profile {:?}",
                target.profile_id
            ))
        })?
        .clone();
    let mut driver = connect(&profile, &target, mqtt).await?;
    let validities = if profile.is_mqtt() {
        store.read().await?.key_validities(controller_id).await?
    } else {
        HashMap::new()
    };
    let identity = driver.identify().await?;
    let now = Utc::now();
    let mut report = VisitReport::default();
    let fingerprint = fingerprint_text(identity.fingerprint);

    // What the controller holds: the stored table while the fingerprint is the one we
    // left, or (PX-2) the digest says it is the same table; otherwise read it.
    let unchanged = status.fingerprint.as_deref() == Some(fingerprint.as_str())
        || matches!(identity.fingerprint, Fingerprint::Digest { digest, .. } if status.verified_at.is_some() && digest == digest_of(&known));
    let memory_lost = lost_memory(&status, identity.fingerprint);
    let (mut observed, mut duplicates) = (known.clone(), Vec::new());
    // A user list read back (esp-rfid) is a full read already: use it.
    let full_read = kind.audit
        || !unchanged
        || status.verified_at.is_none()
        || matches!(identity.fingerprint, Fingerprint::ListDigest(_));
    if !full_read && !known_slots.is_empty() {
        // Client-placed records (KL-8): hand the driver where they are, so that its
        // writes need no table read while the fingerprint says nothing moved.
        driver.trust_placed_table(
            placed(&known, &known_slots),
            identity.fingerprint,
            identity.capacity,
        );
    }
    if full_read {
        (observed, duplicates) = read_table(driver.as_mut()).await?;
        report.table_read = true;
    }

    let stores_dates = profile.is_mqtt();
    let mut plan = plan(&rows, &observed, &duplicates, target.policy);
    if stores_dates {
        rewrite_pending(&mut plan, &rows);
    }
    let mut outcomes: Vec<(Change, Result<(), String>)> = Vec::new();
    for attempt in 0..2 {
        for change in std::mem::take(&mut plan.changes) {
            let validity = change
                .key
                .and_then(|(key, _)| validities.get(&key).copied());
            match apply(
                driver.as_mut(),
                &profile_credential(&change)?,
                &change,
                validity,
            )
            .await
            {
                Ok(()) => {
                    if change.op == Op::Remove {
                        observed.remove(&change.credential);
                    } else {
                        observed.insert(change.credential.clone(), change.doors);
                    }
                    report.changes_applied += 1;
                    outcomes.push((change, Ok(())));
                }
                // The device said no to this change; the others may still go through.
                Err(err @ (DriverError::Refused(_) | DriverError::Unsupported(_))) => {
                    outcomes.push((change, Err(err.to_string())))
                }
                Err(err) => return Err(err.into()),
            }
        }
        // Save (KL-8) after our writes, and after any change we did not make: the
        // device may hold writes of an interrupted visit that were never saved.
        if report.changes_applied > 0 || full_read {
            driver.persist().await?;
        }
        // Verify with one read: the device's fingerprint against what we expect.
        let check = driver.identify().await?;
        let expected_ok = match (check.fingerprint, driver.expected_fingerprint()) {
            (Fingerprint::Digest { digest, .. } | Fingerprint::ListDigest(digest), _) => {
                digest == digest_of(&observed)
            }
            (actual, Some(expected)) => actual == expected,
            (_, None) => false,
        };
        if !expected_ok && attempt == 1 {
            // Nothing is confirmed that the device does not show: the rows stay
            // pending, the visit fails and backs off, the next one tries again.
            return Err(DriverError::Protocol(
                "the controller still does not hold what was written after a second attempt (commands lost or refused without a word)".into(),
            )
            .into());
        }
        if expected_ok {
            let final_fingerprint = fingerprint_text(check.fingerprint);
            let events = if kind.routine {
                poll_events(
                    store,
                    driver.as_mut(),
                    &target,
                    &status,
                    identity.fingerprint,
                )
                .await?
            } else {
                None
            };
            if kind.routine {
                keep_clock(driver.as_mut()).await;
            }
            report.transactions = driver.transactions();
            report.events = events.as_ref().map_or(0, |(count, _)| *count);
            let findings = if report.table_read {
                plan.findings.clone()
            } else {
                Vec::new()
            };
            let mut tx = store.write().await?;
            // Drift first, so that entries removed below (enforce) are resolved.
            if report.table_read {
                tx.record_drift(target.residence_id, controller_id, &findings, now)
                    .await?;
            }
            for (key_id, doors) in &plan.already_true {
                tx.confirm_key_sync(controller_id, *key_id, *doors, now)
                    .await?;
            }
            for (change, outcome) in &outcomes {
                match (change.key, outcome) {
                    (Some((key_id, doors)), Ok(())) => {
                        tx.confirm_key_sync(controller_id, key_id, doors, Utc::now())
                            .await?
                    }
                    (Some((key_id, doors)), Err(reason)) => {
                        tx.fail_key_sync(controller_id, key_id, doors, reason, true)
                            .await?
                    }
                    (None, Ok(())) => {
                        tx.resolve_drift(
                            controller_id,
                            &change.credential,
                            "removed (enforce)",
                            now,
                        )
                        .await?
                    }
                    (None, Err(_)) => {}
                }
            }
            let slots: HashMap<String, i64> = driver
                .placed_table()
                .unwrap_or_default()
                .into_iter()
                .map(|stored| (stored.entry.credential.to_string(), i64::from(stored.slot)))
                .collect();
            // Rewrite the known table only when it changed: it can hold thousands of rows.
            let slots_changed = driver.placed_table().is_some() && slots != known_slots;
            if observed != known || slots_changed {
                tx.replace_controller_entries(controller_id, &observed, &slots)
                    .await?;
            }
            // A restart alone is no news: only entries it lost are.
            if memory_lost && findings.iter().any(|finding| finding.kind == "missing") {
                let message = format!("la centrale « {} » a perdu sa mémoire (redémarrage ou remise à zéro) : table reprogrammée", target.name);
                tx.raise_alert(
                    target.residence_id,
                    "controller_memory_lost",
                    (Some(controller_id), None, None),
                    &message,
                )
                .await?;
            }
            let mut saved = ControllerStatus {
                last_seen_at: Some(now),
                last_error: None,
                last_error_at: status.last_error_at,
                consecutive_failures: 0,
                next_attempt_at: None,
                firmware: Some(format!("{}.{}", identity.firmware.0, identity.firmware.1)),
                capacity: Some(i64::from(identity.capacity)),
                used: Some(observed.len() as i64),
                fingerprint: Some(final_fingerprint),
                verified_at: if expected_ok { Some(Utc::now()) } else { None },
                audited_at: if report.table_read {
                    Some(now)
                } else {
                    status.audited_at
                },
                ..status.clone()
            };
            if let Some((_, cursor)) = events {
                saved.event_cursor = Some(cursor);
            }
            tx.save_controller_status(&saved).await?;
            if let Some(name) = driver.device_name() {
                tx.controller_heard(controller_id, Utc::now(), Some(&name))
                    .await?;
            }
            tx.commit().await?;
            return Ok(report);
        }
        // The device holds something else than we think: read it and plan again.
        (observed, duplicates) = read_table(driver.as_mut()).await?;
        report.table_read = true;
        plan = super::plan::plan(&rows, &observed, &duplicates, target.policy);
        if stores_dates {
            rewrite_pending(&mut plan, &rows);
        }
    }
    Err(Error::Internal("unreachable: the verification loop always returns".into()).into())
}

/// On a device that keeps validity dates, a pending entry that is already there may
/// hold old dates (the key's dates changed): write it again rather than confirm it.
fn rewrite_pending(plan: &mut super::plan::Plan, rows: &[crate::storage::sync::KeySync]) {
    let mut kept = Vec::new();
    for (key_id, doors) in std::mem::take(&mut plan.already_true) {
        let row = rows.iter().find(|row| row.key_id == key_id);
        match row {
            Some(row) if doors > 0 => plan.changes.push(Change {
                op: Op::SetDoors,
                credential: row.credential.clone(),
                doors,
                key: Some((key_id, doors)),
            }),
            _ => kept.push((key_id, doors)),
        }
    }
    plan.already_true = kept;
}

/// The known table with record positions, for a driver that places records itself.
fn placed(
    known: &HashMap<String, i64>,
    slots: &HashMap<String, i64>,
) -> Vec<gardien_drivers::StoredEntry> {
    known
        .iter()
        .filter_map(|(credential, doors)| {
            Some(gardien_drivers::StoredEntry {
                slot: u16::try_from(*slots.get(credential)?).ok()?,
                entry: Entry {
                    credential: Credential::parse(credential)?,
                    doors: u16::try_from(*doors).ok()?,
                },
            })
        })
        .collect()
}

fn profile_credential(change: &Change) -> Result<Credential, VisitError> {
    Credential::parse(&change.credential).ok_or_else(|| {
        Error::Internal(format!(
            "stored credential {:?} does not parse",
            change.credential
        ))
        .into()
    })
}

/// Applies one change; "already there" and "not there" are success once the state is
/// what we want.
async fn apply(
    driver: &mut dyn LockController,
    credential: &Credential,
    change: &Change,
    validity: Option<Validity>,
) -> Result<(), DriverError> {
    let doors = u16::try_from(change.doors)
        .map_err(|_| DriverError::Unsupported(format!("door mask {}", change.doors)))?;
    let entry = Entry {
        credential: credential.clone(),
        doors,
    };
    match change.op {
        Op::Remove => driver.remove(credential).await.map(drop),
        Op::SetDoors => match driver.set_doors_valid(&entry, validity).await? {
            Applied::NotFound => driver.add_valid(&entry, validity).await.map(drop),
            _ => Ok(()),
        },
        // Present already: its doors may differ from ours, so set them.
        Op::Add => match driver.add_valid(&entry, validity).await? {
            Applied::AlreadyPresent => driver.set_doors(&entry).await.map(drop),
            _ => Ok(()),
        },
    }
}

/// Reads the whole table: credential → doors, and credentials found more than once.
async fn read_table(
    driver: &mut dyn LockController,
) -> Result<(HashMap<String, i64>, Vec<String>), DriverError> {
    let mut observed = HashMap::new();
    let mut duplicates = Vec::new();
    for stored in driver.read_table().await? {
        let credential = stored.entry.credential.to_string();
        if observed
            .insert(credential.clone(), i64::from(stored.entry.doors))
            .is_some()
        {
            duplicates.push(credential);
        }
    }
    Ok((observed, duplicates))
}

fn digest_of(entries: &HashMap<String, i64>) -> u32 {
    let entries: Vec<Entry> = entries
        .iter()
        .filter_map(|(credential, doors)| {
            Some(Entry {
                credential: Credential::parse(credential)?,
                doors: u16::try_from(*doors).ok()?,
            })
        })
        .collect();
    table_digest(&entries)
}

pub fn fingerprint_text(fingerprint: Fingerprint) -> String {
    match fingerprint {
        Fingerprint::Digest {
            digest,
            boot_counter,
        } => format!("digest:{digest:08X} boot:{boot_counter}"),
        Fingerprint::ChangeCounter(counter) => format!("counter:{counter}"),
        Fingerprint::ListDigest(digest) => format!("list:{digest:08X}"),
    }
}

/// The driver for a controller, over Modbus or over the service's MQTT connection.
async fn connect(
    profile: &gardien_drivers::DeviceProfile,
    target: &ControllerTarget,
    mqtt: Option<&MqttChannel>,
) -> Result<Box<dyn LockController>, VisitError> {
    let modbus = match (target.transport, profile.modbus.as_ref()) {
        (Transport::Mqtt, None) => {
            let channel = mqtt.ok_or_else(|| {
                DriverError::Unsupported(
                    "no MQTT broker is configured ([mqtt] in the configuration)".into(),
                )
            })?;
            return Ok(Box::new(
                EspRfid::connect(profile, channel, &target.address).await?,
            ));
        }
        (_, Some(modbus)) if target.transport != Transport::Mqtt => modbus,
        _ => {
            return Err(DriverError::Unsupported(format!(
                "a {} is not reached over {:?}",
                profile.model, target.transport
            ))
            .into())
        }
    };
    let endpoint = match target.transport {
        Transport::ModbusRtu => Endpoint::rtu(&target.address, modbus.serial)?,
        _ => Endpoint::Tcp(target.address.clone()),
    };
    let unit = target
        .modbus_unit
        .and_then(|unit| u8::try_from(unit).ok())
        .unwrap_or(modbus.default_unit);
    Ok(connect_lock_controller(profile, &endpoint, unit).await?)
}

/// Whether the device forgot its table since the last visit: a PX-2 factory reset
/// (boot counter back to 0, empty digest) or a KL-8 power cut (counter back to 0).
fn lost_memory(status: &ControllerStatus, now: Fingerprint) -> bool {
    let Some(before) = status.fingerprint.as_deref() else {
        return false;
    };
    match now {
        Fingerprint::Digest {
            digest: 0,
            boot_counter: 0,
        } => !before.ends_with("boot:0") || !before.starts_with("digest:00000000"),
        Fingerprint::ChangeCounter(0) => before != "counter:0",
        Fingerprint::ListDigest(0) => !before.starts_with("list:00000000"),
        _ => false,
    }
}

/// Records a failed visit: backoff for the controller, the error on its pending rows.
pub async fn record_failure(store: &Store, controller_id: i64, error: &str) -> Result<(), Error> {
    let mut tx = store.write().await?;
    let status = tx.controller_status(controller_id).await?;
    for row in tx.key_sync_of_controller(controller_id).await? {
        if row.state == crate::domain::SyncState::Pending {
            tx.fail_key_sync(controller_id, row.key_id, row.doors, error, false)
                .await?;
        }
    }
    let failures = status.consecutive_failures + 1;
    let saved = ControllerStatus {
        last_error: Some(error.to_owned()),
        last_error_at: Some(Utc::now()),
        consecutive_failures: failures,
        next_attempt_at: Some(Utc::now() + super::backoff(failures)),
        ..status
    };
    tx.save_controller_status(&saved).await?;
    tx.commit().await
}

/// Polls the access events since the stored cursor and stores them; raises an alert
/// when a key that should not open anything is presented. Answers (events, new cursor).
async fn poll_events(
    store: &Store,
    driver: &mut dyn LockController,
    target: &ControllerTarget,
    status: &ControllerStatus,
    fingerprint: Fingerprint,
) -> Result<Option<(usize, i64)>, VisitError> {
    // After a power-up the device numbers its events from 0 again.
    let rebooted = match (fingerprint, status.fingerprint.as_deref()) {
        (Fingerprint::Digest { boot_counter, .. }, Some(before)) => {
            !before.ends_with(&format!("boot:{boot_counter}"))
        }
        _ => false,
    };
    let first_contact = status.event_cursor.is_none();
    let cursor = if rebooted {
        0
    } else {
        status.event_cursor.unwrap_or(0).max(0) as u64
    };
    let batch = match driver.read_events(cursor).await {
        Ok(batch) => batch,
        Err(DriverError::Unsupported(_)) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let mut tx = store.write().await?;
    if batch.lost > 0 && !first_contact {
        let gap = NewAccessEvent {
            residence_id: target.residence_id,
            controller_id: target.id,
            at: Utc::now(),
            door: 0,
            credential: String::new(),
            result: "gap",
            lost_events: i64::from(batch.lost),
        };
        tx.insert_access_event(&gap).await?;
    }
    for event in &batch.events {
        let at = DateTime::from_timestamp(i64::from(event.time), 0).unwrap_or_else(Utc::now);
        let event = super::access::Presented {
            at,
            door: event.door,
            credential: &event.credential,
            result: event.result,
        };
        super::access::record(&mut tx, target, &event).await?;
    }
    tx.commit().await?;
    Ok(Some((
        batch.events.len(),
        i64::try_from(batch.cursor).unwrap_or(i64::MAX),
    )))
}

/// Sets the device clock when it is off by more than the tolerance. A failure here is
/// logged, not fatal: the table matters more than the clock.
async fn keep_clock(driver: &mut dyn LockController) {
    let now = Utc::now().timestamp();
    match driver.read_clock().await {
        Ok(Some(clock)) if (i64::from(clock) - now).abs() > CLOCK_TOLERANCE_SECONDS => {
            if let Err(err) = driver.set_clock(now as u32).await {
                tracing::warn!(%err, "could not set the controller clock");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "could not read the controller clock"),
    }
}
