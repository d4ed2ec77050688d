//! The PX-2 driver against the PX-2 simulator over Modbus TCP, checked against the
//! PX-2 interface manual.

mod common;

use std::time::Duration;

use common::{
    connect, px2_profile, px2_table, serve_kl8, serve_px2, sim_uid, sorted_entries, stored,
    uid_entry, wait_until, PATIENCE,
};
use gardien_drivers::digest::table_digest;
use gardien_drivers::{
    AccessResult, Applied, Credential, DriverError, Entry, Fingerprint, LockController,
};
use gardien_simulators::{Faults, Kl8Config, Px2Config};

const CLOCK: u32 = 1_700_000_000;

fn config() -> Px2Config {
    Px2Config {
        clock: Some(CLOCK),
        seed: Some(3),
        ..Px2Config::default()
    }
}

fn access(result: gardien_simulators::AccessResult) -> AccessResult {
    match result {
        gardien_simulators::AccessResult::Granted => AccessResult::Granted,
        gardien_simulators::AccessResult::DeniedUnknown => AccessResult::DeniedUnknown,
        gardien_simulators::AccessResult::DeniedDoor => AccessResult::DeniedDoor,
    }
}

/// Runs one add and answers its outcome and the transactions it took.
async fn counted_add(driver: &mut dyn LockController, entry: &Entry) -> (Applied, u64) {
    let before = driver.transactions();
    let applied = driver.add(entry).await.expect("add");
    (applied, driver.transactions() - before)
}

#[tokio::test]
async fn identify_add_remove_and_digest() {
    let (px2, server) = serve_px2(config(), Faults::seeded(1)).await;
    let profile = px2_profile();
    let mut driver = connect(&profile, &server, 1).await;

    let identity = driver.identify().await.expect("identify a fresh PX-2");
    assert_eq!(identity.model_code, 0x5032);
    assert_eq!(identity.firmware, (2, 3));
    assert_eq!(identity.capacity, 2000);
    assert_eq!(identity.used, Some(0));
    assert_eq!(
        identity.fingerprint,
        Fingerprint::Digest {
            digest: 0,
            boot_counter: 1
        }
    );

    let badge = uid_entry(&[0x04, 0xA2, 0x2B, 0x91], 0b0011);
    let seven = uid_entry(&[0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66], 0b1000);
    let ten = uid_entry(&[0xAB, 1, 2, 3, 4, 5, 6, 7, 8, 9], 0x8001);
    let remote = uid_entry(&[0, 1, 0xE2, 0x40], 0b0100);

    let mut counts = Vec::new();
    for entry in [&badge, &seven, &ten, &remote] {
        let (applied, transactions) = counted_add(driver.as_mut(), entry).await;
        assert_eq!(applied, Applied::Done, "first add of {}", entry.credential);
        counts.push(transactions);
    }
    println!("PX-2 transactions per add: {counts:?}");
    assert!(
        counts.iter().all(|&n| (2..=3).contains(&n)),
        "an add is one mailbox write and one or two result reads: {counts:?}"
    );

    // ADD of a UID already there leaves its doors alone.
    let again = uid_entry(&[0x04, 0xA2, 0x2B, 0x91], 0xFFFF);
    assert_eq!(driver.add(&again).await, Ok(Applied::AlreadyPresent));
    let doors_of = |table: &[(u16, Entry)], credential: &Credential| {
        table
            .iter()
            .find(|(_, e)| &e.credential == credential)
            .map(|(_, e)| e.doors)
    };
    assert_eq!(doors_of(&px2_table(&px2), &badge.credential), Some(0b0011));

    let badge = uid_entry(&[0x04, 0xA2, 0x2B, 0x91], 0b0101);
    assert_eq!(driver.set_doors(&badge).await, Ok(Applied::Done));
    assert_eq!(doors_of(&px2_table(&px2), &badge.credential), Some(0b0101));
    assert_eq!(
        driver.set_doors(&uid_entry(&[0x99], 1)).await,
        Ok(Applied::NotFound)
    );

    assert_eq!(driver.remove(&seven.credential).await, Ok(Applied::Done));
    assert_eq!(
        driver.remove(&seven.credential).await,
        Ok(Applied::NotFound)
    );

    // The table the driver reads is the device's, slot for slot.
    let read = stored(&driver.read_table().await.expect("read the table"));
    assert_eq!(read, px2_table(&px2));
    let expected = vec![badge.clone(), ten.clone(), remote.clone()];
    assert_eq!(
        sorted_entries(&read),
        sorted_entries(&expected.iter().map(|e| (0, e.clone())).collect::<Vec<_>>())
    );

    let identity = driver.identify().await.expect("identify again");
    assert_eq!(identity.used, Some(3));
    let Fingerprint::Digest {
        digest,
        boot_counter,
    } = identity.fingerprint
    else {
        panic!("a PX-2 has a digest: {:?}", identity.fingerprint)
    };
    assert_eq!(boot_counter, 1);
    let read_entries: Vec<Entry> = read.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(
        digest,
        table_digest(&read_entries),
        "digest of what was read"
    );
    assert_eq!(
        digest,
        table_digest(&expected),
        "digest of what was expected"
    );
    assert_eq!(digest, px2.snapshot().digest);
    assert_ne!(digest, 0);
}

#[tokio::test]
async fn transactions_per_add() {
    let (_px2, server) = serve_px2(config(), Faults::seeded(2)).await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    let mut counts = Vec::new();
    for n in 0u8..20 {
        let (applied, transactions) = counted_add(driver.as_mut(), &uid_entry(&[0x10, n], 1)).await;
        assert_eq!(applied, Applied::Done);
        counts.push(transactions);
    }
    println!("PX-2 transactions per add over 20 adds: {counts:?}");
    assert!(
        counts.iter().all(|&n| n <= 3),
        "at most one write and two reads per add: {counts:?}"
    );
}

#[tokio::test]
async fn open_door() {
    let (px2, server) = serve_px2(config(), Faults::seeded(3)).await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    driver.open_door(2).await.expect("open door 2");
    driver.open_door(2).await.expect("open door 2 again");
    driver.open_door(4).await.expect("open door 4");
    assert_eq!(px2.with(|m, _| m.door_openings(2)), 2);
    assert_eq!(px2.with(|m, _| m.door_openings(4)), 1);
    assert_eq!(px2.with(|m, _| m.door_openings(1)), 0);
    assert!(matches!(
        driver.open_door(0).await,
        Err(DriverError::Unsupported(_))
    ));
    // The simulator has 4 doors fitted: door 5 is a bad request, refused by the device.
    assert!(matches!(
        driver.open_door(5).await,
        Err(DriverError::Refused(_))
    ));
}

#[tokio::test]
async fn events_cursor_and_lost_events() {
    let (px2, server) = serve_px2(config(), Faults::seeded(4)).await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    let known = [0x04, 0xA2, 0x2B, 0x91];
    assert_eq!(
        driver.add(&uid_entry(&known, 0b0001)).await,
        Ok(Applied::Done)
    );

    let batch = driver.read_events(0).await.expect("read an empty log");
    assert!(batch.events.is_empty());
    assert_eq!((batch.lost, batch.cursor), (0, 0));

    let unknown = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07];
    let presented = [(&known[..], 1u8), (&known[..], 2), (&unknown[..], 3)];
    let mut expected = Vec::new();
    for (uid, door) in presented {
        let result = px2.present(&sim_uid(uid), door).expect("present");
        expected.push((Credential::Uid(uid.to_vec()), door, access(result)));
    }
    assert_eq!(
        expected.iter().map(|e| e.2).collect::<Vec<_>>(),
        [
            AccessResult::Granted,
            AccessResult::DeniedDoor,
            AccessResult::DeniedUnknown
        ]
    );

    let batch = driver.read_events(0).await.expect("read events");
    assert_eq!(batch.lost, 0);
    assert_eq!(batch.cursor, 3);
    let got: Vec<_> = batch
        .events
        .iter()
        .map(|e| (e.credential.clone(), e.door, e.result))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        batch.events.iter().map(|e| e.number).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    for event in &batch.events {
        assert!(
            (CLOCK..CLOCK + 60).contains(&event.time),
            "event time {} by the device clock",
            event.time
        );
    }

    // Nothing new since the cursor.
    let batch = driver.read_events(3).await.expect("read from the cursor");
    assert!(batch.events.is_empty());
    assert_eq!((batch.lost, batch.cursor), (0, 3));

    // 510 presentations since the cursor: the ring keeps 500, 10 are lost.
    let mut presented = Vec::new();
    for n in 0..510u32 {
        let uid = n.to_be_bytes();
        let door = (n % 4) as u8 + 1;
        let result = px2.present(&sim_uid(&uid), door).expect("present");
        presented.push((Credential::Uid(uid.to_vec()), door, access(result)));
    }
    let batch = driver.read_events(3).await.expect("read after overflow");
    assert_eq!(batch.lost, 10);
    assert_eq!(batch.cursor, 513);
    assert_eq!(batch.events.len(), 500);
    let got: Vec<_> = batch
        .events
        .iter()
        .map(|e| (e.credential.clone(), e.door, e.result))
        .collect();
    assert_eq!(got, presented[10..]);
    assert_eq!(batch.events[0].number, 13);
    assert_eq!(batch.events[499].number, 512);

    // And from the new cursor, only what comes after.
    px2.present(&sim_uid(&known), 1).expect("present");
    let batch = driver.read_events(513).await.expect("read the rest");
    assert_eq!((batch.lost, batch.cursor), (0, 514));
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].number, 513);
    assert_eq!(batch.events[0].credential, Credential::Uid(known.to_vec()));
    assert_eq!(batch.events[0].result, AccessResult::Granted);
}

/// The manual numbers events since power-up and places event n at position
/// n mod 500, while `written` wraps at 65536 (and 65536 is not a multiple of 500).
/// A client that keeps up (reads every few hundred events) must still get the events
/// presented once the counter has wrapped, in particular when its cursor is past the
/// wrap (event 65536 sits at position 36, not 0).
#[tokio::test]
async fn events_after_the_written_counter_wraps() {
    let (px2, server) = serve_px2(config(), Faults::seeded(5)).await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    let uid_of = |n: u32| n.to_be_bytes();
    let total: u32 = 65_536 + 100;
    let mut cursor = 0u64;
    let mut wrong = Vec::new();
    for n in 0..total {
        px2.present(&sim_uid(&uid_of(n)), 1).expect("present");
        let read_now = n % 400 == 399 || n == 65_536 + 4 || n == total - 1;
        if !read_now {
            continue;
        }
        let batch = driver.read_events(cursor).await.expect("read events");
        assert_eq!(
            batch.lost, 0,
            "a client reading every 400 events loses none"
        );
        assert_eq!(batch.cursor, u64::from(n + 1));
        let first = n + 1 - batch.events.len() as u32;
        let got: Vec<Credential> = batch.events.iter().map(|e| e.credential.clone()).collect();
        let expected: Vec<Credential> = (first..=n)
            .map(|k| Credential::Uid(uid_of(k).to_vec()))
            .collect();
        if got != expected {
            wrong.push(format!(
                "read from cursor {cursor} after event {n}: expected events {first}..={n}, got UIDs {}..",
                got.first().map_or("none".into(), |c| c.to_string())
            ));
        }
        cursor = batch.cursor;
    }
    assert!(
        wrong.is_empty(),
        "events read after `written` wrapped are not the ones presented:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn clock() {
    let (px2, server) = serve_px2(config(), Faults::seeded(6)).await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    let before = driver.read_clock().await.expect("read the clock");
    assert!(
        before.is_some_and(|t| (CLOCK..CLOCK + 60).contains(&t)),
        "{before:?}"
    );
    let target = 1_800_000_123;
    driver.set_clock(target).await.expect("set the clock");
    let read = driver
        .read_clock()
        .await
        .expect("read the clock")
        .expect("a PX-2 has a clock");
    assert!((target..=target + 2).contains(&read), "clock reads {read}");
    let device = px2.snapshot().clock;
    assert!(
        (target..=target + 2).contains(&device),
        "device at {device}"
    );
}

#[tokio::test]
async fn full_table_is_refused() {
    let (px2, server) = serve_px2(
        Px2Config {
            capacity: 3,
            ..config()
        },
        Faults::seeded(7),
    )
    .await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    assert_eq!(driver.identify().await.expect("identify").capacity, 3);
    for n in 1..=3u8 {
        assert_eq!(driver.add(&uid_entry(&[n], 1)).await, Ok(Applied::Done));
    }
    let refused = driver.add(&uid_entry(&[4], 1)).await;
    assert!(
        matches!(refused, Err(DriverError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(px2.snapshot().used, 3);
    // Room again after a removal.
    assert_eq!(
        driver.remove(&Credential::Uid(vec![2])).await,
        Ok(Applied::Done)
    );
    assert_eq!(driver.add(&uid_entry(&[4], 1)).await, Ok(Applied::Done));
    let table = stored(&driver.read_table().await.expect("read table"));
    assert_eq!(table, px2_table(&px2));
    assert_eq!(table.len(), 3);

    // A capacity limit (table full earlier than the model's size) is refused the same way.
    px2.set_capacity_limit(Some(3));
    let refused = driver.add(&uid_entry(&[5], 1)).await;
    assert!(
        matches!(refused, Err(DriverError::Refused(_))),
        "{refused:?}"
    );
}

/// A KL-8 where a PX-2 is configured: refused as the wrong device, and nothing written.
#[tokio::test]
async fn wrong_model_is_refused_and_nothing_written() {
    let (kl8, server) = serve_kl8(
        Kl8Config {
            unit_id: 1,
            ..Kl8Config::default()
        },
        Faults::seeded(8),
    )
    .await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    let identified = driver.identify().await;
    let added = driver.add(&uid_entry(&[0x04, 0xA2, 0x2B, 0x91], 1)).await;
    let snapshot = kl8.snapshot();
    assert!(snapshot.records.is_empty(), "{:?}", snapshot.records);
    assert_eq!(snapshot.change_counter, 0, "nothing written to the KL-8");
    assert!(added.is_err(), "an add to a KL-8 through the PX-2 driver");
    assert!(
        matches!(identified, Err(DriverError::WrongDevice(_))),
        "a KL-8 behind the PX-2 profile must be WrongDevice, got {identified:?}"
    );
}

/// Same model, other firmware line: refused, and the driver then writes nothing even
/// if asked (the crate promises "nothing is written to it").
#[tokio::test]
async fn wrong_firmware_is_refused_and_nothing_written() {
    let (px2, server) = serve_px2(
        Px2Config {
            firmware: 0x0301,
            ..config()
        },
        Faults::seeded(9),
    )
    .await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    let identified = driver.identify().await;
    assert!(
        matches!(identified, Err(DriverError::WrongDevice(_))),
        "firmware 3.1 behind the 2.x profile: {identified:?}"
    );
    let added = driver.add(&uid_entry(&[0x04, 0xA2, 0x2B, 0x91], 1)).await;
    wait_until("the PX-2 is idle", PATIENCE, || !px2.snapshot().busy).await;
    assert_eq!(
        px2.snapshot().used,
        0,
        "the driver wrote to a device it identified as the wrong one (add answered {added:?})"
    );
    assert!(added.is_err(), "add after WrongDevice answered {added:?}");
}

#[tokio::test]
async fn unsupported_credentials_and_masks() {
    let (px2, server) = serve_px2(config(), Faults::seeded(10)).await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    let card = Entry {
        credential: Credential::Card(1234),
        doors: 1,
    };
    assert!(matches!(
        driver.add(&card).await,
        Err(DriverError::Unsupported(_))
    ));
    assert!(matches!(
        driver.add(&uid_entry(&[0; 11], 1)).await,
        Err(DriverError::Unsupported(_))
    ));
    assert!(matches!(
        driver.add(&uid_entry(&[], 1)).await,
        Err(DriverError::Unsupported(_))
    ));
    let transactions = driver.transactions();
    assert_eq!(transactions, 0, "refused before sending anything");
    assert_eq!(px2.snapshot().used, 0);
    // Commands complete well within the manual's 50 ms: no result poll takes long.
    let started = tokio::time::Instant::now();
    assert_eq!(driver.add(&uid_entry(&[1], 1)).await, Ok(Applied::Done));
    assert!(started.elapsed() < Duration::from_millis(500));
}
