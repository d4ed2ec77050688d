//! Meters through HTTP: gateways and meters, what residents see of them, a replacement
//! and the consumption across it, readings pages, alarms, conflicts, collections and
//! the import of a reading file.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Europe::Paris;
use common::{Client, Fixture, TestServer};
use gardien::storage::readings::{AlarmKind, CollectionGateway, NewReading, ReadingSource, Stored};
use reqwest::Method;
use serde_json::{json, Value};

fn paris(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    paris_hm(y, m, d, h, 0)
}

fn paris_hm(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Paris
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .expect("a Paris time")
        .with_timezone(&Utc)
}

fn meter_body(kind: &str, unit: Option<i64>, mbus_id: &str, gateway: i64) -> Value {
    let (medium, measure_unit) = match kind {
        "cold_water" | "general_water" => (22, "m3"),
        "hot_water" => (6, "m3"),
        "heating" => (4, "kwh"),
        other => panic!("no body for {other}"),
    };
    json!({
        "kind": kind, "unit_id": unit, "mbus_id": mbus_id, "manufacturer": "kam",
        "medium": medium, "measure_unit": measure_unit, "digits": 5,
        "installed_on": "2025-01-01", "initial_index": 100.0, "gateway_id": gateway,
        "label": format!("{kind} {mbus_id}"),
    })
}

/// Stores readings as a collection would, straight into the server's database.
async fn store_readings(
    server: &TestServer,
    rid: i64,
    meter: i64,
    readings: &[(DateTime<Utc>, f64)],
) {
    let mut tx = server.store.write().await.expect("tx");
    for (read_at, value) in readings {
        let stored = tx
            .store_reading(&NewReading {
                residence_id: rid,
                meter_id: meter,
                read_at: *read_at,
                value: *value,
                source: ReadingSource::Modbus,
                source_ref: "test",
            })
            .await
            .expect("reading");
        assert_eq!(stored, Stored::New, "{read_at} {value}");
    }
    tx.commit().await.expect("commit");
}

/// The periods of a consumption series as (label, consumption, estimated, partial).
fn periods(series: &Value) -> Vec<(String, Option<f64>, bool, bool)> {
    series["periods"]
        .as_array()
        .expect("periods")
        .iter()
        .map(|p| {
            (
                p["label"].as_str().unwrap_or_default().to_owned(),
                p["consumption"].as_f64(),
                p["estimated"].as_bool().unwrap_or_default(),
                p["partial"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

struct Setup {
    server: TestServer,
    admin: Client,
    f: Fixture,
    gateway: i64,
    /// Cold and hot water of A01, cold water of B01, general water of building A.
    cold_a: i64,
    hot_a: i64,
    cold_b: i64,
    general: i64,
}

async fn setup() -> Setup {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let gateway = admin
        .create(
            &f.path("/gateways"),
            json!({ "name": "Passerelle A", "model": "MBG-250", "transport": "modbus_tcp",
                    "address": "127.0.0.1:1502", "modbus_unit": 1, "building_id": f.buildings[0] }),
        )
        .await;
    let [unit_a, unit_b] = f.units;
    let cold_a = admin
        .create(
            &f.path("/meters"),
            meter_body("cold_water", Some(unit_a), "12345678", gateway),
        )
        .await;
    let hot_a = admin
        .create(
            &f.path("/meters"),
            meter_body("hot_water", Some(unit_a), "12345680", gateway),
        )
        .await;
    let cold_b = admin
        .create(
            &f.path("/meters"),
            meter_body("cold_water", Some(unit_b), "12345690", gateway),
        )
        .await;
    let mut general = meter_body("general_water", None, "555", gateway);
    general["building_id"] = json!(f.buildings[0]);
    let general = admin.create(&f.path("/meters"), general).await;
    Setup {
        server,
        admin,
        f,
        gateway,
        cold_a,
        hot_a,
        cold_b,
        general,
    }
}

#[tokio::test]
async fn gateways_and_meters_are_recorded_and_programmed() {
    let Setup {
        server,
        admin,
        f,
        gateway,
        cold_a,
        general,
        ..
    } = setup().await;
    let meter = admin.get(&f.path(&format!("/meters/{general}"))).await;
    assert_eq!(meter.status, 200, "{}", meter.body);
    assert_eq!(meter.body["mbus_id"], "00000555", "leading zeros added");
    assert_eq!(meter.body["manufacturer"], "KAM");
    let listed = admin.get(&f.path("/meters")).await;
    assert_eq!(listed.body["total"], 4, "{}", listed.body);
    let listed = admin
        .get(&f.path(&format!("/meters?unit_id={}", f.units[0])))
        .await;
    assert_eq!(listed.body["total"], 2, "{}", listed.body);
    let gateways = admin.get(&f.path("/gateways")).await;
    assert_eq!(common::ids(&gateways.body["items"]), vec![gateway]);

    // Nothing has reached the gateway yet: four meters wait.
    let status = admin
        .get(&f.path(&format!("/gateways/{gateway}/status")))
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
    let summary = status.body["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("0 compteur programmé sur 4, 4 en attente depuis "),
        "{summary}"
    );
    assert_eq!(
        (
            &status.body["wanted"],
            &status.body["pending"],
            &status.body["confirmed"]
        ),
        (&json!(4), &json!(4), &json!(0))
    );
    assert_eq!(status.body["meters"].as_array().map(Vec::len), Some(4));
    assert_eq!(status.body["slots"], json!([]));
    assert_eq!(status.body["last_collection"], Value::Null);
    assert_eq!(status.body["gateway"]["model"], "MBG-250");
    let sync = admin.get(&f.path(&format!("/meters/{cold_a}/sync"))).await;
    assert_eq!(sync.status, 200, "{}", sync.body);
    assert_eq!(sync.body[0]["state"], "pending");
    assert_eq!(sync.body[0]["active"], true);
    assert_eq!(sync.body[0]["mbus_id"], "12345678");

    // A meter moved off the gateway must leave its list.
    let mut body = meter_body("general_water", None, "555", gateway);
    body["building_id"] = json!(f.buildings[0]);
    body["gateway_id"] = Value::Null;
    let moved = admin
        .put(&f.path(&format!("/meters/{general}")), body)
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    let sync = admin.get(&f.path(&format!("/meters/{general}/sync"))).await;
    assert_eq!(sync.body[0]["active"], false, "{}", sync.body);
    let status = admin
        .get(&f.path(&format!("/gateways/{gateway}/status")))
        .await;
    assert_eq!(status.body["wanted"], 3, "{}", status.body);

    // A gateway still reading meters cannot go; an empty one can.
    let refused = admin.delete(&f.path(&format!("/gateways/{gateway}"))).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    let spare = admin
        .create(
            &f.path("/gateways"),
            json!({ "name": "Passerelle B", "model": "MBG-250", "transport": "modbus_tcp", "address": "127.0.0.1:1503", "modbus_unit": 2 }),
        )
        .await;
    assert_eq!(
        admin
            .delete(&f.path(&format!("/gateways/{spare}")))
            .await
            .status,
        204
    );
    // A meter entered by mistake goes; one with readings is replaced instead.
    assert_eq!(
        admin
            .delete(&f.path(&format!("/meters/{general}")))
            .await
            .status,
        204
    );
    store_readings(&server, f.rid, cold_a, &[(paris(2025, 2, 1, 0), 110.0)]).await;
    let refused = admin.delete(&f.path(&format!("/meters/{cold_a}"))).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    server.stop().await;
}

#[tokio::test]
async fn residents_see_only_the_meters_of_their_units() {
    let Setup {
        server,
        admin,
        f,
        gateway,
        cold_a,
        hot_a,
        cold_b,
        general,
    } = setup().await;
    let resident = server
        .member(
            &admin,
            f.rid,
            "claire@test.gardien",
            "resident",
            Some(f.people[0]),
        )
        .await;
    let provider = server
        .member(
            &admin,
            f.rid,
            "agent@test.gardien",
            "provider",
            Some(f.provider),
        )
        .await;
    store_readings(&server, f.rid, cold_a, &[(paris(2025, 2, 1, 0), 110.0)]).await;
    store_readings(&server, f.rid, cold_b, &[(paris(2025, 2, 1, 0), 130.0)]).await;

    let listed = resident.get(&f.path("/meters")).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(common::ids(&listed.body["items"]), vec![cold_a, hot_a]);
    assert_eq!(listed.body["total"], 2);
    // Filters cannot widen what one sees.
    let listed = resident
        .get(&f.path(&format!("/meters?unit_id={}", f.units[1])))
        .await;
    assert_eq!(listed.body["total"], 0, "{}", listed.body);
    let listed = provider.get(&f.path("/meters")).await;
    assert_eq!((listed.status, &listed.body["total"]), (200, &json!(0)));

    let own = [
        format!("/meters/{cold_a}"),
        format!("/meters/{cold_a}/readings"),
        format!("/meters/{cold_a}/consumption?from=2025-01-01&to=2025-03-31"),
        format!("/units/{}/consumption", f.units[0]),
    ];
    for path in &own {
        let response = resident.get(&f.path(path)).await;
        assert_eq!(
            response.status, 200,
            "resident GET {path}: {}",
            response.body
        );
        let response = provider.get(&f.path(path)).await;
        assert_eq!(
            response.status, 404,
            "provider GET {path}: {}",
            response.body
        );
    }
    let others = [
        format!("/meters/{cold_b}"),
        format!("/meters/{general}"),
        format!("/meters/{cold_b}/readings"),
        format!("/meters/{cold_b}/consumption"),
        format!("/meters/{general}/consumption"),
        format!("/units/{}/consumption", f.units[1]),
    ];
    for path in &others {
        let response = resident.get(&f.path(path)).await;
        assert_eq!(
            (response.status, response.body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "resident GET {path}: {}",
            response.body
        );
    }
    let consumption = resident
        .get(&f.path(&format!(
            "/units/{}/consumption?from=2025-01-01&to=2025-02-28",
            f.units[0]
        )))
        .await;
    let series = consumption.body["series"].as_array().expect("series");
    let kinds: Vec<&str> = series.iter().filter_map(|s| s["kind"].as_str()).collect();
    assert_eq!(kinds, ["cold_water", "hot_water"], "{}", consumption.body);
    assert!(close(
        series[0]["periods"][0]["consumption"]
            .as_f64()
            .expect("January"),
        10.0
    ));
    // The hot water has no reading: nothing known, and said so.
    assert_eq!(series[1]["periods"][0]["consumption"], Value::Null);
    assert_eq!(series[1]["periods"][0]["partial"], true);

    // Managing meters and reading the outbox, alarms and runs is for managers.
    let manager_only = [
        (
            Method::POST,
            "/meters".to_owned(),
            Some(meter_body("cold_water", Some(f.units[0]), "777", gateway)),
        ),
        (
            Method::PUT,
            format!("/meters/{cold_a}"),
            Some(meter_body(
                "cold_water",
                Some(f.units[0]),
                "12345678",
                gateway,
            )),
        ),
        (Method::DELETE, format!("/meters/{hot_a}"), None),
        (
            Method::POST,
            format!("/meters/{cold_a}/replace"),
            Some(
                json!({ "replaced_on": "2025-03-01", "final_index": 120, "mbus_id": "1", "manufacturer": "KAM" }),
            ),
        ),
        (Method::GET, format!("/meters/{cold_a}/sync"), None),
        (Method::GET, "/meter-alarms".to_owned(), None),
        (Method::GET, "/reading-conflicts".to_owned(), None),
        (Method::GET, "/collections".to_owned(), None),
        (Method::GET, "/gateways".to_owned(), None),
        (Method::GET, format!("/gateways/{gateway}/status"), None),
    ];
    for (method, path, body) in manager_only {
        let response = resident.request(method.clone(), &f.path(&path), body).await;
        assert_eq!(
            (response.status, response.body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "resident {method} {path}: {}",
            response.body
        );
    }
    let listed = admin.get(&f.path("/meters")).await;
    assert_eq!(listed.body["total"], 4, "nothing changed: {}", listed.body);
    server.stop().await;
}

#[tokio::test]
async fn consumption_runs_across_a_replacement_made_through_the_api() {
    let Setup {
        server,
        admin,
        f,
        gateway,
        cold_a,
        ..
    } = setup().await;
    // Installed on 2025-01-01 at 100; replaced on 2025-03-15 at 130 by a meter at 0.
    store_readings(
        &server,
        f.rid,
        cold_a,
        &[
            (paris(2025, 1, 15, 0), 104.0),
            (paris(2025, 2, 1, 0), 110.0),
            (paris(2025, 3, 1, 0), 125.0),
            // The night of the replacement: still the old meter.
            (paris(2025, 3, 15, 2), 128.0),
        ],
    )
    .await;
    let replaced = admin
        .post(
            &f.path(&format!("/meters/{cold_a}/replace")),
            json!({ "replaced_on": "2025-03-15", "final_index": 130, "mbus_id": "12345679",
                    "manufacturer": "KAM", "initial_index": 0, "reason": "compteur bloqué" }),
        )
        .await;
    assert_eq!(replaced.status, 201, "{}", replaced.body);
    let new = replaced.body["meter"]["id"].as_i64().expect("new meter");
    assert_eq!(replaced.body["replacement"]["old_meter_id"], cold_a);
    assert_eq!(replaced.body["replacement"]["new_meter_id"], new);
    assert_eq!(replaced.body["meter"]["unit_id"], f.units[0]);
    assert_eq!(replaced.body["meter"]["gateway_id"], gateway);
    let old = admin.get(&f.path(&format!("/meters/{cold_a}"))).await;
    assert_eq!(old.body["removed_on"], "2025-03-15", "{}", old.body);
    assert_eq!(old.body["final_index"], 130.0);
    // Listed only with removed=true; the gateway drops the old one for the new.
    let listed = admin.get(&f.path("/meters?kind=cold_water")).await;
    assert!(!common::ids(&listed.body["items"]).contains(&cold_a));
    let listed = admin
        .get(&f.path("/meters?kind=cold_water&removed=true"))
        .await;
    assert!(common::ids(&listed.body["items"]).contains(&cold_a));
    let sync = admin.get(&f.path(&format!("/meters/{cold_a}/sync"))).await;
    assert_eq!(sync.body[0]["active"], false, "{}", sync.body);
    // A removed meter is neither replaced nor rewritten again.
    let again = admin
        .post(
            &f.path(&format!("/meters/{cold_a}/replace")),
            json!({ "replaced_on": "2025-04-01", "final_index": 1, "mbus_id": "12345670", "manufacturer": "KAM" }),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);

    store_readings(
        &server,
        f.rid,
        new,
        &[(paris(2025, 4, 1, 0), 8.0), (paris(2025, 5, 1, 0), 20.0)],
    )
    .await;

    // By month, asked from either meter: the whole position.
    for meter in [cold_a, new] {
        let response = admin
            .get(&f.path(&format!(
                "/meters/{meter}/consumption?from=2025-01-01&to=2025-05-31&period=month"
            )))
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
        let body = &response.body;
        assert_eq!(body["meter_id"], meter);
        assert_eq!(body["meter_ids"], json!([cold_a, new]));
        assert_eq!(body["current_meter_id"], new);
        assert_eq!(body["measure_unit"], "m3");
        assert_eq!(body["unit_symbol"], "m³");
        assert_eq!(body["kind"], "cold_water");
        assert_eq!(body["period"], "month");
        let months = periods(body);
        let labels: Vec<&str> = months.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            labels,
            ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05"]
        );
        let expected = [10.0, 15.0, 5.0 + 8.0, 12.0];
        for (month, want) in months.iter().zip(expected) {
            let got = month.1.expect("consumption");
            assert!(close(got, want), "{}: {got}, expected {want}", month.0);
            assert!(!month.3, "{} is complete", month.0);
        }
        // March holds both meters, each from its own indexes.
        assert_eq!(body["periods"][2]["meters"], json!([cold_a, new]));
        assert!(!months[2].2, "every bound of March is a point");
        // May: nothing known after the reading of the 1st.
        assert_eq!(months[4].1, None);
        assert!(months[4].3, "May is partial");
    }

    // By day, March adds up to the month, and the replacement day counts both meters.
    let days = admin
        .get(&f.path(&format!(
            "/meters/{new}/consumption?from=2025-03-01&to=2025-03-31&period=day"
        )))
        .await;
    assert_eq!(days.status, 200, "{}", days.body);
    let list = periods(&days.body);
    assert_eq!(list.len(), 31);
    let total: f64 = list.iter().filter_map(|d| d.1).sum();
    assert!(close(total, 13.0), "{total}");
    let replacement_day = &days.body["periods"][14];
    assert_eq!(replacement_day["label"], "2025-03-15");
    assert_eq!(replacement_day["meters"], json!([cold_a, new]));
    // Before the reading of the 15th at 02:00 the old meter went 125 → 128 over 14 days
    // and 2 hours; after it, 128 → 130 by the end of the day.
    let old_part = 3.0 * 2.0 / (14.0 * 24.0 + 2.0) + 2.0;
    // The new meter: 0 → 8 from the 15th to 1 April, 17 days less the spring hour.
    let new_part = 8.0 * 24.0 / (17.0 * 24.0 - 1.0);
    let got = replacement_day["consumption"].as_f64().expect("the 15th");
    assert!(close(got, old_part + new_part), "{got}");

    // By year, and for the unit: one series per position.
    let unit = admin
        .get(&f.path(&format!(
            "/units/{}/consumption?from=2025-01-01&to=2025-12-31&period=year",
            f.units[0]
        )))
        .await;
    assert_eq!(unit.status, 200, "{}", unit.body);
    assert_eq!(unit.body["unit_id"], f.units[0]);
    let series = unit.body["series"].as_array().expect("series");
    assert_eq!(series.len(), 2, "{}", unit.body);
    assert_eq!(series[0]["kind"], "cold_water");
    assert_eq!(series[0]["current_meter_id"], new);
    assert_eq!(series[0]["meter_ids"], json!([cold_a, new]));
    let year = periods(&series[0]);
    assert_eq!(year.len(), 1);
    assert_eq!(year[0].0, "2025");
    assert!(
        close(year[0].1.expect("2025"), 30.0 + 20.0),
        "{:?}",
        year[0]
    );
    assert!(year[0].3, "the rest of 2025 is unknown");
    assert_eq!(series[1]["kind"], "hot_water");

    // Defaults: by month, up to today.
    let default = admin
        .get(&f.path(&format!("/meters/{new}/consumption")))
        .await;
    assert_eq!(default.status, 200, "{}", default.body);
    assert_eq!(default.body["period"], "month");
    assert_eq!(default.body["periods"].as_array().map(Vec::len), Some(12));
    server.stop().await;
}

#[tokio::test]
async fn readings_are_listed_newest_first_by_local_dates() {
    let Setup {
        server,
        admin,
        f,
        cold_a,
        ..
    } = setup().await;
    store_readings(
        &server,
        f.rid,
        cold_a,
        &[
            (paris(2025, 1, 15, 0), 104.0),
            (paris(2025, 2, 1, 0), 110.0),
            (paris(2025, 3, 1, 0), 125.0),
            // 00:30 in Paris on the 15th: still the 14th in UTC.
            (paris_hm(2025, 3, 15, 0, 30), 128.0),
        ],
    )
    .await;
    let values = |response: &common::Response| -> Vec<f64> {
        response.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|r| r["value"].as_f64())
            .collect()
    };
    let readings = |query: &str| {
        let admin = admin.clone();
        let path = f.path(&format!("/meters/{cold_a}/readings{query}"));
        async move {
            let response = admin.get(&path).await;
            assert_eq!(response.status, 200, "{path}: {}", response.body);
            response
        }
    };
    let first = readings("?limit=2").await;
    assert_eq!(values(&first), [128.0, 125.0]);
    assert_eq!(first.body["total"], 4);
    assert_eq!(first.body["items"][0]["source"], "modbus");
    let second = readings("?limit=2&offset=2").await;
    assert_eq!(values(&second), [110.0, 104.0]);
    assert_eq!(
        values(&readings("?limit=2&offset=4").await),
        Vec::<f64>::new()
    );
    // Local dates, both included: 00:30 in Paris on the 15th is the 15th.
    assert_eq!(
        values(&readings("?from=2025-03-01&to=2025-03-01").await),
        [125.0]
    );
    assert_eq!(
        values(&readings("?from=2025-03-15&to=2025-03-15").await),
        [128.0]
    );
    assert_eq!(
        values(&readings("?to=2025-03-14").await),
        [125.0, 110.0, 104.0]
    );
    assert_eq!(
        values(&readings("?from=2025-02-01").await),
        [128.0, 125.0, 110.0]
    );
    let page = readings("?from=2025-02-01&to=2025-02-28").await;
    assert_eq!(
        (values(&page), &page.body["total"]),
        (vec![110.0], &json!(1))
    );
    server.stop().await;
}

#[tokio::test]
async fn alarms_conflicts_and_collections_are_listed_for_managers() {
    let Setup {
        server,
        admin,
        f,
        gateway,
        cold_a,
        cold_b,
        ..
    } = setup().await;
    let now = Utc::now();
    {
        let mut tx = server.store.write().await.expect("tx");
        tx.set_meter_alarms(
            f.rid,
            cold_a,
            &[(AlarmKind::Leak, "fuite continue".into())],
            now,
        )
        .await
        .expect("alarm");
        tx.set_meter_alarms(
            f.rid,
            cold_b,
            &[(AlarmKind::LowBattery, "pile faible".into())],
            now,
        )
        .await
        .expect("alarm");
        tx.commit().await.expect("commit");
    }
    let alarms = admin.get(&f.path("/meter-alarms")).await;
    assert_eq!(alarms.status, 200, "{}", alarms.body);
    assert_eq!(alarms.body.as_array().map(Vec::len), Some(2));
    let alarms = admin
        .get(&f.path(&format!("/meter-alarms?meter_id={cold_a}")))
        .await;
    assert_eq!(alarms.body[0]["kind"], "leak", "{}", alarms.body);
    assert_eq!(alarms.body[0]["detail"], "fuite continue");
    assert_eq!(alarms.body[0]["cleared_at"], Value::Null);
    // Cleared: gone from the open list, still there with all=true.
    {
        let mut tx = server.store.write().await.expect("tx");
        tx.set_meter_alarms(f.rid, cold_a, &[], Utc::now())
            .await
            .expect("clear");
        tx.commit().await.expect("commit");
    }
    let open = admin
        .get(&f.path(&format!("/meter-alarms?meter_id={cold_a}")))
        .await;
    assert_eq!(open.body, json!([]));
    let all = admin
        .get(&f.path(&format!("/meter-alarms?meter_id={cold_a}&all=true")))
        .await;
    assert_eq!(all.body.as_array().map(Vec::len), Some(1), "{}", all.body);
    assert!(all.body[0]["cleared_at"].is_string(), "{}", all.body);

    // Another value for a stored instant is kept aside.
    let at = paris(2025, 2, 1, 0);
    store_readings(&server, f.rid, cold_a, &[(at, 110.0)]).await;
    {
        let mut tx = server.store.write().await.expect("tx");
        let stored = tx
            .store_reading(&NewReading {
                residence_id: f.rid,
                meter_id: cold_a,
                read_at: at,
                value: 111.5,
                source: ReadingSource::File,
                source_ref: "releve.csv:2",
            })
            .await
            .expect("conflict");
        assert_eq!(stored, Stored::Conflict { stored: 110.0 });
        tx.commit().await.expect("commit");
    }
    let conflicts = admin.get(&f.path("/reading-conflicts")).await;
    assert_eq!(conflicts.status, 200, "{}", conflicts.body);
    assert_eq!(conflicts.body.as_array().map(Vec::len), Some(1));
    assert_eq!(conflicts.body[0]["meter_id"], cold_a);
    assert_eq!(conflicts.body[0]["stored_value"], 110.0);
    assert_eq!(conflicts.body[0]["offered_value"], 111.5);
    assert_eq!(conflicts.body[0]["source_ref"], "releve.csv:2");
    let none = admin
        .get(&f.path(&format!("/reading-conflicts?meter_id={cold_b}")))
        .await;
    assert_eq!(none.body, json!([]));
    // The stored reading stayed.
    let readings = admin
        .get(&f.path(&format!("/meters/{cold_a}/readings")))
        .await;
    assert_eq!(readings.body["items"][0]["value"], 110.0);

    // A collection run, recorded as the collector does.
    let run = {
        let mut tx = server.store.write().await.expect("tx");
        let run = tx
            .open_collection_run(None, now)
            .await
            .expect("run")
            .expect("a manual run opens");
        tx.record_collection_gateway(&CollectionGateway {
            run_id: run,
            gateway_id: gateway,
            residence_id: f.rid,
            started_at: now,
            finished_at: Some(now),
            meters_expected: 3,
            meters_read: 2,
            meters_missing: 1,
            readings_new: 2,
            requests: 4,
            problems:
                json!([{ "meter_id": cold_b, "mbus_id": "12345690", "problem": "pas de réponse" }])
                    .to_string(),
            ..CollectionGateway::default()
        })
        .await
        .expect("part");
        tx.close_collection_run(run, now).await.expect("close");
        tx.commit().await.expect("commit");
        run
    };
    let runs = admin.get(&f.path("/collections")).await;
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert_eq!(runs.body.as_array().map(Vec::len), Some(1), "{}", runs.body);
    assert_eq!(runs.body[0]["id"], run);
    assert_eq!(runs.body[0]["trigger"], "manual");
    let part = &runs.body[0]["gateways"][0];
    assert_eq!(part["gateway_id"], gateway);
    assert_eq!(part["meters_missing"], 1);
    assert_eq!(
        part["problems"],
        json!([{ "meter_id": cold_b, "mbus_id": "12345690", "problem": "pas de réponse" }])
    );
    let status = admin
        .get(&f.path(&format!("/gateways/{gateway}/status")))
        .await;
    assert_eq!(
        status.body["last_collection"]["run_id"], run,
        "{}",
        status.body
    );
    assert_eq!(
        status.body["last_collection"]["problems"][0]["problem"],
        "pas de réponse"
    );

    // Another residence sees none of it.
    let other = common::fixture(&admin, "Le Clos").await;
    for rest in [
        "/meter-alarms?all=true",
        "/reading-conflicts",
        "/collections",
    ] {
        let response = admin.get(&other.path(rest)).await;
        assert_eq!(
            (response.status, &response.body),
            (200, &json!([])),
            "{rest}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_reading_file_is_imported_through_the_api() {
    let Setup {
        server,
        admin,
        f,
        cold_a,
        ..
    } = setup().await;
    let import = |query: &str, content_type: &str, bytes: &[u8]| {
        let admin = admin.clone();
        let path = f.path(&format!("/readings/import{query}"));
        let (content_type, bytes) = (content_type.to_owned(), bytes.to_vec());
        async move { admin.raw(Method::POST, &path, &content_type, bytes).await }
    };
    let file = "compteur;date;index\n12345678;01/02/2025;110,5\n12345678;01/03/2025;125\n99999999;01/03/2025;1\n";
    let total = || {
        let admin = admin.clone();
        let path = f.path(&format!("/meters/{cold_a}/readings"));
        async move {
            admin.get(&path).await.body["total"]
                .as_i64()
                .expect("total")
        }
    };

    let dry = import("?dry_run=true", "text/csv", file.as_bytes()).await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["dry_run"], true);
    assert_eq!(dry.body["lines"], 3);
    assert_eq!(dry.body["stored"], 2);
    assert_eq!(dry.body["rejected_total"], 1);
    assert_eq!(total().await, 0, "a dry run stores nothing");

    let done = import(
        "?file_name=releve-mars.csv",
        "text/csv; charset=utf-8",
        file.as_bytes(),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        (done.body["dry_run"].clone(), done.body["stored"].clone()),
        (json!(false), json!(2))
    );
    assert_eq!(total().await, 2);
    let readings = admin
        .get(&f.path(&format!("/meters/{cold_a}/readings")))
        .await;
    assert_eq!(readings.body["items"][1]["value"], 110.5);
    assert_eq!(readings.body["items"][1]["source"], "file");
    assert_eq!(readings.body["items"][1]["source_ref"], "releve-mars.csv:2");
    assert_eq!(
        readings.body["items"][1]["read_at"],
        json!(paris(2025, 2, 1, 0))
    );

    // Again: duplicates only. As octet-stream too.
    let again = import("", "application/octet-stream", file.as_bytes()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        (
            again.body["stored"].clone(),
            again.body["duplicates"].clone()
        ),
        (json!(0), json!(2))
    );

    // Refused: another media type, an empty body, a file without the columns.
    let json = import("", "application/json", b"{}").await;
    assert_eq!(json.status, 415, "{}", json.body);
    let empty = import("", "text/csv", b"").await;
    assert_eq!(
        (empty.status, &empty.body["error"]["field"]),
        (422, &json!("fichier")),
        "{}",
        empty.body
    );
    let headless = import("", "text/csv", b"a;b\n1;2\n").await;
    assert_eq!(headless.status, 422, "{}", headless.body);
    let bad_flag = import("?dry_run=peut-etre", "text/csv", file.as_bytes()).await;
    assert_eq!(
        (bad_flag.status, &bad_flag.body["error"]["field"]),
        (422, &json!("dry_run"))
    );
    assert_eq!(total().await, 2);

    // Bigger than the 1 MiB JSON limit: accepted here (a reading a minute).
    let mut big = String::from("compteur;date;index\n");
    let start = paris(2025, 1, 2, 0);
    let mut lines = 0;
    while big.len() <= gardien::http::MAX_JSON_BYTES {
        let at = start + chrono::TimeDelta::minutes(lines);
        big.push_str(&format!(
            "12345680;{};{}\n",
            at.format("%Y-%m-%dT%H:%M:%SZ"),
            100 + lines / 100
        ));
        lines += 1;
    }
    let response = import("?dry_run=true", "text/csv", big.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.body["error"]);
    assert_eq!(
        (&response.body["stored"], &response.body["rejected_total"]),
        (&json!(lines), &json!(0)),
        "first refusal: {}",
        response.body["rejected"][0]
    );
    server.stop().await;
}
