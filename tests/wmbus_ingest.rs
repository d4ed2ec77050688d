//! Wireless M-Bus telegrams (wmbusmeters JSON, as received over MQTT) ingested into a
//! real SQLite store: readings in the meter's unit, status words as alarms, redeliveries
//! and late deliveries, conflicts, unknown ids, refused messages, and the API that lists
//! what was not used.

mod common;

use common::{fixture, Client, Fixture, TestServer};
use gardien::metering::wmbus::{
    ingest, ingest_many, record_rejection, Ingested, Message, Rejection, RejectionKind,
};
use gardien::storage::readings::{AlarmKind, MeterAlarm, Reading, ReadingSource};
use gardien::storage::wmbus::{MAX_REJECTION_ROWS, OVERFLOW_TOPIC};
use serde_json::{json, Value};

struct Site {
    server: TestServer,
    admin: Client,
    f: Fixture,
}

impl Site {
    async fn new(name: &str) -> Site {
        let server = TestServer::start().await;
        let admin = server.admin().await;
        let f = fixture(&admin, name).await;
        Site { server, admin, f }
    }

    /// A meter of flat A01 installed on 1 January 2026.
    async fn meter(&self, kind: &str, mbus_id: &str, unit: &str, digits: i64) -> i64 {
        let medium = match kind {
            "cold_water" => 22,
            "hot_water" => 6,
            "heating" => 4,
            "heat_cost_allocator" => 8,
            other => panic!("no medium for {other}"),
        };
        self.admin
            .create(
                &self.f.path("/meters"),
                json!({
                    "kind": kind, "unit_id": self.f.units[0], "mbus_id": mbus_id, "manufacturer": "KAM",
                    "medium": medium, "measure_unit": unit, "digits": digits,
                    "installed_on": "2026-01-01", "initial_index": 0.0,
                }),
            )
            .await
    }

    async fn ingest(&self, topic: &str, payload: &str) -> Ingested {
        ingest(&self.server.store, self.f.rid, topic, payload.as_bytes())
            .await
            .expect("the database answers")
    }

    async fn readings(&self, meter: i64) -> Vec<Reading> {
        self.server
            .store
            .read()
            .await
            .expect("tx")
            .readings_between(&[meter], None, None)
            .await
            .expect("readings")
    }

    async fn values(&self, meter: i64) -> Vec<(String, f64)> {
        self.readings(meter)
            .await
            .into_iter()
            .map(|r| (r.read_at.to_rfc3339(), r.value))
            .collect()
    }

    async fn alarms(&self, meter: i64, all: bool) -> Vec<MeterAlarm> {
        self.server
            .store
            .read()
            .await
            .expect("tx")
            .meter_alarms(self.f.rid, Some(meter), all)
            .await
            .expect("alarms")
    }

    async fn open_alarms(&self, meter: i64) -> Vec<AlarmKind> {
        let mut kinds: Vec<AlarmKind> = self
            .alarms(meter, false)
            .await
            .into_iter()
            .map(|a| a.kind)
            .collect();
        kinds.sort_by_key(|k| k.as_str());
        kinds
    }
}

/// A telegram of meter `id` at `stamp` with the index `field` and extra fields.
fn telegram(id: &str, field: &str, value: f64, stamp: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(",{extra}")
    };
    format!(
        r#"{{"_":"telegram","media":"water","meter":"kamwater","name":"M{id}","id":"{id}","{field}":{value}{extra},"timestamp":"{stamp}"}}"#
    )
}

fn kamwater(id: &str, value: f64, stamp: &str, status: &str) -> String {
    telegram(
        id,
        "total_m3",
        value,
        stamp,
        &format!(r#""current_status":"{status}","status":"{status}""#),
    )
}

fn rejected(outcome: &Ingested) -> Option<RejectionKind> {
    match outcome {
        Ingested::Rejected(rejection) => Some(rejection.kind),
        _ => None,
    }
}

#[tokio::test]
async fn telegrams_of_each_shape_become_readings_in_the_meter_unit() {
    let site = Site::new("Radio Formes").await;
    let cold = site.meter("cold_water", "10000001", "m3", 5).await;
    let heat_mwh = site.meter("heating", "10000002", "mwh", 6).await;
    let hca = site
        .meter("heat_cost_allocator", "10000003", "hca", 6)
        .await;
    let heat_kwh = site.meter("heating", "10000005", "kwh", 8).await;

    let topic = "wmbusmeters/Apt12Cold";
    let outcome = site
        .ingest(
            topic,
            &kamwater("10000001", 6.408, "2026-10-01T02:00:11Z", "DRY"),
        )
        .await;
    assert!(
        matches!(outcome, Ingested::Stored { meter_id, value, alarms_set: true, .. } if meter_id == cold && value == 6.408),
        "{outcome:?}"
    );
    let stored = site.readings(cold).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].read_at.to_rfc3339(), "2026-10-01T02:00:11+00:00");
    assert_eq!(stored[0].source, ReadingSource::Mqtt);
    assert_eq!(stored[0].source_ref, format!("wmbus:{topic}"));

    // kamheat prints kWh; this meter counts in MWh.
    let kamheat = r#"{"_":"telegram","media":"heat","meter":"kamheat","name":"Heat","id":"10000002","status":"OK",
        "total_energy_consumption_kwh":7173,"total_volume_m3":268.71,"power_kw":2.2,"timestamp":"2026-10-01T02:00:00Z"}"#;
    assert!(matches!(
        site.ingest("wmbusmeters/Heat", kamheat).await,
        Ingested::Stored { .. }
    ));
    assert_eq!(
        site.values(heat_mwh).await,
        vec![("2026-10-01T02:00:00+00:00".into(), 7.173)]
    );

    let fhkv = r#"{"_":"telegram","media":"heat cost allocator","meter":"fhkvdataiii","name":"Room","id":"10000003",
        "current_hca":131,"current_date":"2026-10-01T02:00:00Z","previous_hca":1026,"previous_date":"2025-12-31T02:00:00Z",
        "temp_room_c":22.44,"temp_radiator_c":25.51,"timestamp":"2026-10-01T02:00:00Z"}"#;
    assert!(matches!(
        site.ingest("wmbusmeters/Room", fhkv).await,
        Ingested::Stored {
            alarms_set: false,
            ..
        }
    ));
    assert_eq!(
        site.values(hca).await,
        vec![("2026-10-01T02:00:00+00:00".into(), 131.0)]
    );

    let gj = telegram(
        "10000005",
        "total_energy_consumption_gj",
        36.0,
        "2026-10-01T02:00:00Z",
        "",
    );
    assert!(matches!(
        site.ingest("wmbusmeters/Gj", &gj).await,
        Ingested::Stored { .. }
    ));
    let kwh = site.values(heat_kwh).await;
    assert!((kwh[0].1 - 10_000.0).abs() < 1e-6, "{kwh:?}");

    // The same telegrams through one batch: all duplicates now.
    let batch = [("wmbusmeters/Heat", kamheat), ("wmbusmeters/Room", fhkv)];
    let messages: Vec<Message> = batch
        .iter()
        .map(|&(topic, payload)| Message {
            residence_id: site.f.rid,
            topic,
            payload: payload.as_bytes(),
        })
        .collect();
    let outcomes = ingest_many(&site.server.store, &messages)
        .await
        .expect("batch");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ingested::Duplicate { .. })),
        "{outcomes:?}"
    );

    // The bridge's retained state is no telegram, and no error either.
    assert!(matches!(
        site.ingest("wmbusmeters/bridge/state", "online").await,
        Ingested::Ignored(_)
    ));
    site.server.stop().await;
}

#[tokio::test]
async fn status_words_raise_and_clear_the_gateway_alarms() {
    let site = Site::new("Radio Alarmes").await;
    let cold = site.meter("cold_water", "10000001", "m3", 5).await;
    let hot = site.meter("hot_water", "10000004", "m3", 5).await;
    let heat = site.meter("heating", "10000002", "kwh", 8).await;

    site.ingest(
        "wmbusmeters/c",
        &kamwater("10000001", 10.0, "2026-10-01T02:00:00Z", "LEAK BURST"),
    )
    .await;
    assert_eq!(
        site.open_alarms(cold).await,
        vec![AlarmKind::Burst, AlarmKind::Leak]
    );
    let izar = telegram(
        "10000004",
        "total_m3",
        5.0,
        "2026-10-01T02:00:00Z",
        r#""current_alarms":"back_flow,meter_blocked,submarine","previous_alarms":"leakage""#,
    );
    site.ingest("wmbusmeters/h", &izar).await;
    assert_eq!(
        site.open_alarms(hot).await,
        vec![AlarmKind::MeterError, AlarmKind::ReverseFlow]
    );
    let kamheat = telegram(
        "10000002",
        "total_energy_consumption_kwh",
        100.0,
        "2026-10-01T02:00:00Z",
        r#""status":"LOW_BATTERY_LEVEL TAMPER""#,
    );
    site.ingest("wmbusmeters/k", &kamheat).await;
    assert_eq!(
        site.open_alarms(heat).await,
        vec![AlarmKind::LowBattery, AlarmKind::Tamper]
    );
    let leak = &site.alarms(cold, false).await;
    let leak = leak
        .iter()
        .find(|a| a.kind == AlarmKind::Leak)
        .expect("a leak");
    assert!(leak.detail.contains("LEAK"), "{}", leak.detail);
    assert_eq!(leak.first_seen_at.to_rfc3339(), "2026-10-01T02:00:00+00:00");

    // Burst gone, leak still there.
    site.ingest(
        "wmbusmeters/c",
        &kamwater("10000001", 10.5, "2026-10-02T02:00:00Z", "LEAK"),
    )
    .await;
    assert_eq!(site.open_alarms(cold).await, vec![AlarmKind::Leak]);
    // A telegram without a status field says nothing of alarms.
    let silent = telegram("10000001", "total_m3", 11.0, "2026-10-03T02:00:00Z", "");
    assert!(matches!(
        site.ingest("wmbusmeters/c", &silent).await,
        Ingested::Stored {
            alarms_set: false,
            ..
        }
    ));
    assert_eq!(site.open_alarms(cold).await, vec![AlarmKind::Leak]);
    // OK clears; no_alarm too.
    site.ingest(
        "wmbusmeters/c",
        &kamwater("10000001", 11.5, "2026-10-04T02:00:00Z", "OK"),
    )
    .await;
    assert!(site.open_alarms(cold).await.is_empty());
    let cleared = site.alarms(cold, true).await;
    assert!(
        cleared.iter().all(|a| a.cleared_at.is_some()),
        "{cleared:?}"
    );
    let quiet = telegram(
        "10000004",
        "total_m3",
        5.5,
        "2026-10-02T02:00:00Z",
        r#""current_alarms":"no_alarm""#,
    );
    site.ingest("wmbusmeters/h", &quiet).await;
    assert!(site.open_alarms(hot).await.is_empty());
    site.server.stop().await;
}

#[tokio::test]
async fn redeliveries_and_late_telegrams_store_nothing_twice_nor_touch_alarms() {
    let site = Site::new("Radio Ordre").await;
    let cold = site.meter("cold_water", "10000001", "m3", 5).await;
    let day1 = kamwater("10000001", 10.0, "2026-10-01T02:00:00Z", "LEAK");
    let day2 = kamwater("10000001", 10.4, "2026-10-02T02:00:00Z", "OK");
    site.ingest("wmbusmeters/c", &day1).await;
    site.ingest("wmbusmeters/c", &day2).await;
    assert!(site.open_alarms(cold).await.is_empty());

    // QoS 1 redelivery of the newest: a duplicate, alarms as they were.
    let again = site.ingest("wmbusmeters/c", &day2).await;
    assert!(
        matches!(
            again,
            Ingested::Duplicate {
                alarms_set: true,
                ..
            }
        ),
        "{again:?}"
    );
    // The older one delivered again, late: nothing stored, the leak not reopened.
    let late = site.ingest("wmbusmeters/c", &day1).await;
    assert!(
        matches!(
            late,
            Ingested::Duplicate {
                alarms_set: false,
                ..
            }
        ),
        "{late:?}"
    );
    assert!(site.open_alarms(cold).await.is_empty());
    // A telegram older than the newest, never seen (held back on the way): stored,
    // alarms untouched.
    let held = kamwater("10000001", 10.2, "2026-10-01T14:00:00Z", "LEAK BURST");
    let outcome = site.ingest("wmbusmeters/c", &held).await;
    assert!(
        matches!(
            outcome,
            Ingested::Stored {
                alarms_set: false,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(site.open_alarms(cold).await.is_empty());
    assert_eq!(
        site.values(cold).await,
        vec![
            ("2026-10-01T02:00:00+00:00".into(), 10.0),
            ("2026-10-01T14:00:00+00:00".into(), 10.2),
            ("2026-10-02T02:00:00+00:00".into(), 10.4),
        ]
    );
    // Sub-second timestamps are the same instant to the second.
    let fraction = kamwater("10000001", 10.4, "2026-10-02T02:00:00.400Z", "OK");
    assert!(matches!(
        site.ingest("wmbusmeters/c", &fraction).await,
        Ingested::Duplicate { .. }
    ));
    assert_eq!(site.readings(cold).await.len(), 3);
    site.server.stop().await;
}

#[tokio::test]
async fn another_value_at_the_same_instant_is_kept_as_a_conflict() {
    let site = Site::new("Radio Conflit").await;
    let cold = site.meter("cold_water", "10000001", "m3", 5).await;
    site.ingest(
        "wmbusmeters/c",
        &kamwater("10000001", 10.0, "2026-10-01T02:00:00Z", "OK"),
    )
    .await;
    let other = kamwater("10000001", 12.5, "2026-10-01T02:00:00Z", "LEAK");
    let outcome = site.ingest("wmbusmeters/c", &other).await;
    assert_eq!(
        outcome,
        Ingested::Conflict {
            meter_id: cold,
            read_at: site.readings(cold).await[0].read_at,
            stored: 10.0,
            offered: 12.5,
        }
    );
    assert_eq!(
        site.values(cold).await,
        vec![("2026-10-01T02:00:00+00:00".into(), 10.0)]
    );
    // A conflicting telegram is not trusted with alarms either.
    assert!(site.open_alarms(cold).await.is_empty());
    let conflicts = site
        .admin
        .get(&site.f.path(&format!("/reading-conflicts?meter_id={cold}")))
        .await;
    assert_eq!(conflicts.status, 200);
    assert_eq!(conflicts.body[0]["offered_value"], json!(12.5));
    assert_eq!(conflicts.body[0]["source"], json!("mqtt"));
    assert_eq!(
        conflicts.body[0]["source_ref"],
        json!("wmbus:wmbusmeters/c")
    );
    // The same conflicting telegram again stores nothing more.
    site.ingest("wmbusmeters/c", &other).await;
    let again = site
        .admin
        .get(&site.f.path(&format!("/reading-conflicts?meter_id={cold}")))
        .await;
    assert_eq!(again.body.as_array().map(Vec::len), Some(1));
    site.server.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_counted_and_listed_until_declared() {
    let site = Site::new("Radio Inconnus").await;
    let stranger = kamwater("55555555", 3.0, "2026-10-01T02:00:00Z", "OK");
    let first = site.ingest("wmbusmeters/Neighbour", &stranger).await;
    assert_eq!(
        first,
        Ingested::UnknownMeter {
            mbus_id: "55555555".into(),
            telegrams: 1
        }
    );
    let later = kamwater("55555555", 3.1, "2026-10-02T02:00:00Z", "OK");
    assert!(matches!(
        site.ingest("wmbusmeters/Neighbour2", &later).await,
        Ingested::UnknownMeter { telegrams: 2, .. }
    ));
    // Short ids are padded, like people type them.
    site.ingest(
        "wmbusmeters/x",
        &kamwater("42", 1.0, "2026-10-01T02:00:00Z", "OK"),
    )
    .await;

    let listed = site.admin.get(&site.f.path("/wmbus/unknown-meters")).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["total"], json!(2));
    let neighbour = listed.body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["mbus_id"] == json!("55555555")))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(neighbour["telegrams"], json!(2));
    assert_eq!(neighbour["last_topic"], json!("wmbusmeters/Neighbour2"));
    assert_eq!(neighbour["driver"], json!("kamwater"));
    assert_eq!(neighbour["media"], json!("water"));
    assert_eq!(neighbour["name"], json!("M55555555"));
    // Nothing was stored, and nothing counted as refused.
    let rejections = site.admin.get(&site.f.path("/wmbus/rejections")).await;
    assert_eq!(rejections.body["total"], json!(0));

    // Declared, it is no longer unknown and its next telegram is a reading.
    let meter = site.meter("cold_water", "55555555", "m3", 5).await;
    let listed = site.admin.get(&site.f.path("/wmbus/unknown-meters")).await;
    assert_eq!(listed.body["total"], json!(1));
    let next = kamwater("55555555", 3.2, "2026-10-03T02:00:00Z", "OK");
    assert!(matches!(
        site.ingest("wmbusmeters/Neighbour", &next).await,
        Ingested::Stored { meter_id, .. } if meter_id == meter
    ));
    site.server.stop().await;
}

#[tokio::test]
async fn bad_input_is_counted_stores_nothing_and_leaves_readings_intact() {
    let site = Site::new("Radio Refus").await;
    let cold = site.meter("cold_water", "10000001", "m3", 5).await;
    let hca = site
        .meter("heat_cost_allocator", "10000003", "hca", 6)
        .await;
    site.ingest(
        "wmbusmeters/c",
        &kamwater("10000001", 10.0, "2026-10-01T02:00:00Z", "LEAK"),
    )
    .await;
    let before = site.values(cold).await;

    let t = "2026-10-02T02:00:00Z";
    let huge = telegram(
        "10000001",
        "total_m3",
        11.0,
        t,
        &format!(r#""padding":"{}""#, "x".repeat(100 * 1024)),
    );
    let cases: Vec<(String, RejectionKind)> = vec![
        (huge, RejectionKind::TooLarge),
        (
            r#"{"id":"10000001","total_m3":11"#.into(),
            RejectionKind::MalformedJson,
        ),
        ("\"10000001\"".into(), RejectionKind::NotAnObject),
        (
            r#"{"total_m3":11,"timestamp":"2026-10-02T02:00:00Z"}"#.into(),
            RejectionKind::MissingField,
        ),
        (
            r#"{"id":10000001,"total_m3":11,"timestamp":"2026-10-02T02:00:00Z"}"#.into(),
            RejectionKind::WrongType,
        ),
        (kamwater("1000000a", 11.0, t, "OK"), RejectionKind::BadId),
        (
            kamwater("10000001", 11.0, "yesterday", "OK"),
            RejectionKind::BadTimestamp,
        ),
        (
            kamwater("10000001", 11.0, "2099-01-01T00:00:00Z", "OK"),
            RejectionKind::FutureTimestamp,
        ),
        (
            r#"{"id":"10000001","total_m3":"nan","timestamp":"2026-10-02T02:00:00Z"}"#.into(),
            RejectionKind::BadIndex,
        ),
        (kamwater("10000001", -1.0, t, "OK"), RejectionKind::BadIndex),
        (
            telegram("10000001", "volume_m3", 11.0, t, ""),
            RejectionKind::NoIndex,
        ),
        (
            telegram("10000001", "current_hca", 11.0, t, ""),
            RejectionKind::KindMismatch,
        ),
        (
            telegram("10000003", "total_m3", 11.0, t, ""),
            RejectionKind::KindMismatch,
        ),
        (
            kamwater("10000001", 100_000.0, t, "OK"),
            RejectionKind::IndexOutOfRange,
        ),
        (
            kamwater("10000001", 1.0, "2025-12-31T12:00:00Z", "OK"),
            RejectionKind::BeforeInstallation,
        ),
    ];
    let topic = "wmbusmeters/bad";
    for (payload, kind) in &cases {
        let outcome = site.ingest(topic, payload).await;
        assert_eq!(
            rejected(&outcome),
            Some(*kind),
            "{payload:.120}: {outcome:?}"
        );
    }
    // Nothing stored, nothing changed: the reading and the leak are as they were.
    assert_eq!(site.values(cold).await, before);
    assert!(site.readings(hca).await.is_empty());
    assert_eq!(site.open_alarms(cold).await, vec![AlarmKind::Leak]);

    // Again: the same rows count twice, no new row.
    for (payload, _) in &cases {
        site.ingest(topic, payload).await;
    }
    let listed = site
        .admin
        .get(&site.f.path("/wmbus/rejections?limit=100"))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let items = listed.body["items"].as_array().cloned().unwrap_or_default();
    let count_of = |reason: &str| {
        items
            .iter()
            .find(|i| i["reason"] == json!(reason))
            .map(|i| (i["count"].as_i64(), i["topic"].clone()))
    };
    assert_eq!(count_of("too_large"), Some((Some(2), json!(topic))));
    assert_eq!(count_of("bad_index").map(|c| c.0), Some(Some(4)));
    assert_eq!(count_of("kind_mismatch").map(|c| c.0), Some(Some(4)));
    assert_eq!(listed.body["total"], json!(13));
    let wmbus = site
        .admin
        .get(&site.f.path("/wmbus/rejections?source=wmbus&limit=1"))
        .await;
    assert_eq!(wmbus.body["total"], json!(13));
    assert_eq!(wmbus.body["items"][0]["source"], json!("wmbus"));
    let other = site
        .admin
        .get(&site.f.path("/wmbus/rejections?source=esp-rfid"))
        .await;
    assert_eq!(other.body["total"], json!(0));
    let future = items
        .iter()
        .find(|i| i["reason"] == json!("future_timestamp"))
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        future["detail"]
            .as_str()
            .unwrap_or("")
            .contains("ahead of the service clock"),
        "{future}"
    );
    assert!(
        future["explanation"]
            .as_str()
            .unwrap_or("")
            .contains("futur"),
        "{future}"
    );
    let too_large = items
        .iter()
        .find(|i| i["reason"] == json!("too_large"))
        .cloned()
        .unwrap_or(Value::Null);
    let excerpt = too_large["last_payload_excerpt"].as_str().unwrap_or("");
    assert!(
        excerpt.chars().count() <= 201 && excerpt.starts_with("{\"_\""),
        "{excerpt}"
    );
    site.server.stop().await;
}

#[tokio::test]
async fn a_removed_meter_counts_up_to_its_removal_day() {
    let site = Site::new("Radio Dépose").await;
    let old = site.meter("cold_water", "10000001", "m3", 5).await;
    let replaced = site
        .admin
        .post(
            &site.f.path(&format!("/meters/{old}/replace")),
            json!({ "replaced_on": "2026-10-10", "final_index": 20.0, "mbus_id": "10000009", "manufacturer": "KAM" }),
        )
        .await;
    assert_eq!(replaced.status, 201, "{}", replaced.body);
    let new = replaced.body["meter"]["id"]
        .as_i64()
        .expect("the new meter");

    // Dated before the removal (a late delivery): stored, alarms of a removed meter
    // untouched.
    let late = kamwater("10000001", 19.5, "2026-10-09T02:00:00Z", "LEAK");
    assert!(matches!(
        site.ingest("wmbusmeters/old", &late).await,
        Ingested::Stored {
            alarms_set: false,
            ..
        }
    ));
    assert!(site.open_alarms(old).await.is_empty());
    // After it: the old meter still on the air, refused.
    let after = kamwater("10000001", 20.1, "2026-10-12T02:00:00Z", "OK");
    assert_eq!(
        rejected(&site.ingest("wmbusmeters/old", &after).await),
        Some(RejectionKind::AfterRemoval)
    );
    let newer = kamwater("10000009", 0.3, "2026-10-12T02:00:00Z", "OK");
    assert!(matches!(
        site.ingest("wmbusmeters/new", &newer).await,
        Ingested::Stored { meter_id, .. } if meter_id == new
    ));
    assert_eq!(site.readings(old).await.len(), 1);
    site.server.stop().await;
}

#[tokio::test]
async fn a_flood_of_bad_messages_on_many_topics_stays_bounded() {
    let site = Site::new("Radio Déluge").await;
    let topics: Vec<String> = (0..MAX_REJECTION_ROWS + 150)
        .map(|n| format!("wmbusmeters/spam{n}"))
        .collect();
    let messages: Vec<Message> = topics
        .iter()
        .map(|topic| Message {
            residence_id: site.f.rid,
            topic,
            payload: b"not json",
        })
        .collect();
    let outcomes = ingest_many(&site.server.store, &messages)
        .await
        .expect("batch");
    assert!(outcomes
        .iter()
        .all(|o| rejected(o) == Some(RejectionKind::MalformedJson)));
    let listed = site
        .admin
        .get(&site.f.path("/wmbus/rejections?limit=1"))
        .await;
    assert_eq!(listed.body["total"], json!(MAX_REJECTION_ROWS + 1));
    // The newest row is the overflow, which counted the topics past the limit.
    assert_eq!(listed.body["items"][0]["topic"], json!(OVERFLOW_TOPIC));
    assert_eq!(listed.body["items"][0]["count"], json!(150));

    // A caller may count a message of no residence.
    let rejection = Rejection {
        kind: RejectionKind::MalformedJson,
        detail: "test".into(),
    };
    let count = record_rejection(&site.server.store, None, "elsewhere/x", &rejection, b"?")
        .await
        .expect("counted");
    assert_eq!(count, 1);
    site.server.stop().await;
}

#[tokio::test]
async fn only_managers_see_what_the_radio_could_not_use() {
    let site = Site::new("Radio Accès").await;
    site.ingest(
        "wmbusmeters/x",
        &kamwater("55555555", 1.0, "2026-10-01T02:00:00Z", "OK"),
    )
    .await;
    site.ingest("wmbusmeters/x", "garbage").await;
    let routes = ["/wmbus/unknown-meters", "/wmbus/rejections"];

    let council = site
        .server
        .member(
            &site.admin,
            site.f.rid,
            "council@radio.test",
            "council",
            None,
        )
        .await;
    let resident = site
        .server
        .member(
            &site.admin,
            site.f.rid,
            "resident@radio.test",
            "resident",
            Some(site.f.people[0]),
        )
        .await;
    let provider = site
        .server
        .member(
            &site.admin,
            site.f.rid,
            "provider@radio.test",
            "provider",
            Some(site.f.provider),
        )
        .await;
    let other = fixture(&site.admin, "Ailleurs").await;
    let outsider = site
        .server
        .member(
            &site.admin,
            other.rid,
            "syndic@ailleurs.test",
            "syndic",
            None,
        )
        .await;
    for route in routes {
        let path = site.f.path(route);
        let seen = council.get(&path).await;
        assert_eq!(seen.status, 200, "{route}: {}", seen.body);
        assert_eq!(seen.body["total"], json!(1), "{route}");
        for (who, client) in [("resident", &resident), ("provider", &provider)] {
            let refused = client.get(&path).await;
            assert_eq!(refused.status, 403, "{who} {route}: {}", refused.body);
            assert!(
                refused.body["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("conseil syndical"),
                "{}",
                refused.body
            );
        }
        // Someone of another residence does not learn this one exists.
        assert_eq!(outsider.get(&path).await.status, 404, "{route}");
        assert_eq!(
            site.server.anonymous().get(&path).await.status,
            401,
            "{route}"
        );
        let bad = council.get(&format!("{path}?limit=0")).await;
        assert_eq!(bad.status, 422, "{route}: {}", bad.body);
    }
    let openapi = site.server.anonymous().get("/api/v1/openapi.json").await;
    for route in routes {
        let path = format!("/residences/{{rid}}{route}");
        assert!(openapi.body["paths"][&path]["get"].is_object(), "{path}");
    }
    site.server.stop().await;
}
