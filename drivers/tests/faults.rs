//! Faults never lead to a wrong table. With requests and answers lost, exceptions and
//! latency injected, a random sequence of adds, removals and door changes goes through
//! the driver, which is reconnected whenever its link may be out of step. With the
//! faults cleared, the device's table must be one the reported outcomes allow: an
//! operation that reported success happened exactly as reported, one that failed may
//! or may not have happened.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    card_entry, connect, kl8_profile, kl8_table, px2_profile, px2_table, serve_kl8, serve_px2,
    stored, uid_entry, wait_until, PATIENCE,
};
use gardien_drivers::{Applied, Credential, DeviceProfile, DriverError, Entry, LockController};
use gardien_simulators::{Faults, Kl8Config, Px2Config, TcpServer};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio_modbus::ExceptionCode;

/// Keys the operations draw from: few, so that they meet each other often.
const KEYS: usize = 6;

#[derive(Debug, Clone, Copy)]
enum Op {
    Add(usize, u16),
    Remove(usize),
    SetDoors(usize, u16),
}

impl Op {
    fn key(self) -> usize {
        match self {
            Op::Add(key, _) | Op::Remove(key) | Op::SetDoors(key, _) => key,
        }
    }

    /// What the op does to a key in `state` (its doors, or `None` when absent), and
    /// what a device answers.
    fn effect(self, state: Option<u16>) -> (Applied, Option<u16>) {
        match (self, state) {
            (Op::Add(_, doors), None) => (Applied::Done, Some(doors)),
            (Op::Add(..), Some(old)) => (Applied::AlreadyPresent, Some(old)),
            (Op::Remove(_), Some(_)) => (Applied::Done, None),
            (Op::Remove(_), None) => (Applied::NotFound, None),
            (Op::SetDoors(_, doors), Some(_)) => (Applied::Done, Some(doors)),
            (Op::SetDoors(..), None) => (Applied::NotFound, None),
        }
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let doors = 1..=0xFFu16; // within the 8 doors of a KL-8 and the 16 of a PX-2
    prop::collection::vec(
        prop_oneof![
            3 => (0..KEYS, doors.clone()).prop_map(|(k, d)| Op::Add(k, d)),
            2 => (0..KEYS).prop_map(Op::Remove),
            1 => (0..KEYS, doors).prop_map(|(k, d)| Op::SetDoors(k, d)),
        ],
        8..28,
    )
}

/// The states each key may be in, given the outcomes reported so far.
struct Model {
    states: Vec<BTreeSet<Option<u16>>>,
    log: Vec<String>,
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![BTreeSet::from([None]); KEYS],
            log: Vec::new(),
        }
    }

    fn record(&mut self, op: Op, outcome: &Result<Applied, DriverError>) -> Result<(), String> {
        self.log.push(format!("{op:?} -> {outcome:?}"));
        let states = &self.states[op.key()];
        let next: BTreeSet<Option<u16>> = match outcome {
            Ok(applied) => states
                .iter()
                .map(|&state| op.effect(state))
                .filter(|(answer, _)| answer == applied)
                .map(|(_, state)| state)
                .collect(),
            // Failed: may have happened or not.
            Err(_) => states
                .iter()
                .flat_map(|&state| [state, op.effect(state).1])
                .collect(),
        };
        if next.is_empty() {
            return Err(format!(
                "{op:?} reported {outcome:?}, impossible from states {states:?}\n{}",
                self.log.join("\n")
            ));
        }
        self.states[op.key()] = next;
        Ok(())
    }

    /// Checks the device table (credential → doors, every row as read) against the model.
    fn check(
        &self,
        table: &[Entry],
        credential_of: impl Fn(usize) -> Credential,
    ) -> Result<(), String> {
        let history = || self.log.join("\n");
        let mut by_credential: BTreeMap<&Credential, u16> = BTreeMap::new();
        for entry in table {
            if by_credential
                .insert(&entry.credential, entry.doors)
                .is_some()
            {
                return Err(format!(
                    "{} is in the table twice: {table:?}\n{}",
                    entry.credential,
                    history()
                ));
            }
        }
        let known: Vec<Credential> = (0..KEYS).map(&credential_of).collect();
        if let Some(stranger) = table.iter().find(|e| !known.contains(&e.credential)) {
            return Err(format!(
                "{} is in the table and nobody asked for it\n{}",
                stranger.credential,
                history()
            ));
        }
        for (key, credential) in known.iter().enumerate() {
            let actual = by_credential.get(credential).copied();
            if !self.states[key].contains(&actual) {
                return Err(format!(
                    "{credential} is {actual:?} in the table, the outcomes allow {:?}\n{}",
                    self.states[key],
                    history()
                ));
            }
        }
        Ok(())
    }
}

/// Which faults, from which seed.
fn inject(faults: &Faults) {
    faults.set_latency(Duration::from_millis(2));
    faults.set_drop_probability(0.1);
    faults.set_drop_reply_probability(0.1);
    faults.set_exception(Some((ExceptionCode::ServerDeviceFailure, 0.2)));
}

/// A profile that gives up sooner, so that lost requests cost little test time.
fn impatient(mut profile: DeviceProfile) -> DeviceProfile {
    if let Some(modbus) = profile.modbus.as_mut() {
        modbus.timeout_ms = 100;
    }
    profile
}

async fn apply(
    driver: &mut dyn LockController,
    op: Op,
    entry: Entry,
) -> Result<Applied, DriverError> {
    match op {
        Op::Add(..) => driver.add(&entry).await,
        Op::Remove(_) => driver.remove(&entry.credential).await,
        Op::SetDoors(..) => driver.set_doors(&entry).await,
    }
}

/// Runs `ops` through drivers of `profile` at `server`, reconnecting after any error
/// but a Modbus exception (an exception leaves the link in step; continuing on it also
/// checks the driver's state after a refused request). Answers the model.
async fn run_ops(
    profile: &DeviceProfile,
    server: &TcpServer,
    unit: u8,
    ops: &[Op],
    entry_of: impl Fn(usize, u16) -> Entry,
) -> Result<Model, String> {
    let mut model = Model::new();
    let mut driver = connect(profile, server, unit).await;
    let (mut errors, mut reconnects) = (0, 0);
    for &op in ops {
        let doors = match op {
            Op::Add(_, doors) | Op::SetDoors(_, doors) => doors,
            Op::Remove(_) => 0,
        };
        let outcome = tokio::time::timeout(
            PATIENCE,
            apply(driver.as_mut(), op, entry_of(op.key(), doors)),
        )
        .await
        .map_err(|_| format!("{op:?} did not finish within {PATIENCE:?}"))?;
        if let Err(err) = &outcome {
            errors += 1;
            if matches!(
                err,
                DriverError::Refused(_) | DriverError::Unsupported(_) | DriverError::Protocol(_)
            ) {
                return Err(format!("{op:?}: unexpected error {err}"));
            }
            if !matches!(err, DriverError::Exception { .. }) {
                drop(driver);
                driver = connect(profile, server, unit).await;
                reconnects += 1;
            }
        }
        model.record(op, &outcome)?;
    }
    println!(
        "{}: {} ops, {errors} failed, {reconnects} reconnections",
        profile.model,
        ops.len()
    );
    Ok(model)
}

fn px2_uid(key: usize) -> Vec<u8> {
    // Lengths 1 to 10, all distinct.
    let len = 1 + (key * 3) % 10;
    (0..len)
        .map(|i| 0xC0 ^ (key as u8) ^ (i as u8 * 17))
        .collect()
}

async fn px2_case(seed: u64, ops: Vec<Op>) -> Result<(), String> {
    let config = Px2Config {
        capacity: 32,
        seed: Some(seed),
        exec_time: Duration::from_millis(2)..=Duration::from_millis(10),
        ..Px2Config::default()
    };
    let (px2, server) = serve_px2(config, Faults::seeded(seed)).await;
    inject(px2.faults());
    let profile = impatient(px2_profile());
    let model = run_ops(&profile, &server, 1, &ops, |key, doors| {
        uid_entry(&px2_uid(key), doors)
    })
    .await?;

    px2.faults().clear();
    // A command whose answer was lost may still be running.
    wait_until("the PX-2 is idle", PATIENCE, || !px2.snapshot().busy).await;
    let mut driver = connect(&px2_profile(), &server, 1).await;
    let read = stored(&driver.read_table().await.map_err(|e| e.to_string())?);
    if read != px2_table(&px2) {
        return Err(format!("read {read:?}, device holds {:?}", px2_table(&px2)));
    }
    let entries: Vec<Entry> = read.into_iter().map(|(_, e)| e).collect();
    model.check(&entries, |key| Credential::Uid(px2_uid(key)))?;
    let identity = driver.identify().await.map_err(|e| e.to_string())?;
    let expected = gardien_drivers::digest::table_digest(&entries);
    if identity.fingerprint
        != (gardien_drivers::Fingerprint::Digest {
            digest: expected,
            boot_counter: 1,
        })
    {
        return Err(format!(
            "digest {:?}, table's {expected:#010x}",
            identity.fingerprint
        ));
    }
    Ok(())
}

fn kl8_card(key: usize) -> u32 {
    0x1000_0000 + key as u32 * 7919
}

async fn kl8_case(seed: u64, ops: Vec<Op>) -> Result<(), String> {
    let config = Kl8Config {
        capacity: 16,
        ..Kl8Config::default()
    };
    let (kl8, server) = serve_kl8(config, Faults::seeded(seed)).await;
    inject(kl8.faults());
    let profile = impatient(kl8_profile());
    let model = run_ops(&profile, &server, 17, &ops, |key, doors| {
        card_entry(kl8_card(key), doors)
    })
    .await?;

    kl8.faults().clear();
    let mut driver = connect(&kl8_profile(), &server, 17).await;
    let read = stored(&driver.read_table().await.map_err(|e| e.to_string())?);
    if read != kl8_table(&kl8) {
        return Err(format!("read {read:?}, device holds {:?}", kl8_table(&kl8)));
    }
    let entries: Vec<Entry> = read.into_iter().map(|(_, e)| e).collect();
    model.check(&entries, |key| Credential::Card(kl8_card(key)))
}

fn block_on(
    case: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(case).map_err(TestCaseError::fail)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("FAULT_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16),
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn px2_faults_never_lead_to_a_wrong_table(seed in any::<u64>(), ops in ops()) {
        block_on(px2_case(seed, ops))?;
    }

    #[test]
    fn kl8_faults_never_lead_to_a_wrong_table(seed in any::<u64>(), ops in ops()) {
        block_on(kl8_case(seed, ops))?;
    }
}

/// The model itself: a reported outcome that cannot be is caught.
#[test]
fn model_catches_impossible_reports() {
    let mut model = Model::new();
    assert!(model.record(Op::Add(0, 1), &Ok(Applied::Done)).is_ok());
    assert!(model.record(Op::Add(0, 2), &Ok(Applied::Done)).is_err());
    let mut model = Model::new();
    let lost = Err(DriverError::Protocol("lost".into()));
    assert!(model.record(Op::Add(1, 3), &lost).is_ok());
    assert!(model.check(&[], |k| Credential::Card(k as u32)).is_ok());
    assert!(model
        .check(&[card_entry(1, 3)], |k| Credential::Card(k as u32))
        .is_ok());
    assert!(model
        .check(&[card_entry(1, 4)], |k| Credential::Card(k as u32))
        .is_err());
    assert!(model
        .check(&[card_entry(1, 3), card_entry(1, 3)], |k| Credential::Card(
            k as u32
        ))
        .is_err());
    assert!(model
        .check(&[card_entry(99, 3)], |k| Credential::Card(k as u32))
        .is_err());
}
