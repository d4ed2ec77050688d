//! gardien's one connection to the broker: connects (TCP or TLS, credentials),
//! reconnects with a growing delay and subscribes again, hands every message to the
//! drivers waiting for answers ([`MqttChannel`]) and queues the ones the service
//! itself handles (esp-rfid events, wmbus telegrams) for one worker.
//!
//! Incoming QoS 1 messages are acknowledged only once handled (manual acks): a
//! telegram the broker delivered is stored or counted as rejected before the broker
//! forgets it, so a crash in between gets it again rather than losing it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gardien_drivers::MqttChannel;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::MqttConfig;
use super::inbox::{Inbox, InboxStats};
use crate::storage::Store;

/// Largest message accepted from the broker. Larger ones would cut the connection in
/// rumqttc, so the bound is generous and the handlers refuse big payloads themselves.
const MAX_INCOMING: usize = 4 * 1024 * 1024;

/// Messages waiting for the worker before the connection stops reading (and the
/// broker holds its QoS 1 messages back).
const QUEUE: usize = 10_000;

/// The running connection.
pub struct Mqtt {
    channel: MqttChannel,
    stats: Arc<InboxStats>,
    link: Arc<LinkState>,
    tasks: Vec<JoinHandle<()>>,
}

/// Whether the broker accepted us, and how often connecting failed.
#[derive(Debug, Default)]
pub struct LinkState {
    pub connected: AtomicBool,
    pub connections: AtomicU64,
    pub failures: AtomicU64,
    /// The last failure, for logs and health checks.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl Mqtt {
    /// Connects (in the background: an absent broker is retried, not fatal) and
    /// starts handling messages.
    pub async fn start(store: Store, config: &MqttConfig, instance: &str) -> anyhow::Result<Mqtt> {
        let options = options(config, instance)?;
        let (client, event_loop) = AsyncClient::new(options, 1_000);
        let channel = MqttChannel::new(client.clone());
        for subscription in &config.wmbus {
            channel
                .ensure_subscribed(&subscription.topic, QoS::AtLeastOnce)
                .await
                .with_context(|| format!("subscribing to {}", subscription.topic))?;
        }
        let inbox = Inbox::new(store.clone(), config.wmbus.clone());
        for topic in inbox.esp_rfid_topics().await? {
            channel
                .ensure_subscribed(&topic, QoS::AtMostOnce)
                .await
                .with_context(|| format!("subscribing to {topic}"))?;
        }
        let stats = inbox.stats();
        let (queue, queued) = mpsc::channel(QUEUE);
        let max_delay = Duration::from_secs(config.reconnect_max_seconds.max(1));
        let link = Arc::new(LinkState::default());
        let tasks = vec![
            tokio::spawn(read_loop(
                event_loop,
                channel.clone(),
                queue,
                max_delay,
                link.clone(),
            )),
            tokio::spawn(inbox.run(queued, client)),
        ];
        Ok(Mqtt {
            channel,
            stats,
            link,
            tasks,
        })
    }

    /// The connection, for drivers (esp-rfid) and the sync engine.
    pub fn channel(&self) -> &MqttChannel {
        &self.channel
    }

    pub fn stats(&self) -> Arc<InboxStats> {
        self.stats.clone()
    }

    /// The connection's state: connected now, connections and failures so far.
    pub fn link(&self) -> Arc<LinkState> {
        self.link.clone()
    }

    /// Disconnects and stops the tasks.
    pub async fn stop(self) {
        let _ = self.channel.client().disconnect().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

fn options(config: &MqttConfig, instance: &str) -> anyhow::Result<MqttOptions> {
    let client_id = config
        .client_id
        .clone()
        .unwrap_or_else(|| format!("gardien-{instance}"));
    anyhow::ensure!(!client_id.is_empty(), "mqtt.client_id is empty");
    let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_seconds.max(5)))
        .set_clean_session(config.clean_session)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_INCOMING, MAX_INCOMING);
    if let Some(username) = &config.username {
        options.set_credentials(username, config.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &config.tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("mqtt.tls: reading {}", path.display()))
        };
        let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: read(&tls.ca_file)?,
            alpn: None,
            client_auth,
        }));
    }
    Ok(options)
}

/// Polls the connection forever: rumqttc reconnects on the next poll after an error,
/// so this only waits (1 s, doubling up to `max_delay`) and subscribes again.
async fn read_loop(
    mut event_loop: EventLoop,
    channel: MqttChannel,
    queue: mpsc::Sender<Publish>,
    max_delay: Duration,
    link: Arc<LinkState>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(session_present = ack.session_present, "MQTT connected");
                link.connected.store(true, Ordering::SeqCst);
                link.connections.fetch_add(1, Ordering::SeqCst);
                delay = Duration::from_secs(1);
                resubscribe(&channel);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                channel.deliver(&publish.topic, &publish.payload);
                // Waiting here when the worker is behind is the back-pressure: the
                // broker keeps what it could not deliver.
                if queue.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "MQTT connection lost");
                link.connected.store(false, Ordering::SeqCst);
                link.failures.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut last) = link.last_error.lock() {
                    *last = Some(error.to_string());
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_delay);
            }
        }
    }
}

/// Subscribes again to every filter: a clean session, or a broker that restarted
/// without persistence, forgot them.
fn resubscribe(channel: &MqttChannel) {
    let (client, filters) = (channel.client().clone(), channel.filters());
    // From another task: the request queue is drained by the loop that called us.
    tokio::spawn(async move {
        for filter in filters {
            if let Err(error) = client.subscribe(filter.as_str(), QoS::AtLeastOnce).await {
                tracing::warn!(%error, %filter, "MQTT resubscription failed");
            }
        }
    });
}
