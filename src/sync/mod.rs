//! The sync engine: makes the lock controllers and meter gateways hold what the
//! database says (keys for the former, the meter list for the latter).
//!
//! Work is durable: it sits in the `key_sync` outbox, written with the change that
//! causes it. The engine wakes when a commit leaves work (or every `poll` for work left
//! by another instance), and visits every controller that has some, concurrently up to
//! a bound, so one slow or dead controller delays no other. A failed visit backs the
//! controller off exponentially (the circuit is "open" after three failures in a row);
//! its rows stay pending. A lease on each controller keeps two service instances from
//! programming the same one. Keys whose validity starts or ends are recomputed on time.
//! Gateways have their own outbox (`meter_sync`) and visit (`metering::program`), and
//! share the rest: wake-ups, bound, leases and backoff.

pub mod access;
pub mod plan;
pub mod visit;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gardien_drivers::MqttChannel;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::storage::sync::DeviceRef;
use crate::storage::Store;
use visit::{visit, VisitKind};

/// Failures in a row after which a controller's circuit counts as open.
pub const CIRCUIT_OPEN_AFTER: i64 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Run the engine in `gardien serve`.
    pub enabled: bool,
    /// Controllers visited at once.
    pub concurrency: usize,
    /// How often to look for work written by other instances, in milliseconds.
    pub poll_ms: u64,
    /// Routine visit (verification, events, clock) of every controller, in seconds.
    pub routine_seconds: u64,
    /// Full table read and drift report of every controller, in seconds.
    pub audit_seconds: u64,
    /// Longest a visit may take, in seconds.
    pub visit_timeout_seconds: u64,
    /// Names this instance in controller leases. A restarted instance with the same id
    /// takes its leases back at once; two instances on one host need different ids.
    /// Default: the host name.
    pub instance_id: Option<String>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            enabled: true,
            concurrency: 16,
            poll_ms: 1000,
            routine_seconds: 60,
            audit_seconds: 6 * 3600,
            visit_timeout_seconds: 120,
            instance_id: None,
        }
    }
}

/// Delay before the next attempt after `failures` failed visits in a row: 1 s, 2 s,
/// 4 s… up to 5 minutes.
pub fn backoff(failures: i64) -> chrono::Duration {
    let exponent = failures.clamp(1, 20) - 1;
    let seconds = 1i64
        .checked_shl(exponent as u32)
        .unwrap_or(i64::MAX)
        .min(300);
    chrono::Duration::seconds(seconds)
}

pub struct Engine {
    store: Store,
    config: SyncConfig,
    /// Identifies this instance in controller leases.
    owner: String,
    running: Arc<Mutex<HashSet<DeviceRef>>>,
    permits: Arc<Semaphore>,
    /// The broker connection MQTT controllers are reached through, if configured.
    mqtt: Option<MqttChannel>,
}

/// How this instance names itself in leases.
pub fn instance_owner(config: &SyncConfig) -> String {
    config.instance_id.clone().unwrap_or_else(host_name)
}

/// The host name, to name this instance in leases when the configuration does not.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gardien".to_owned())
}

impl Engine {
    pub fn new(store: Store, config: SyncConfig) -> Engine {
        let owner = instance_owner(&config);
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Engine {
            store,
            config,
            owner,
            running: Arc::default(),
            permits,
            mqtt: None,
        }
    }

    /// Reaches MQTT controllers (esp-rfid) through `channel`.
    pub fn with_mqtt(mut self, channel: MqttChannel) -> Engine {
        self.mqtt = Some(channel);
        self
    }

    /// Runs until `shutdown` completes, then lets the visits under way finish.
    /// Dropping the future (a crash, `abort`) drops the visits with it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut visits = JoinSet::new();
        let mut checked_until = Utc::now();
        loop {
            while visits.try_join_next().is_some() {}
            let now = Utc::now();
            if let Err(err) = self.refresh_validity(checked_until, now).await {
                tracing::error!(%err, "recomputing keys whose validity started or ended");
            } else {
                checked_until = now;
            }
            if let Err(err) = self.dispatch(now, &mut visits).await {
                tracing::error!(%err, "looking for controllers to visit");
            }
            let wait = self.next_wait(now).await;
            tokio::select! {
                () = &mut shutdown => break,
                () = self.store.sync_work_written() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        while visits.join_next().await.is_some() {}
    }

    /// Until the next validity boundary or the poll interval, whichever comes first.
    async fn next_wait(&self, now: DateTime<Utc>) -> Duration {
        let poll = Duration::from_millis(self.config.poll_ms.max(10));
        let boundary = match self.store.read().await {
            Ok(mut tx) => tx.next_validity_boundary(now).await.ok().flatten(),
            Err(_) => None,
        };
        match boundary.map(|at| (at - now).to_std().unwrap_or_default()) {
            Some(until) => until.min(poll),
            None => poll,
        }
    }

    async fn refresh_validity(
        &self,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
    ) -> crate::Result<()> {
        let mut tx = self.store.write().await?;
        for residence in tx.residences_with_boundary(after, upto).await? {
            tx.refresh_residence_access(residence).await?;
        }
        tx.commit().await
    }

    /// Starts a visit for every controller and gateway with work due that is not being
    /// visited here nor leased by another instance.
    async fn dispatch(&self, now: DateTime<Utc>, visits: &mut JoinSet<()>) -> crate::Result<()> {
        let routine_before = now - chrono::Duration::seconds(self.config.routine_seconds as i64);
        let mut due: Vec<DeviceRef> = {
            let mut tx = self.store.read().await?;
            let controllers = tx.due_controllers(now, routine_before, &self.owner).await?;
            let gateways = tx.due_gateways(now, &self.owner).await?;
            controllers
                .into_iter()
                .map(DeviceRef::Controller)
                .chain(gateways.into_iter().map(DeviceRef::Gateway))
                .collect()
        };
        due.retain(|device| {
            self.running
                .lock()
                .map(|mut running| running.insert(*device))
                .unwrap_or(false)
        });
        for device in due {
            let (store, config, owner, running, permits, mqtt) = (
                self.store.clone(),
                self.config.clone(),
                self.owner.clone(),
                self.running.clone(),
                self.permits.clone(),
                self.mqtt.clone(),
            );
            visits.spawn(async move {
                let visited = match permits.acquire_owned().await {
                    Ok(_permit) => {
                        visit_with_lease(&store, mqtt.as_ref(), &config, &owner, device).await
                    }
                    Err(_) => false,
                };
                if let Ok(mut running) = running.lock() {
                    running.remove(&device);
                }
                // Work may have arrived for this device while it was being visited.
                if visited {
                    store.wake_sync();
                }
            });
        }
        Ok(())
    }
}

/// Visits a device under a lease; records a failed or timed-out visit (backoff, error
/// on its pending rows). Answers whether a visit ran.
async fn visit_with_lease(
    store: &Store,
    mqtt: Option<&MqttChannel>,
    config: &SyncConfig,
    owner: &str,
    device: DeviceRef,
) -> bool {
    let now = Utc::now();
    let timeout = Duration::from_secs(config.visit_timeout_seconds.max(1));
    let lease_until =
        now + chrono::Duration::from_std(timeout * 2).unwrap_or(chrono::Duration::minutes(5));
    if !take_lease(store, device, owner, now, lease_until).await {
        return false;
    }
    let failure = match device {
        DeviceRef::Controller(controller) => {
            visit_controller(store, mqtt, config, controller, now, timeout).await
        }
        DeviceRef::Gateway(gateway) => {
            match tokio::time::timeout(timeout, crate::metering::program::program(store, gateway))
                .await
            {
                Ok(Ok(report)) => {
                    tracing::debug!(gateway, ?report, "gateway programmed");
                    None
                }
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => Some(format!("visit timed out after {} s", timeout.as_secs())),
            }
        }
    };
    if let Some(error) = failure {
        tracing::warn!(?device, %error, "device visit failed");
        let recorded = match device {
            DeviceRef::Controller(controller) => {
                visit::record_failure(store, controller, &error).await
            }
            DeviceRef::Gateway(gateway) => {
                crate::metering::program::record_failure(store, gateway, &error).await
            }
        };
        if let Err(err) = recorded {
            tracing::error!(?device, %err, "recording a failed visit");
        }
    }
    if let Ok(mut tx) = store.write().await {
        let _ = tx.release_lease(device, owner).await;
        let _ = tx.commit().await;
    }
    true
}

/// Takes `device`'s lease until `until`; false if another instance holds it.
pub(crate) async fn take_lease(
    store: &Store,
    device: DeviceRef,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> bool {
    let Ok(mut tx) = store.write().await else {
        return false;
    };
    matches!(tx.take_lease(device, owner, now, until).await, Ok(true)) && tx.commit().await.is_ok()
}

/// One controller visit: what it is for (audit, routine) follows from its status.
/// Answers the error of a failed visit.
async fn visit_controller(
    store: &Store,
    mqtt: Option<&MqttChannel>,
    config: &SyncConfig,
    controller: i64,
    now: DateTime<Utc>,
    timeout: Duration,
) -> Option<String> {
    let status = match store.read().await {
        Ok(mut tx) => match tx.controller_status(controller).await {
            Ok(status) => status,
            Err(err) => return Some(err.to_string()),
        },
        Err(err) => return Some(err.to_string()),
    };
    let routine_before = now - chrono::Duration::seconds(config.routine_seconds as i64);
    let kind = VisitKind {
        audit: status
            .audited_at
            .is_none_or(|at| at < now - chrono::Duration::seconds(config.audit_seconds as i64)),
        routine: status.last_seen_at.is_none_or(|at| at < routine_before),
    };
    match tokio::time::timeout(timeout, visit(store, mqtt, controller, kind)).await {
        Ok(Ok(report)) => {
            tracing::debug!(controller, ?report, "controller visited");
            None
        }
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!("visit timed out after {} s", timeout.as_secs())),
    }
}
