//! Benchmarks of lock programming. They measure and print; they assert nothing about
//! time. Run with `cargo bench --bench lock_sync` (release build).
//!
//! What is measured, everything on loopback in one process (the API, the engine, the
//! simulated controllers and the measuring client share the same tokio runtime and
//! cores):
//! 0. Baselines: one Modbus read round trip, a new connection, one PX-2 mailbox
//!    command, an HTTP request, a database read, so the rest can be read against them.
//! 1. Lost badge to confirmation on 50 simulated PX-2 controllers, through the HTTP
//!    API and the engine, for two engine concurrency bounds.
//! 2. Modbus transactions per change against the protocol's minimum, for a visit of a
//!    PX-2 and of a KL-8 with 1 and 10 pending changes, with the breakdown seen on the
//!    wire (a counting relay between the driver and the simulator).
//! 3. A full audit of a 2000-slot PX-2: `read_table` at driver level, and a whole
//!    audit visit.
//!
//! Part 1 dominates the running time (each lost badge takes seconds to reach all 50
//! controllers); `LOCK_SYNC_RUNS=20 cargo bench --bench lock_sync` runs fewer of its
//! runs (100 per bound by default).

mod common;

use common::service::{Api, Service};
use common::{load_average, ms, section, summarize, us};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gardien::domain::SyncState;
use gardien::storage::audit::Actor;
use gardien::storage::keys::KeyInput;
use gardien::storage::Store;
use gardien::sync::visit::{visit, VisitKind, VisitReport};
use gardien::sync::SyncConfig;
use gardien_drivers::{connect_lock_controller, Credential, Endpoint, Registry};
use gardien_simulators::{
    serve_tcp, Faults, Kl8Config, Kl8Device, Px2Config, Px2Device, TcpServer, Uid,
};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Part 1: controllers of the residence, badges programmed on all of them, runs.
const CONTROLLERS: usize = 50;
const BADGES: usize = 300;
/// Runs per concurrency bound; `LOCK_SYNC_RUNS` overrides it (at most what the
/// badges allow).
const RUNS: usize = 100;
const WARMUP_RUNS: usize = 3;
/// Lost badges visited by calling `visit()` on each controller in turn, engine stopped.
const SEQUENTIAL_RUNS: usize = 3;
const CONCURRENCIES: [usize; 2] = [16, 50];
/// How often the measuring client looks at the database for the confirmations.
const POLL: Duration = Duration::from_millis(2);

/// Part 2: visits per scenario, and badges each controller holds throughout.
const VISIT_REPEATS: usize = 5;
const RESIDENT_BADGES: usize = 20;

/// Part 3: slots of the audited PX-2, and repetitions.
const FULL_TABLE: u16 = 2000;
const TABLE_READS: usize = 20;
const AUDIT_VISITS: usize = 10;

/// A visit for pending work only: no forced audit, no events or clock.
const PENDING_ONLY: VisitKind = VisitKind {
    audit: false,
    routine: false,
};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    runtime.block_on(async {
        machine();
        let mut service = Service::start().await;
        let api = service.admin().await;
        baselines(&service, &api).await;
        lost_badge(&mut service, &api).await;
        transactions_per_change(&service, &api).await;
        full_audit(&service, &api).await;
        service.stop().await;
    });
    println!();
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
    println!("gardien lock-programming benchmarks (cargo bench --bench lock_sync)");
    println!("==================================================================");
    println!("Machine");
    println!("  CPU model        {}", m.model);
    println!(
        "  cores            {} logical in /proc/cpuinfo, {} available to this process",
        m.logical, m.available
    );
    println!("  memory           {}", m.memory);
    println!("  kernel           Linux {}", m.kernel);
    println!("  runtime          tokio multi-thread, {} workers; API, engine, simulators and client share them", m.available);
    println!("  database         SQLite file (WAL) in a temporary directory");
    println!(
        "  load average     {} (at start; other processes on the machine skew the numbers)",
        load_average()
    );
}

fn print_summary(label: &str, samples: &[Duration], unit: fn(Duration) -> String) {
    let s = summarize(samples);
    println!(
        "  {label:<44} median {:>10}  p90 {:>10}  p99 {:>10}  min {:>10}  max {:>10}  (n={})",
        unit(s.median),
        unit(s.p90),
        unit(s.p99),
        unit(s.min),
        unit(s.max),
        s.n
    );
}

// ---------------------------------------------------------------------------------
// The service: API and engine over a SQLite file, as `gardien serve` runs them
// ---------------------------------------------------------------------------------

impl Api {
    /// POSTs, expects 201, answers the new id.
    async fn create(&self, path: &str, body: Value) -> i64 {
        let (status, answer) = self.send(Method::POST, path, Some(body.clone())).await;
        if status != 201 {
            panic!("POST {path} {body}: {status} {answer}");
        }
        answer["id"].as_i64().expect("id of the new object")
    }

    async fn residence(&self, name: &str) -> i64 {
        self.create(
            "/api/v1/residences",
            json!({ "name": name, "address": "1 rue du Banc d'Essai" }),
        )
        .await
    }

    /// A controller with one lock on door 1, and a profile opening that lock alone.
    /// Answers (controller, lock, profile).
    async fn controller(
        &self,
        rid: i64,
        name: &str,
        model: &str,
        address: SocketAddr,
        unit: u8,
    ) -> (i64, i64, i64) {
        let at = |rest: &str| format!("/api/v1/residences/{rid}{rest}");
        let controller = self
            .create(
                &at("/controllers"),
                json!({ "name": name, "model": model, "transport": "modbus_tcp",
                        "address": address.to_string(), "modbus_unit": unit }),
            )
            .await;
        let lock = self
            .create(
                &at("/locks"),
                json!({ "name": format!("Porte de {name}"), "kind": "door",
                        "controller_id": controller, "door_number": 1 }),
            )
            .await;
        let profile = self
            .create(
                &at("/profiles"),
                json!({ "name": format!("Accès {name}"), "lock_ids": [lock] }),
            )
            .await;
        (controller, lock, profile)
    }

    async fn badge(&self, rid: i64, identifier: &str, profile: i64) -> i64 {
        self.create(
            &format!("/api/v1/residences/{rid}/keys"),
            json!({ "kind": "vigik_badge", "identifier": identifier, "profile_ids": [profile] }),
        )
        .await
    }
}

/// Runs per bound: `RUNS`, or `LOCK_SYNC_RUNS`, within what the badges allow.
fn runs_per_bound() -> usize {
    let most = (BADGES - SEQUENTIAL_RUNS) / CONCURRENCIES.len() - WARMUP_RUNS - 1;
    std::env::var("LOCK_SYNC_RUNS")
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .filter(|&runs| runs > 0)
        .unwrap_or(RUNS)
        .min(most)
}

fn engine_config(concurrency: usize) -> SyncConfig {
    SyncConfig {
        concurrency,
        ..SyncConfig::default()
    }
}

// ---------------------------------------------------------------------------------
// Simulators
// ---------------------------------------------------------------------------------

/// A simulated PX-2 on a loopback port; `exec` overrides the command execution time.
async fn px2(
    capacity: u16,
    exec: Option<RangeInclusive<Duration>>,
    seed: u64,
) -> (Px2Device, TcpServer) {
    let defaults = Px2Config::default();
    let config = Px2Config {
        capacity,
        seed: Some(seed),
        exec_time: exec.unwrap_or(defaults.exec_time.clone()),
        ..defaults
    };
    let device = Px2Device::new(config, Faults::seeded(seed));
    let server = serve_tcp(device.clone(), "127.0.0.1:0")
        .await
        .expect("serve a PX-2");
    (device, server)
}

async fn kl8(seed: u64) -> (Kl8Device, TcpServer) {
    let device = Kl8Device::new(Kl8Config::default(), Faults::seeded(seed));
    let server = serve_tcp(device.clone(), "127.0.0.1:0")
        .await
        .expect("serve a KL-8");
    (device, server)
}

fn profile(id: &str) -> gardien_drivers::DeviceProfile {
    Registry::builtin()
        .expect("device profiles")
        .get(id)
        .unwrap_or_else(|| panic!("profile {id}"))
        .clone()
}

fn exec_text(range: &RangeInclusive<Duration>) -> String {
    format!(
        "{}–{} ms",
        range.start().as_millis(),
        range.end().as_millis()
    )
}

// ---------------------------------------------------------------------------------
// A counting relay: sees every Modbus TCP request between a driver and a device
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Frame {
    function: u8,
    address: u16,
    quantity: u16,
}

struct Wiretap {
    addr: SocketAddr,
    frames: Arc<Mutex<Vec<Frame>>>,
    task: JoinHandle<()>,
}

impl Wiretap {
    async fn start(upstream: SocketAddr) -> Wiretap {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let frames = Arc::new(Mutex::new(Vec::new()));
        let log = frames.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = relay(client, upstream, log).await;
                });
            }
        });
        Wiretap { addr, frames, task }
    }

    /// The requests seen since the last call.
    fn take(&self) -> Vec<Frame> {
        std::mem::take(&mut *self.frames.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Wiretap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards one connection, logging each request (MBAP frame) before passing it on.
async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    log: Arc<Mutex<Vec<Frame>>>,
) -> std::io::Result<()> {
    let device = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    device.set_nodelay(true)?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_device, mut to_device) = device.into_split();
    let requests = async move {
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = from_client.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..read]);
            // MBAP header: transaction (2), protocol (2), length (2), unit (1); length
            // counts the unit and the PDU.
            while pending.len() >= 7 {
                let total = 6 + usize::from(u16::from_be_bytes([pending[4], pending[5]]));
                if pending.len() < total {
                    break;
                }
                if total >= 8 {
                    let pdu = &pending[7..total];
                    let word = |at: usize| {
                        pdu.get(at..at + 2)
                            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
                    };
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(Frame {
                        function: pdu[0],
                        address: word(1),
                        quantity: word(3),
                    });
                }
                to_device.write_all(&pending[..total]).await?;
                pending.drain(..total);
            }
        }
        to_device.shutdown().await
    };
    let answers = async move {
        tokio::io::copy(&mut from_device, &mut to_client).await?;
        to_client.shutdown().await
    };
    let (requests, answers) = tokio::join!(requests, answers);
    requests.and(answers)
}

/// What a request is, on a PX-2 (the interface manual's register map).
fn px2_request(frame: &Frame) -> &'static str {
    match (frame.function, frame.address) {
        (3, 0) => "identity + digest read (FC03 @0, 7 regs)",
        (3, 10) => "mailbox sequence read (FC03 @10, 11 regs)",
        (16, 10) => "mailbox command write (FC16 @10, 10 regs)",
        (3, 20) => "command result read (FC03 @20, 3 regs)",
        (3, address) if address >= 1000 => "slot table read (FC03 @1000+, ≤125 regs)",
        (4, _) => "event log read (FC04)",
        (3, 30) | (16, 30) => "clock read / write",
        _ => "other",
    }
}

/// What a request is, on a KL-8.
fn kl8_request(frame: &Frame) -> &'static str {
    match (frame.function, frame.address) {
        (3, 0) => "identity + change counter read (FC03 @0, 4 regs)",
        (3, 2) if frame.quantity == 1 => "capacity read (FC03 @2)",
        (3, 3) if frame.quantity == 1 => "change counter read (FC03 @3)",
        (3, address) if address >= 100 => "record table read (FC03 @100+, ≤100 regs)",
        (16, address) if address >= 100 => "record write (FC16, 4 regs)",
        (6, _) => "record clear (FC06 state register)",
        (5, 0) => "save-to-flash coil write (FC05 @0)",
        (1, 0) => "save-done poll (FC01 @0)",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------------
// 0. Baselines
// ---------------------------------------------------------------------------------

async fn baselines(service: &Service, api: &Api) {
    section("0. Baselines (same run, same machine)");
    let px2_profile = profile("px2-fw2");
    let (_device, server) = px2(FULL_TABLE, None, 1).await;
    let endpoint = Endpoint::Tcp(server.local_addr().to_string());

    // One Modbus read round trip: identify is one FC03 of 7 registers on a PX-2.
    let mut driver = connect_lock_controller(&px2_profile, &endpoint, 1)
        .await
        .expect("connect");
    for _ in 0..50 {
        driver.identify().await.expect("identify");
    }
    let before = driver.transactions();
    let mut samples = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let start = Instant::now();
        driver.identify().await.expect("identify");
        samples.push(start.elapsed());
    }
    let per_call = (driver.transactions() - before) as f64 / 1000.0;
    print_summary(
        &format!("Modbus read round trip (identify, {per_call:.0} txn)"),
        &samples,
        us,
    );

    // A visit opens a new connection every time.
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let start = Instant::now();
        let mut fresh = connect_lock_controller(&px2_profile, &endpoint, 1)
            .await
            .expect("connect");
        fresh.identify().await.expect("identify");
        samples.push(start.elapsed());
    }
    print_summary("TCP connect + identify", &samples, us);

    // One mailbox command, the cost of one change on a PX-2: DELETE_UID of an absent
    // UID (answers NOT_FOUND, changes nothing), with the simulator's default execution
    // time and with a device that executes at once.
    let absent = Credential::Uid(vec![0x0F, 0xFF, 0xFF, 0xFF]);
    let default_exec = Px2Config::default().exec_time;
    for (label, exec) in [
        (
            format!("PX-2 mailbox command (exec {})", exec_text(&default_exec)),
            None,
        ),
        (
            "PX-2 mailbox command (exec 0–1 ms)".to_string(),
            Some(Duration::ZERO..=Duration::from_millis(1)),
        ),
    ] {
        let (_device, server) = px2(FULL_TABLE, exec, 2).await;
        let mut driver = connect_lock_controller(
            &px2_profile,
            &Endpoint::Tcp(server.local_addr().to_string()),
            1,
        )
        .await
        .expect("connect");
        driver.identify().await.expect("identify");
        driver.remove(&absent).await.expect("first command");
        let before = driver.transactions();
        let mut samples = Vec::with_capacity(100);
        for _ in 0..100 {
            let start = Instant::now();
            driver.remove(&absent).await.expect("command");
            samples.push(start.elapsed());
        }
        let per = (driver.transactions() - before) as f64 / 100.0;
        print_summary(&format!("{label}, {per:.2} txn"), &samples, ms);
        server.stop().await;
    }
    server.stop().await;

    // HTTP and database costs.
    let rid = api.residence("Banc d'essai").await;
    let (_, _, profile_id) = api
        .controller(
            rid,
            "Centrale témoin",
            "PX-2",
            "127.0.0.1:1502".parse().expect("address"),
            1,
        )
        .await;
    let key = api.badge(rid, "04AAAA01", profile_id).await;
    let http = reqwest::Client::new();
    let health = format!("{}/health", service.base);
    let mut samples = Vec::with_capacity(500);
    for round in 0..550 {
        let start = Instant::now();
        http.get(&health)
            .send()
            .await
            .expect("health")
            .bytes()
            .await
            .expect("body");
        if round >= 50 {
            samples.push(start.elapsed());
        }
    }
    print_summary("HTTP GET /health (no auth, no database)", &samples, us);
    let path = format!("/api/v1/residences/{rid}/keys/{key}/sync");
    let mut samples = Vec::with_capacity(500);
    for round in 0..550 {
        let start = Instant::now();
        let (status, _) = api.send(Method::GET, &path, None).await;
        if status != 200 {
            panic!("GET {path}: {status}");
        }
        if round >= 50 {
            samples.push(start.elapsed());
        }
    }
    print_summary("HTTP GET /keys/{id}/sync (bearer + database)", &samples, us);
    let mut samples = Vec::with_capacity(1000);
    for round in 0..1100 {
        let start = Instant::now();
        let mut tx = service.store.read().await.expect("read");
        tx.key_sync_of_key(rid, key).await.expect("key_sync rows");
        drop(tx);
        if round >= 100 {
            samples.push(start.elapsed());
        }
    }
    print_summary(
        "Store read of a key's key_sync rows (the poll)",
        &samples,
        us,
    );
}

// ---------------------------------------------------------------------------------
// 1. Lost badge to confirmation on 50 controllers
// ---------------------------------------------------------------------------------

struct LostRun {
    /// POST declare-lost sent → every key_sync row of the key seen confirmed.
    total: Duration,
    /// POST declare-lost sent → its answer received.
    api: Duration,
    /// POST sent → earliest / latest `confirmed_at` the visits wrote.
    first: Duration,
    last: Duration,
}

async fn lost_badge(service: &mut Service, api: &Api) {
    section(&format!(
        "1. Lost badge → confirmed on all {CONTROLLERS} PX-2 controllers (HTTP API + engine + Modbus TCP on loopback)"
    ));
    let rid = api.residence("Résidence des 50 centrales").await;
    let mut servers = Vec::new();
    let mut devices = Vec::new();
    let mut controllers = Vec::new();
    let mut locks = Vec::new();
    for index in 0..CONTROLLERS {
        let (device, server) = px2(FULL_TABLE, None, 100 + index as u64).await;
        let at = |rest: &str| format!("/api/v1/residences/{rid}{rest}");
        let controller = api
            .create(
                &at("/controllers"),
                json!({ "name": format!("Centrale {:02}", index + 1), "model": "PX-2",
                        "transport": "modbus_tcp", "address": server.local_addr().to_string(),
                        "modbus_unit": 1 }),
            )
            .await;
        let lock = api
            .create(
                &at("/locks"),
                json!({ "name": format!("Hall {:02}", index + 1), "kind": "door",
                        "controller_id": controller, "door_number": 1 }),
            )
            .await;
        servers.push(server);
        devices.push(device);
        controllers.push(controller);
        locks.push(lock);
    }
    let profile = api
        .create(
            &format!("/api/v1/residences/{rid}/profiles"),
            json!({ "name": "Tous les halls", "lock_ids": locks }),
        )
        .await;
    let start = Instant::now();
    let mut keys = Vec::with_capacity(BADGES);
    for index in 0..BADGES {
        keys.push(api.badge(rid, &format!("04B1{index:04X}"), profile).await);
    }
    let created = start.elapsed();

    // Program them once, with the default engine settings.
    service.start_engine(engine_config(CONCURRENCIES[0]), None);
    let start = Instant::now();
    wait_until_all_confirmed(&service.store, &controllers).await;
    let programmed = start.elapsed();
    service.stop_engine().await;
    let held: Vec<u16> = devices.iter().map(|d| d.snapshot().used).collect();
    if held.iter().any(|&used| usize::from(used) != BADGES) {
        panic!("the controllers do not all hold {BADGES} badges: {held:?}");
    }

    let runs = runs_per_bound();
    let left = BADGES - (runs + WARMUP_RUNS) * CONCURRENCIES.len() - SEQUENTIAL_RUNS;
    let defaults = SyncConfig::default();
    println!(
        "  setup: {CONTROLLERS} simulated PX-2 (capacity {FULL_TABLE}, command execution {}), one lock each,",
        exec_text(&Px2Config::default().exec_time)
    );
    println!(
        "         one profile with the {CONTROLLERS} locks, {BADGES} badges with it (created through the API in {:.1} s)",
        created.as_secs_f64()
    );
    println!(
        "         first programming of {} entries ({BADGES} × {CONTROLLERS}) by the engine, concurrency {}: {:.1} s",
        BADGES * CONTROLLERS,
        CONCURRENCIES[0],
        programmed.as_secs_f64()
    );
    println!(
        "  engine: SyncConfig::default() (poll {} ms, routine {} s, audit {} s, visit timeout {} s), concurrency {:?}",
        defaults.poll_ms,
        defaults.routine_seconds,
        defaults.audit_seconds,
        defaults.visit_timeout_seconds,
        CONCURRENCIES
    );
    println!(
        "  method: per run, start the engine, POST /keys/{{id}}/declare-lost (bearer), poll the key's key_sync rows"
    );
    println!(
        "          in the database every {} ms until the {CONTROLLERS} rows are confirmed with doors 0, stop the engine.",
        POLL.as_millis()
    );
    println!(
        "          {runs} runs per bound, alternating between the bounds so both see the same table sizes"
    );
    println!(
        "          ({BADGES} → {left} badges held); {WARMUP_RUNS} warm-up runs per bound are not counted."
    );

    let mut results: BTreeMap<usize, Vec<LostRun>> = BTreeMap::new();
    let mut next_key = keys.iter();
    for round in 0..WARMUP_RUNS + runs {
        for concurrency in CONCURRENCIES {
            let key = *next_key.next().expect("enough badges");
            service.start_engine(engine_config(concurrency), None);
            // Let the engine finish its first look for work and wait for more.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let run = lose_one(&service.store, api, rid, key, CONTROLLERS).await;
            service.stop_engine().await;
            if round >= WARMUP_RUNS {
                results.entry(concurrency).or_default().push(run);
            }
        }
    }
    for (concurrency, runs) in &results {
        println!();
        println!("  engine concurrency {concurrency}:");
        let total: Vec<Duration> = runs.iter().map(|r| r.total).collect();
        print_summary("lost → confirmed on all 50 (poll seen)", &total, ms);
        let last: Vec<Duration> = runs.iter().map(|r| r.last).collect();
        print_summary("lost → last confirmed_at written", &last, ms);
        let first: Vec<Duration> = runs.iter().map(|r| r.first).collect();
        print_summary("lost → first confirmed_at written", &first, ms);
        let api_time: Vec<Duration> = runs.iter().map(|r| r.api).collect();
        print_summary("declare-lost HTTP answer", &api_time, ms);
        let total = summarize(&total);
        println!(
            "  {:<44} mean total {}; median total / {CONTROLLERS} = {} per controller",
            "",
            ms(total.mean),
            ms(total.median / CONTROLLERS as u32)
        );
    }

    // Reference: the same work without the engine. A badge is declared lost with the
    // engine stopped, then visit() is called on each controller in turn.
    let mut single = Vec::new();
    let mut all = Vec::new();
    for _ in 0..SEQUENTIAL_RUNS {
        let key = *next_key.next().expect("enough badges");
        api.declare_lost(rid, key).await;
        let start = Instant::now();
        for &controller in &controllers {
            let one = Instant::now();
            visit(&service.store, None, controller, PENDING_ONLY)
                .await
                .unwrap_or_else(|err| panic!("visit of controller {controller}: {err}"));
            single.push(one.elapsed());
        }
        all.push(start.elapsed());
    }
    wait_until_all_confirmed(&service.store, &controllers).await;
    println!();
    println!(
        "  reference without the engine: declare-lost, then visit() on the {CONTROLLERS} controllers one after another"
    );
    print_summary("one controller's visit (1 removal)", &single, ms);
    print_summary(&format!("all {CONTROLLERS} visits in sequence"), &all, ms);

    let remaining: Vec<u16> = devices.iter().map(|d| d.snapshot().used).collect();
    if remaining.iter().any(|&used| usize::from(used) != left) {
        println!("  WARNING: controllers hold {remaining:?} badges, {left} expected");
    }
    for server in servers {
        server.stop().await;
    }
}

/// Waits until no key_sync row of these controllers is pending; panics on a failed row.
async fn wait_until_all_confirmed(store: &Store, controllers: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let mut pending = 0;
        let mut tx = store.read().await.expect("read");
        for &controller in controllers {
            for row in tx
                .key_sync_of_controller(controller)
                .await
                .expect("key_sync rows")
            {
                match row.state {
                    SyncState::Pending => pending += 1,
                    SyncState::Failed => panic!("row failed: {row:?}"),
                    SyncState::Confirmed => {}
                }
            }
        }
        drop(tx);
        if pending == 0 {
            return;
        }
        if Instant::now() > deadline {
            panic!("{pending} key_sync rows still pending after 900 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lose_one(store: &Store, api: &Api, rid: i64, key: i64, controllers: usize) -> LostRun {
    let wall = chrono::Utc::now();
    let start = Instant::now();
    api.declare_lost(rid, key).await;
    let api_time = start.elapsed();
    loop {
        let rows = {
            let mut tx = store.read().await.expect("read");
            tx.key_sync_of_key(rid, key).await.expect("key_sync rows")
        };
        let done = rows.len() == controllers
            && rows
                .iter()
                .all(|row| row.doors == 0 && row.state == SyncState::Confirmed);
        if done {
            let total = start.elapsed();
            let offsets: Vec<Duration> = rows
                .iter()
                .filter_map(|row| row.confirmed_at)
                .map(|at| (at - wall).to_std().unwrap_or_default())
                .collect();
            return LostRun {
                total,
                api: api_time,
                first: offsets.iter().copied().min().unwrap_or_default(),
                last: offsets.iter().copied().max().unwrap_or_default(),
            };
        }
        if let Some(row) = rows.iter().find(|row| row.state == SyncState::Failed) {
            panic!("removal failed: {row:?}");
        }
        if start.elapsed() > Duration::from_secs(120) {
            panic!("key {key} not confirmed on all controllers after 120 s: {rows:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------
// 2. Modbus transactions per change
// ---------------------------------------------------------------------------------

struct Measured {
    report: VisitReport,
    frames: Vec<Frame>,
    elapsed: Duration,
}

async fn measured_visit(store: &Store, controller: i64, tap: &Wiretap) -> Measured {
    tap.take();
    let start = Instant::now();
    let report = visit(store, None, controller, PENDING_ONLY)
        .await
        .unwrap_or_else(|err| panic!("visit of controller {controller}: {err}"));
    let elapsed = start.elapsed();
    // Requests are logged before they are forwarded: all are in once the visit is over.
    Measured {
        report,
        frames: tap.take(),
        elapsed,
    }
}

async fn pending_rows(store: &Store, controller: i64) -> usize {
    let mut tx = store.read().await.expect("read");
    tx.key_sync_of_controller(controller)
        .await
        .expect("key_sync rows")
        .iter()
        .filter(|row| row.state != SyncState::Confirmed)
        .count()
}

struct Device {
    label: String,
    model: &'static str,
    unit: u8,
    upstream: SocketAddr,
    classify: fn(&Frame) -> &'static str,
    /// The protocol's minimum for `n` changes, by kind of request.
    minimum: fn(usize) -> Vec<(&'static str, usize)>,
    /// Keep the simulator running.
    _server: TcpServer,
}

fn px2_minimum(n: usize) -> Vec<(&'static str, usize)> {
    vec![
        ("mailbox command write (FC16 @10, 10 regs)", n),
        ("command result read (FC03 @20, 3 regs)", n),
        ("identity + digest read (FC03 @0, 7 regs)", 1),
    ]
}

fn kl8_minimum_add(n: usize) -> Vec<(&'static str, usize)> {
    vec![
        ("record write (FC16, 4 regs)", n),
        ("save-to-flash coil write (FC05 @0)", 1),
        ("save-done poll (FC01 @0)", 1),
        ("identity + change counter read (FC03 @0, 4 regs)", 1),
    ]
}

fn kl8_minimum_remove(n: usize) -> Vec<(&'static str, usize)> {
    let mut minimum = kl8_minimum_add(n);
    minimum[0] = ("record clear (FC06 state register)", n);
    minimum
}

async fn transactions_per_change(service: &Service, api: &Api) {
    section("2. Modbus transactions per change vs the protocol minimum (visit() with N pending changes)");
    println!("  Each visit is `visit(store, id, VisitKind {{ audit: false, routine: false }})` on a fresh");
    println!(
        "  connection, as the engine does; requests are counted by a relay between driver and"
    );
    println!("  simulator (cross-checked with VisitReport::transactions). {VISIT_REPEATS} visits per row; mean per visit.");
    println!("  Minimum: PX-2 = one mailbox write + one result read per change + one digest read;");
    println!("           KL-8 = one record write per change + save coil write + one save-done poll + one counter read.");
    println!("  Visit times include the relay hop (about one extra loopback hop per transaction).");
    println!("  Each controller holds {RESIDENT_BADGES} other badges throughout (programmed at first contact).");

    let rid = api.residence("Banc d'essai des visites").await;
    let default_exec = Px2Config::default().exec_time;
    let fast_exec = Duration::ZERO..=Duration::from_millis(1);
    let kl8_defaults = Kl8Config::default();
    let (_px2_slow, slow_server) = px2(FULL_TABLE, None, 7).await;
    let (_px2_fast, fast_server) = px2(FULL_TABLE, Some(fast_exec.clone()), 8).await;
    let (_kl8, kl8_server) = kl8(9).await;
    let devices = [
        Device {
            label: format!(
                "PX-2 (capacity {FULL_TABLE}, command execution {} = simulator default)",
                exec_text(&default_exec)
            ),
            model: "PX-2",
            unit: 1,
            upstream: slow_server.local_addr(),
            classify: px2_request,
            minimum: px2_minimum,
            _server: slow_server,
        },
        Device {
            label: format!(
                "PX-2 (capacity {FULL_TABLE}, command execution {}: a fast device)",
                exec_text(&fast_exec)
            ),
            model: "PX-2",
            unit: 1,
            upstream: fast_server.local_addr(),
            classify: px2_request,
            minimum: px2_minimum,
            _server: fast_server,
        },
        Device {
            label: format!(
                "KL-8 (capacity {}, save to flash {} ms = simulator default)",
                kl8_defaults.capacity,
                kl8_defaults.save_time.as_millis()
            ),
            model: "KL-8",
            unit: kl8_defaults.unit_id,
            upstream: kl8_server.local_addr(),
            classify: kl8_request,
            minimum: kl8_minimum_add,
            _server: kl8_server,
        },
    ];
    let mut serial = 0u32;
    for (index, device) in devices.iter().enumerate() {
        let tap = Wiretap::start(device.upstream).await;
        let (controller, _, profile) = api
            .controller(
                rid,
                &format!("Centrale {}", index + 1),
                device.model,
                tap.addr,
                device.unit,
            )
            .await;
        // The controller always holds a few badges, as a controller in service does:
        // the first visit reads its table and programs them.
        for _ in 0..RESIDENT_BADGES {
            serial += 1;
            api.badge(rid, &format!("06{serial:06X}"), profile).await;
        }
        let first = measured_visit(&service.store, controller, &tap).await;
        check_done(&service.store, controller, RESIDENT_BADGES, "additions").await;
        println!();
        println!("  {}", device.label);
        println!(
            "    first contact (table read + {RESIDENT_BADGES} additions, kept throughout): {} transactions, {}",
            first.report.transactions,
            ms(first.elapsed)
        );
        for n in [1usize, 10] {
            let mut adds = Vec::new();
            let mut removals = Vec::new();
            for _ in 0..VISIT_REPEATS {
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    serial += 1;
                    keys.push(api.badge(rid, &format!("06{serial:06X}"), profile).await);
                }
                adds.push(measured_visit(&service.store, controller, &tap).await);
                check_done(&service.store, controller, n, "additions").await;
                for &key in &keys {
                    api.declare_lost(rid, key).await;
                }
                removals.push(measured_visit(&service.store, controller, &tap).await);
                check_done(&service.store, controller, n, "removals").await;
            }
            let remove_minimum = if device.model == "KL-8" {
                kl8_minimum_remove
            } else {
                device.minimum
            };
            print_visits(
                &format!("{n} addition{}", if n > 1 { "s" } else { "" }),
                n,
                &adds,
                device.classify,
                &(device.minimum)(n),
            );
            print_visits(
                &format!("{n} removal{}", if n > 1 { "s" } else { "" }),
                n,
                &removals,
                device.classify,
                &remove_minimum(n),
            );
        }
    }
}

async fn check_done(store: &Store, controller: i64, n: usize, what: &str) {
    let left = pending_rows(store, controller).await;
    if left > 0 {
        println!("    WARNING: {left} rows not confirmed after a visit with {n} {what}");
    }
}

fn print_visits(
    title: &str,
    n: usize,
    visits: &[Measured],
    classify: fn(&Frame) -> &'static str,
    minimum: &[(&'static str, usize)],
) {
    let count = visits.len() as f64;
    let totals: Vec<u64> = visits.iter().map(|v| v.report.transactions).collect();
    let wire: Vec<usize> = visits.iter().map(|v| v.frames.len()).collect();
    let mean = totals.iter().sum::<u64>() as f64 / count;
    let least: usize = minimum.iter().map(|(_, count)| count).sum();
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for visit in visits {
        for frame in &visit.frames {
            *kinds.entry(classify(frame)).or_default() += 1;
        }
    }
    for (kind, _) in minimum {
        kinds.entry(kind).or_default();
    }
    let agree = totals
        .iter()
        .zip(&wire)
        .all(|(counted, seen)| *counted == *seen as u64);
    let times: Vec<Duration> = visits.iter().map(|v| v.elapsed).collect();
    let time = summarize(&times);
    println!(
        "    {title}: {mean:.1} transactions per visit (min {}, max {}), {:.2} per change; minimum {least} ({:.2} per change) → {:.2}× the minimum",
        totals.iter().min().copied().unwrap_or_default(),
        totals.iter().max().copied().unwrap_or_default(),
        mean / n as f64,
        least as f64 / n as f64,
        mean / least as f64,
    );
    println!(
        "      visit time median {} ({} per change), driver count {} the wire count",
        ms(time.median),
        ms(time.median / n as u32),
        if agree { "equals" } else { "DIFFERS FROM" }
    );
    println!(
        "      {:<52} {:>9} {:>9}",
        "request (mean per visit)", "actual", "minimum"
    );
    for (kind, seen) in &kinds {
        let least = minimum
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, c)| *c);
        println!(
            "      {kind:<52} {:>9.1} {:>9}",
            *seen as f64 / count,
            least
        );
    }
}

// ---------------------------------------------------------------------------------
// 3. Full audit of a 2000-slot PX-2
// ---------------------------------------------------------------------------------

fn audit_uid(index: u16) -> [u8; 4] {
    let [high, low] = index.to_be_bytes();
    [0x05, 0xC0, high, low]
}

async fn full_audit(service: &Service, api: &Api) {
    section(&format!(
        "3. Full audit of a {FULL_TABLE}-slot PX-2 holding {FULL_TABLE} badges"
    ));
    let (device, server) = px2(FULL_TABLE, None, 11).await;
    device.with(|px2, _| {
        for index in 0..FULL_TABLE {
            let uid = Uid::new(&audit_uid(index)).expect("uid");
            px2.insert(gardien_simulators::Entry { uid, door_mask: 1 })
                .expect("seed a slot");
        }
    });
    let used = device.snapshot().used;
    let slot_registers = u32::from(FULL_TABLE) * 8;
    let minimum_reads = slot_registers.div_ceil(125);
    println!(
        "  device: {used} of {FULL_TABLE} slots active; table = {slot_registers} registers = {minimum_reads} reads of 125 at least"
    );

    // Driver level.
    let endpoint = Endpoint::Tcp(server.local_addr().to_string());
    let mut driver = connect_lock_controller(&profile("px2-fw2"), &endpoint, 1)
        .await
        .expect("connect");
    driver.identify().await.expect("identify");
    for _ in 0..2 {
        driver.read_table().await.expect("read_table");
    }
    let mut samples = Vec::with_capacity(TABLE_READS);
    let mut transactions = Vec::with_capacity(TABLE_READS);
    for _ in 0..TABLE_READS {
        let before = driver.transactions();
        let start = Instant::now();
        let table = driver.read_table().await.expect("read_table");
        samples.push(start.elapsed());
        transactions.push(driver.transactions() - before);
        if table.len() != usize::from(FULL_TABLE) {
            panic!("read {} entries, {FULL_TABLE} expected", table.len());
        }
    }
    let per_read = summarize(&samples).median / transactions[0].max(1) as u32;
    println!(
        "  read_table (driver, one connection): {} transactions (minimum {minimum_reads}), {} per read",
        transactions[0],
        us(per_read)
    );
    print_summary("read_table time", &samples, ms);
    let read_median = summarize(&samples).median;
    drop(driver);

    // A whole audit visit: the database knows the same 2000 badges on this controller.
    let rid = api.residence("Résidence de l'audit").await;
    let (controller, _, profile_id) = api
        .controller(rid, "Centrale pleine", "PX-2", server.local_addr(), 1)
        .await;
    let start = Instant::now();
    let mut tx = service.store.write().await.expect("write");
    for index in 0..FULL_TABLE {
        let identifier = hex(&audit_uid(index));
        let input: KeyInput = serde_json::from_value(json!({
            "kind": "vigik_badge", "identifier": identifier, "profile_ids": [profile_id]
        }))
        .expect("key input");
        let input = input.validated().expect("valid key");
        tx.insert_key(&Actor::system("bench"), rid, &input)
            .await
            .expect("insert key");
    }
    tx.commit().await.expect("commit");
    println!(
        "  database: {FULL_TABLE} badges for this controller inserted with the Store in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let first = visit(&service.store, None, controller, PENDING_ONLY)
        .await
        .expect("first visit");
    println!(
        "  first visit (unknown controller: table read, {FULL_TABLE} rows found already there and confirmed): {} transactions, {}",
        first.transactions,
        ms(start.elapsed())
    );
    let pending = pending_rows(&service.store, controller).await;
    if pending > 0 {
        println!("  WARNING: {pending} rows not confirmed after the first visit");
    }
    let kind = VisitKind {
        audit: true,
        routine: false,
    };
    let mut samples = Vec::with_capacity(AUDIT_VISITS);
    let mut reports = Vec::with_capacity(AUDIT_VISITS);
    for _ in 0..AUDIT_VISITS {
        let start = Instant::now();
        let report = visit(&service.store, None, controller, kind)
            .await
            .expect("audit visit");
        samples.push(start.elapsed());
        reports.push(report);
    }
    let report = &reports[0];
    let same = reports
        .iter()
        .all(|r| r.transactions == report.transactions && r.table_read);
    println!(
        "  audit visit (VisitKind {{ audit: true, routine: false }}): {} transactions = {} table reads + {} others (identify before, digest check after){}",
        report.transactions,
        transactions[0],
        report.transactions.saturating_sub(transactions[0]),
        if same { "" } else { " — varies between visits" }
    );
    print_summary("audit visit time", &samples, ms);
    println!(
        "  {:<44} the table read alone (driver median) is {:.0}% of the audit visit median",
        "",
        100.0 * read_median.as_secs_f64() / summarize(&samples).median.as_secs_f64()
    );
    server.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
