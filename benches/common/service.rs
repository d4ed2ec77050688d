//! The service as `gardien serve` runs it, for benchmarks: the API over a SQLite file
//! in a temporary directory, the engine on demand, and an administrator's client.

use std::sync::Arc;

use gardien::config::Config;
use gardien::http::{serve, AppState};
use gardien::storage::audit::Actor;
use gardien::storage::Store;
use gardien::sync::{Engine, SyncConfig};
use gardien_drivers::MqttChannel;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "bench-password-123";

pub struct Service {
    pub store: Store,
    pub base: String,
    _dir: tempfile::TempDir,
    http: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    engine: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Service {
    pub async fn start() -> Service {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = Config {
            database_url: dir.path().join("gardien.db").display().to_string(),
            ..Config::default()
        };
        let store = Store::open(&config.database_url)
            .await
            .expect("open the database");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind API");
        let base = format!("http://{}", listener.local_addr().expect("API address"));
        let state = AppState {
            store: store.clone(),
            config: Arc::new(config),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .expect("API server");
        });
        Service {
            store,
            base,
            _dir: dir,
            http: Some((stop, task)),
            engine: None,
        }
    }

    /// Starts the engine, reaching MQTT controllers through `mqtt` when given.
    pub fn start_engine(&mut self, config: SyncConfig, mqtt: Option<MqttChannel>) {
        let (stop, stopped) = oneshot::channel::<()>();
        let mut engine = Engine::new(self.store.clone(), config);
        if let Some(channel) = mqtt {
            engine = engine.with_mqtt(channel);
        }
        let task = tokio::spawn(engine.run(async {
            let _ = stopped.await;
        }));
        self.engine = Some((stop, task));
    }

    /// Stops the engine as a shutdown would: visits under way finish first.
    pub async fn stop_engine(&mut self) {
        if let Some((stop, task)) = self.engine.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// A platform administrator, created in the database, logged in through the API.
    pub async fn admin(&self) -> Api {
        let email = "bench@gardien.test";
        let hash = gardien::auth::hash_password(PASSWORD).expect("hash the password");
        let mut tx = self.store.write().await.expect("transaction");
        tx.insert_user(&Actor::system("bench"), email, "Bench", &hash, true)
            .await
            .expect("create the administrator");
        tx.commit().await.expect("commit");
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .expect("login request");
        let body: Value = response.json().await.expect("login answer");
        let token = body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in the login answer: {body}"))
            .to_owned();
        Api {
            http,
            base: self.base.clone(),
            token,
        }
    }

    pub async fn stop(mut self) {
        self.stop_engine().await;
        if let Some((stop, task)) = self.http.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.store.close().await;
    }
}

/// An API client with a bearer token.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("answer body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn declare_lost(&self, rid: i64, key: i64) {
        let path = format!("/api/v1/residences/{rid}/keys/{key}/declare-lost");
        let (status, answer) = self
            .send(
                Method::POST,
                &path,
                Some(json!({ "reason": "perdu (banc d'essai)" })),
            )
            .await;
        if status != 200 {
            panic!("POST {path}: {status} {answer}");
        }
    }
}
