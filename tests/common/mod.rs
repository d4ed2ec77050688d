//! Black-box harness: the real server on a random loopback port, over a real SQLite
//! file in a temporary directory, driven through HTTP like any client.
#![allow(dead_code)] // each test crate uses part of it

pub mod mqtt;

use std::sync::Arc;

use gardien::config::Config;
use gardien::http::{self, AppState};
use gardien::storage::audit::Actor;
use gardien::storage::Store;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const PASSWORD: &str = "test-password-123";

pub struct TestServer {
    pub base: String,
    pub store: Store,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    engine: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

/// Engine settings for tests: quick polling; routine visits and audits only when a
/// test asks for them.
pub fn test_sync_config() -> gardien::sync::SyncConfig {
    gardien::sync::SyncConfig {
        poll_ms: 50,
        routine_seconds: 3600,
        audit_seconds: 24 * 3600,
        visit_timeout_seconds: 20,
        ..gardien::sync::SyncConfig::default()
    }
}

impl TestServer {
    /// Starts the API on 127.0.0.1:0 with a fresh SQLite file.
    pub async fn start() -> TestServer {
        Self::start_in(tempfile::tempdir().expect("temp dir")).await
    }

    /// Starts the API and the lock-programming engine.
    pub async fn start_with_sync(config: gardien::sync::SyncConfig) -> TestServer {
        let mut server = Self::start().await;
        server.start_engine(config);
        server
    }

    /// Starts the engine on this server's database (again, after `stop_engine`).
    pub fn start_engine(&mut self, config: gardien::sync::SyncConfig) {
        self.start_engine_with(config, None);
    }

    /// Starts the engine, reaching MQTT controllers through `mqtt` when given.
    pub fn start_engine_with(
        &mut self,
        config: gardien::sync::SyncConfig,
        mqtt: Option<gardien_drivers::MqttChannel>,
    ) {
        let (tx, rx) = oneshot::channel::<()>();
        let mut engine = gardien::sync::Engine::new(self.store.clone(), config);
        if let Some(channel) = mqtt {
            engine = engine.with_mqtt(channel);
        }
        let task = tokio::spawn(engine.run(async {
            let _ = rx.await;
        }));
        self.engine = Some((tx, task));
    }

    /// Stops the engine, as a service shutting down would (visits under way finish).
    pub async fn stop_engine(&mut self) {
        if let Some((tx, task)) = self.engine.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// Kills the engine mid-work, as a crash would: visits under way are dropped.
    pub fn kill_engine(&mut self) {
        if let Some((_, task)) = self.engine.take() {
            task.abort();
        }
    }

    /// Starts the API over the database in `dir` (created if new).
    pub async fn start_in(dir: tempfile::TempDir) -> TestServer {
        let database = dir.path().join("gardien.db");
        let config = Config {
            database_url: database.display().to_string(),
            ..Config::default()
        };
        let store = Store::open(&config.database_url).await.expect("open store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState {
            store: store.clone(),
            config: Arc::new(config),
        };
        let task = tokio::spawn(async move {
            http::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .expect("server");
        });
        TestServer {
            base,
            store,
            dir,
            shutdown: Some(tx),
            task: Some(task),
            engine: None,
        }
    }

    pub fn database_path(&self) -> std::path::PathBuf {
        self.dir.path().join("gardien.db")
    }

    /// A client with no credentials.
    pub fn anonymous(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.base.clone(),
            token: None,
        }
    }

    /// Creates a platform administrator directly in the database and logs in.
    pub async fn admin(&self) -> Client {
        let email = "admin@test.gardien";
        let hash = gardien::auth::hash_password(PASSWORD).expect("hash");
        let mut tx = self.store.write().await.expect("tx");
        if tx.user_by_email(email).await.expect("lookup").is_none() {
            tx.insert_user(&Actor::system("test"), email, "Admin", &hash, true)
                .await
                .expect("admin");
        }
        tx.commit().await.expect("commit");
        self.login(email, PASSWORD).await
    }

    /// Logs in through the API and returns a client carrying the bearer token.
    pub async fn login(&self, email: &str, password: &str) -> Client {
        let anonymous = self.anonymous();
        let response = anonymous
            .post(
                "/api/v1/auth/login",
                json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(response.status, 200, "login of {email}: {}", response.body);
        let token = response.body["token"].as_str().expect("token").to_owned();
        Client {
            http: reqwest::Client::new(),
            base: self.base.clone(),
            token: Some(token),
        }
    }

    /// Creates (through the API, as `manager`) an account with `role` in the residence
    /// and logs it in. `link` is the person id for residents, the provider id for providers.
    pub async fn member(
        &self,
        manager: &Client,
        rid: i64,
        email: &str,
        role: &str,
        link: Option<i64>,
    ) -> Client {
        let mut body =
            json!({ "email": email, "role": role, "display_name": email, "password": PASSWORD });
        match role {
            "resident" => body["person_id"] = json!(link),
            "provider" => body["provider_id"] = json!(link),
            _ => {}
        }
        let response = manager
            .post(&format!("/api/v1/residences/{rid}/members"), body)
            .await;
        assert_eq!(
            response.status, 200,
            "adding {email} as {role}: {}",
            response.body
        );
        self.login(email, PASSWORD).await
    }

    pub async fn stop(mut self) {
        self.stop_engine().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.store.close().await;
    }
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Client {
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Response { status, body }
    }

    /// Sends raw bytes with a content type, for malformed-input tests.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(bytes);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        Response {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path, None).await
    }

    /// POSTs and asserts a 201, returning the created object's id.
    pub async fn create(&self, path: &str, body: Value) -> i64 {
        let response = self.post(path, body.clone()).await;
        assert_eq!(
            response.status, 201,
            "POST {path} {body}: {}",
            response.body
        );
        response.body["id"].as_i64().expect("id")
    }
}

/// A small residence made through the API: two buildings, three locks on one PX-2
/// controller, two profiles, two flats with their owners, a provider.
pub struct Fixture {
    pub rid: i64,
    pub buildings: [i64; 2],
    pub controller: i64,
    /// Hall A, Hall B, car park gate.
    pub locks: [i64; 3],
    /// "Résident A" = hall A + gate; "Résident B" = hall B + gate.
    pub profiles: [i64; 2],
    /// Flats A01 and B01.
    pub units: [i64; 2],
    /// Owners of A01 and B01.
    pub people: [i64; 2],
    pub provider: i64,
}

impl Fixture {
    pub fn path(&self, rest: &str) -> String {
        format!("/api/v1/residences/{}{rest}", self.rid)
    }
}

pub async fn fixture(admin: &Client, name: &str) -> Fixture {
    let rid = admin
        .create(
            "/api/v1/residences",
            json!({ "name": name, "address": "1 rue du Test" }),
        )
        .await;
    let at = |rest: &str| format!("/api/v1/residences/{rid}{rest}");
    let building_a = admin
        .create(&at("/buildings"), json!({ "name": "A" }))
        .await;
    let building_b = admin
        .create(&at("/buildings"), json!({ "name": "B" }))
        .await;
    let controller = admin
        .create(
            &at("/controllers"),
            json!({ "name": "Centrale", "model": "PX-2", "transport": "modbus_tcp", "address": "127.0.0.1:1502", "modbus_unit": 1 }),
        )
        .await;
    let mut locks = [0; 3];
    for (index, (name, kind)) in [("Hall A", "door"), ("Hall B", "door"), ("Portail", "gate")]
        .iter()
        .enumerate()
    {
        locks[index] = admin
            .create(
                &at("/locks"),
                json!({ "name": name, "kind": kind, "controller_id": controller, "door_number": index + 1 }),
            )
            .await;
    }
    let profile_a = admin
        .create(
            &at("/profiles"),
            json!({ "name": "Résident A", "lock_ids": [locks[0], locks[2]] }),
        )
        .await;
    let profile_b = admin
        .create(
            &at("/profiles"),
            json!({ "name": "Résident B", "lock_ids": [locks[1], locks[2]] }),
        )
        .await;
    let unit_a = admin
        .create(
            &at("/units"),
            json!({ "lot_number": "A01", "kind": "flat", "building_id": building_a }),
        )
        .await;
    let unit_b = admin
        .create(
            &at("/units"),
            json!({ "lot_number": "B01", "kind": "flat", "building_id": building_b }),
        )
        .await;
    let person_a = admin
        .create(
            &at("/people"),
            json!({ "full_name": "Claire Dupont", "email": "claire@example.org" }),
        )
        .await;
    let person_b = admin
        .create(&at("/people"), json!({ "full_name": "Marc Petit" }))
        .await;
    for (unit, person) in [(unit_a, person_a), (unit_b, person_b)] {
        admin
            .create(
                &at("/occupancies"),
                json!({ "unit_id": unit, "person_id": person, "role": "owner" }),
            )
            .await;
    }
    let provider = admin
        .create(
            &at("/providers"),
            json!({ "name": "Net'Immo", "trade": "nettoyage" }),
        )
        .await;
    Fixture {
        rid,
        buildings: [building_a, building_b],
        controller,
        locks,
        profiles: [profile_a, profile_b],
        units: [unit_a, unit_b],
        people: [person_a, person_b],
        provider,
    }
}

/// Ids of the keys in a JSON array of keys.
pub fn ids(keys: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = keys
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["id"].as_i64())
        .collect();
    ids.sort_unstable();
    ids
}

/// Waits until `condition` holds, polling every 20 ms, or panics after `seconds` with
/// `what` and the last value seen.
pub async fn eventually<T: std::fmt::Debug>(
    seconds: u64,
    what: &str,
    mut probe: impl FnMut() -> T,
    condition: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let value = probe();
        if condition(&value) {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: still {value:?} after {seconds} s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`] for an async probe (an API call).
pub async fn eventually_async<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    seconds: u64,
    what: &str,
    mut probe: impl FnMut() -> F,
    condition: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let value = probe().await;
        if condition(&value) {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: still {value:?} after {seconds} s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A simulated PX-2 on a loopback port.
pub async fn px2_device(
    capacity: u16,
) -> (gardien_simulators::Px2Device, gardien_simulators::TcpServer) {
    let config = gardien_simulators::Px2Config {
        capacity,
        doors: 4,
        seed: Some(7),
        ..Default::default()
    };
    let device = gardien_simulators::Px2Device::new(config, gardien_simulators::Faults::seeded(7));
    let server = gardien_simulators::serve_tcp(device.clone(), "127.0.0.1:0")
        .await
        .expect("serve PX-2");
    (device, server)
}

/// A simulated KL-8 on a loopback port.
pub async fn kl8_device(
    capacity: u16,
) -> (gardien_simulators::Kl8Device, gardien_simulators::TcpServer) {
    let config = gardien_simulators::Kl8Config {
        capacity,
        ..Default::default()
    };
    let device = gardien_simulators::Kl8Device::new(config, gardien_simulators::Faults::seeded(8));
    let server = gardien_simulators::serve_tcp(device.clone(), "127.0.0.1:0")
        .await
        .expect("serve KL-8");
    (device, server)
}

/// The UIDs (upper hex) and door masks a simulated PX-2 holds.
pub fn px2_table(device: &gardien_simulators::Px2Device) -> Vec<(String, u16)> {
    let mut table: Vec<(String, u16)> = device
        .snapshot()
        .entries
        .iter()
        .map(|(_, entry)| {
            (
                entry
                    .uid
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect(),
                entry.door_mask,
            )
        })
        .collect();
    table.sort();
    table
}

/// The card numbers and door masks a simulated KL-8 holds in RAM.
pub fn kl8_table(device: &gardien_simulators::Kl8Device) -> Vec<(u32, u16)> {
    let mut table: Vec<(u32, u16)> = device
        .snapshot()
        .records
        .iter()
        .map(|(_, r)| (r.card, r.door_mask))
        .collect();
    table.sort();
    table
}
