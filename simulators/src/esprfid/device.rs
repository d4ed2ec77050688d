//! The handle on a running esp-rfid. Clones share one device: its state (behind a
//! lock), its faults and its MQTT task. The task stops when the last handle is dropped.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::machine::{EspRfid, EspRfidAccess};
use super::user::StoredUser;
use super::{link, EspRfidConfig, EspRfidFaults, EspRfidUser, MqttBroker};

#[derive(Debug, thiserror::Error)]
pub enum EspRfidError {
    #[error("esp-rfid configuration: {0}")]
    Config(String),
    #[error("an esp-rfid device runs on a tokio runtime; start it from one")]
    NoRuntime,
    #[error("a badge UID has at least one byte")]
    EmptyUid,
    #[error("user {uid}: {problem}")]
    User { uid: String, problem: String },
}

/// The facts a test usually checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EspRfidSnapshot {
    /// Ordered by uid.
    pub users: Vec<EspRfidUser>,
    /// Openings per relay (relay 1 first) since the simulator started.
    pub relay_pulses: Vec<u64>,
    /// Power-ups, this first one included.
    pub boots: u64,
    /// Connected to the broker and subscribed to `TOPIC/cmd`.
    pub connected: bool,
    /// Connections accepted by the broker so far.
    pub connections: u64,
    pub offline: bool,
    /// Messages that arrived on `TOPIC/cmd`, whatever became of them.
    pub commands_received: u64,
    /// Lost to the low-memory fault.
    pub commands_dropped: u64,
    /// For another `doorip`, not JSON, or not a known command.
    pub commands_ignored: u64,
    pub messages_sent: u64,
    /// Lost to the fault on outgoing messages.
    pub messages_dropped: u64,
    /// Not sent because the device was not connected then.
    pub messages_unsent: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connected: bool,
    pub connections: u64,
    pub commands_received: u64,
    pub commands_dropped: u64,
    pub commands_ignored: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub messages_unsent: u64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub machine: EspRfid,
    pub counters: Counters,
    pub booted_at: Instant,
}

/// What the handle tells the MQTT task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Control {
    pub offline: bool,
    /// Bumped by each reboot asked through a handle.
    pub restarts: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: EspRfidConfig,
    pub broker: MqttBroker,
    pub faults: EspRfidFaults,
    state: Mutex<Inner>,
    /// Messages that do not answer a command (access events), for the task to send.
    pub outbox: mpsc::UnboundedSender<String>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The RAM side of a restart; the task redoes the connection.
    pub fn restart(&self) {
        let mut inner = self.lock();
        inner.machine.reboot();
        inner.booted_at = Instant::now();
        inner.counters.connected = false;
    }
}

#[derive(Debug, Clone)]
pub struct EspRfidDevice {
    shared: Arc<Shared>,
    /// Dropped with the last handle, which stops the task.
    control: Arc<watch::Sender<Control>>,
}

impl EspRfidDevice {
    /// Powers the device up: it connects to `broker`, and keeps trying while it cannot.
    pub fn start(
        config: EspRfidConfig,
        broker: MqttBroker,
        faults: EspRfidFaults,
    ) -> Result<EspRfidDevice, EspRfidError> {
        EspRfidDevice::start_with(config, broker, faults, &[], false)
    }

    /// Powers up a device whose flash already holds `users`, offline if asked (it then
    /// connects only once set online).
    pub fn start_with(
        config: EspRfidConfig,
        broker: MqttBroker,
        faults: EspRfidFaults,
        users: &[EspRfidUser],
        offline: bool,
    ) -> Result<EspRfidDevice, EspRfidError> {
        config.check().map_err(EspRfidError::Config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EspRfidError::NoRuntime)?;
        let mut machine = EspRfid::new(config.clone());
        for user in users {
            insert(&mut machine, user, &config.ip)?;
        }
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let (control, control_rx) = watch::channel(Control {
            offline,
            restarts: 0,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(Inner {
                machine,
                counters: Counters::default(),
                booted_at: Instant::now(),
            }),
            config,
            broker,
            faults,
            outbox,
        });
        runtime.spawn(link::run(Arc::clone(&shared), control_rx, outbox_rx));
        Ok(EspRfidDevice {
            shared,
            control: Arc::new(control),
        })
    }

    pub fn config(&self) -> &EspRfidConfig {
        &self.shared.config
    }

    pub fn broker(&self) -> &MqttBroker {
        &self.shared.broker
    }

    pub fn faults(&self) -> &EspRfidFaults {
        &self.shared.faults
    }

    /// A badge at the reader: the access event goes out (if connected), the relays open
    /// if it is granted, and the decision comes back.
    pub fn present(&self, uid: &[u8]) -> Result<EspRfidAccess, EspRfidError> {
        if uid.is_empty() {
            return Err(EspRfidError::EmptyUid);
        }
        let (access, event) = self.shared.lock().machine.present(uid, unix_now());
        // Fails only once the task has stopped, and then there is no one to send it.
        let _ = self.shared.outbox.send(event);
        Ok(access)
    }

    /// Stores a user as if a client had sent `adduser` with these numbers (no message).
    pub fn insert_user(&self, user: &EspRfidUser) -> Result<(), EspRfidError> {
        insert(
            &mut self.shared.lock().machine,
            user,
            &self.shared.config.ip,
        )
    }

    /// Power cycle: the connection drops, users (flash) stay, a boot message follows the
    /// next connection. Queued messages are lost.
    pub fn reboot(&self) {
        self.shared.restart();
        self.control.send_modify(|c| c.restarts += 1);
    }

    /// Flash formatted (no users, configuration as shipped), then a reboot.
    pub fn factory_reset(&self) {
        self.shared.lock().machine.factory_reset();
        self.reboot();
    }

    /// Offline: the connection closes and the device stays away until set back online;
    /// what it would have published meanwhile is lost.
    pub fn set_offline(&self, offline: bool) {
        self.control.send_if_modified(|c| {
            let changed = c.offline != offline;
            c.offline = offline;
            changed
        });
    }

    pub fn is_offline(&self) -> bool {
        self.control.borrow().offline
    }

    pub fn snapshot(&self) -> EspRfidSnapshot {
        let offline = self.is_offline();
        let inner = self.shared.lock();
        let c = &inner.counters;
        EspRfidSnapshot {
            users: inner.machine.users().cloned().collect(),
            relay_pulses: inner.machine.relay_pulses().to_vec(),
            boots: inner.machine.boots(),
            connected: c.connected,
            connections: c.connections,
            offline,
            commands_received: c.commands_received,
            commands_dropped: c.commands_dropped,
            commands_ignored: c.commands_ignored,
            messages_sent: c.messages_sent,
            messages_dropped: c.messages_dropped,
            messages_unsent: c.messages_unsent,
        }
    }
}

fn insert(machine: &mut EspRfid, user: &EspRfidUser, ip: &str) -> Result<(), EspRfidError> {
    let problem = |problem: String| EspRfidError::User {
        uid: user.uid.clone(),
        problem,
    };
    let stored = StoredUser::from_user(user, ip).map_err(problem)?;
    if machine.insert(stored) {
        Ok(())
    } else {
        Err(problem("the device is full".into()))
    }
}

/// The device clock (esp-rfid takes it from NTP).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
