//! The MQTT side of a driver: publish on the service's one broker connection and
//! listen to what arrives. The service owns the connection and its event loop and
//! feeds every incoming message into [`MqttChannel`]; drivers subscribe to the topics
//! they need, and the service subscribes them again after a reconnect.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::broadcast;

use crate::error::{DriverError, Result};

/// A message received from the broker.
#[derive(Debug, Clone)]
pub struct MqttMessage {
    pub topic: Arc<str>,
    pub payload: Arc<[u8]>,
}

/// One broker connection shared by every MQTT driver of the service.
#[derive(Clone)]
pub struct MqttChannel {
    client: AsyncClient,
    incoming: broadcast::Sender<MqttMessage>,
    filters: Arc<Mutex<BTreeSet<String>>>,
    /// One user-list read at a time per command topic for devices whose list
    /// messages name no device (the README shape): two such lists on a shared topic
    /// could not be told apart.
    topic_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Devices (topic, ip) whose list messages were seen to name them (`doorip`), so
    /// that their lists need no exclusive read.
    self_naming: Arc<Mutex<HashMap<(String, String), bool>>>,
}

impl std::fmt::Debug for MqttChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttChannel").finish_non_exhaustive()
    }
}

/// Messages kept for a slow listener before it is told it lost some.
const BACKLOG: usize = 4096;

impl MqttChannel {
    pub fn new(client: AsyncClient) -> MqttChannel {
        MqttChannel {
            client,
            incoming: broadcast::channel(BACKLOG).0,
            filters: Arc::default(),
            topic_locks: Arc::default(),
            self_naming: Arc::default(),
        }
    }

    /// Hands a received message to every listener.
    pub fn deliver(&self, topic: &str, payload: &[u8]) {
        // No listener is not an error: nobody is waiting for this topic now.
        let _ = self.incoming.send(MqttMessage {
            topic: topic.into(),
            payload: payload.into(),
        });
    }

    /// Everything delivered from now on.
    pub fn listen(&self) -> broadcast::Receiver<MqttMessage> {
        self.incoming.subscribe()
    }

    /// Subscribes to `filter` once; it is kept for resubscription after a reconnect.
    pub async fn ensure_subscribed(&self, filter: &str, qos: QoS) -> Result<()> {
        let new = self
            .filters
            .lock()
            .map_err(|_| DriverError::Protocol("MQTT filter set poisoned".into()))?
            .insert(filter.to_string());
        if new {
            self.client
                .subscribe(filter, qos)
                .await
                .map_err(|e| DriverError::Transport {
                    operation: "MQTT subscribe",
                    reason: format!("{filter}: {e}"),
                })?;
        }
        Ok(())
    }

    /// The filters subscribed so far, to subscribe again after a reconnect.
    pub fn filters(&self) -> Vec<String> {
        self.filters
            .lock()
            .map(|filters| filters.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub async fn publish(&self, topic: &str, qos: QoS, payload: Vec<u8>) -> Result<()> {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .map_err(|e| DriverError::Transport {
                operation: "MQTT publish",
                reason: format!("{topic}: {e}"),
            })
    }

    /// The lock serialising list reads on `topic`.
    pub(crate) fn topic_lock(&self, topic: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.topic_locks.lock() {
            Ok(mut locks) => locks.entry(topic.to_string()).or_default().clone(),
            // A poisoned map only loses the serialisation, not correctness of a read.
            Err(_) => Arc::default(),
        }
    }

    /// Whether the device at (`topic`, `ip`) names itself in its list messages, as
    /// last seen; `false` while unknown.
    pub(crate) fn names_itself(&self, topic: &str, ip: &str) -> bool {
        self.self_naming
            .lock()
            .ok()
            .and_then(|known| known.get(&(topic.to_string(), ip.to_string())).copied())
            .unwrap_or(false)
    }

    pub(crate) fn set_names_itself(&self, topic: &str, ip: &str, names_itself: bool) {
        if let Ok(mut known) = self.self_naming.lock() {
            known.insert((topic.to_string(), ip.to_string()), names_itself);
        }
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }
}
