//! The device's MQTT side. One task per device runs the firmware's loop; a session is
//! one rumqttc client, whose event loop runs in a poller task of its own (polling it
//! inside `select!` could cut a packet in half) and reports through a channel. Closing
//! the connection (reboot, offline) is dropping the session: the poller is aborted and
//! its socket closed, without a DISCONNECT, as when the power goes.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, timeout, Instant, Interval, MissedTickBehavior};

use super::device::{unix_now, Control, Shared};

/// How long a publish may wait for room in rumqttc's queue before it counts as unsent.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(5);
/// How long a restarting device waits for its last messages to leave.
const FLUSH_PATIENCE: Duration = Duration::from_secs(2);

/// What the poller reports.
#[derive(Debug)]
enum LinkEvent {
    Connected,
    Subscribed,
    Message { topic: String, payload: Vec<u8> },
    Down(String),
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Every handle is gone.
    Stopped,
    /// Offline or rebooted through a handle: the control channel says which.
    Control,
    /// Rebooted by a command (`updateconf`).
    Rebooted,
    /// The poller stopped; start a new client.
    Reconnect,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut control: watch::Receiver<Control>,
    mut outbox: mpsc::UnboundedReceiver<String>,
) {
    let mut seen_restarts = control.borrow_and_update().restarts;
    let mut boot_pending = true;
    let mut heartbeat = heartbeat_timer(&shared);
    loop {
        // Rebooted or offline through a handle: handled here, also while offline.
        loop {
            let now = *control.borrow_and_update();
            if now.restarts != seen_restarts {
                seen_restarts = now.restarts;
                boot_pending = true;
                heartbeat = heartbeat_timer(&shared);
            }
            if !now.offline {
                break;
            }
            if control.changed().await.is_err() {
                return;
            }
        }
        // Published while rebooting or offline: never left the device.
        lose_queued(&shared, &mut outbox);
        let mut session = Session::open(&shared);
        let end = session
            .run(
                &shared,
                &mut control,
                &mut outbox,
                &mut heartbeat,
                &mut boot_pending,
            )
            .await;
        drop(session);
        shared.lock().counters.connected = false;
        match end {
            End::Stopped => return,
            End::Rebooted => {
                boot_pending = true;
                heartbeat = heartbeat_timer(&shared);
            }
            End::Control | End::Reconnect => {}
        }
    }
}

/// What waited to be sent while there was no connection is lost, as the firmware
/// publishes only while connected (and a reboot empties RAM).
fn lose_queued(shared: &Shared, outbox: &mut mpsc::UnboundedReceiver<String>) {
    let mut lost = 0;
    while outbox.try_recv().is_ok() {
        lost += 1;
    }
    shared.lock().counters.messages_unsent += lost;
}

/// Heartbeats count from the boot.
fn heartbeat_timer(shared: &Shared) -> Interval {
    let period = Duration::from_secs(shared.config.heartbeat_seconds);
    let mut timer = interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
    timer
}

struct Session {
    client: AsyncClient,
    poller: JoinHandle<()>,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    /// Subscribed to `TOPIC/cmd` on the current connection.
    subscribed: bool,
    cmd_topic: String,
    send_topic: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Session {
    fn open(shared: &Shared) -> Session {
        let config = &shared.config;
        let broker = &shared.broker;
        let mut options = MqttOptions::new(&config.hostname, &broker.host, broker.port);
        // AsyncMqttClient's default keep-alive, as the firmware uses it.
        options.set_keep_alive(Duration::from_secs(15));
        options.set_max_packet_size(64 * 1024, 64 * 1024);
        if let Some((username, password)) = &broker.credentials {
            options.set_credentials(username, password);
        }
        let (client, event_loop) = AsyncClient::new(options, 256);
        let (events_tx, events) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll(event_loop, events_tx, config.reconnect_delay));
        Session {
            client,
            poller,
            events,
            subscribed: false,
            cmd_topic: config.cmd_topic(),
            send_topic: config.send_topic(),
        }
    }

    async fn run(
        &mut self,
        shared: &Shared,
        control: &mut watch::Receiver<Control>,
        outbox: &mut mpsc::UnboundedReceiver<String>,
        heartbeat: &mut Interval,
        boot_pending: &mut bool,
    ) -> End {
        let hostname = &shared.config.hostname;
        let start = *control.borrow();
        loop {
            tokio::select! {
                changed = control.changed() => {
                    if changed.is_err() {
                        return End::Stopped;
                    }
                    let now = *control.borrow();
                    if now.offline || now.restarts != start.restarts {
                        return End::Control;
                    }
                }
                event = self.events.recv() => match event {
                    None => return End::Reconnect,
                    Some(LinkEvent::Connected) => {
                        tracing::info!(%hostname, "esp-rfid connected to the broker");
                        shared.lock().counters.connections += 1;
                        self.subscribed = false;
                        // The firmware subscribes again on every connection.
                        let topic = self.cmd_topic.clone();
                        if let Err(error) = self.client.subscribe(topic, QoS::ExactlyOnce).await {
                            tracing::warn!(%hostname, %error, "esp-rfid could not subscribe");
                        }
                    }
                    Some(LinkEvent::Subscribed) if !self.subscribed => {
                        self.subscribed = true;
                        shared.lock().counters.connected = true;
                        if std::mem::take(boot_pending) {
                            let boot = shared.lock().machine.boot_message(unix_now());
                            self.publish(shared, boot).await;
                        }
                    }
                    Some(LinkEvent::Message { topic, payload }) if topic == self.cmd_topic => {
                        if self.command(shared, &payload).await {
                            return End::Rebooted;
                        }
                    }
                    Some(LinkEvent::Down(error)) => {
                        tracing::warn!(%hostname, %error, "esp-rfid lost the broker; will retry");
                        self.subscribed = false;
                        shared.lock().counters.connected = false;
                    }
                    Some(_) => {}
                },
                Some(message) = outbox.recv() => self.publish(shared, message).await,
                _ = heartbeat.tick() => {
                    let message = {
                        let inner = shared.lock();
                        let uptime = inner.booted_at.elapsed().as_secs();
                        inner.machine.heartbeat(unix_now(), uptime)
                    };
                    self.publish(shared, message).await;
                }
            }
        }
    }

    /// Runs one message from `TOPIC/cmd`; true if the device must now restart.
    async fn command(&mut self, shared: &Shared, payload: &[u8]) -> bool {
        shared.lock().counters.commands_received += 1;
        if shared.faults.drop_command() {
            shared.lock().counters.commands_dropped += 1;
            tracing::debug!(hostname = %shared.config.hostname, "esp-rfid dropped a command (fault)");
            return false;
        }
        let outcome = {
            let mut inner = shared.lock();
            let outcome = inner.machine.command(payload, unix_now());
            if outcome.ignored {
                inner.counters.commands_ignored += 1;
            }
            outcome
        };
        for message in outcome.messages {
            self.publish(shared, message).await;
        }
        if outcome.reboot {
            self.flush().await;
            shared.restart();
        }
        outcome.reboot
    }

    /// Publishes on `TOPIC/send` at QoS 0, not retained: lost if not connected.
    async fn publish(&self, shared: &Shared, message: String) {
        if !self.subscribed {
            shared.lock().counters.messages_unsent += 1;
            return;
        }
        if shared.faults.drop_message() {
            shared.lock().counters.messages_dropped += 1;
            return;
        }
        let publish = self
            .client
            .publish(&self.send_topic, QoS::AtMostOnce, false, message);
        let sent = matches!(timeout(PUBLISH_PATIENCE, publish).await, Ok(Ok(())));
        let mut inner = shared.lock();
        if sent {
            inner.counters.messages_sent += 1;
        } else {
            inner.counters.messages_unsent += 1;
            tracing::warn!(hostname = %shared.config.hostname, "esp-rfid could not queue a message");
        }
    }

    /// Lets what was published reach the broker before a restart, as the firmware
    /// sends its acknowledgement before restarting. A DISCONNECT goes out behind it and
    /// the broker closes the connection once it has read it. Closing first could lose
    /// the lot: a socket closed with unread input (say the PUBREL of the command being
    /// run) resets, and the broker drops what it had not read yet.
    async fn flush(&mut self) {
        if self.client.disconnect().await.is_err() {
            return;
        }
        let events = &mut self.events;
        let _ = timeout(FLUSH_PATIENCE, async {
            while let Some(event) = events.recv().await {
                if matches!(event, LinkEvent::Down(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Drives rumqttc's event loop, which reconnects on the next poll after an error.
async fn poll(
    mut event_loop: EventLoop,
    events: mpsc::UnboundedSender<LinkEvent>,
    retry: Duration,
) {
    loop {
        let event = match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::Connected,
            Ok(Event::Incoming(Packet::SubAck(_))) => LinkEvent::Subscribed,
            Ok(Event::Incoming(Packet::Publish(publish))) => LinkEvent::Message {
                topic: publish.topic,
                payload: publish.payload.to_vec(),
            },
            Ok(_) => continue,
            Err(error) => {
                if events.send(LinkEvent::Down(error.to_string())).is_err() {
                    return;
                }
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}
