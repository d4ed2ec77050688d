//! End to end over real sockets: what the engine finds on controllers it did not program
//! (audits, drift, ghost import), what it reads back from them (access events, gaps,
//! alerts, clocks), keys whose validity starts and ends by themselves, and the per-key
//! report across several controllers.

mod common;

use chrono::{DateTime, SecondsFormat, Utc};
use common::{eventually, eventually_async, px2_table, Client, Fixture, TestServer};
use gardien::sync::SyncConfig;
use gardien_drivers::{connect_lock_controller, Credential, Endpoint, Entry, LockController};
use gardien_simulators::{AccessResult, Faults, Px2Config, Px2Device, TcpServer, Uid};
use serde_json::{json, Value};

/// Routine visits (events, clock) on every pass of the engine.
fn routine_config() -> SyncConfig {
    SyncConfig {
        routine_seconds: 0,
        ..common::test_sync_config()
    }
}

fn uid(hex: &str) -> Uid {
    Uid::from_hex(hex).expect("a valid UID")
}

/// Writes entries straight into the simulated table, as years of hand-outs by someone
/// else would have left them.
fn preload(device: &Px2Device, entries: &[(&str, u16)]) {
    device.with(|px2, _| {
        for (hex, door_mask) in entries {
            px2.insert(gardien_simulators::Entry {
                uid: uid(hex),
                door_mask: *door_mask,
            })
            .expect("room in the table");
        }
    });
}

/// A PX-2 driver of our own, to change the device behind the service's back.
async fn driver(server: &TcpServer) -> Box<dyn LockController> {
    let registry = gardien_drivers::Registry::builtin().expect("embedded profiles");
    let profile = registry.get("px2-fw2").expect("PX-2 profile").clone();
    let mut driver =
        connect_lock_controller(&profile, &Endpoint::Tcp(server.local_addr().to_string()), 1)
            .await
            .expect("connect to the PX-2");
    driver.identify().await.expect("identify the PX-2");
    driver
}

/// The body of a PX-2 controller record at `server`.
fn controller_body(name: &str, server: &TcpServer, policy: &str) -> Value {
    json!({ "name": name, "model": "PX-2", "transport": "modbus_tcp",
            "address": server.local_addr().to_string(), "modbus_unit": 1, "policy": policy })
}

/// Points the fixture's controller at `server` with `policy`.
async fn attach(admin: &Client, f: &Fixture, server: &TcpServer, policy: &str) {
    let moved = admin
        .put(
            &f.path(&format!("/controllers/{}", f.controller)),
            controller_body("Centrale", server, policy),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.body["policy"], policy, "{}", moved.body);
}

async fn get_ok(admin: &Client, path: &str) -> Value {
    let response = admin.get(path).await;
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    response.body
}

async fn status(admin: &Client, f: &Fixture, controller: i64) -> Value {
    get_ok(admin, &f.path(&format!("/controllers/{controller}/status"))).await
}

async fn drift(admin: &Client, f: &Fixture) -> Vec<Value> {
    get_ok(
        admin,
        &f.path(&format!("/controllers/{}/drift", f.controller)),
    )
    .await
    .as_array()
    .expect("drift list")
    .clone()
}

/// Drift rows as (credential, kind, expected doors, actual doors), sorted.
fn drift_summary(rows: &[Value]) -> Vec<(String, String, Value, Value)> {
    let mut rows: Vec<_> = rows
        .iter()
        .map(|row| {
            (
                row["credential"].as_str().expect("credential").to_owned(),
                row["kind"].as_str().expect("kind").to_owned(),
                row["expected_doors"].clone(),
                row["actual_doors"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    rows
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().and_then(|text| text.parse().ok())
}

/// Waits until the controller has been visited at least once.
async fn wait_first_visit(admin: &Client, f: &Fixture, controller: i64) -> Value {
    let path = f.path(&format!("/controllers/{controller}/status"));
    eventually_async(
        10,
        "the controller's first visit",
        || admin.get(&path),
        |response| response.status == 200 && !response.body["last_seen_at"].is_null(),
    )
    .await
    .body
}

/// Requests an audit of the fixture's controller and waits until a visit that started
/// after the request has read the table and recorded what it found.
async fn audit_and_wait(admin: &Client, f: &Fixture) -> Value {
    let requested_at = Utc::now();
    let response = admin
        .post(
            &f.path(&format!("/controllers/{}/audit", f.controller)),
            json!({}),
        )
        .await;
    assert_eq!(response.status, 202, "{}", response.body);
    let path = f.path(&format!("/controllers/{}/status", f.controller));
    eventually_async(
        10,
        "the requested audit done",
        || admin.get(&path),
        |response| time(&response.body["audited_at"]).is_some_and(|at| at >= requested_at),
    )
    .await
    .body
}

async fn key_sync(admin: &Client, f: &Fixture, key: i64) -> Value {
    get_ok(admin, &f.path(&format!("/keys/{key}/sync"))).await
}

/// Waits until every line of the key's sync report is confirmed.
async fn wait_key_confirmed(admin: &Client, f: &Fixture, key: i64, lines: usize) -> Value {
    let path = f.path(&format!("/keys/{key}/sync"));
    eventually_async(
        15,
        "the key confirmed on its controllers",
        || admin.get(&path),
        |response| {
            response.body["controllers"]
                .as_array()
                .is_some_and(|c| c.len() == lines && c.iter().all(|l| l["state"] == "confirmed"))
        },
    )
    .await
    .body
}

async fn badge(admin: &Client, f: &Fixture, identifier: &str, profile: i64) -> i64 {
    admin
        .create(
            &f.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": identifier, "profile_ids": [profile] }),
        )
        .await
}

fn table(entries: &[(&str, u16)]) -> Vec<(String, u16)> {
    let mut table: Vec<(String, u16)> = entries
        .iter()
        .map(|(hex, mask)| (hex.to_string(), *mask))
        .collect();
    table.sort();
    table
}

#[tokio::test]
async fn ghost_keys_are_reported_under_audit_and_removed_under_enforce() {
    let (px2, px2_server) = common::px2_device(100).await;
    // Years of unrecorded hand-outs, and a badge the database knows with the wrong doors.
    let ghosts = [
        ("04B1B2B3B4B5B6", 0b001),
        ("0A0B0C0D", 0b111),
        ("04C1C2C3C4C5C6", 0b100),
    ];
    preload(&px2, &ghosts);
    preload(&px2, &[("04A22B91", 0b010)]);
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Fantômes").await;
    // Profile A: hall A (door 1) and the gate (door 3).
    let claire = badge(&admin, &f, "04A22B91", f.profiles[0]).await;
    attach(&admin, &f, &px2_server, "audit").await;
    server.start_engine(common::test_sync_config());

    // The first visit reads the whole table: the ghosts are reported and left alone,
    // the known badge is made true.
    let expected_ghosts: Vec<(String, String, Value, Value)> = {
        let mut rows: Vec<_> = ghosts
            .iter()
            .map(|(hex, mask)| {
                (
                    format!("uid:{hex}"),
                    "ghost".to_owned(),
                    Value::Null,
                    json!(mask),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    let drift_path = f.path(&format!("/controllers/{}/drift", f.controller));
    let found = eventually_async(
        10,
        "the ghosts reported by the first visit",
        || admin.get(&drift_path),
        |response| {
            response
                .body
                .as_array()
                .is_some_and(|rows| !rows.is_empty())
        },
    )
    .await;
    let found = found.body.as_array().expect("drift list").clone();
    // The known badge was pending (never programmed by the service): repaired, not
    // reported; only entries nobody knows are drift.
    assert_eq!(drift_summary(&found), expected_ghosts, "{found:?}");
    for row in &found {
        assert_eq!(row["controller_id"], f.controller, "{row}");
        assert!(row["resolved_at"].is_null(), "{row}");
    }
    let mut on_device = ghosts.to_vec();
    on_device.push(("04A22B91", 0b101));
    assert_eq!(
        px2_table(&px2),
        table(&on_device),
        "ghosts stay under audit"
    );
    let report = wait_key_confirmed(&admin, &f, claire, 1).await;
    assert_eq!(
        report["summary"], "programmé sur 1 centrale sur 1",
        "{report}"
    );
    assert_eq!(report["controllers"][0]["doors"], 0b101, "{report}");
    let seen = status(&admin, &f, f.controller).await;
    assert_eq!(seen["open_drift"], 3, "{seen}");
    assert_eq!(seen["used"], 4, "{seen}");
    assert_eq!(seen["pending"], 0, "{seen}");

    // Another audit under `audit` changes nothing on the device and finds the same.
    audit_and_wait(&admin, &f).await;
    assert_eq!(px2_table(&px2), table(&on_device));
    assert_eq!(drift_summary(&drift(&admin, &f).await), expected_ghosts);

    // Under `enforce`, the next audit removes the ghosts and the drift is resolved.
    attach(&admin, &f, &px2_server, "enforce").await;
    let after = audit_and_wait(&admin, &f).await;
    assert_eq!(
        px2_table(&px2),
        table(&[("04A22B91", 0b101)]),
        "ghosts removed under enforce"
    );
    assert_eq!(after["used"], 1, "{after}");
    let left = drift(&admin, &f).await;
    assert!(
        left.is_empty(),
        "the ghosts were removed from the device, yet their drift is still open: {left:?}"
    );
    let seen = status(&admin, &f, f.controller).await;
    assert_eq!(seen["open_drift"], 0, "{seen}");
    let report = key_sync(&admin, &f, claire).await;
    assert_eq!(report["controllers"][0]["state"], "confirmed", "{report}");
    server.stop().await;
    px2_server.stop().await;
}

#[tokio::test]
async fn an_imported_ghost_becomes_an_unassigned_key_and_stays() {
    let (px2, px2_server) = common::px2_device(100).await;
    // A ghost opening hall A and hall B: no profile of the fixture opens exactly that.
    preload(&px2, &[("04D1D2D3D4D5D6", 0b011)]);
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Importés").await;
    let claire = badge(&admin, &f, "04A22B91", f.profiles[0]).await;
    attach(&admin, &f, &px2_server, "audit").await;
    server.start_engine(common::test_sync_config());

    let drift_path = f.path(&format!("/controllers/{}/drift", f.controller));
    let found = eventually_async(
        10,
        "the ghost reported",
        || admin.get(&drift_path),
        |response| {
            response
                .body
                .as_array()
                .is_some_and(|rows| !rows.is_empty())
        },
    )
    .await
    .body;
    assert_eq!(
        drift_summary(found.as_array().expect("drift")),
        vec![(
            "uid:04D1D2D3D4D5D6".to_owned(),
            "ghost".to_owned(),
            Value::Null,
            json!(0b011)
        )]
    );
    let ghost = found[0]["id"].as_i64().expect("drift id");

    let imported = admin
        .post(&f.path(&format!("/drift/{ghost}/import")), json!({}))
        .await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let key = &imported.body;
    assert_eq!(key["kind"], "vigik_badge", "{key}");
    assert_eq!(key["identifier"], "04D1D2D3D4D5D6", "{key}");
    assert_eq!(key["status"], "active", "{key}");
    assert!(key["holder_person_id"].is_null(), "no holder: {key}");
    assert!(key["holder_provider_id"].is_null(), "no holder: {key}");
    let key_id = key["id"].as_i64().expect("key id");
    let profiles = key["profile_ids"].as_array().expect("profile ids");
    assert_eq!(profiles.len(), 1, "{key}");
    let profile = get_ok(
        &admin,
        &f.path(&format!("/profiles/{}", profiles[0].as_i64().expect("id"))),
    )
    .await;
    assert_eq!(
        profile["name"], "Importé — Centrale portes 1+2",
        "{profile}"
    );
    let mut locks: Vec<i64> = profile["lock_ids"]
        .as_array()
        .expect("lock ids")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    locks.sort_unstable();
    assert_eq!(locks, vec![f.locks[0], f.locks[1]], "same doors: {profile}");
    assert!(
        drift(&admin, &f).await.is_empty(),
        "the imported ghost is no longer open drift"
    );

    // The key is programmed where it already was: nothing changes at the door.
    let report = wait_key_confirmed(&admin, &f, key_id, 1).await;
    assert_eq!(
        report["summary"], "programmé sur 1 centrale sur 1",
        "{report}"
    );
    assert_eq!(report["controllers"][0]["doors"], 0b011, "{report}");
    assert_eq!(
        px2_table(&px2),
        table(&[("04A22B91", 0b101), ("04D1D2D3D4D5D6", 0b011)])
    );

    // Importing the same entry again: it is no longer an unknown entry.
    let again = admin
        .post(&f.path(&format!("/drift/{ghost}/import")), json!({}))
        .await;
    assert_eq!(again.status, 409, "{}", again.body);

    // Someone changes Claire's doors on the device itself; under `enforce` the next
    // audit reports it (it was confirmed) and repairs it, and keeps the imported key.
    wait_key_confirmed(&admin, &f, claire, 1).await;
    let mut tamper = driver(&px2_server).await;
    tamper
        .set_doors(&Entry {
            credential: Credential::Uid(vec![0x04, 0xA2, 0x2B, 0x91]),
            doors: 0b010,
        })
        .await
        .expect("set doors behind the service's back");
    drop(tamper);
    attach(&admin, &f, &px2_server, "enforce").await;
    audit_and_wait(&admin, &f).await;
    assert_eq!(
        px2_table(&px2),
        table(&[("04A22B91", 0b101), ("04D1D2D3D4D5D6", 0b011)]),
        "the imported key stays under enforce; Claire's doors repaired"
    );
    let found = drift(&admin, &f).await;
    assert_eq!(
        drift_summary(&found),
        vec![(
            "uid:04A22B91".to_owned(),
            "wrong_doors".to_owned(),
            json!(0b101),
            json!(0b010)
        )],
        "{found:?}"
    );
    let wrong = found[0]["id"].as_i64().expect("drift id");
    let refused = admin
        .post(&f.path(&format!("/drift/{wrong}/import")), json!({}))
        .await;
    assert_eq!(
        refused.status, 409,
        "only a ghost can be imported: {}",
        refused.body
    );
    let missing = admin.post(&f.path("/drift/999999/import"), json!({})).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    server.stop().await;
    px2_server.stop().await;
}

#[tokio::test]
async fn access_events_are_read_and_a_lost_badge_at_a_door_raises_an_alert() {
    let (px2, px2_server) = common::px2_device(100).await;
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Portes").await;
    let claire = badge(&admin, &f, "04A22B91", f.profiles[0]).await;
    attach(&admin, &f, &px2_server, "audit").await;
    server.start_engine(routine_config());
    eventually(
        10,
        "the badge programmed",
        || px2_table(&px2),
        |t| *t == table(&[("04A22B91", 0b101)]),
    )
    .await;

    assert_eq!(px2.present(&uid("04A22B91"), 1), Ok(AccessResult::Granted));
    assert_eq!(
        px2.present(&uid("04EEEEEEEEEEEE"), 2),
        Ok(AccessResult::DeniedUnknown)
    );
    let events_path = f.path("/access-events");
    let events = eventually_async(
        10,
        "both events read",
        || admin.get(&events_path),
        |response| response.body.as_array().is_some_and(|rows| rows.len() >= 2),
    )
    .await
    .body;
    let events = events.as_array().expect("events");
    assert_eq!(events.len(), 2, "{events:?}");
    // Newest first.
    let (unknown, granted) = (&events[0], &events[1]);
    assert_eq!(granted["result"], "granted", "{granted}");
    assert_eq!(granted["door"], 1, "{granted}");
    assert_eq!(granted["lock_id"], f.locks[0], "{granted}");
    assert_eq!(granted["key_id"], claire, "{granted}");
    assert_eq!(granted["credential"], "uid:04A22B91", "{granted}");
    assert_eq!(granted["controller_id"], f.controller, "{granted}");
    assert_eq!(unknown["result"], "denied_unknown", "{unknown}");
    assert_eq!(unknown["door"], 2, "{unknown}");
    assert_eq!(unknown["lock_id"], f.locks[1], "{unknown}");
    assert!(unknown["key_id"].is_null(), "{unknown}");
    assert_eq!(unknown["credential"], "uid:04EEEEEEEEEEEE", "{unknown}");

    let by_key = get_ok(&admin, &format!("{events_path}?key_id={claire}")).await;
    assert_eq!(common::ids(&by_key), vec![granted["id"].as_i64().unwrap()]);
    let by_lock = get_ok(&admin, &format!("{events_path}?lock_id={}", f.locks[1])).await;
    assert_eq!(common::ids(&by_lock), vec![unknown["id"].as_i64().unwrap()]);
    let bad = admin.get(&format!("{events_path}?limit=0")).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(
        get_ok(&admin, &f.path("/alerts")).await,
        json!([]),
        "an active key at its door is no alert"
    );

    // Lost: removed from the controller, then someone tries it at hall A.
    let lost = admin
        .post(
            &f.path(&format!("/keys/{claire}/declare-lost")),
            json!({ "reason": "perdu" }),
        )
        .await;
    assert_eq!(lost.status, 200, "{}", lost.body);
    eventually(
        10,
        "the lost badge removed",
        || px2_table(&px2),
        |t| t.is_empty(),
    )
    .await;
    assert_eq!(
        px2.present(&uid("04A22B91"), 1),
        Ok(AccessResult::DeniedUnknown)
    );
    let alerts_path = f.path("/alerts");
    let alerts = eventually_async(
        10,
        "the alert raised",
        || admin.get(&alerts_path),
        |response| {
            response
                .body
                .as_array()
                .is_some_and(|rows| !rows.is_empty())
        },
    )
    .await
    .body;
    let alerts = alerts.as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["kind"], "inactive_key_presented", "{alert}");
    assert_eq!(alert["key_id"], claire, "{alert}");
    assert_eq!(alert["controller_id"], f.controller, "{alert}");
    let message = alert["message"].as_str().expect("message");
    for part in [
        "04A22B91",
        "perdu",
        "porte 1",
        "« Centrale »",
        "accès refusé",
    ] {
        assert!(message.contains(part), "{part:?} in {message:?}");
    }
    let latest = get_ok(&admin, &format!("{events_path}?key_id={claire}&limit=1")).await;
    assert_eq!(latest[0]["result"], "denied_unknown", "{latest}");
    assert_eq!(latest[0]["lock_id"], f.locks[0], "{latest}");
    assert_eq!(alert["access_event_id"], latest[0]["id"], "{alert}");

    let alert_id = alert["id"].as_i64().expect("alert id");
    let acknowledged = admin
        .post(
            &f.path(&format!("/alerts/{alert_id}/acknowledge")),
            json!({}),
        )
        .await;
    assert_eq!(acknowledged.status, 200, "{}", acknowledged.body);
    assert!(
        !acknowledged.body["acknowledged_at"].is_null(),
        "{}",
        acknowledged.body
    );
    assert_eq!(get_ok(&admin, &alerts_path).await, json!([]));
    let all = get_ok(&admin, &format!("{alerts_path}?all=true")).await;
    assert_eq!(common::ids(&all), vec![alert_id], "{all}");
    assert!(!all[0]["acknowledged_at"].is_null(), "{all}");
    server.stop().await;
    px2_server.stop().await;
}

#[tokio::test]
async fn events_lost_from_the_ring_between_two_polls_are_counted() {
    let (px2, px2_server) = common::px2_device(100).await;
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Anneaux").await;
    attach(&admin, &f, &px2_server, "audit").await;
    assert_eq!(
        px2.present(&uid("04E1E2E3E4E5E6"), 2),
        Ok(AccessResult::DeniedUnknown)
    );
    server.start_engine(routine_config());
    // The first contact reads what the log holds, without calling it a gap.
    let status_path = f.path(&format!("/controllers/{}/status", f.controller));
    eventually_async(
        10,
        "the first poll of the event log",
        || admin.get(&status_path),
        |response| response.body["event_cursor"] == 1,
    )
    .await;
    let events_path = f.path("/access-events?limit=500");
    let first = get_ok(&admin, &events_path).await;
    assert_eq!(first.as_array().expect("events").len(), 1, "{first}");
    assert_eq!(first[0]["result"], "denied_unknown", "{first}");

    // 520 presentations while the service is down: the ring keeps the last 500.
    server.stop_engine().await;
    for _ in 0..520 {
        px2.present(&uid("04E1E2E3E4E5E6"), 2)
            .expect("door 2 exists");
    }
    server.start_engine(routine_config());
    eventually_async(
        10,
        "the burst polled",
        || admin.get(&status_path),
        |response| response.body["event_cursor"] == 521,
    )
    .await;

    // The gap sits behind the 500 events read with it: ask for gaps by name.
    let listed = get_ok(&admin, &f.path("/access-events?result=gap")).await;
    let gaps: Vec<&Value> = listed.as_array().expect("events").iter().collect();
    let newest = get_ok(&admin, &events_path).await;
    assert_eq!(
        newest.as_array().map(Vec::len),
        Some(500),
        "the newest page is full"
    );
    let older_id = newest[499]["id"].as_i64().expect("id");
    let older = get_ok(
        &admin,
        &f.path(&format!("/access-events?before_id={older_id}&limit=500")),
    )
    .await;
    assert!(
        older
            .as_array()
            .expect("events")
            .iter()
            .any(|row| row["result"] == "gap"),
        "paging reaches the gap: {older}"
    );
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = gaps[0];
    assert_eq!(gap["lost_events"], 20, "{gap}");
    assert_eq!(gap["controller_id"], f.controller, "{gap}");
    assert!(gap["key_id"].is_null(), "{gap}");
    server.stop().await;
    px2_server.stop().await;
}

#[tokio::test]
async fn a_key_enters_and_leaves_the_controllers_on_time_by_itself() {
    let (px2, px2_server) = common::px2_device(100).await;
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Horaires").await;
    attach(&admin, &f, &px2_server, "audit").await;
    server.start_engine(common::test_sync_config());
    wait_first_visit(&admin, &f, f.controller).await;

    // Valid for two seconds, starting in about two (whole seconds, as stored).
    let start: DateTime<Utc> = (Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(SecondsFormat::Secs, true)
        .parse()
        .expect("time");
    let end = start + chrono::Duration::seconds(2);
    let key = admin
        .create(
            &f.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": "04F1F2F3F4F5F6",
                    "profile_ids": [f.profiles[1]],
                    "valid_from": start.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "valid_until": end.to_rfc3339_opts(SecondsFormat::Secs, true) }),
        )
        .await;
    let programmed = table(&[("04F1F2F3F4F5F6", 0b110)]);

    // Absent before its start; there within moments of it. The table is read before
    // the clock, so an entry seen while the clock is still before the start was
    // programmed early.
    let deadline = start + chrono::Duration::seconds(3);
    let entered_at = loop {
        let held = px2_table(&px2);
        let now = Utc::now();
        if now < start {
            assert!(held.is_empty(), "programmed before its start: {held:?}");
        } else if held == programmed {
            break now;
        }
        assert!(
            now < deadline,
            "not programmed 3 s after its start: {held:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(entered_at >= start);

    // There until its end; gone within moments of it.
    let deadline = end + chrono::Duration::seconds(3);
    loop {
        let held = px2_table(&px2);
        let now = Utc::now();
        if now < end {
            assert_eq!(held, programmed, "removed before its end");
        } else if held.is_empty() {
            break;
        }
        assert!(
            now < deadline,
            "still programmed 3 s after its end: {held:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let report = wait_key_confirmed(&admin, &f, key, 1).await;
    assert_eq!(report["summary"], "retiré de 1 centrale sur 1", "{report}");
    assert_eq!(report["controllers"][0]["doors"], 0, "{report}");
    server.stop().await;
    px2_server.stop().await;
}

#[tokio::test]
async fn controller_clocks_are_set_from_the_service() {
    let config = Px2Config {
        capacity: 100,
        doors: 4,
        seed: Some(6),
        // 1 January 2001.
        clock: Some(978_307_200),
        ..Default::default()
    };
    let px2 = Px2Device::new(config, Faults::seeded(6));
    let px2_server = gardien_simulators::serve_tcp(px2.clone(), "127.0.0.1:0")
        .await
        .expect("serve PX-2");
    let offset = |px2: &Px2Device| (i64::from(px2.snapshot().clock) - Utc::now().timestamp()).abs();
    assert!(offset(&px2) > 365 * 24 * 3600);
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Horloges").await;
    attach(&admin, &f, &px2_server, "audit").await;
    server.start_engine(routine_config());
    eventually(
        10,
        "the device clock set",
        || offset(&px2),
        |seconds| *seconds <= 3,
    )
    .await;
    server.stop().await;
    px2_server.stop().await;
}

#[tokio::test]
async fn the_key_report_counts_controllers_and_says_what_is_pending() {
    let (px2_a, server_a) = common::px2_device(100).await;
    let (px2_b, server_b) = common::px2_device(100).await;
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Deux Centrales").await;
    attach(&admin, &f, &server_a, "audit").await;
    let second = admin
        .create(
            &f.path("/controllers"),
            controller_body("Centrale B", &server_b, "audit"),
        )
        .await;
    let cellar = admin
        .create(
            &f.path("/locks"),
            json!({ "name": "Cave", "kind": "door", "controller_id": second, "door_number": 2 }),
        )
        .await;
    let both = admin
        .create(
            &f.path("/profiles"),
            json!({ "name": "Hall A et cave", "lock_ids": [f.locks[0], cellar] }),
        )
        .await;
    let key = badge(&admin, &f, "04A22B91", both).await;
    server.start_engine(common::test_sync_config());

    let report = wait_key_confirmed(&admin, &f, key, 2).await;
    assert_eq!(
        report["summary"], "programmé sur 2 centrales sur 2",
        "{report}"
    );
    assert_eq!(px2_table(&px2_a), table(&[("04A22B91", 0b001)]));
    assert_eq!(px2_table(&px2_b), table(&[("04A22B91", 0b010)]));
    let mut names: Vec<&str> = report["controllers"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|line| line["controller_name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["Centrale", "Centrale B"], "{report}");

    // The cellar's controller is unreachable when the badge is declared lost.
    px2_b.faults().go_offline(None);
    let lost = admin
        .post(
            &f.path(&format!("/keys/{key}/declare-lost")),
            json!({ "reason": "perdu" }),
        )
        .await;
    assert_eq!(lost.status, 200, "{}", lost.body);
    let path = f.path(&format!("/keys/{key}/sync"));
    let report = eventually_async(
        10,
        "removed from the reachable controller",
        || admin.get(&path),
        |response| {
            response.body["controllers"]
                .as_array()
                .is_some_and(|lines| lines.iter().any(|l| l["state"] == "confirmed"))
        },
    )
    .await
    .body;
    assert!(px2_table(&px2_a).is_empty());
    assert_eq!(
        px2_table(&px2_b),
        table(&[("04A22B91", 0b010)]),
        "offline, still there"
    );
    let lines = report["controllers"].as_array().expect("lines");
    let pending: Vec<&Value> = lines.iter().filter(|l| l["state"] == "pending").collect();
    assert_eq!(pending.len(), 1, "{report}");
    assert_eq!(pending[0]["controller_id"], second, "{report}");
    assert_eq!(pending[0]["doors"], 0, "{report}");
    let since = time(&pending[0]["changed_at"])
        .expect("changed_at")
        .with_timezone(&chrono_tz::Europe::Paris)
        .format("%H:%M");
    assert_eq!(
        report["summary"],
        format!("retiré de 1 centrale sur 2, 1 en attente depuis {since}"),
        "{report}"
    );

    // Back online: the removal goes through.
    px2_b.faults().go_online();
    let report = wait_key_confirmed(&admin, &f, key, 2).await;
    assert_eq!(report["summary"], "retiré de 2 centrales sur 2", "{report}");
    assert!(px2_table(&px2_b).is_empty());
    server.stop().await;
    server_a.stop().await;
    server_b.stop().await;
}
