//! End to end over real sockets, with things going wrong: a controller offline or dead,
//! the service crashing mid-sync, controllers losing their memory, lossy links, RTU
//! over a pseudo-terminal, keys a controller cannot hold. Whatever happens, what the
//! database says a lock accepts ends up true on the controllers, and nothing else does.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{eventually, eventually_async, Client, Fixture, TestServer};
use gardien::sync::SyncConfig;
use gardien_simulators::{Faults, Kl8Config, Kl8Device, Px2Config, Px2Device, Record};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Door masks of the fixture's profiles: A = hall A + gate, B = hall B + gate.
const MASK_A: u16 = 0b101;
const MASK_B: u16 = 0b110;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// Engine settings for the crash tests. A crashed instance's lease on the controller it
/// was visiting lasts twice the visit timeout; a short timeout keeps the wait short.
fn crash_config() -> SyncConfig {
    SyncConfig {
        visit_timeout_seconds: 3,
        ..common::test_sync_config()
    }
}

/// The engine on a runtime of its own, so that a crash drops everything it was doing:
/// the loop, the visits it spawned, their connections. (Aborting the engine task alone
/// would leave the spawned visits running to completion.)
struct CrashableEngine {
    runtime: Option<tokio::runtime::Runtime>,
}

impl CrashableEngine {
    fn start(store: gardien::storage::Store, config: SyncConfig) -> CrashableEngine {
        Self::start_named(store, config, "gardien-engine")
    }

    /// With its threads named `threads` (at most 15 characters), to measure them.
    fn start_named(
        store: gardien::storage::Store,
        config: SyncConfig,
        threads: &str,
    ) -> CrashableEngine {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(threads)
            .enable_all()
            .build()
            .expect("engine runtime");
        runtime.spawn(gardien::sync::Engine::new(store, config).run(std::future::pending()));
        CrashableEngine {
            runtime: Some(runtime),
        }
    }

    /// Stops dead: no visit finishes, no lease is released, nothing more reaches the
    /// database (a request already on the wire still reaches the device).
    fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for CrashableEngine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A simulated controller under test, whichever the model.
#[derive(Clone)]
enum Sim {
    Px2(Px2Device),
    Kl8(Kl8Device),
}

impl Sim {
    fn faults(&self) -> &Faults {
        match self {
            Sim::Px2(d) => d.faults(),
            Sim::Kl8(d) => d.faults(),
        }
    }

    fn model(&self) -> &'static str {
        match self {
            Sim::Px2(_) => "PX-2",
            Sim::Kl8(_) => "KL-8",
        }
    }

    fn unit(&self) -> i64 {
        match self {
            Sim::Px2(_) => 1,
            Sim::Kl8(_) => 17,
        }
    }

    /// What the device holds (in RAM for a KL-8), as `uid:HEX` / `card:N` and door
    /// mask, sorted; a credential held twice appears twice.
    fn table(&self) -> Vec<(String, u16)> {
        let mut table: Vec<(String, u16)> = match self {
            Sim::Px2(d) => common::px2_table(d)
                .into_iter()
                .map(|(uid, mask)| (format!("uid:{uid}"), mask))
                .collect(),
            Sim::Kl8(d) => common::kl8_table(d)
                .into_iter()
                .map(|(card, mask)| (format!("card:{card}"), mask))
                .collect(),
        };
        table.sort();
        table
    }

    /// How the device stores a key: a PX-2 holds badge UIDs, a KL-8 card numbers (a
    /// 4-byte badge's UID read little-endian, a remote's serial).
    fn credential(&self, kind: &str, identifier: &str) -> String {
        match (self, kind) {
            (Sim::Px2(_), "vigik_badge") => format!("uid:{}", identifier.to_uppercase()),
            (Sim::Px2(_), "remote") => {
                let serial: u32 = identifier.parse().expect("serial");
                format!("uid:{}", hex::encode_upper(serial.to_be_bytes()))
            }
            (Sim::Kl8(_), "vigik_badge") => format!("card:{}", card(identifier)),
            (Sim::Kl8(_), "remote") => format!("card:{identifier}"),
            _ => panic!("no credential for a {kind}"),
        }
    }

    /// The `n`-th test key for this model: PX-2 badges of 4 and 7 bytes; KL-8 4-byte
    /// badges and remotes.
    fn key(&self, n: u32) -> (&'static str, String) {
        match (self, n % 2) {
            (Sim::Px2(_), 0) => ("vigik_badge", format!("04{:06X}", 0x10_0000 + n)),
            (Sim::Px2(_), _) => ("vigik_badge", format!("04AB{:06X}CDEF", 0x20_0000 + n)),
            (Sim::Kl8(_), 0) => ("vigik_badge", format!("08{:06X}", 0x30_0000 + n)),
            (Sim::Kl8(_), _) => ("remote", (7_000_000 + n).to_string()),
        }
    }
}

/// Like [`eventually`], but answers the last value seen instead of panicking, for
/// checks whose failure should not stop the rest of the scenario.
async fn within<T, F: std::future::Future<Output = T>>(
    seconds: u64,
    mut probe: impl FnMut() -> F,
    condition: impl Fn(&T) -> bool,
) -> Result<T, T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let value = probe().await;
        if condition(&value) {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(value);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU time (user + system, in clock ticks of 1/100 s) used so far by this process's
/// threads whose name starts with `prefix`.
fn thread_ticks(prefix: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = entry.expect("task").path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += tick(11) + tick(12);
    }
    total
}

/// The card number a KL-8 stores for a 4-byte badge.
fn card(uid: &str) -> u32 {
    let bytes: [u8; 4] = hex::decode(uid)
        .expect("hex UID")
        .try_into()
        .expect("4-byte UID");
    u32::from_le_bytes(bytes)
}

fn expected_table(entries: &BTreeMap<String, u16>) -> Vec<(String, u16)> {
    entries
        .iter()
        .filter(|(_, mask)| **mask != 0)
        .map(|(credential, mask)| (credential.clone(), *mask))
        .collect()
}

/// A PX-2 on a loopback port whose commands take `exec_ms` to run.
async fn slow_px2(exec_ms: (u64, u64), seed: u64) -> (Px2Device, gardien_simulators::TcpServer) {
    let config = Px2Config {
        capacity: 100,
        doors: 4,
        exec_time: Duration::from_millis(exec_ms.0)..=Duration::from_millis(exec_ms.1),
        seed: Some(seed),
        ..Default::default()
    };
    let device = Px2Device::new(config, Faults::seeded(seed));
    let server = gardien_simulators::serve_tcp(device.clone(), "127.0.0.1:0")
        .await
        .expect("serve PX-2");
    (device, server)
}

async fn kl8_with(config: Kl8Config, seed: u64) -> (Kl8Device, gardien_simulators::TcpServer) {
    let device = Kl8Device::new(config, Faults::seeded(seed));
    let server = gardien_simulators::serve_tcp(device.clone(), "127.0.0.1:0")
        .await
        .expect("serve KL-8");
    (device, server)
}

/// Points the fixture's controller record at a device.
async fn attach(admin: &Client, f: &Fixture, model: &str, address: &str, unit: i64) {
    let moved = admin
        .put(
            &f.path(&format!("/controllers/{}", f.controller)),
            json!({ "name": "Centrale", "model": model, "transport": "modbus_tcp",
                    "address": address, "modbus_unit": unit }),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
}

async fn new_key(
    admin: &Client,
    f: &Fixture,
    kind: &str,
    identifier: &str,
    profiles: &[i64],
) -> i64 {
    admin
        .create(
            &f.path("/keys"),
            json!({ "kind": kind, "identifier": identifier, "profile_ids": profiles }),
        )
        .await
}

async fn badge(admin: &Client, f: &Fixture, uid: &str, profiles: &[i64]) -> i64 {
    new_key(admin, f, "vigik_badge", uid, profiles).await
}

/// A lifecycle action (`declare-lost`, `deactivate`, `reactivate`…) that must succeed.
async fn act(admin: &Client, f: &Fixture, key: i64, action: &str) {
    let response = admin
        .post(
            &f.path(&format!("/keys/{key}/{action}")),
            json!({ "reason": "test" }),
        )
        .await;
    assert_eq!(
        response.status, 200,
        "{action} of key {key}: {}",
        response.body
    );
}

async fn set_profiles(admin: &Client, f: &Fixture, key: i64, profiles: &[i64]) -> common::Response {
    admin
        .put(
            &f.path(&format!("/keys/{key}")),
            json!({ "profile_ids": profiles }),
        )
        .await
}

async fn status(admin: &Client, f: &Fixture, controller: i64) -> Value {
    let response = admin
        .get(&f.path(&format!("/controllers/{controller}/status")))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

async fn audit(admin: &Client, f: &Fixture, controller: i64) {
    let response = admin
        .post(
            &f.path(&format!("/controllers/{controller}/audit")),
            json!({}),
        )
        .await;
    assert_eq!(response.status, 202, "{}", response.body);
}

/// Waits until the controller has nothing pending or failed and its last visit went well.
async fn settled(admin: &Client, f: &Fixture, controller: i64, seconds: u64) -> Value {
    let path = f.path(&format!("/controllers/{controller}/status"));
    eventually_async(
        seconds,
        "the controller settled (nothing pending or failed, last visit fine)",
        || admin.get(&path),
        |r| {
            r.body["pending"] == 0
                && r.body["failed"] == 0
                && r.body["last_error"].is_null()
                && r.body["last_seen_at"].is_string()
        },
    )
    .await
    .body
}

/// The table the API says the controller must hold: for each lock, the keys it must
/// accept (GET /locks/{id}/keys), door bits gathered per key.
async fn expected_from_api(admin: &Client, f: &Fixture, sim: &Sim) -> BTreeMap<String, u16> {
    let mut table = BTreeMap::new();
    for (door, lock) in f.locks.iter().enumerate() {
        let response = admin.get(&f.path(&format!("/locks/{lock}/keys"))).await;
        assert_eq!(response.status, 200, "{}", response.body);
        for key in response.body.as_array().expect("keys") {
            let credential = sim.credential(
                key["kind"].as_str().expect("kind"),
                key["identifier"].as_str().expect("identifier"),
            );
            *table.entry(credential).or_insert(0) |= 1 << door;
        }
    }
    table
}

/// The fault settings' exception for `code`: the simulators take tokio-modbus's
/// exception type, which this crate does not depend on, so it is read back from a
/// simulator configured (through its configuration file format) to answer it.
async fn exception_fault(code: u8, probability: f64) -> Faults {
    let config: gardien_simulators::config::SimConfig = serde_json::from_value(json!({
        "device": [{ "name": "template", "kind": "px2",
                     "faults": { "exception": { "code": code, "probability": probability } } }]
    }))
    .expect("simulator configuration");
    let sim = gardien_simulators::config::start(&config)
        .await
        .expect("template simulator");
    sim.device("template").expect("template").faults().clone()
}

// ---------------------------------------------------------------------------------
// 1. Offline during the change, then back
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_change_made_while_the_controller_is_offline_waits_then_converges() {
    let (px2, px2_server) = common::px2_device(100).await;
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Hors ligne").await;
    attach(&admin, &f, "PX-2", &px2_server.local_addr().to_string(), 1).await;
    let claire = badge(&admin, &f, "04A22B91", &[f.profiles[0]]).await;
    badge(&admin, &f, "04112233445566", &[f.profiles[1]]).await;
    let both = vec![
        ("04112233445566".to_string(), MASK_B),
        ("04A22B91".to_string(), MASK_A),
    ];
    eventually(
        10,
        "both badges programmed",
        || common::px2_table(&px2),
        |t| *t == both,
    )
    .await;
    settled(&admin, &f, f.controller, 10).await;

    px2.faults().go_offline(None);
    let started = Instant::now();
    act(&admin, &f, claire, "declare-lost").await;
    // What should show while the controller is away; checked without stopping the
    // scenario, so that the convergence below is checked whatever happens here.
    let mut wrong: Vec<String> = Vec::new();
    let sync_path = f.path(&format!("/keys/{claire}/sync"));
    let report = within(
        3,
        || admin.get(&sync_path),
        |r| {
            let line = &r.body["controllers"][0];
            line["attempts"].as_i64().unwrap_or(0) >= 1
                && line["error"].as_str().is_some_and(|e| !e.is_empty())
        },
    )
    .await
    .unwrap_or_else(|report| {
        wrong.push(format!(
            "offline for 3 s, the key's sync report shows no failed attempt (attempts, error): {}",
            report.body
        ));
        report
    });
    assert_eq!(
        report.body["controllers"][0]["state"], "pending",
        "{}",
        report.body
    );
    let summary = report.body["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("retiré de 0 centrale sur 1, 1 en attente depuis "),
        "{}",
        report.body
    );
    let offline = status(&admin, &f, f.controller).await;
    if !(offline["last_error"]
        .as_str()
        .is_some_and(|e| !e.is_empty())
        && offline["last_error_at"].is_string()
        && offline["consecutive_failures"].as_i64() >= Some(1)
        && offline["next_attempt_at"].is_string())
    {
        wrong.push(format!(
            "offline, the controller status shows no failure (last_error, consecutive_failures, next_attempt_at): {offline}"
        ));
    }
    assert_eq!(offline["pending"], 1, "{offline}");
    assert_eq!(
        common::px2_table(&px2),
        both,
        "an offline device keeps what it had"
    );

    px2.faults().go_online();
    eventually(
        10,
        "the lost badge removed once the controller is back",
        || common::px2_table(&px2),
        |t| *t == both[..1],
    )
    .await;
    let report = eventually_async(
        10,
        "the removal confirmed",
        || admin.get(&sync_path),
        |r| r.body["controllers"][0]["state"] == "confirmed",
    )
    .await;
    assert_eq!(
        report.body["summary"], "retiré de 1 centrale sur 1",
        "{}",
        report.body
    );
    assert!(
        report.body["controllers"][0]["error"].is_null(),
        "{}",
        report.body
    );
    let back = settled(&admin, &f, f.controller, 10).await;
    assert_eq!(back["consecutive_failures"], 0, "{back}");
    assert_eq!(back["circuit_open"], false, "{back}");
    assert_eq!(back["used"], 1, "{back}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "offline to converged took {took:?}"
    );
    eprintln!("offline then back: converged {took:?} after the change");
    server.stop().await;
    px2_server.stop().await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A controller that cannot be reached is retried after 1 s, 2 s, 4 s…, and its status
/// says so; it is not reconnected to as fast as the engine can loop.
#[tokio::test]
async fn an_unreachable_controller_is_retried_with_backoff_not_hammered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Takes connections and closes them at once, as a device rebooting or a gateway
    // with nothing behind it would; counts them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Injoignable").await;
    // A controller of its own, so that its status starts fresh at this address.
    let controller = admin
        .create(
            &f.path("/controllers"),
            json!({ "name": "Centrale injoignable", "model": "PX-2", "transport": "modbus_tcp",
                    "address": address, "modbus_unit": 1 }),
        )
        .await;
    let lock = admin
        .create(
            &f.path("/locks"),
            json!({ "name": "Cave", "kind": "door", "controller_id": controller, "door_number": 1 }),
        )
        .await;
    let profile = admin
        .create(
            &f.path("/profiles"),
            json!({ "name": "Cave", "lock_ids": [lock] }),
        )
        .await;
    badge(&admin, &f, "04A22B91", &[profile]).await;
    let path = f.path(&format!("/controllers/{controller}/status"));
    let started = Instant::now();
    let outcome = within(
        4,
        || admin.get(&path),
        |r| r.body["consecutive_failures"].as_i64() >= Some(2) && r.body["last_error"].is_string(),
    )
    .await;
    let made = connections.load(Ordering::SeqCst);
    let elapsed = started.elapsed();
    eprintln!("unreachable controller: {made} connections in {elapsed:?}");
    acceptor.abort();
    server.stop().await;
    let failing = match outcome {
        Ok(failing) => failing.body,
        Err(last) => panic!(
            "after {elapsed:?} and {made} connection attempts, no backoff recorded: {}",
            last.body
        ),
    };
    let failures = failing["consecutive_failures"].as_u64().unwrap_or(0) as usize;
    assert!(
        made <= 2 * failures + 2,
        "{made} connections for {failures} failed visits: {failing}"
    );
}

// ---------------------------------------------------------------------------------
// 2. A dead controller delays no other
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_dead_controller_never_delays_the_others() {
    let (live, live_server) = common::px2_device(100).await;
    let (dead, dead_server) = common::px2_device(100).await;
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Deux centrales").await;
    attach(&admin, &f, "PX-2", &live_server.local_addr().to_string(), 1).await;
    let second = admin
        .create(
            &f.path("/controllers"),
            json!({ "name": "Centrale vélos", "model": "PX-2", "transport": "modbus_tcp",
                    "address": dead_server.local_addr().to_string(), "modbus_unit": 1 }),
        )
        .await;
    let bikes = admin
        .create(
            &f.path("/locks"),
            json!({ "name": "Local vélos", "kind": "door", "controller_id": second, "door_number": 1 }),
        )
        .await;
    let profile_c = admin
        .create(
            &f.path("/profiles"),
            json!({ "name": "Vélos", "lock_ids": [bikes] }),
        )
        .await;
    let profiles = [f.profiles[0], profile_c];
    let first = badge(&admin, &f, "04000001", &profiles).await;
    eventually(
        10,
        "the first badge on both controllers",
        || (common::px2_table(&live), common::px2_table(&dead)),
        |(a, b)| a.len() == 1 && b.len() == 1,
    )
    .await;
    settled(&admin, &f, second, 10).await;

    // Dead the nasty way: it takes connections and answers nothing, so every visit to
    // it hangs until the link timeout.
    dead.faults().set_drop_probability(1.0);
    let mut timings = Vec::new();
    for uid in ["04000002", "04000003", "04000004"] {
        let started = Instant::now();
        let key = badge(&admin, &f, uid, &profiles).await;
        eventually(
            2,
            &format!("{uid} on the live controller within 2 s"),
            || common::px2_table(&live),
            |t| t.iter().any(|(u, mask)| u == uid && *mask == MASK_A),
        )
        .await;
        timings.push(started.elapsed());
        let path = f.path(&format!("/keys/{key}/sync"));
        let report = eventually_async(
            2,
            "confirmed on the live controller, pending on the dead one",
            || admin.get(&path),
            |r| {
                let lines = r.body["controllers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let state = |id: i64| {
                    lines
                        .iter()
                        .find(|l| l["controller_id"] == id)
                        .map(|l| l["state"].clone())
                };
                state(f.controller) == Some(json!("confirmed"))
                    && state(second) == Some(json!("pending"))
            },
        )
        .await;
        assert!(
            report.body["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("programmé sur 1 centrale sur 2, 1 en attente")),
            "{}",
            report.body
        );
    }
    let started = Instant::now();
    act(&admin, &f, first, "declare-lost").await;
    eventually(
        2,
        "the lost badge off the live controller within 2 s",
        || common::px2_table(&live),
        |t| !t.iter().any(|(u, _)| u == "04000001"),
    )
    .await;
    timings.push(started.elapsed());
    let dead_status = status(&admin, &f, second).await;
    assert_eq!(dead_status["pending"], 4, "{dead_status}");
    assert_eq!(
        common::px2_table(&dead),
        vec![("04000001".to_string(), 0b1)],
        "nothing reached the dead controller"
    );
    settled(&admin, &f, f.controller, 5).await;

    // Back to life: it catches up.
    dead.faults().clear();
    audit(&admin, &f, second).await;
    let bike_door = vec![
        ("04000002".to_string(), 0b1),
        ("04000003".to_string(), 0b1),
        ("04000004".to_string(), 0b1),
    ];
    eventually(
        10,
        "the revived controller catches up",
        || common::px2_table(&dead),
        |t| *t == bike_door,
    )
    .await;
    settled(&admin, &f, second, 10).await;
    eprintln!("live controller reached in {timings:?} while the other was dead");
    server.stop().await;
    live_server.stop().await;
    dead_server.stop().await;
}

// ---------------------------------------------------------------------------------
// 3. Crash mid-sync, restart
// ---------------------------------------------------------------------------------

async fn crash_mid_sync_then_restart(sim: Sim, address: String, name: &str) {
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, name).await;
    attach(&admin, &f, sim.model(), &address, sim.unit()).await;
    let mut keys: Vec<(i64, String)> = Vec::new();
    let mut expected: BTreeMap<String, u16> = BTreeMap::new();
    for n in 0..50 {
        let (kind, identifier) = sim.key(n);
        let (profile, mask) = if n % 3 == 0 {
            (f.profiles[1], MASK_B)
        } else {
            (f.profiles[0], MASK_A)
        };
        let id = new_key(&admin, &f, kind, &identifier, &[profile]).await;
        let credential = sim.credential(kind, &identifier);
        expected.insert(credential.clone(), mask);
        keys.push((id, credential));
    }

    let engine = CrashableEngine::start(server.store.clone(), crash_config());
    eventually(
        10,
        "the engine part-way through the table",
        || sim.table().len(),
        |n| *n >= 10,
    )
    .await;
    engine.crash();
    let at_crash = sim.table();
    assert!(
        at_crash.len() < 45,
        "the crash should come mid-sync: {} entries",
        at_crash.len()
    );

    // While the service is down: 5 programmed badges and 5 not yet programmed are
    // declared lost, 5 keys are added.
    let programmed: BTreeSet<String> = at_crash.iter().map(|(c, _)| c.clone()).collect();
    let (done, todo): (Vec<_>, Vec<_>) = keys.iter().partition(|(_, c)| programmed.contains(c));
    for (id, credential) in done.iter().take(5).chain(todo.iter().rev().take(5)) {
        act(&admin, &f, *id, "declare-lost").await;
        expected.insert(credential.clone(), 0);
    }
    for n in 50..55 {
        let (kind, identifier) = sim.key(n);
        new_key(
            &admin,
            &f,
            kind,
            &identifier,
            &[f.profiles[0], f.profiles[1]],
        )
        .await;
        expected.insert(sim.credential(kind, &identifier), MASK_A | MASK_B);
    }

    // The whole service restarts over the same database.
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
    server.stop().await;
    let mut server = TestServer::start_in(dir).await;
    let restarted = Instant::now();
    server.start_engine(crash_config());
    let admin = server.admin().await;
    let want = expected_table(&expected);
    assert_eq!(want.len(), 45);
    eventually(
        30,
        "the table exactly as expected after the restart",
        || sim.table(),
        |t| *t == want,
    )
    .await;
    let converged = restarted.elapsed();
    settled(&admin, &f, f.controller, 10).await;
    assert_eq!(
        sim.table(),
        want,
        "nothing moved once the engine said it was done"
    );
    assert_eq!(
        expected_table(&expected_from_api(&admin, &f, &sim).await),
        want
    );
    for (id, _) in &keys {
        let report = admin.get(&f.path(&format!("/keys/{id}/sync"))).await;
        assert_eq!(
            report.body["controllers"][0]["state"], "confirmed",
            "{}",
            report.body
        );
    }
    if let Sim::Kl8(kl8) = &sim {
        // What the engine confirmed is saved: a power cut loses none of it.
        kl8.reboot();
        assert_eq!(sim.table(), want, "after a power cut");
    }
    eprintln!(
        "{name}: crashed with {} of 50 programmed; converged {converged:?} after the restart",
        at_crash.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn px2_crash_mid_sync_then_restart_loses_and_duplicates_nothing() {
    let (px2, px2_server) = slow_px2((20, 30), 3).await;
    let address = px2_server.local_addr().to_string();
    crash_mid_sync_then_restart(Sim::Px2(px2), address, "Crash PX-2").await;
    px2_server.stop().await;
}

#[tokio::test]
async fn kl8_crash_mid_sync_then_restart_loses_and_duplicates_nothing() {
    let (kl8, kl8_server) = kl8_with(
        Kl8Config {
            capacity: 100,
            ..Default::default()
        },
        4,
    )
    .await;
    kl8.faults().set_latency(Duration::from_millis(10));
    let address = kl8_server.local_addr().to_string();
    crash_mid_sync_then_restart(Sim::Kl8(kl8), address, "Crash KL-8").await;
    kl8_server.stop().await;
}

/// After a crash, the controller the dead instance was visiting stays leased to it for
/// twice the visit timeout. The restarted engine waits that out, quietly.
#[tokio::test]
async fn a_restarted_engine_waits_out_a_crashed_lease_without_spinning() {
    let (px2, px2_server) = slow_px2((20, 30), 13).await;
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Bail").await;
    attach(&admin, &f, "PX-2", &px2_server.local_addr().to_string(), 1).await;
    for n in 0..30u32 {
        badge(
            &admin,
            &f,
            &format!("04{:06X}", 0x40_0000 + n),
            &[f.profiles[0]],
        )
        .await;
    }
    let engine = CrashableEngine::start(server.store.clone(), crash_config());
    eventually(
        10,
        "part-way",
        || common::px2_table(&px2).len(),
        |n| *n >= 5,
    )
    .await;
    engine.crash();
    let restarted =
        CrashableEngine::start_named(server.store.clone(), crash_config(), "eng-lease-wait");
    let before = thread_ticks("eng-lease-wait");
    let started = Instant::now();
    eventually(
        20,
        "everything programmed after the restart",
        || common::px2_table(&px2).len(),
        |n| *n == 30,
    )
    .await;
    let wall = started.elapsed();
    let busy = Duration::from_millis(10 * (thread_ticks("eng-lease-wait") - before));
    eprintln!("restart after a crash: converged in {wall:?}, engine threads busy {busy:?}");
    restarted.crash();
    server.stop().await;
    px2_server.stop().await;
    assert!(
        busy < wall / 4,
        "the restarted engine kept its threads busy {busy:?} of the {wall:?} it waited for the lease"
    );
}

/// A crash between a KL-8 record write and the save to flash leaves the change in RAM
/// only. The engine must not call it done until it is saved, or a power cut brings a
/// lost badge back to life.
#[tokio::test]
async fn kl8_change_left_unsaved_by_a_crash_is_saved_before_it_counts_as_done() {
    let (kl8, kl8_server) = kl8_with(
        Kl8Config {
            capacity: 50,
            ..Default::default()
        },
        5,
    )
    .await;
    let address = kl8_server.local_addr().to_string();
    let mut server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Sauvegarde KL-8").await;
    attach(&admin, &f, "KL-8", &address, 17).await;
    let lost = badge(&admin, &f, "04A22B91", &[f.profiles[0]]).await;
    badge(&admin, &f, "08010203", &[f.profiles[0]]).await;
    let (lost_card, kept_card) = (card("04A22B91"), card("08010203"));
    let both = vec![
        (lost_card.min(kept_card), MASK_A),
        (lost_card.max(kept_card), MASK_A),
    ];
    eventually(
        10,
        "both programmed",
        || common::kl8_table(&kl8),
        |t| *t == both,
    )
    .await;
    settled(&admin, &f, f.controller, 10).await;
    assert_eq!(
        kl8.snapshot().saved,
        kl8.snapshot().records,
        "saved to flash"
    );

    // The service stops; the badge is declared lost; the engine had cleared its record
    // and crashed before saving (done here with the driver, as the engine would).
    server.stop_engine().await;
    act(&admin, &f, lost, "declare-lost").await;
    let profile = server
        .store
        .profiles()
        .get("kl8-fw1")
        .expect("KL-8 profile")
        .clone();
    let mut driver = gardien_drivers::connect_lock_controller(
        &profile,
        &gardien_drivers::Endpoint::Tcp(address.clone()),
        17,
    )
    .await
    .expect("connect");
    driver.identify().await.expect("identify");
    driver
        .remove(&gardien_drivers::Credential::Card(lost_card))
        .await
        .expect("remove");
    drop(driver);
    assert_eq!(common::kl8_table(&kl8), vec![(kept_card, MASK_A)]);
    assert!(
        kl8.snapshot()
            .saved
            .iter()
            .any(|(_, r)| r.card == lost_card),
        "the removal is in RAM only"
    );

    server.start_engine(common::test_sync_config());
    let path = f.path(&format!("/keys/{lost}/sync"));
    eventually_async(
        10,
        "the removal confirmed",
        || admin.get(&path),
        |r| r.body["controllers"][0]["state"] == "confirmed",
    )
    .await;
    settled(&admin, &f, f.controller, 10).await;
    let snapshot = kl8.snapshot();
    assert_eq!(
        snapshot.saved, snapshot.records,
        "confirmed, so saved to flash (RAM and flash differ)"
    );
    kl8.reboot();
    assert_eq!(
        kl8.present(
            &gardien_simulators::Uid::from_hex("04A22B91").expect("uid"),
            1
        )
        .expect("door"),
        gardien_simulators::AccessResult::DeniedUnknown,
        "after a power cut, the lost badge opens the door again"
    );
    server.stop().await;
    kl8_server.stop().await;
}

// ---------------------------------------------------------------------------------
// 4. Memory loss detected and repaired
// ---------------------------------------------------------------------------------

async fn memory_lost_alerts(admin: &Client, f: &Fixture) -> Vec<Value> {
    let alerts = admin.get(&f.path("/alerts")).await;
    assert_eq!(alerts.status, 200, "{}", alerts.body);
    alerts
        .body
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["kind"] == "controller_memory_lost" && a["controller_id"] == f.controller)
        .cloned()
        .collect()
}

#[tokio::test]
async fn px2_factory_reset_is_detected_reprogrammed_and_reported() {
    let (px2, px2_server) = common::px2_device(100).await;
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Remise à zéro").await;
    attach(&admin, &f, "PX-2", &px2_server.local_addr().to_string(), 1).await;
    badge(&admin, &f, "04A22B91", &[f.profiles[0]]).await;
    badge(&admin, &f, "04112233445566", &[f.profiles[1]]).await;
    badge(&admin, &f, "04C0FFEE", &[f.profiles[0], f.profiles[1]]).await;
    let programmed = vec![
        ("04112233445566".to_string(), MASK_B),
        ("04A22B91".to_string(), MASK_A),
        ("04C0FFEE".to_string(), MASK_A | MASK_B),
    ];
    eventually(
        10,
        "programmed",
        || common::px2_table(&px2),
        |t| *t == programmed,
    )
    .await;
    settled(&admin, &f, f.controller, 10).await;
    assert!(memory_lost_alerts(&admin, &f).await.is_empty());

    px2.reboot_with_memory_loss();
    assert!(common::px2_table(&px2).is_empty());
    assert_eq!(px2.snapshot().boot_counter, 0);
    audit(&admin, &f, f.controller).await;
    eventually(
        10,
        "the table reprogrammed",
        || common::px2_table(&px2),
        |t| *t == programmed,
    )
    .await;
    settled(&admin, &f, f.controller, 10).await;
    let alerts = memory_lost_alerts(&admin, &f).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Centrale") && m.contains("mémoire")),
        "{alerts:?}"
    );
    server.stop().await;
    px2_server.stop().await;
}

#[tokio::test]
async fn kl8_power_cut_before_save_is_detected_and_repaired() {
    let (kl8, kl8_server) = kl8_with(
        Kl8Config {
            capacity: 50,
            save_time: Duration::from_millis(500),
            ..Default::default()
        },
        6,
    )
    .await;
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Coupure KL-8").await;
    attach(&admin, &f, "KL-8", &kl8_server.local_addr().to_string(), 17).await;
    badge(&admin, &f, "04A22B91", &[f.profiles[0]]).await;
    let remote = new_key(&admin, &f, "remote", "1234567", &[f.profiles[1]]).await;
    let mut programmed = vec![(card("04A22B91"), MASK_A), (1_234_567, MASK_B)];
    programmed.sort();
    eventually(
        10,
        "programmed",
        || common::kl8_table(&kl8),
        |t| *t == programmed,
    )
    .await;
    settled(&admin, &f, f.controller, 10).await;

    // A power cut while the engine saves a new key to flash: the device restarts from
    // the previous save. The engine sees the counter back at 0 and writes again.
    let third = badge(&admin, &f, "08090A0B", &[f.profiles[0], f.profiles[1]]).await;
    let third_card = card("08090A0B");
    eventually(
        10,
        "a power cut during the save of the new key",
        || {
            kl8.with(|m, now| {
                m.settle(now);
                let written = m
                    .records()
                    .iter()
                    .any(|r| r.is_active() && r.card == third_card);
                let cut = written && m.is_saving();
                if cut {
                    m.power_cut();
                }
                cut
            })
        },
        |cut| *cut,
    )
    .await;
    programmed.push((third_card, MASK_A | MASK_B));
    programmed.sort();
    eventually(
        10,
        "the lost write done again",
        || common::kl8_table(&kl8),
        |t| *t == programmed,
    )
    .await;
    settled(&admin, &f, f.controller, 10).await;
    let path = f.path(&format!("/keys/{third}/sync"));
    assert_eq!(
        admin.get(&path).await.body["controllers"][0]["state"],
        "confirmed"
    );
    let snapshot = kl8.snapshot();
    assert_eq!(snapshot.saved, snapshot.records, "saved this time");

    // The controller comes back blank (flash lost too, as a replaced unit would): the
    // engine notices at its next visit, reprograms it and raises an alert.
    kl8.with(|m, _| {
        for index in 0..m.records().len() {
            m.seed_record(index as u16, Record::default());
        }
        m.power_cut();
    });
    assert!(common::kl8_table(&kl8).is_empty());
    audit(&admin, &f, f.controller).await;
    eventually(
        10,
        "the table reprogrammed",
        || common::kl8_table(&kl8),
        |t| *t == programmed,
    )
    .await;
    settled(&admin, &f, f.controller, 10).await;
    let snapshot = kl8.snapshot();
    assert_eq!(snapshot.saved, snapshot.records, "and saved");
    let alerts = memory_lost_alerts(&admin, &f).await;
    assert!(!alerts.is_empty(), "memory loss reported");
    let path = f.path(&format!("/keys/{remote}/sync"));
    assert_eq!(
        admin.get(&path).await.body["controllers"][0]["state"],
        "confirmed"
    );
    server.stop().await;
    kl8_server.stop().await;
}

// ---------------------------------------------------------------------------------
// 5. Faults never lead to a wrong table
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Active,
    Deactivated,
    Lost,
}

struct ModelKey {
    credential: String,
    profiles: usize,
    life: Life,
}

/// Profile sets a key may have, with the doors they open.
fn profile_sets(f: &Fixture) -> [(Vec<i64>, u16); 4] {
    [
        (vec![f.profiles[0]], MASK_A),
        (vec![f.profiles[1]], MASK_B),
        (vec![f.profiles[0], f.profiles[1]], MASK_A | MASK_B),
        (vec![], 0),
    ]
}

fn model_table(
    model: &BTreeMap<i64, ModelKey>,
    sets: &[(Vec<i64>, u16); 4],
) -> BTreeMap<String, u16> {
    model
        .values()
        .map(|k| {
            let mask = if k.life == Life::Active {
                sets[k.profiles].1
            } else {
                0
            };
            (k.credential.clone(), mask)
        })
        .collect()
}

/// What may be seen on the device while faults are on: each entry is a key with door
/// bits someone asked for at some point; no credential twice; no lost key once its
/// removal was confirmed.
fn check_intermediate(
    sim: &Sim,
    ever: &HashMap<String, BTreeSet<u16>>,
    gone: &BTreeSet<String>,
    when: &str,
) {
    let table = sim.table();
    let mut seen = BTreeSet::new();
    for (credential, mask) in &table {
        assert!(
            seen.insert(credential),
            "{when}: {credential} held twice: {table:?}"
        );
        assert!(
            ever.get(credential)
                .is_some_and(|masks| masks.contains(mask)),
            "{when}: {credential} with doors {mask:#b}, which nobody asked for: {table:?}"
        );
        assert!(
            !gone.contains(credential),
            "{when}: {credential} is back after its removal was confirmed: {table:?}"
        );
    }
}

async fn faults_never_leave_a_wrong_table(sim: Sim, address: String, seed: u64) {
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, &format!("Pannes {}", sim.model())).await;
    attach(&admin, &f, sim.model(), &address, sim.unit()).await;
    let sets = profile_sets(&f);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model: BTreeMap<i64, ModelKey> = BTreeMap::new();
    let mut ever: HashMap<String, BTreeSet<u16>> = HashMap::new();
    let mut next_key = 0u32;

    // A few keys programmed cleanly first.
    for _ in 0..6 {
        let (kind, identifier) = sim.key(next_key);
        next_key += 1;
        let profiles = rng.gen_range(0..3);
        let id = new_key(&admin, &f, kind, &identifier, &sets[profiles].0).await;
        let credential = sim.credential(kind, &identifier);
        ever.entry(credential.clone())
            .or_default()
            .insert(sets[profiles].1);
        model.insert(
            id,
            ModelKey {
                credential,
                profiles,
                life: Life::Active,
            },
        );
    }
    let want = expected_table(&model_table(&model, &sets));
    eventually(
        10,
        "the first keys programmed",
        || sim.table(),
        |t| *t == want,
    )
    .await;

    // Lossy link: lost requests, lost answers, exception replies, some latency.
    let faults = sim.faults().clone();
    faults.reseed(seed);
    faults.set_drop_probability(0.02);
    faults.set_drop_reply_probability(0.02);
    faults.set_exception(exception_fault(4, 0.03).await.settings().exception);
    faults.set_latency(Duration::from_millis(1));

    let mut gone: BTreeSet<String> = BTreeSet::new();
    let mut operations = 0;
    let mut failed_visits = 0;
    for batch in 0..8 {
        for _ in 0..4 {
            let ids: Vec<i64> = model.keys().copied().collect();
            let pick = |rng: &mut StdRng, life: Life| {
                let candidates: Vec<i64> = ids
                    .iter()
                    .copied()
                    .filter(|id| model[id].life == life)
                    .collect();
                (!candidates.is_empty()).then(|| candidates[rng.gen_range(0..candidates.len())])
            };
            match rng.gen_range(0..100) {
                0..=29 => {
                    let (kind, identifier) = sim.key(next_key);
                    next_key += 1;
                    let profiles = rng.gen_range(0..4);
                    let id = new_key(&admin, &f, kind, &identifier, &sets[profiles].0).await;
                    let credential = sim.credential(kind, &identifier);
                    ever.entry(credential.clone())
                        .or_default()
                        .insert(sets[profiles].1);
                    model.insert(
                        id,
                        ModelKey {
                            credential,
                            profiles,
                            life: Life::Active,
                        },
                    );
                }
                30..=49 => {
                    if let Some(id) = pick(&mut rng, Life::Active) {
                        let profiles = rng.gen_range(0..4);
                        let response = set_profiles(&admin, &f, id, &sets[profiles].0).await;
                        assert_eq!(response.status, 200, "{}", response.body);
                        let key = model.get_mut(&id).expect("key");
                        key.profiles = profiles;
                        ever.entry(key.credential.clone())
                            .or_default()
                            .insert(sets[profiles].1);
                    }
                }
                50..=66 => {
                    let life = if rng.gen_bool(0.7) {
                        Life::Active
                    } else {
                        Life::Deactivated
                    };
                    if let Some(id) = pick(&mut rng, life) {
                        act(&admin, &f, id, "declare-lost").await;
                        model.get_mut(&id).expect("key").life = Life::Lost;
                    }
                }
                67..=83 => {
                    if let Some(id) = pick(&mut rng, Life::Active) {
                        act(&admin, &f, id, "deactivate").await;
                        model.get_mut(&id).expect("key").life = Life::Deactivated;
                    }
                }
                _ => {
                    if let Some(id) = pick(&mut rng, Life::Deactivated) {
                        act(&admin, &f, id, "reactivate").await;
                        model.get_mut(&id).expect("key").life = Life::Active;
                    }
                }
            }
            operations += 1;
            check_intermediate(&sim, &ever, &gone, &format!("batch {batch}"));
        }
        // Let the engine try (successfully or not) before the next batch; the audit
        // request also skips the backoff, so the faults are met often.
        let before = status(&admin, &f, f.controller).await;
        audit(&admin, &f, f.controller).await;
        let path = f.path(&format!("/controllers/{}/status", f.controller));
        let after = eventually_async(
            15,
            "an attempt after the audit request",
            || admin.get(&path),
            |r| {
                r.body["last_seen_at"].is_string()
                    || r.body["last_error_at"] != before["last_error_at"]
            },
        )
        .await;
        if after.body["last_error_at"] != before["last_error_at"] {
            failed_visits += 1;
        }
        check_intermediate(&sim, &ever, &gone, &format!("after batch {batch}"));
        for (id, key) in &model {
            if key.life == Life::Lost && !gone.contains(&key.credential) {
                let report = admin.get(&f.path(&format!("/keys/{id}/sync"))).await;
                let confirmed = report.body["controllers"]
                    .as_array()
                    .is_some_and(|lines| lines.iter().all(|l| l["state"] == "confirmed"));
                if confirmed {
                    gone.insert(key.credential.clone());
                }
            }
        }
        check_intermediate(
            &sim,
            &ever,
            &gone,
            &format!("after the reports of batch {batch}"),
        );
    }

    faults.clear();
    audit(&admin, &f, f.controller).await;
    let want_model = model_table(&model, &sets);
    let want = expected_table(&want_model);
    eventually(
        20,
        "the exact table once the faults stop",
        || sim.table(),
        |t| *t == want,
    )
    .await;
    settled(&admin, &f, f.controller, 20).await;
    let from_api = expected_from_api(&admin, &f, &sim).await;
    assert_eq!(
        expected_table(&from_api),
        want,
        "the API agrees with the test's model"
    );
    assert_eq!(sim.table(), want);
    for id in model.keys() {
        let report = admin.get(&f.path(&format!("/keys/{id}/sync"))).await;
        for line in report.body["controllers"].as_array().expect("lines") {
            assert_eq!(line["state"], "confirmed", "key {id}: {}", report.body);
        }
    }
    eprintln!(
        "{}: {operations} changes under faults, failed visits seen after {failed_visits} of 8 batches, {} keys, {} held at the end, {} lost keys seen removed under faults",
        sim.model(),
        model.len(),
        want.len(),
        gone.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn px2_faults_never_leave_a_wrong_table() {
    let (px2, px2_server) = common::px2_device(100).await;
    let address = px2_server.local_addr().to_string();
    faults_never_leave_a_wrong_table(Sim::Px2(px2), address, 21).await;
    px2_server.stop().await;
}

#[tokio::test]
async fn kl8_faults_never_leave_a_wrong_table() {
    let (kl8, kl8_server) = kl8_with(
        Kl8Config {
            capacity: 60,
            ..Default::default()
        },
        22,
    )
    .await;
    let address = kl8_server.local_addr().to_string();
    faults_never_leave_a_wrong_table(Sim::Kl8(kl8), address, 22).await;
    kl8_server.stop().await;
}

// ---------------------------------------------------------------------------------
// 6. RTU over a pseudo-terminal
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn px2_over_rtu_on_a_pseudo_terminal() {
    // The simulator's own configuration format starts serve_rtu on a PtyLink.
    let config: gardien_simulators::config::SimConfig = serde_json::from_value(json!({
        "seed": 9,
        "bus": [{ "name": "rs485", "pty": true, "baud": 9600 }],
        "device": [{ "name": "hall", "kind": "px2", "bus": "rs485", "capacity": 50 }]
    }))
    .expect("simulator configuration");
    let sim = gardien_simulators::config::start(&config)
        .await
        .expect("RTU simulator");
    let Some(gardien_simulators::AnyDevice::Px2(px2)) = sim.device("hall").cloned() else {
        panic!("a PX-2")
    };
    let path = sim.endpoints()[0]
        .rtu
        .clone()
        .expect("client end of the pty");
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "RTU").await;
    let moved = admin
        .put(
            &f.path(&format!("/controllers/{}", f.controller)),
            json!({ "name": "Centrale", "model": "PX-2", "transport": "modbus_rtu",
                    "address": format!("{}@9600", path.display()), "modbus_unit": 1 }),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);

    let key = badge(&admin, &f, "04:A2:2B:91", &[f.profiles[0]]).await;
    eventually(
        10,
        "programmed over RTU",
        || common::px2_table(&px2),
        |t| *t == [("04A22B91".to_string(), MASK_A)],
    )
    .await;
    let report_path = f.path(&format!("/keys/{key}/sync"));
    eventually_async(
        10,
        "confirmed",
        || admin.get(&report_path),
        |r| r.body["controllers"][0]["state"] == "confirmed",
    )
    .await;
    let uid = gardien_simulators::Uid::from_hex("04A22B91").expect("uid");
    assert_eq!(
        px2.present(&uid, 1).expect("door"),
        gardien_simulators::AccessResult::Granted
    );

    act(&admin, &f, key, "declare-lost").await;
    eventually(
        10,
        "removed over RTU",
        || common::px2_table(&px2),
        |t| t.is_empty(),
    )
    .await;
    eventually_async(
        10,
        "removal confirmed",
        || admin.get(&report_path),
        |r| {
            r.body["controllers"][0]["state"] == "confirmed"
                && r.body["controllers"][0]["doors"] == 0
        },
    )
    .await;
    let done = settled(&admin, &f, f.controller, 10).await;
    assert_eq!(done["used"], 0, "{done}");
    assert_eq!(done["firmware"], "2.3", "{done}");
    assert_ne!(
        px2.present(&uid, 1).expect("door"),
        gardien_simulators::AccessResult::Granted
    );
    server.stop().await;
    drop(sim);
}

// ---------------------------------------------------------------------------------
// 7. Keys a controller cannot hold are refused at assignment
// ---------------------------------------------------------------------------------

fn assert_refused(response: &common::Response, words: &[&str]) {
    assert_eq!(response.status, 422, "{}", response.body);
    let error = &response.body["error"];
    assert_eq!(error["code"], "invalid_field", "{}", response.body);
    assert_eq!(error["field"], "profile_ids", "{}", response.body);
    let message = error["message"].as_str().expect("message");
    for word in words {
        assert!(message.contains(word), "« {word} » missing from: {message}");
    }
}

#[tokio::test]
async fn kl8_refuses_a_badge_it_cannot_store_and_a_key_beyond_its_capacity() {
    let (kl8, kl8_server) = kl8_with(
        Kl8Config {
            capacity: 3,
            ..Default::default()
        },
        7,
    )
    .await;
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Capacité KL-8").await;
    attach(&admin, &f, "KL-8", &kl8_server.local_addr().to_string(), 17).await;
    let status_path = f.path(&format!("/controllers/{}/status", f.controller));
    eventually_async(
        10,
        "the capacity learnt at the first visit",
        || admin.get(&status_path),
        |r| r.body["capacity"] == 3,
    )
    .await;

    // A 7-byte badge cannot be stored in a KL-8 (card numbers of 4-byte UIDs only).
    let refused = admin
        .post(
            &f.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": "04112233445566", "profile_ids": [f.profiles[0]] }),
        )
        .await;
    let named = ["04112233445566", "Centrale"];
    assert_refused(&refused, &named);
    let unassigned = badge(&admin, &f, "04112233445566", &[]).await;
    let reassigned = set_profiles(&admin, &f, unassigned, &[f.profiles[1]]).await;
    assert_refused(&reassigned, &named);

    // Three keys fill it; a fourth is refused, at creation and at assignment.
    let mut cards = Vec::new();
    for (i, uid) in ["08000001", "08000002", "08000003"].iter().enumerate() {
        badge(&admin, &f, uid, &[f.profiles[i % 2]]).await;
        cards.push((card(uid), if i % 2 == 0 { MASK_A } else { MASK_B }));
    }
    cards.sort();
    eventually(
        10,
        "three keys programmed",
        || common::kl8_table(&kl8),
        |t| *t == cards,
    )
    .await;
    let full = admin
        .post(
            &f.path("/keys"),
            json!({ "kind": "remote", "identifier": "555", "profile_ids": [f.profiles[0]] }),
        )
        .await;
    assert_refused(&full, &["Centrale", "pleine", "3"]);
    let spare = new_key(&admin, &f, "remote", "555", &[]).await;
    assert_refused(
        &set_profiles(&admin, &f, spare, &[f.profiles[0]]).await,
        &["Centrale", "pleine"],
    );
    let done = settled(&admin, &f, f.controller, 10).await;
    assert_eq!(done["wanted"], 3, "{done}");
    assert_eq!(
        common::kl8_table(&kl8),
        cards,
        "the refusals changed nothing"
    );
    server.stop().await;
    kl8_server.stop().await;

    // The reason is for people, in French, all of it.
    for response in [&refused, &reassigned] {
        let message = response.body["error"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains("octets") && message.contains('4') && message.contains('7'),
            "the reason should say, in French, that a KL-8 takes 4-byte UIDs and this one has 7: {message}"
        );
        for english in ["bytes", "holds", "not possible", "device"] {
            assert!(
                !message.contains(english),
                "English in the reason: {message}"
            );
        }
    }
}

/// On a full controller, one key declared lost and another given its place in the same
/// visit: the service accepted the swap (it fits), so the controller must end up with it.
#[tokio::test]
async fn a_full_kl8_takes_a_new_key_in_place_of_a_lost_one() {
    let (kl8, kl8_server) = kl8_with(
        Kl8Config {
            capacity: 3,
            ..Default::default()
        },
        8,
    )
    .await;
    let mut server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Échange KL-8").await;
    attach(&admin, &f, "KL-8", &kl8_server.local_addr().to_string(), 17).await;
    let newcomer = badge(&admin, &f, "08000000", &[]).await;
    let mut ids = Vec::new();
    for uid in ["08000001", "08000002", "08000003"] {
        ids.push(badge(&admin, &f, uid, &[f.profiles[0]]).await);
    }
    eventually(10, "full", || common::kl8_table(&kl8).len(), |n| *n == 3).await;
    settled(&admin, &f, f.controller, 10).await;

    server.stop_engine().await;
    act(&admin, &f, ids[2], "declare-lost").await;
    let given = set_profiles(&admin, &f, newcomer, &[f.profiles[0]]).await;
    assert_eq!(given.status, 200, "the swap fits: {}", given.body);
    server.start_engine(common::test_sync_config());

    let mut want: Vec<(u32, u16)> = ["08000000", "08000001", "08000002"]
        .iter()
        .map(|uid| (card(uid), MASK_A))
        .collect();
    want.sort();
    let path = f.path(&format!("/keys/{newcomer}/sync"));
    let report = eventually_async(
        10,
        "the newcomer programmed",
        || admin.get(&path),
        |r| r.body["controllers"][0]["state"] == "confirmed",
    )
    .await;
    assert_eq!(common::kl8_table(&kl8), want, "{}", report.body);
    settled(&admin, &f, f.controller, 10).await;
    server.stop().await;
    kl8_server.stop().await;
}
