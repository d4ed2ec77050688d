//! An MQTT broker on loopback (rumqttd), so that the demo, the tests and a one-building
//! laptop set-up need nothing installed. It runs on its own threads, as rumqttd does,
//! and lives as long as the process: rumqttd has no shutdown. Tests that need to stop
//! and restart a broker run it in a child process (`gardien-sim broker`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// How the embedded broker is set up.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Where it listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Username and password clients must give; `None` accepts anyone.
    pub credentials: Option<(String, String)>,
    /// Largest publish accepted, in bytes.
    pub max_payload_size: usize,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            credentials: None,
            max_payload_size: 256 * 1024,
        }
    }
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no free port on {0}: {1}")]
    NoPort(SocketAddr, std::io::Error),
    #[error("the embedded MQTT broker could not start: {0}")]
    Start(String),
    #[error("the embedded MQTT broker did not listen on {0} within 10 s (port taken?)")]
    NotListening(SocketAddr),
}

impl EmbeddedBroker {
    /// Starts a broker and returns once it accepts connections.
    pub fn start(options: &BrokerOptions) -> Result<EmbeddedBroker, BrokerError> {
        let addr = if options.listen.port() == 0 {
            free_port(options.listen)?
        } else {
            options.listen
        };
        let mut broker = Broker::new(config(addr, options));
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "embedded MQTT broker stopped");
                }
            })
            .map_err(|e| BrokerError::Start(e.to_string()))?;
        wait_listening(addr, options.credentials.as_ref())?;
        tracing::info!(%addr, "embedded MQTT broker listening");
        Ok(EmbeddedBroker { addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A port free now on `listen`'s interface (rumqttd cannot report the port it bound).
pub fn free_port(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener = TcpListener::bind(listen).map_err(|e| BrokerError::NoPort(listen, e))?;
    listener
        .local_addr()
        .map_err(|e| BrokerError::NoPort(listen, e))
}

fn config(addr: SocketAddr, options: &BrokerOptions) -> Config {
    let auth = options
        .credentials
        .as_ref()
        .map(|(user, password)| HashMap::from([(user.clone(), password.clone())]));
    let server = ServerSettings {
        name: "v4-loopback".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: options.max_payload_size,
            max_inflight_count: 500,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}

/// Waits until the broker answers an MQTT CONNECT (a bare TCP probe would make it
/// log a failed connection).
fn wait_listening(
    addr: SocketAddr,
    credentials: Option<&(String, String)>,
) -> Result<(), BrokerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if probe(addr, credentials).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(addr))
}

/// One MQTT 3.1.1 CONNECT and its CONNACK, then the socket closes (rumqttd logs a
/// DISCONNECT racing the close as an error).
fn probe(addr: SocketAddr, credentials: Option<&(String, String)>) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let field = |text: &str| {
        let mut bytes = (text.len() as u16).to_be_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes
    };
    let mut body = field("MQTT");
    // Level 4; clean session, plus username and password when the broker wants them.
    let flags = if credentials.is_some() { 0xC2 } else { 0x02 };
    body.extend_from_slice(&[4, flags, 0, 10]);
    body.extend(field("gardien-broker-probe"));
    if let Some((user, password)) = credentials {
        body.extend(field(user));
        body.extend(field(password));
    }
    // Remaining length: 7 bits per byte, high bit set while more follow.
    let mut packet = vec![0x10];
    let mut length = body.len();
    loop {
        let byte = (length % 128) as u8;
        length /= 128;
        packet.push(if length > 0 { byte | 0x80 } else { byte });
        if length == 0 {
            break;
        }
    }
    packet.extend(body);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(&packet)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack[0] == 0x20 {
        Ok(())
    } else {
        Err(std::io::Error::other("not a CONNACK"))
    }
}
