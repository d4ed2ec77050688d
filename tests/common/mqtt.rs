//! A broker in a child process, so that a test can stop and restart it: the embedded
//! broker (`gardien mqtt-broker`, rumqttd) by default, or a real Mosquitto with
//! passwords and an ACL under the `external` feature (`.ci/run` installs it).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gardien::mqtt::MqttConfig;
use gardien_simulators::esprfid::MqttBroker;

/// The account gardien uses, and the one devices use (restricted by the ACL).
pub const SERVICE_USER: (&str, &str) = ("gardien", "service-secret");
pub const DEVICE_USER: (&str, &str) = ("device", "device-secret");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Embedded,
    Mosquitto,
}

pub struct BrokerProcess {
    pub kind: BrokerKind,
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl BrokerProcess {
    pub fn start(kind: BrokerKind) -> BrokerProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let mut broker = BrokerProcess {
            kind,
            addr: port,
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        if kind == BrokerKind::Mosquitto {
            broker.write_mosquitto_files();
        }
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let child = match self.kind {
            // The embedded broker checks one account; the ACL is Mosquitto's part.
            BrokerKind::Embedded => Command::new(env!("CARGO_BIN_EXE_gardien"))
                .args(["mqtt-broker", "--listen", &self.addr.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn(),
            BrokerKind::Mosquitto => Command::new(mosquitto_binary())
                .arg("-c")
                .arg(self.dir.path().join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn(),
        }
        .expect("start the broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{:?} broker not listening on {}",
                self.kind,
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (no clean shutdown: sessions and queues in memory are gone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// gardien's `[mqtt]` for this broker.
    pub fn service_config(&self) -> MqttConfig {
        let (username, password) = match self.kind {
            BrokerKind::Embedded => (None, None),
            BrokerKind::Mosquitto => (Some(SERVICE_USER.0.into()), Some(SERVICE_USER.1.into())),
        };
        MqttConfig {
            enabled: true,
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            client_id: Some(format!("gardien-test-{}", self.addr.port())),
            username,
            password,
            keep_alive_seconds: 5,
            reconnect_max_seconds: 1,
            ..MqttConfig::default()
        }
    }

    /// Where simulated devices connect, with the device account on Mosquitto.
    pub fn device_broker(&self) -> MqttBroker {
        let broker = MqttBroker::from(self.addr);
        match self.kind {
            BrokerKind::Embedded => broker,
            BrokerKind::Mosquitto => broker.with_credentials(DEVICE_USER.0, DEVICE_USER.1),
        }
    }

    fn write_mosquitto_files(&self) {
        let dir = self.dir.path();
        let passwords = dir.join("passwords");
        for (i, (user, password)) in [SERVICE_USER, DEVICE_USER].iter().enumerate() {
            let mut command = Command::new("mosquitto_passwd");
            if i == 0 {
                command.arg("-c");
            }
            let status = command
                .arg("-b")
                .arg(&passwords)
                .args([user, password])
                .status()
                .expect("mosquitto_passwd (Debian package mosquitto; .ci/run installs it)");
            assert!(status.success(), "mosquitto_passwd failed");
        }
        // The service reads and writes everything; devices only their own topics.
        let acl = format!(
            "user {}\ntopic readwrite #\n\nuser {}\ntopic read +/cmd\ntopic write +/send\ntopic write wmbusmeters/#\n",
            SERVICE_USER.0, DEVICE_USER.0
        );
        std::fs::write(dir.join("acl"), acl).expect("acl");
        let conf = format!(
            "listener {} {}\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\nlog_dest stderr\n",
            self.addr.port(),
            self.addr.ip(),
            passwords.display(),
            dir.join("acl").display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).expect("mosquitto.conf");
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn mosquitto_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}
