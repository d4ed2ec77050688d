//! The PX-2 table digest: the driver's computation, the simulator's, and what a
//! simulated device reports after the entries are added through the driver agree.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{connect, px2_profile, px2_table, serve_px2, sim_entry, sorted_entries, uid_entry};
use gardien_drivers::digest::{entry_digest, table_digest};
use gardien_drivers::{Applied, Entry, Fingerprint};
use gardien_simulators::{Faults, Px2Config};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Up to `max` entries with distinct UIDs of 1 to 10 bytes and any door mask.
fn tables(max: usize) -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::btree_map(
        prop::collection::vec(any::<u8>(), 1..=10),
        any::<u16>(),
        0..=max,
    )
    .prop_map(|table: BTreeMap<Vec<u8>, u16>| {
        table
            .into_iter()
            .map(|(uid, doors)| uid_entry(&uid, doors))
            .collect()
    })
}

async fn digest_through_the_device(entries: Vec<Entry>) -> Result<(), String> {
    let config = Px2Config {
        capacity: 64,
        exec_time: Duration::from_millis(1)..=Duration::from_millis(3),
        seed: Some(entries.len() as u64),
        ..Px2Config::default()
    };
    let (px2, server) = serve_px2(config, Faults::seeded(1)).await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    for entry in &entries {
        match driver.add(entry).await {
            Ok(Applied::Done) => {}
            other => return Err(format!("add {}: {other:?}", entry.credential)),
        }
    }
    let identity = driver.identify().await.map_err(|e| e.to_string())?;
    let expected = table_digest(&entries);
    let Fingerprint::Digest { digest, .. } = identity.fingerprint else {
        return Err(format!("no digest: {:?}", identity.fingerprint));
    };
    if digest != expected {
        return Err(format!(
            "device digest {digest:#010x}, expected {expected:#010x}"
        ));
    }
    let table = px2_table(&px2);
    let wanted: Vec<(u16, Entry)> = entries.iter().map(|e| (0, e.clone())).collect();
    if sorted_entries(&table) != sorted_entries(&wanted) {
        return Err(format!("device holds {table:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn driver_and_simulator_digests_agree(entries in tables(50)) {
        let ours = table_digest(&entries);
        let sim: Vec<gardien_simulators::Entry> = entries.iter().map(sim_entry).collect();
        prop_assert_eq!(ours, gardien_simulators::px2::digest(&sim));
        // Order does not matter, and each entry's part is the simulator's CRC.
        prop_assert_eq!(ours, table_digest(entries.iter().rev()));
        for (entry, sim) in entries.iter().zip(&sim) {
            let uid = entry.credential.uid().expect("uid entry");
            prop_assert_eq!(entry_digest(uid, entry.doors), sim.crc());
        }
        if entries.is_empty() {
            prop_assert_eq!(ours, 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn device_digest_after_adding_through_the_driver(entries in tables(30)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime
            .block_on(digest_through_the_device(entries))
            .map_err(TestCaseError::fail)?;
    }
}

/// The manual's example UID, checked against zlib's CRC-32 of the 14 bytes by hand.
#[test]
fn manual_example_digest() {
    let uid = [0x04, 0xA2, 0x2B, 0x91];
    let bytes = [0, 4, 0x04, 0xA2, 0x2B, 0x91, 0, 0, 0, 0, 0, 0, 0, 0b11];
    assert_eq!(entry_digest(&uid, 0b11), crc32fast::hash(&bytes));
    assert_eq!(
        table_digest([&uid_entry(&uid, 0b11)]),
        crc32fast::hash(&bytes)
    );
    assert_eq!(table_digest(std::iter::empty::<&Entry>()), 0);
}
