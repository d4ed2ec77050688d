//! Benchmark of the nightly meter collection: 10,000 meters on 40 simulated MBG-250
//! gateways over loopback. It measures and prints; it asserts nothing about time.
//! Run with `cargo bench --bench meter_collection` (release build).
//!
//! Everything runs in one process on one tokio runtime: the 40 simulators (each on its
//! own TCP port, 250 meters from `population()`, 20 ms of bus time per meter as the
//! manual says, one shared virtual clock standing still in the past), the collection
//! (`gardien::metering::collect::collect`) and the SQLite file it writes.
//!
//! 1. Setup: the database gets one residence, the flats, the 40 gateways and the
//!    10,000 meters on their buses, through the Store (audited, as the API would).
//! 2. Programming: a first collection finds the lists empty, writes them, reads them
//!    back and collects; its time and requests are reported apart.
//! 3. `METER_COLLECTION_RUNS` (default 3) collections at the default concurrency (8),
//!    the virtual clock moved one day before each: wall time, Modbus requests (from
//!    the run parts' `requests`) against the protocol's minimum, readings stored, and
//!    the lower bound the bus itself sets.
//! 4. The same collection at concurrency 40 (3 runs at most) and 1 (one run: it takes
//!    40 × 5 s of bus time at least), against the default's runs.
//!
//! About 6 minutes on 2 cores, 3.5 of them the concurrency-1 run; each further run at
//! the default concurrency adds 30 s (`METER_COLLECTION_RUNS=5`: about 7 minutes).
//! `cargo test --all-targets` builds this file and runs it without `--bench`: it then
//! only says so and returns.

mod common;

use common::{load_average, secs, summarize};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use gardien::demo::meters::{kind_of, unit_of};
use gardien::domain::{Transport, UnitKind};
use gardien::metering::collect::{collect, CollectOptions};
use gardien::metering::schedule::CollectionConfig;
use gardien::storage::audit::Actor;
use gardien::storage::gateways::GatewayInput;
use gardien::storage::meters::MeterInput;
use gardien::storage::readings::{CollectionGateway, CollectionRun};
use gardien::storage::residences::ResidenceInput;
use gardien::storage::units::UnitInput;
use gardien::storage::Store;
use gardien_simulators::mbg::population;
use gardien_simulators::{Faults, MbgConfig, MbgDevice, SimClock, TcpServer};

const GATEWAYS: usize = 40;
const METERS_PER_GATEWAY: usize = 250;
/// `population()` draws 3 meters per flat: 84 flats give 252, the last 2 are left out.
const FLATS_PER_GATEWAY: u32 = 84;
/// Default runs at the default concurrency; `METER_COLLECTION_RUNS` overrides it.
const RUNS: usize = 3;
/// Runs at concurrency 40 (at most); concurrency 1 runs once.
const WIDE_RUNS: usize = 3;
const DAY: i64 = 86_400;
/// Bus time per meter during a read-out (manual: "about 20 ms per meter"; the
/// simulator's and the profile's default).
const MS_PER_METER: u64 = 20;

// From the MBG-250 manual: at most 125 registers per read, a slot's reading every 16
// input registers, of which the driver uses the first 11 (status … id echo).
const MAX_READ: usize = 125;
const READING_STRIDE: usize = 16;
const READING_USED: usize = 11;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs benches without it.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!(
            "meter_collection: a benchmark; run it with `cargo bench --bench meter_collection`"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    runtime.block_on(bench());
    println!(
        "Total benchmark time: {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

// ---------------------------------------------------------------------------------
// Report helpers
// ---------------------------------------------------------------------------------

fn machine() {
    let m = common::machine();
    println!("gardien nightly collection benchmark (cargo bench --bench meter_collection)");
    println!(
        "Machine: {}, {} cores in /proc/cpuinfo, {} available, load {}; one tokio runtime ({} workers) for all",
        m.model,
        m.logical,
        m.available,
        load_average(),
        m.available
    );
}

/// Median (the lower middle for an even count), min, max.
fn median_min_max(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let summary = summarize(samples);
    (summary.median, summary.min, summary.max)
}

fn runs_wanted() -> usize {
    std::env::var("METER_COLLECTION_RUNS")
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .filter(|&runs| runs > 0)
        .unwrap_or(RUNS)
}

// ---------------------------------------------------------------------------------
// The site: simulators and the database that knows their meters
// ---------------------------------------------------------------------------------

struct Site {
    store: Store,
    rid: i64,
    clock: SimClock,
    devices: Vec<MbgDevice>,
    servers: Vec<TcpServer>,
    _dir: tempfile::TempDir,
}

/// 40 simulators and a database with their 10,000 meters. The clock stands still
/// `days_back` days in the past; the meters were installed the day before.
async fn site(days_back: i64) -> Site {
    let now = Utc::now().timestamp();
    let start = now - days_back * DAY;
    let installed = start - DAY;
    let installed_on: NaiveDate = DateTime::<Utc>::from_timestamp(installed, 0)
        .expect("an instant")
        .date_naive();
    let clock = SimClock::frozen(start);
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(&dir.path().join("gardien.db").display().to_string())
        .await
        .expect("open the database");
    let actor = Actor::system("bench");
    let rid = {
        let mut tx = store.write().await.expect("write");
        let input = ResidenceInput {
            name: "Résidence des 40 passerelles".into(),
            address: "1 rue du Banc d'Essai".into(),
        }
        .validated()
        .expect("valid residence");
        let rid = tx
            .insert_residence(&actor, &input)
            .await
            .expect("residence")
            .id;
        tx.commit().await.expect("commit");
        rid
    };

    let built = Instant::now();
    let mut devices = Vec::new();
    let mut servers = Vec::new();
    let mut flats = 0usize;
    for index in 0..GATEWAYS {
        let firmware = if index % 2 == 0 { 0x0104 } else { 0x0201 };
        let device = MbgDevice::new(
            MbgConfig {
                firmware,
                ms_per_meter: Duration::from_millis(MS_PER_METER),
                clock: clock.clone(),
                name: Some(format!("gateway-{:02}", index + 1)),
                ..MbgConfig::default()
            },
            Faults::seeded(index as u64 + 1),
        );
        let first_id = 10_000_001 + 1000 * index as u32;
        let mut bus = population(index as u64 + 1, first_id, FLATS_PER_GATEWAY, installed);
        bus.truncate(METERS_PER_GATEWAY);
        device
            .add_meters(bus.iter().cloned())
            .expect("meters on the bus");
        let server = gardien_simulators::serve_tcp(device.clone(), "127.0.0.1:0")
            .await
            .expect("serve a gateway");

        let mut tx = store.write().await.expect("write");
        let input = GatewayInput {
            name: format!("Passerelle {:02}", index + 1),
            model: "MBG-250".into(),
            transport: Transport::ModbusTcp,
            address: server.local_addr().to_string(),
            modbus_unit: Some(1),
            building_id: None,
            notes: String::new(),
        }
        .validated()
        .expect("valid gateway");
        let gateway = tx
            .insert_gateway(&actor, rid, &input)
            .await
            .expect("gateway")
            .id;
        let mut unit = 0;
        for (position, meter) in bus.iter().enumerate() {
            if position % 3 == 0 {
                flats += 1;
                let input = UnitInput {
                    lot_number: format!("L{flats:05}"),
                    kind: UnitKind::Flat,
                    building_id: None,
                    floor: None,
                    area_m2: None,
                }
                .validated()
                .expect("valid unit");
                unit = tx.insert_unit(&actor, rid, &input).await.expect("unit").id;
            }
            let input = MeterInput {
                kind: kind_of(meter),
                unit_id: Some(unit),
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
            }
            .validated()
            .expect("valid meter");
            tx.insert_meter(&actor, rid, &input).await.expect("meter");
        }
        tx.commit().await.expect("commit");
        devices.push(device);
        servers.push(server);
    }
    let fw1 = devices
        .iter()
        .filter(|d| d.with(|mbg, _| mbg.firmware_major()) == 1)
        .count();
    println!(
        "Setup: {GATEWAYS} simulated MBG-250, one loopback TCP port each ({fw1} firmware 1.4, {} firmware 2.1), {METERS_PER_GATEWAY} meters each",
        GATEWAYS - fw1
    );
    println!(
        "  from population(), {MS_PER_METER} ms of bus time per meter; shared SimClock frozen at {} ({days_back} days ago), +1 day per run",
        DateTime::<Utc>::from_timestamp(start, 0).expect("an instant").format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "  SQLite file (WAL): 1 residence, {flats} flats, {GATEWAYS} gateways, {} meters, written through the Store in {}",
        GATEWAYS * METERS_PER_GATEWAY,
        secs(built.elapsed())
    );
    Site {
        store,
        rid,
        clock,
        devices,
        servers,
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------------
// Collections
// ---------------------------------------------------------------------------------

/// One collection and what it did.
struct Run {
    wall: Duration,
    run: CollectionRun,
    parts: Vec<CollectionGateway>,
}

impl Run {
    fn requests(&self) -> i64 {
        self.parts.iter().map(|p| p.requests).sum()
    }

    fn per_gateway_requests(&self) -> Vec<i64> {
        let mut requests: Vec<i64> = self.parts.iter().map(|p| p.requests).collect();
        requests.sort_unstable();
        requests
    }

    fn readings_new(&self) -> i64 {
        self.parts.iter().map(|p| p.readings_new).sum()
    }

    fn sum(&self, field: fn(&CollectionGateway) -> i64) -> i64 {
        self.parts.iter().map(field).sum()
    }

    /// Each gateway's own time (lease, connect, read-out, readings, storing).
    fn gateway_times(&self) -> Vec<Duration> {
        self.parts
            .iter()
            .filter_map(|p| (p.finished_at? - p.started_at).to_std().ok())
            .collect()
    }

    fn failures(&self) -> Vec<String> {
        self.parts
            .iter()
            .filter_map(|p| {
                p.error
                    .as_ref()
                    .map(|e| format!("gateway {}: {e}", p.gateway_id))
            })
            .collect()
    }
}

fn options(concurrency: usize) -> CollectOptions {
    CollectOptions {
        concurrency,
        ..CollectionConfig::default().options("bench".into())
    }
}

/// Moves the virtual night on by a day, then runs one collection.
async fn night(site: &Site, concurrency: usize) -> Run {
    site.clock.advance(DAY);
    let start = Instant::now();
    let run = collect(&site.store, None, &options(concurrency), |_, _| {})
        .await
        .expect("the collection runs")
        .expect("a manual run always opens");
    let wall = start.elapsed();
    let mut parts = site
        .store
        .read()
        .await
        .expect("read")
        .collection_parts(site.rid, Some(run.id), 1000)
        .await
        .expect("run parts");
    parts.sort_by_key(|p| p.gateway_id);
    let run = Run { wall, run, parts };
    if run.parts.len() != GATEWAYS {
        println!(
            "  WARNING: {} gateway parts in run {}, {GATEWAYS} expected",
            run.parts.len(),
            run.run.id
        );
    }
    run
}

/// Gateways that failed in these runs, one line each.
fn print_failures(concurrency: usize, runs: &[Run]) {
    for run in runs {
        for failure in run.failures() {
            println!(
                "  FAILED at concurrency {concurrency}, run {}: {failure}",
                run.run.id
            );
        }
    }
}

async fn bench() {
    machine();
    let runs = runs_wanted();
    let wide_runs = WIDE_RUNS.min(runs);
    // Nights moved: programming, the runs, the wide runs, the narrow run; and a margin
    // so that the last night is still in the past.
    let days_back = (1 + runs + wide_runs + 1) as i64 + 2;
    let site = site(days_back).await;
    let default_concurrency = CollectionConfig::default().concurrency;
    let meters = (GATEWAYS * METERS_PER_GATEWAY) as i64;

    // The minimum, from the manual.
    let slots_per_read = (MAX_READ - READING_USED) / READING_STRIDE + 1;
    let reading_reads = METERS_PER_GATEWAY.div_ceil(slots_per_read);
    let minimum_per_gateway = 1 + 1 + 1 + reading_reads;
    let minimum = minimum_per_gateway * GATEWAYS;
    let bus_time = Duration::from_millis(MS_PER_METER * METERS_PER_GATEWAY as u64);
    let bus_bound = |concurrency: usize| bus_time * GATEWAYS.div_ceil(concurrency) as u32;

    // Programming: the lists are empty.
    let first = night(&site, default_concurrency).await;
    let configured: Vec<u16> = site
        .devices
        .iter()
        .map(|d| d.snapshot().configured)
        .collect();
    let programmed = configured
        .iter()
        .all(|&c| usize::from(c) == METERS_PER_GATEWAY);
    let requests = first.per_gateway_requests();
    println!(
        "Programming (first collection, lists empty, concurrency {default_concurrency}): {}, {} requests ({}–{} per gateway:",
        secs(first.wall),
        first.requests(),
        requests.first().copied().unwrap_or_default(),
        requests.last().copied().unwrap_or_default(),
    );
    println!(
        "  connect, list read, {METERS_PER_GATEWAY} slot writes, read-back, collection), {} readings stored; lists {}",
        first.readings_new(),
        if programmed {
            format!("hold {METERS_PER_GATEWAY} meters on every gateway")
        } else {
            format!("NOT all programmed: {configured:?}")
        }
    );

    // The nightly collection at the default concurrency.
    println!(
        "Nightly collection, concurrency {default_concurrency} (CollectionConfig default), {runs} runs"
    );
    let mut nightly = Vec::with_capacity(runs);
    for _ in 0..runs {
        nightly.push(night(&site, default_concurrency).await);
    }
    let walls: Vec<Duration> = nightly.iter().map(|r| r.wall).collect();
    let (median, min, max) = median_min_max(&walls);
    let gateway_times: Vec<Duration> = nightly.iter().flat_map(|r| r.gateway_times()).collect();
    let (g_median, g_min, g_max) = median_min_max(&gateway_times);
    let totals: Vec<i64> = nightly.iter().map(Run::requests).collect();
    let per_gateway: Vec<i64> = {
        let mut all: Vec<i64> = nightly
            .iter()
            .flat_map(|r| r.per_gateway_requests())
            .collect();
        all.sort_unstable();
        all
    };
    let stored: Vec<i64> = nightly.iter().map(Run::readings_new).collect();
    let sum_of = |field: fn(&CollectionGateway) -> i64| -> i64 {
        nightly.iter().map(|r| r.sum(field)).sum()
    };
    println!(
        "  {:<36} {:>10} {:>10} {:>10} {:>16}",
        "", "median", "min", "max", "lower bound"
    );
    println!(
        "  {:<36} {:>10} {:>10} {:>10} {:>16}",
        "wall time of a collection",
        secs(median),
        secs(min),
        secs(max),
        format!("{} (bus)", secs(bus_bound(default_concurrency)))
    );
    println!(
        "  {:<36} {:>10} {:>10} {:>10} {:>16}",
        "one gateway's own time",
        secs(g_median),
        secs(g_min),
        secs(g_max),
        format!("{} (bus)", secs(bus_time))
    );
    println!(
        "  {:<36} {:>10} {:>10} {:>10} {:>16}",
        "Modbus requests, whole run",
        median_i64(&totals),
        totals.iter().min().copied().unwrap_or_default(),
        totals.iter().max().copied().unwrap_or_default(),
        format!("{minimum} (min)")
    );
    println!(
        "  {:<36} {:>10} {:>10} {:>10} {:>16}",
        "Modbus requests, per gateway",
        median_i64(&per_gateway),
        per_gateway.first().copied().unwrap_or_default(),
        per_gateway.last().copied().unwrap_or_default(),
        format!("{minimum_per_gateway} (min)")
    );
    println!(
        "  {:<36} {:>10} {:>10} {:>10} {:>16}",
        "readings stored (new) per run",
        median_i64(&stored),
        stored.iter().min().copied().unwrap_or_default(),
        stored.iter().max().copied().unwrap_or_default(),
        format!("{meters} (meters)")
    );
    print_failures(default_concurrency, &nightly);
    println!(
        "  over the {runs} runs: {} meters read, {} missing, {} rejected, {} conflicts, {} duplicates, {} gateways failed",
        sum_of(|p| p.meters_read),
        sum_of(|p| p.meters_missing),
        sum_of(|p| p.rejected),
        sum_of(|p| p.conflicts),
        sum_of(|p| p.readings_duplicate),
        nightly.iter().map(|r| r.run.gateways_failed).sum::<i64>()
    );
    println!(
        "  minimum per gateway = 1 status read (FC03 @0-6 at connect: identity, configured, last read-out, state)"
    );
    println!(
        "    + 1 trigger (write 1 to @7) + 1 end-of-read-out poll (FC03 @0-6, first look once the bus should be done)"
    );
    println!(
        "    + ceil({METERS_PER_GATEWAY}/{slots_per_read}) = {reading_reads} reading reads (FC04, {slots_per_read} slots of {READING_STRIDE} registers, {READING_USED} used: {}×{READING_STRIDE}+{READING_USED} = {} ≤ {MAX_READ})",
        slots_per_read - 1,
        (slots_per_read - 1) * READING_STRIDE + READING_USED
    );
    println!(
        "    = {minimum_per_gateway}, × {GATEWAYS} = {minimum}; the stored list is trusted (the configured count agrees), so no list read"
    );
    println!(
        "  bus bound: {METERS_PER_GATEWAY} meters × {MS_PER_METER} ms = {} per gateway = the whole run with all {GATEWAYS} in parallel; ceil({GATEWAYS}/{default_concurrency}) × {} = {} at {default_concurrency}",
        secs(bus_time),
        secs(bus_time),
        secs(bus_bound(default_concurrency)),
    );

    // Concurrency.
    println!("Concurrency (same collection; clock +1 day before each run)");
    let mut wide = Vec::with_capacity(wide_runs);
    for _ in 0..wide_runs {
        wide.push(night(&site, GATEWAYS).await);
    }
    let narrow = vec![night(&site, 1).await];
    println!(
        "  {:<12} {:>4} {:>11} {:>9} {:>9} {:>9} {:>7} {:>8} {:>12} {:>6}",
        "concurrency",
        "runs",
        "wall median",
        "min",
        "max",
        "bus bound",
        "× bound",
        "requests",
        "readings min",
        "failed"
    );
    for (concurrency, runs) in [
        (1, &narrow),
        (default_concurrency, &nightly),
        (GATEWAYS, &wide),
    ] {
        let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
        let (median, min, max) = median_min_max(&walls);
        let requests: Vec<i64> = runs.iter().map(Run::requests).collect();
        let readings: Vec<i64> = runs.iter().map(Run::readings_new).collect();
        let failed: i64 = runs.iter().map(|r| r.run.gateways_failed).sum();
        println!(
            "  {:<12} {:>4} {:>11} {:>9} {:>9} {:>9} {:>7} {:>8} {:>12} {:>6}",
            if concurrency == default_concurrency {
                format!("{concurrency} (default)")
            } else {
                concurrency.to_string()
            },
            runs.len(),
            secs(median),
            secs(min),
            secs(max),
            format!("{} s", bus_bound(concurrency).as_secs()),
            format!(
                "{:.2}",
                median.as_secs_f64() / bus_bound(concurrency).as_secs_f64()
            ),
            median_i64(&requests),
            readings.iter().min().copied().unwrap_or_default(),
            failed,
        );
    }
    print_failures(1, &narrow);
    print_failures(GATEWAYS, &wide);
    println!(
        "  bus bound = ceil({GATEWAYS}/concurrency) × {}; failed = gateway parts with an error, all runs. Above the bound:",
        secs(bus_time)
    );
    println!(
        "  connecting, Modbus round trips, and each gateway's readings stored in one write transaction (one writer at a time)"
    );

    site.store.close().await;
    for server in site.servers {
        server.stop().await;
    }
}

fn median_i64(values: &[i64]) -> i64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}
