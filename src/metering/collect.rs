//! A collection: every gateway is asked for a read-out, waited for, and read; each
//! meter's reading is judged and stored with the gateway's time. Gateways are
//! collected concurrently under a bound, each with its own deadline, so a dead gateway
//! delays nothing else; it is reported in the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::checks::{judge, ExpectedMeter, Verdict};
use super::program::{connect, ensure_list, READOUT_GRACE};
use crate::domain::meter::MbusId;
use crate::storage::gateways::Gateway;
use crate::storage::readings::{
    CollectionGateway, CollectionRun, NewReading, ReadingSource, Stored,
};
use crate::storage::sync::DeviceRef;
use crate::storage::Store;
use crate::sync::visit::VisitError;

#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Gateways read at once.
    pub concurrency: usize,
    /// Longest one gateway may take, read-out included.
    pub gateway_timeout: Duration,
    /// Names this instance in gateway leases.
    pub owner: String,
}

/// What went wrong with one meter, kept in the run.
#[derive(Debug, Clone, Serialize)]
struct Problem {
    meter_id: Option<i64>,
    mbus_id: String,
    problem: String,
}

/// Runs one collection. `scheduled_for` names the night of a scheduled run, which
/// runs once per date across instances: `None` is answered if it already ran.
/// `on_gateway` is called as each gateway finishes (for a progress bar).
pub async fn collect(
    store: &Store,
    scheduled_for: Option<NaiveDate>,
    options: &CollectOptions,
    on_gateway: impl Fn(&Gateway, &CollectionGateway) + Send + Sync + 'static,
) -> crate::Result<Option<CollectionRun>> {
    let (run_id, gateways) = {
        let mut tx = store.write().await?;
        let Some(run_id) = tx.open_collection_run(scheduled_for, Utc::now()).await? else {
            return Ok(None);
        };
        let gateways = tx.collectable_gateways().await?;
        tx.commit().await?;
        (run_id, gateways)
    };
    tracing::info!(run_id, gateways = gateways.len(), "collection started");
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let on_gateway = Arc::new(on_gateway);
    let mut tasks = JoinSet::new();
    for gateway in gateways {
        let (store, options, permits, on_gateway) = (
            store.clone(),
            options.clone(),
            permits.clone(),
            on_gateway.clone(),
        );
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let part = collect_gateway(&store, &gateway, run_id, &options).await;
            on_gateway(&gateway, &part);
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut tx = store.write().await?;
    let run = tx.close_collection_run(run_id, Utc::now()).await?;
    tx.commit().await?;
    tracing::info!(
        run_id,
        read = run.meters_read,
        missing = run.meters_missing,
        failed = run.gateways_failed,
        "collection finished"
    );
    Ok(Some(run))
}

/// Collects one gateway under its lease and records its part, whatever happens.
async fn collect_gateway(
    store: &Store,
    gateway: &Gateway,
    run_id: i64,
    options: &CollectOptions,
) -> CollectionGateway {
    let started_at = Utc::now();
    let mut part = CollectionGateway {
        run_id,
        gateway_id: gateway.id,
        residence_id: gateway.residence_id,
        started_at,
        problems: "[]".into(),
        ..CollectionGateway::default()
    };
    let outcome = tokio::time::timeout(options.gateway_timeout, async {
        wait_for_lease(store, gateway.id, &options.owner, options.gateway_timeout).await?;
        let outcome = read_gateway(store, gateway, &mut part).await;
        release_lease(store, gateway.id, &options.owner).await;
        outcome
    })
    .await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => {
            release_lease(store, gateway.id, &options.owner).await;
            Some(format!(
                "gateway not read within {} s",
                options.gateway_timeout.as_secs()
            ))
        }
    };
    if let Some(error) = error {
        tracing::warn!(gateway = gateway.id, %error, "gateway collection failed");
        part.error = Some(error);
        part.meters_missing = part.meters_expected - part.meters_read;
        part.finished_at = Some(Utc::now());
        if let Err(err) = record_part(store, &part).await {
            tracing::error!(gateway = gateway.id, %err, "recording a failed gateway collection");
        }
    }
    part
}

async fn record_part(store: &Store, part: &CollectionGateway) -> crate::Result<()> {
    let mut tx = store.write().await?;
    tx.record_collection_gateway(part).await?;
    tx.commit().await
}

/// Waits for the gateway's lease (the engine may be programming it).
async fn wait_for_lease(
    store: &Store,
    gateway_id: i64,
    owner: &str,
    patience: Duration,
) -> Result<(), VisitError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(patience * 2).unwrap_or_default();
        if crate::sync::take_lease(store, DeviceRef::Gateway(gateway_id), owner, now, until).await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(crate::error::Error::Conflict {
                message: "gateway leased by another instance".into(),
                field: None,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn release_lease(store: &Store, gateway_id: i64, owner: &str) {
    if let Ok(mut tx) = store.write().await {
        let _ = tx
            .release_lease(DeviceRef::Gateway(gateway_id), owner)
            .await;
        let _ = tx.commit().await;
    }
}

/// Programs the list if needed, triggers a read-out, waits for it, reads the slots and
/// stores what they hold, with the part, in one transaction.
async fn read_gateway(
    store: &Store,
    gateway: &Gateway,
    part: &mut CollectionGateway,
) -> Result<(), VisitError> {
    let meters = store.read().await?.meters_on_gateway(gateway.id).await?;
    part.meters_expected = meters.len() as i64;
    let (mut device, status) = connect(store, gateway).await?;
    let programmed = ensure_list(store, gateway, &mut device, &status).await?;

    // Which slot holds which of our meters.
    let by_id: HashMap<&str, _> = meters.iter().map(|m| (m.mbus_id.as_str(), m)).collect();
    let slots = store.read().await?.gateway_slots(gateway.id).await?;
    let mut expected: Vec<(u16, ExpectedMeter)> = Vec::new();
    let mut problems: Vec<Problem> = Vec::new();
    for slot in &slots {
        let (Some(meter), Ok(number)) =
            (by_id.get(slot.mbus_id.as_str()), u16::try_from(slot.slot))
        else {
            continue;
        };
        expected.push((
            number,
            ExpectedMeter {
                meter_id: meter.id,
                mbus_number: MbusId::parse("mbus_id", &meter.mbus_id)
                    .map(|id| id.number())
                    .unwrap_or_default(),
                unit: meter.measure_unit,
                digits: meter.digits,
            },
        ));
    }
    for meter in &meters {
        if !slots.iter().any(|slot| slot.mbus_id == meter.mbus_id) {
            problems.push(Problem {
                meter_id: Some(meter.id),
                mbus_id: meter.mbus_id.clone(),
                problem: "absent de la liste de la passerelle (liste pleine ?)".into(),
            });
        }
    }

    let mut judged = Vec::new();
    if !expected.is_empty() {
        let before = if programmed.slots_written > 0 {
            device.status().await?
        } else {
            status
        };
        device.start_readout().await?;
        let after = device.wait_readout(&before, READOUT_GRACE).await?;
        if let Some(end) = after.last_readout {
            let offset = i64::from(end) - Utc::now().timestamp();
            if offset.abs() > 300 {
                problems.push(Problem {
                    meter_id: None,
                    mbus_id: String::new(),
                    problem: format!("horloge de la passerelle décalée de {offset} s : les relevés portent son heure"),
                });
            }
        }
        let slot_numbers: Vec<u16> = expected.iter().map(|(slot, _)| *slot).collect();
        let readings = device.read_readings(&slot_numbers).await?;
        let now = Utc::now();
        for reading in readings {
            if let Some((_, meter)) = expected.iter().find(|(slot, _)| *slot == reading.slot) {
                judged.push((meter.clone(), reading.slot, judge(meter, &reading, now)));
            }
        }
    }
    part.requests = device.transactions() as i64;

    let now = Utc::now();
    let mut tx = store.write().await?;
    for (meter, slot, judgement) in &judged {
        tx.set_meter_alarms(gateway.residence_id, meter.meter_id, &judgement.alarms, now)
            .await?;
        let problem = match &judgement.verdict {
            Verdict::Store { value, at } => {
                let source_ref = format!("gateway:{}/slot:{slot}", gateway.id);
                let stored = tx
                    .store_reading(&NewReading {
                        residence_id: gateway.residence_id,
                        meter_id: meter.meter_id,
                        read_at: *at,
                        value: *value,
                        source: ReadingSource::Modbus,
                        source_ref: &source_ref,
                    })
                    .await?;
                part.meters_read += 1;
                match stored {
                    Stored::New => {
                        part.readings_new += 1;
                        None
                    }
                    Stored::Duplicate => {
                        part.readings_duplicate += 1;
                        None
                    }
                    Stored::Conflict { stored } => {
                        part.conflicts += 1;
                        Some(format!("relevé du {at} différent de celui déjà enregistré ({stored}), conservé à part : {value}"))
                    }
                }
            }
            Verdict::Missing(why) => {
                part.meters_missing += 1;
                Some(why.clone())
            }
            Verdict::Rejected(why) => {
                part.rejected += 1;
                Some(why.clone())
            }
        };
        if let Some(problem) = problem {
            problems.push(Problem {
                meter_id: Some(meter.meter_id),
                mbus_id: format!("{:08}", meter.mbus_number),
                problem,
            });
        }
    }
    part.meters_missing += part.meters_expected - judged.len() as i64;
    part.problems = serde_json::to_string(&problems).unwrap_or_else(|_| "[]".into());
    part.finished_at = Some(Utc::now());
    tx.record_collection_gateway(part).await?;
    tx.commit().await?;
    Ok(())
}
