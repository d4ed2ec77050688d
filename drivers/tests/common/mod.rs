//! Helpers shared by the driver tests: profiles, simulators on real sockets, conversions
//! between the driver's and the simulator's view of a table, polling with a deadline.

#![allow(dead_code)] // each test file uses its own subset

use std::time::Duration;

use gardien_drivers::{
    connect_lock_controller, Credential, DeviceProfile, Endpoint, Entry, LockController, Registry,
    StoredEntry,
};
use gardien_simulators::{
    serve_tcp, Faults, Kl8Config, Kl8Device, Px2Config, Px2Device, Record, TcpServer, Uid,
};
use tokio::time::{timeout, Instant};

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn profile(id: &str) -> DeviceProfile {
    Registry::builtin()
        .expect("embedded profiles are valid")
        .get(id)
        .unwrap_or_else(|| panic!("profile {id} is embedded"))
        .clone()
}

pub fn px2_profile() -> DeviceProfile {
    profile("px2-fw2")
}

pub fn kl8_profile() -> DeviceProfile {
    profile("kl8-fw1")
}

pub async fn serve_px2(config: Px2Config, faults: Faults) -> (Px2Device, TcpServer) {
    let px2 = Px2Device::new(config, faults);
    let server = serve_tcp(px2.clone(), "127.0.0.1:0")
        .await
        .expect("serve the PX-2 on TCP");
    (px2, server)
}

pub async fn serve_kl8(config: Kl8Config, faults: Faults) -> (Kl8Device, TcpServer) {
    let kl8 = Kl8Device::new(config, faults);
    let server = serve_tcp(kl8.clone(), "127.0.0.1:0")
        .await
        .expect("serve the KL-8 on TCP");
    (kl8, server)
}

pub fn tcp(server: &TcpServer) -> Endpoint {
    Endpoint::Tcp(server.local_addr().to_string())
}

pub async fn connect_to(
    profile: &DeviceProfile,
    endpoint: &Endpoint,
    unit: u8,
) -> Box<dyn LockController> {
    timeout(PATIENCE, connect_lock_controller(profile, endpoint, unit))
        .await
        .expect("connect within the patience")
        .expect("connect to the simulator")
}

pub async fn connect(
    profile: &DeviceProfile,
    server: &TcpServer,
    unit: u8,
) -> Box<dyn LockController> {
    connect_to(profile, &tcp(server), unit).await
}

pub fn uid_entry(uid: &[u8], doors: u16) -> Entry {
    Entry {
        credential: Credential::Uid(uid.to_vec()),
        doors,
    }
}

pub fn card_entry(card: u32, doors: u16) -> Entry {
    Entry {
        credential: Credential::Card(card),
        doors,
    }
}

pub fn sim_uid(uid: &[u8]) -> Uid {
    Uid::new(uid).expect("a UID of 1 to 10 bytes")
}

/// The simulator's form of a PX-2 entry.
pub fn sim_entry(entry: &Entry) -> gardien_simulators::Entry {
    gardien_simulators::Entry {
        uid: sim_uid(entry.credential.uid().expect("a UID entry")),
        door_mask: entry.doors,
    }
}

/// The driver's form of a simulator PX-2 entry.
pub fn driver_entry(entry: &gardien_simulators::Entry) -> Entry {
    uid_entry(entry.uid.as_bytes(), entry.door_mask)
}

/// A PX-2 table as (slot, entry), in slot order, from the simulator.
pub fn px2_table(px2: &Px2Device) -> Vec<(u16, Entry)> {
    px2.snapshot()
        .entries
        .iter()
        .map(|(slot, entry)| (*slot, driver_entry(entry)))
        .collect()
}

/// A KL-8 table as (record, entry), in record order, from the simulator's RAM.
pub fn kl8_table(kl8: &Kl8Device) -> Vec<(u16, Entry)> {
    records_as_entries(&kl8.snapshot().records)
}

pub fn records_as_entries(records: &[(u16, Record)]) -> Vec<(u16, Entry)> {
    records
        .iter()
        .map(|(index, record)| (*index, card_entry(record.card, record.door_mask)))
        .collect()
}

/// What a driver read, in the same shape.
pub fn stored(entries: &[StoredEntry]) -> Vec<(u16, Entry)> {
    entries
        .iter()
        .map(|stored| (stored.slot, stored.entry.clone()))
        .collect()
}

/// Entries without their slots, sorted, for comparing sets.
pub fn sorted_entries(table: &[(u16, Entry)]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = table.iter().map(|(_, entry)| entry.clone()).collect();
    entries.sort_by(|a, b| (&a.credential, a.doors).cmp(&(&b.credential, b.doors)));
    entries
}

/// Polls `condition` until it holds, failing the test after `within`.
pub async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < end, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
