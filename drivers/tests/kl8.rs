//! The KL-8 driver against the KL-8 simulator over Modbus TCP, checked against the
//! KL-8 interface manual.

mod common;

use std::collections::BTreeSet;

use common::{
    card_entry, connect, kl8_profile, kl8_table, serve_kl8, serve_px2, sorted_entries, stored,
    uid_entry, PATIENCE,
};
use gardien_drivers::lock::KeyIdentity;
use gardien_drivers::{Applied, Credential, DriverError, Entry, Fingerprint};
use gardien_simulators::{AccessResult, Faults, Kl8Config, Kl8Device, Px2Config, Record, Uid};

fn config() -> Kl8Config {
    Kl8Config::default()
}

/// Cards of the RAM table must be unique: two records with one card are a fault.
fn assert_no_duplicate_cards(kl8: &Kl8Device) {
    let records = kl8.snapshot().records;
    let cards: BTreeSet<u32> = records.iter().map(|(_, r)| r.card).collect();
    assert_eq!(cards.len(), records.len(), "duplicate cards: {records:?}");
}

#[tokio::test]
async fn identify_and_card_numbers_round_trip() {
    let (kl8, server) = serve_kl8(config(), Faults::seeded(1)).await;
    let profile = kl8_profile();
    let mut driver = connect(&profile, &server, 17).await;

    let identity = driver.identify().await.expect("identify a fresh KL-8");
    assert_eq!(identity.model_code, 0x4B38);
    assert_eq!(identity.firmware, (1, 4));
    assert_eq!(identity.capacity, 1000);
    assert_eq!(identity.fingerprint, Fingerprint::ChangeCounter(0));

    // A 4-byte badge: its UID read little-endian (manual: 04 A2 2B 91 → 2435555844).
    let uid = [0x04, 0xA2, 0x2B, 0x91];
    let badge = profile
        .credential_for(&KeyIdentity::Badge(uid.to_vec()))
        .expect("a 4-byte badge fits a KL-8");
    assert_eq!(badge, Credential::Card(2_435_555_844));
    let entry = Entry {
        credential: badge.clone(),
        doors: 0b10,
    };
    assert_eq!(driver.add(&entry).await, Ok(Applied::Done));

    // A remote: its printed serial.
    let remote = profile
        .credential_for(&KeyIdentity::Remote(123_456))
        .expect("a remote fits a KL-8");
    assert_eq!(remote, Credential::Card(123_456));
    assert_eq!(
        driver
            .add(&Entry {
                credential: remote.clone(),
                doors: 0b1000_0001,
            })
            .await,
        Ok(Applied::Done)
    );

    // The device holds the card numbers themselves (stored low word first, which the
    // simulator decodes): the badge opens door 2 and no other, the remote doors 1 and 8.
    let records = kl8.snapshot().records;
    assert!(
        records
            .iter()
            .any(|(_, r)| *r == Record::active(0x912B_A204, 0b10)),
        "{records:?}"
    );
    let sim_uid = Uid::new(&uid).expect("uid");
    assert_eq!(kl8.present(&sim_uid, 2), Ok(AccessResult::Granted));
    assert_eq!(kl8.present(&sim_uid, 1), Ok(AccessResult::DeniedDoor));
    assert_eq!(kl8.present_card(123_456, 8), Ok(AccessResult::Granted));
    assert_eq!(kl8.present_card(123_456, 2), Ok(AccessResult::DeniedDoor));

    // Read back: the same card numbers, and the badge's UID comes back from its card.
    let table = stored(&driver.read_table().await.expect("read the table"));
    assert_eq!(table, kl8_table(&kl8));
    let back = table
        .iter()
        .find_map(|(_, e)| match e.credential {
            Credential::Card(card) if e.doors == 0b10 => Some(card.to_le_bytes()),
            _ => None,
        })
        .expect("the badge is in the table");
    assert_eq!(back, uid);

    let identity = driver.identify().await.expect("identify");
    assert_eq!(identity.fingerprint, Fingerprint::ChangeCounter(2));
    assert_eq!(identity.used, Some(2));
}

#[tokio::test]
async fn add_remove_set_doors_and_transactions() {
    let (kl8, server) = serve_kl8(config(), Faults::seeded(2)).await;
    let mut driver = connect(&kl8_profile(), &server, 17).await;
    driver.read_table().await.expect("load the table image");

    let a = card_entry(1111, 0b0001);
    let b = card_entry(2222, 0b0110);
    assert_eq!(driver.add(&a).await, Ok(Applied::Done));
    assert_eq!(driver.add(&b).await, Ok(Applied::Done));

    let c = card_entry(3333, 0b1000_0000);
    let before = driver.transactions();
    assert_eq!(driver.add(&c).await, Ok(Applied::Done));
    let add_cost = driver.transactions() - before;

    let before = driver.transactions();
    assert_eq!(
        driver.add(&card_entry(3333, 0xFF)).await,
        Ok(Applied::AlreadyPresent)
    );
    let already_cost = driver.transactions() - before;

    let before = driver.transactions();
    assert_eq!(
        driver.set_doors(&card_entry(2222, 0b0011)).await,
        Ok(Applied::Done)
    );
    let set_cost = driver.transactions() - before;

    let before = driver.transactions();
    assert_eq!(
        driver.remove(&Credential::Card(1111)).await,
        Ok(Applied::Done)
    );
    let remove_cost = driver.transactions() - before;

    assert_eq!(
        driver.remove(&Credential::Card(1111)).await,
        Ok(Applied::NotFound)
    );
    assert_eq!(
        driver.set_doors(&card_entry(1111, 1)).await,
        Ok(Applied::NotFound)
    );
    println!(
        "KL-8 transactions with the image loaded: add {add_cost}, add of a present card {already_cost}, set_doors {set_cost}, remove {remove_cost}"
    );
    assert_eq!(add_cost, 1, "one FC16 of the record");
    assert_eq!(already_cost, 0, "known from the image");
    assert_eq!(set_cost, 1, "one FC16 of the record");
    assert_eq!(remove_cost, 1, "one FC06 of the state");

    let table = stored(&driver.read_table().await.expect("read the table"));
    assert_eq!(table, kl8_table(&kl8));
    assert_eq!(
        sorted_entries(&table),
        vec![card_entry(2222, 0b0011), card_entry(3333, 0b1000_0000)]
    );
    assert_no_duplicate_cards(&kl8);
    let identity = driver.identify().await.expect("identify");
    assert_eq!(identity.fingerprint, Fingerprint::ChangeCounter(5));

    // Masks beyond the 8 doors of a KL-8 are refused before anything is sent.
    let before = driver.transactions();
    assert!(matches!(
        driver.add(&card_entry(4444, 0x0100)).await,
        Err(DriverError::Unsupported(_))
    ));
    assert_eq!(driver.transactions(), before);
}

#[tokio::test]
async fn one_add_is_one_transaction_once_the_image_is_loaded() {
    let (kl8, server) = serve_kl8(config(), Faults::seeded(3)).await;
    let mut driver = connect(&kl8_profile(), &server, 17).await;
    // The first change loads the image (several reads), the next ones write only.
    let before = driver.transactions();
    assert_eq!(driver.add(&card_entry(1, 1)).await, Ok(Applied::Done));
    let first = driver.transactions() - before;
    let mut counts = Vec::new();
    for card in 2..=11 {
        let before = driver.transactions();
        assert_eq!(driver.add(&card_entry(card, 1)).await, Ok(Applied::Done));
        counts.push(driver.transactions() - before);
    }
    println!("KL-8 transactions: first add (loads the image) {first}, next adds {counts:?}");
    assert!(counts.iter().all(|&n| n == 1), "{counts:?}");
    assert_eq!(kl8.snapshot().records.len(), 11);
    assert_no_duplicate_cards(&kl8);
}

#[tokio::test]
async fn persist_survives_a_power_cut_unsaved_writes_do_not() {
    let (kl8, server) = serve_kl8(config(), Faults::seeded(4)).await;
    let mut driver = connect(&kl8_profile(), &server, 17).await;
    let a = card_entry(10, 0b01);
    let b = card_entry(20, 0b10);
    let c = card_entry(30, 0b11);
    assert_eq!(driver.add(&a).await, Ok(Applied::Done));
    assert_eq!(driver.add(&b).await, Ok(Applied::Done));
    driver.persist().await.expect("save to flash");
    let snapshot = kl8.snapshot();
    assert!(!snapshot.saving, "persist waits for the save to finish");
    assert_eq!(snapshot.saved, snapshot.records);

    assert_eq!(driver.add(&c).await, Ok(Applied::Done));
    assert_eq!(kl8.snapshot().records.len(), 3);

    kl8.reboot_with_memory_loss();
    assert_eq!(
        sorted_entries(&kl8_table(&kl8)),
        vec![a.clone(), b.clone()],
        "saved records kept, the unsaved one lost"
    );

    let identity = driver
        .identify()
        .await
        .expect("identify after the power cut");
    assert_eq!(identity.fingerprint, Fingerprint::ChangeCounter(0));
    let table = stored(&driver.read_table().await.expect("read the table"));
    assert_eq!(sorted_entries(&table), vec![a, b]);
}

/// After a power cut the driver's image is stale: a record it cleared (unsaved) is back,
/// a record it wrote (unsaved) is gone. Told by identify (change counter 0), it must
/// read the table again before its next change: not write over the record that came
/// back, and not believe the lost one is still there.
#[tokio::test]
async fn power_cut_makes_the_driver_read_the_table_again() {
    let (kl8, server) = serve_kl8(config(), Faults::seeded(5)).await;
    let mut driver = connect(&kl8_profile(), &server, 17).await;
    let a = card_entry(100, 0b0001);
    let b = card_entry(200, 0b0010);
    let c = card_entry(300, 0b0100);
    let d = card_entry(400, 0b1000);
    assert_eq!(
        driver.identify().await.map(|i| i.fingerprint),
        Ok(Fingerprint::ChangeCounter(0))
    );
    assert_eq!(driver.add(&a).await, Ok(Applied::Done));
    assert_eq!(driver.add(&b).await, Ok(Applied::Done));
    driver.persist().await.expect("save to flash");
    let saved = kl8_table(&kl8);
    let a_index = saved
        .iter()
        .find(|(_, e)| *e == a)
        .map(|(i, _)| *i)
        .expect("a is saved");

    // Unsaved: a removed (its record now free in the image), c added.
    assert_eq!(driver.remove(&a.credential).await, Ok(Applied::Done));
    assert_eq!(driver.add(&c).await, Ok(Applied::Done));
    assert_eq!(sorted_entries(&kl8_table(&kl8)), vec![b.clone(), c.clone()]);

    kl8.reboot_with_memory_loss();
    assert_eq!(kl8_table(&kl8), saved, "back to the saved table");

    let identity = driver
        .identify()
        .await
        .expect("identify after the power cut");
    assert_eq!(identity.fingerprint, Fingerprint::ChangeCounter(0));

    // d must not land on a's record, which is active again.
    assert_eq!(driver.add(&d).await, Ok(Applied::Done));
    let table = kl8_table(&kl8);
    assert!(
        table.contains(&(a_index, a.clone())),
        "a's record (index {a_index}) was overwritten: {table:?}"
    );
    assert_no_duplicate_cards(&kl8);

    // c was lost with the power: adding it again must write it, not answer AlreadyPresent.
    assert_eq!(driver.add(&c).await, Ok(Applied::Done));
    assert_eq!(
        sorted_entries(&kl8_table(&kl8)),
        vec![a.clone(), b.clone(), c.clone(), d.clone()]
    );

    // a is known again: removing it works.
    assert_eq!(driver.remove(&a.credential).await, Ok(Applied::Done));
    assert_eq!(
        sorted_entries(&kl8_table(&kl8)),
        vec![b.clone(), c.clone(), d.clone()]
    );
    let table = stored(&driver.read_table().await.expect("read the table"));
    assert_eq!(table, kl8_table(&kl8));
    assert_no_duplicate_cards(&kl8);
}

/// Another client writing the table moves the change counter: the driver reads the
/// table again rather than trust its image.
#[tokio::test]
async fn another_writer_makes_the_driver_read_the_table_again() {
    let (kl8, server) = serve_kl8(config(), Faults::seeded(6)).await;
    let profile = kl8_profile();
    let mut driver = connect(&profile, &server, 17).await;
    let mut other = connect(&profile, &server, 17).await;
    assert_eq!(driver.add(&card_entry(1, 1)).await, Ok(Applied::Done));
    // The other client loads its own image (after the first write) and writes record 1.
    assert_eq!(other.add(&card_entry(2, 2)).await, Ok(Applied::Done));
    let identity = driver.identify().await.expect("identify");
    assert_eq!(identity.fingerprint, Fingerprint::ChangeCounter(2));
    assert_eq!(driver.add(&card_entry(3, 4)).await, Ok(Applied::Done));
    assert_eq!(
        sorted_entries(&kl8_table(&kl8)),
        vec![card_entry(1, 1), card_entry(2, 2), card_entry(3, 4)]
    );
    assert_no_duplicate_cards(&kl8);
}

#[tokio::test]
async fn long_uids_are_unsupported() {
    let (kl8, server) = serve_kl8(config(), Faults::seeded(7)).await;
    let profile = kl8_profile();
    let mut driver = connect(&profile, &server, 17).await;
    for uid in [
        vec![0x04, 1, 2, 3, 4, 5, 6],
        vec![0x04, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    ] {
        let refused = profile.credential_for(&KeyIdentity::Badge(uid.clone()));
        assert!(
            matches!(refused, Err(DriverError::Unsupported(_))),
            "{} bytes: {refused:?}",
            uid.len()
        );
        let refused = driver.add(&uid_entry(&uid, 1)).await;
        assert!(
            matches!(refused, Err(DriverError::Unsupported(_))),
            "{} bytes: {refused:?}",
            uid.len()
        );
    }
    let snapshot = kl8.snapshot();
    assert!(snapshot.records.is_empty());
    assert_eq!(snapshot.change_counter, 0);
}

#[tokio::test]
async fn full_table_is_refused() {
    let (kl8, server) = serve_kl8(
        Kl8Config {
            capacity: 3,
            ..config()
        },
        Faults::seeded(8),
    )
    .await;
    let mut driver = connect(&kl8_profile(), &server, 17).await;
    for card in 1..=3 {
        assert_eq!(driver.add(&card_entry(card, 1)).await, Ok(Applied::Done));
    }
    let refused = driver.add(&card_entry(4, 1)).await;
    assert!(
        matches!(refused, Err(DriverError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(kl8.snapshot().records.len(), 3);
    assert_eq!(driver.remove(&Credential::Card(2)).await, Ok(Applied::Done));
    assert_eq!(driver.add(&card_entry(4, 1)).await, Ok(Applied::Done));
    assert_eq!(
        sorted_entries(&kl8_table(&kl8)),
        vec![card_entry(1, 1), card_entry(3, 1), card_entry(4, 1)]
    );
}

#[tokio::test]
async fn doors_events_and_clock() {
    let (kl8, server) = serve_kl8(config(), Faults::seeded(9)).await;
    let mut driver = connect(&kl8_profile(), &server, 17).await;
    driver.open_door(3).await.expect("open door 3");
    driver.open_door(8).await.expect("open door 8");
    assert_eq!(kl8.with(|m, _| m.door_pulses(3)), 1);
    assert_eq!(kl8.with(|m, _| m.door_pulses(8)), 1);
    assert!(matches!(
        driver.open_door(9).await,
        Err(DriverError::Unsupported(_))
    ));
    assert!(matches!(
        driver.read_events(0).await,
        Err(DriverError::Unsupported(_))
    ));
    assert_eq!(driver.read_clock().await, Ok(None));
    assert!(driver.set_clock(1).await.is_err());
}

/// A PX-2 where a KL-8 is configured: refused as the wrong device, nothing written.
#[tokio::test]
async fn wrong_model_is_refused_and_nothing_written() {
    let (px2, server) = serve_px2(
        Px2Config {
            unit_id: 17,
            ..Px2Config::default()
        },
        Faults::seeded(10),
    )
    .await;
    let mut driver = connect(&kl8_profile(), &server, 17).await;
    let identified = driver.identify().await;
    assert!(
        matches!(identified, Err(DriverError::WrongDevice(_))),
        "{identified:?}"
    );
    let added = tokio::time::timeout(PATIENCE, driver.add(&card_entry(1, 1)))
        .await
        .expect("add answers");
    assert!(added.is_err(), "{added:?}");
    assert_eq!(px2.snapshot().used, 0, "nothing written to the PX-2");
}
