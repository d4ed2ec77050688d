//! The messages the service handles itself, one at a time in arrival order: wireless
//! M-Bus telegrams (to readings) and what esp-rfid controllers say unasked
//! (heartbeats, boots, access events). Each message is acknowledged to the broker once
//! handled. Bad messages are counted and logged with their topic, never stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rumqttc::{AsyncClient, Publish};
use tokio::sync::mpsc;

use super::config::WmbusSubscription;
use super::esprfid_events::{self, Heard};
use super::topics;
use crate::storage::Store;

/// Messages handled together at most (telegrams in one transaction).
const BATCH: usize = 256;

/// Attempts at storing a batch before leaving it to the broker's redelivery.
const TRIES: u64 = 3;

/// What the inbox handled since start, for logs, the demo and benchmarks.
#[derive(Debug, Default)]
pub struct InboxStats {
    pub received: AtomicU64,
    pub telegrams_stored: AtomicU64,
    pub telegrams_duplicate: AtomicU64,
    pub telegrams_rejected: AtomicU64,
    pub telegrams_unknown_meter: AtomicU64,
    /// Not telegrams (e.g. the bridge's online/offline state).
    pub telegrams_ignored: AtomicU64,
    pub controller_messages: AtomicU64,
    pub access_events: AtomicU64,
    pub unattributed: AtomicU64,
    /// Messages handled (whatever the outcome): the end-to-end counter.
    pub handled: AtomicU64,
}

pub struct Inbox {
    store: Store,
    wmbus: Vec<WmbusSubscription>,
    stats: Arc<InboxStats>,
}

impl Inbox {
    pub fn new(store: Store, wmbus: Vec<WmbusSubscription>) -> Inbox {
        Inbox {
            store,
            wmbus,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<InboxStats> {
        self.stats.clone()
    }

    pub async fn esp_rfid_topics(&self) -> crate::Result<Vec<String>> {
        self.store.read().await?.esp_rfid_send_topics().await
    }

    /// Handles messages in arrival order. Telegrams waiting together are stored in
    /// one transaction (a burst costs one commit, not one per message); each message
    /// is acknowledged once its transaction committed.
    pub async fn run(self, mut queued: mpsc::Receiver<Publish>, client: AsyncClient) {
        let mut batch: Vec<Publish> = Vec::with_capacity(BATCH);
        while queued.recv_many(&mut batch, BATCH).await > 0 {
            let received = batch.len() as u64;
            self.stats.received.fetch_add(received, Ordering::Relaxed);
            let mut telegrams: Vec<(i64, &Publish)> = Vec::new();
            let mut unstored: Vec<&Publish> = Vec::new();
            for publish in &batch {
                match self.residence_of_telegram(&publish.topic) {
                    Some(residence_id) => telegrams.push((residence_id, publish)),
                    None => {
                        // Keep arrival order: telegrams queued before go first.
                        let pending = std::mem::take(&mut telegrams);
                        if !self.telegrams(&pending).await {
                            unstored.extend(pending.iter().map(|(_, publish)| *publish));
                        }
                        if publish.topic.ends_with("/send") {
                            self.controller_message(&publish.topic, &publish.payload)
                                .await;
                        }
                    }
                }
            }
            if !self.telegrams(&telegrams).await {
                unstored.extend(telegrams.iter().map(|(_, publish)| *publish));
            }
            self.stats.handled.fetch_add(received, Ordering::Relaxed);
            // Telegrams the database could not take are not acknowledged: the broker
            // delivers them again (persistent session) rather than losing them.
            let unstored: Vec<u16> = unstored.iter().map(|publish| publish.pkid).collect();
            for publish in batch.drain(..) {
                if publish.pkid != 0 && unstored.contains(&publish.pkid) {
                    continue;
                }
                if let Err(error) = client.ack(&publish).await {
                    tracing::warn!(%error, topic = %publish.topic, "MQTT acknowledgement not sent");
                }
            }
        }
    }

    /// The residence whose wmbus topics cover `topic`, if any.
    fn residence_of_telegram(&self, topic: &str) -> Option<i64> {
        self.wmbus
            .iter()
            .find(|subscription| topics::matches(&subscription.topic, topic))
            .map(|subscription| subscription.residence_id)
    }

    /// Stores telegrams; false when the database failed (after a few tries).
    async fn telegrams(&self, telegrams: &[(i64, &Publish)]) -> bool {
        use crate::metering::wmbus::{ingest_many, Ingested, Message};
        if telegrams.is_empty() {
            return true;
        }
        let messages: Vec<Message<'_>> = telegrams
            .iter()
            .map(|(residence_id, publish)| Message {
                residence_id: *residence_id,
                topic: &publish.topic,
                payload: &publish.payload,
            })
            .collect();
        let mut result = ingest_many(&self.store, &messages).await;
        for attempt in 1..TRIES {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            result = ingest_many(&self.store, &messages).await;
        }
        match result {
            Ok(outcomes) => {
                for outcome in outcomes {
                    let counter = match outcome {
                        Ingested::Stored { .. } => &self.stats.telegrams_stored,
                        Ingested::Duplicate { .. } | Ingested::Conflict { .. } => {
                            &self.stats.telegrams_duplicate
                        }
                        Ingested::UnknownMeter { .. } => &self.stats.telegrams_unknown_meter,
                        Ingested::Ignored(..) => &self.stats.telegrams_ignored,
                        Ingested::Rejected(..) => &self.stats.telegrams_rejected,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Err(error) => {
                tracing::error!(%error, count = messages.len(), "wmbus telegrams not stored; left unacknowledged");
                false
            }
        }
    }

    async fn controller_message(&self, topic: &str, payload: &[u8]) {
        match esprfid_events::handle(&self.store, topic, payload).await {
            Ok(Heard::Nothing) => {}
            Ok(Heard::Controller) => {
                self.stats
                    .controller_messages
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(Heard::Access) => {
                self.stats.access_events.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Heard::Unattributed) => {
                self.stats.unattributed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => tracing::error!(%error, topic, "esp-rfid message not handled"),
        }
    }
}
