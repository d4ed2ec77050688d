//! The demo's meters: a cold and a hot water meter and a heat meter or heat cost
//! allocator per flat, on two MBG-250 gateways (one of each firmware line), simulated
//! in-process with realistic consumption. The database gets the same meters, and a
//! history of nightly readings so that consumption shows from the first minute.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use gardien_simulators::mbg::{population, Unit};
use gardien_simulators::{BusMeter, Faults, MbgConfig, MbgDevice, SimClock, TcpServer};

use crate::domain::meter::{MeasureUnit, MeterKind};
use crate::domain::{Transport, UnitKind};
use crate::error::{Error, Result};
use crate::storage::audit::Actor;
use crate::storage::gateways::GatewayInput;
use crate::storage::meters::MeterInput;
use crate::storage::readings::{NewReading, ReadingSource};
use crate::storage::units::UnitFilter;
use crate::storage::{Store, Tx};

/// Same seed, same meters: the simulators rebuilt at each start match the database.
const SEED: u64 = 2026;
const FIRST_ID: u32 = 30_000_001;
/// Flats on the first gateway; the rest go on the second.
const FLATS_ON_FIRST: usize = 80;
/// Days of nightly readings written at the first start.
const HISTORY_DAYS: i64 = 120;

pub(super) fn origin() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() // 2026-01-01T00:00Z
}

/// The simulated gateways and their servers.
pub struct DemoGateways {
    pub devices: Vec<MbgDevice>,
    pub servers: Vec<TcpServer>,
}

/// The kind of meter a simulated bus meter is, from its M-Bus medium.
pub fn kind_of(meter: &BusMeter) -> MeterKind {
    match meter.medium {
        0x06 | 0x15 => MeterKind::HotWater,
        0x04 | 0x0C => MeterKind::Heating,
        0x08 => MeterKind::HeatCostAllocator,
        _ => MeterKind::ColdWater,
    }
}

/// The unit a simulated bus meter counts in.
pub fn unit_of(meter: &BusMeter) -> MeasureUnit {
    match meter.unit {
        Unit::CubicMetres => MeasureUnit::M3,
        Unit::KilowattHours => MeasureUnit::Kwh,
        Unit::MegawattHours => MeasureUnit::Mwh,
        Unit::Hca => MeasureUnit::Hca,
    }
}

/// The bus meters of every flat, three per flat, in flat order.
fn bus_meters(flats: usize) -> Vec<BusMeter> {
    population(SEED, FIRST_ID, flats as u32, origin().timestamp())
}

/// Creates the two gateways and the meters of every flat (first start only).
pub async fn seed(tx: &mut Tx, actor: &Actor, rid: i64) -> Result<()> {
    let flats: Vec<i64> = tx
        .units(
            rid,
            &UnitFilter {
                kind: Some(UnitKind::Flat),
                limit: Some(500),
                ..Default::default()
            },
            crate::domain::roles::Visibility::Everything,
        )
        .await?
        .items
        .into_iter()
        .map(|unit| unit.id)
        .collect();
    let mut gateways = Vec::new();
    for (name, port) in [
        ("Passerelle compteurs A-B", 1),
        ("Passerelle compteurs B-C", 2),
    ] {
        let input = GatewayInput {
            name: name.into(),
            model: "MBG-250".into(),
            transport: Transport::ModbusTcp,
            // Pointed at the simulators when they start.
            address: format!("127.0.0.1:{port}"),
            modbus_unit: Some(1),
            building_id: None,
            notes: String::new(),
        };
        gateways.push(tx.insert_gateway(actor, rid, &input.validated()?).await?.id);
    }
    let installed_on = origin().date_naive();
    for (index, meter) in bus_meters(flats.len()).iter().enumerate() {
        let flat = index / 3;
        let gateway = gateways[usize::from(flat >= FLATS_ON_FIRST)];
        let input = MeterInput {
            kind: kind_of(meter),
            unit_id: flats.get(flat).copied(),
            building_id: None,
            mbus_id: format!("{:08}", meter.id),
            manufacturer: meter.manufacturer.clone(),
            version: i64::from(meter.version),
            medium: i64::from(meter.medium),
            measure_unit: unit_of(meter),
            digits: i64::from(meter.digits),
            installed_on,
            initial_index: meter.initial,
            gateway_id: Some(gateway),
            label: String::new(),
        };
        tx.insert_meter(actor, rid, &input.validated()?).await?;
    }
    Ok(())
}

/// Starts the two simulated gateways on loopback, points the gateway records at them,
/// and writes the reading history if the database has none.
pub async fn start(store: &Store, rid: i64) -> Result<DemoGateways> {
    let failed =
        |err: std::io::Error| Error::Internal(format!("starting a simulated gateway: {err}"));
    let mut tx = store.write().await?;
    let gateways = tx.gateways(rid, &Default::default()).await?.items;
    let flats = tx
        .units(
            rid,
            &UnitFilter {
                kind: Some(UnitKind::Flat),
                limit: Some(500),
                ..Default::default()
            },
            crate::domain::roles::Visibility::Everything,
        )
        .await?
        .total as usize;
    let meters = bus_meters(flats);
    let (first, second) = meters.split_at((FLATS_ON_FIRST * 3).min(meters.len()));
    let mut demo = DemoGateways {
        devices: Vec::new(),
        servers: Vec::new(),
    };
    for (gateway, (firmware, bus)) in gateways.iter().zip([(0x0104, first), (0x0201, second)]) {
        let device = MbgDevice::new(
            MbgConfig {
                firmware,
                clock: SimClock::system(),
                name: Some(gateway.name.clone()),
                ..MbgConfig::default()
            },
            Faults::default(),
        );
        device
            .add_meters(bus.iter().cloned())
            .map_err(|err| Error::Internal(format!("demo meters: {err}")))?;
        let server = gardien_simulators::serve_tcp(device.clone(), "127.0.0.1:0")
            .await
            .map_err(failed)?;
        let input = GatewayInput {
            address: server.local_addr().to_string(),
            name: gateway.name.clone(),
            model: gateway.model.clone(),
            transport: gateway.transport,
            modbus_unit: gateway.modbus_unit,
            building_id: gateway.building_id,
            notes: gateway.notes.clone(),
        };
        tx.update_gateway(&Actor::system("demo"), rid, gateway.id, &input.validated()?)
            .await?;
        demo.devices.push(device);
        demo.servers.push(server);
    }
    write_history(&mut tx, rid, &demo).await?;
    tx.commit().await?;
    Ok(demo)
}

/// Nightly readings (02:00 UTC+1) of the last days, from the simulators' physics,
/// unless readings exist already.
async fn write_history(tx: &mut Tx, rid: i64, demo: &DemoGateways) -> Result<()> {
    let meters = tx
        .meters(
            rid,
            &crate::storage::meters::MeterFilter {
                limit: Some(500),
                ..Default::default()
            },
            crate::domain::roles::Visibility::Everything,
        )
        .await?
        .items;
    let Some(first) = meters.first() else {
        return Ok(());
    };
    if !tx
        .readings_between(&[first.id], None, None)
        .await?
        .is_empty()
    {
        return Ok(());
    }
    let today = Utc::now().date_naive();
    let night = |date: NaiveDate| {
        date.and_time(NaiveTime::from_hms_opt(1, 0, 0).unwrap_or_default())
            .and_utc()
    };
    for meter in &meters {
        let Ok(id) = meter.mbus_id.parse::<u32>() else {
            continue;
        };
        for device in &demo.devices {
            let values: Vec<(DateTime<Utc>, f64)> = device.with_bus(|bus| {
                (1..=HISTORY_DAYS)
                    .rev()
                    .filter_map(|days| {
                        let at = night(today - Duration::days(days));
                        bus.index_at(id, at.timestamp()).map(|v| (at, v.value()))
                    })
                    .collect()
            });
            for (at, value) in values {
                if at <= origin() {
                    continue;
                }
                tx.store_reading(&NewReading {
                    residence_id: rid,
                    meter_id: meter.id,
                    read_at: at,
                    value,
                    source: ReadingSource::File,
                    source_ref: "demo history",
                })
                .await?;
            }
        }
    }
    Ok(())
}
