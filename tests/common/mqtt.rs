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
    /// Mosquitto started with `start_with_tls`: a second listener, TLS with client
    /// certificates, for the service (devices stay on `addr`).
    pub tls: Option<TlsListener>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// A TLS listener and the files a client needs for it.
pub struct TlsListener {
    pub addr: SocketAddr,
    pub ca_file: std::path::PathBuf,
    pub client_cert_file: std::path::PathBuf,
    pub client_key_file: std::path::PathBuf,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

impl BrokerProcess {
    pub fn start(kind: BrokerKind) -> BrokerProcess {
        let mut broker = BrokerProcess {
            kind,
            addr: free_port(),
            tls: None,
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        if kind == BrokerKind::Mosquitto {
            broker.write_mosquitto_files();
        }
        broker.spawn();
        broker
    }

    /// Mosquitto with a plain listener (devices) and a TLS listener that requires a
    /// client certificate (the service), both under one test CA.
    pub fn start_with_tls() -> BrokerProcess {
        let mut broker = BrokerProcess {
            kind: BrokerKind::Mosquitto,
            addr: free_port(),
            tls: None,
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        broker.write_mosquitto_files();
        let tls = broker.write_tls_files();
        let conf = broker.dir.path().join("mosquitto.conf");
        let mut text = std::fs::read_to_string(&conf).expect("mosquitto.conf");
        let dir = broker.dir.path();
        text.push_str(&format!(
            "listener {} {}\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            tls.addr.port(),
            tls.addr.ip(),
            tls.ca_file.display(),
            dir.join("server.pem").display(),
            dir.join("server.key").display(),
        ));
        std::fs::write(&conf, text).expect("mosquitto.conf");
        broker.tls = Some(tls);
        broker.spawn();
        broker
    }

    fn write_tls_files(&self) -> TlsListener {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = self.dir.path();
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: a certificate named like its issuer looks self-signed.
        ca.distinguished_name
            .push(DnType::CommonName, "gardien test CA");
        let ca = ca.self_signed(&ca_key).expect("CA certificate");
        let issue = |names: Vec<String>, file: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, file);
            let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
            std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).expect("write cert");
            std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem())
                .expect("write key");
        };
        issue(vec!["127.0.0.1".into(), "localhost".into()], "server");
        issue(vec!["gardien".into()], "client");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
        TlsListener {
            addr: free_port(),
            ca_file: dir.join("ca.pem"),
            client_cert_file: dir.join("client.pem"),
            client_key_file: dir.join("client.key"),
        }
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

    /// gardien's `[mqtt]` for the TLS listener: CA, client certificate, account.
    pub fn service_tls_config(&self) -> MqttConfig {
        let tls = self.tls.as_ref().expect("a broker started with TLS");
        MqttConfig {
            host: tls.addr.ip().to_string(),
            port: tls.addr.port(),
            tls: Some(gardien::mqtt::config::TlsConfig {
                ca_file: tls.ca_file.clone(),
                client_cert_file: Some(tls.client_cert_file.clone()),
                client_key_file: Some(tls.client_key_file.clone()),
            }),
            ..self.service_config()
        }
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
