//! Bad input, through HTTP: every malformed, out-of-range, duplicate or foreign value
//! gets a 4xx with a JSON error naming the field, never a 5xx, and a refused request
//! leaves every record, listing and the audit log as they were.

mod common;

use common::{Client, Fixture, Response, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

/// The listings of a residence, all compared before and after each refused request.
const LISTINGS: [&str; 11] = [
    "/buildings",
    "/units",
    "/people",
    "/providers",
    "/occupancies",
    "/controllers",
    "/locks",
    "/profiles",
    "/keys",
    "/gateways",
    "/meters?removed=true",
];

/// Unpaged listings of a residence, compared too.
const LISTS: [&str; 3] = [
    "/meter-alarms?all=true",
    "/reading-conflicts",
    "/collections",
];

/// Everything a client can see: the residences with all their listings, members and
/// audit log total, the admin's tokens and memberships. The audit log is append-only,
/// so an unchanged total means no entry was written.
async fn snapshot(admin: &Client, rids: &[i64]) -> Value {
    let mut paths = vec![
        "/api/v1/residences".to_owned(),
        "/api/v1/auth/tokens".to_owned(),
        "/api/v1/me".to_owned(),
    ];
    for rid in rids {
        paths.push(format!("/api/v1/residences/{rid}"));
        paths.push(format!("/api/v1/residences/{rid}/members"));
        paths.push(format!("/api/v1/residences/{rid}/audit?limit=1"));
        for listing in LISTINGS {
            let separator = if listing.contains('?') { '&' } else { '?' };
            paths.push(format!(
                "/api/v1/residences/{rid}{listing}{separator}limit=500"
            ));
        }
        for list in LISTS {
            paths.push(format!("/api/v1/residences/{rid}{list}"));
        }
    }
    let mut requests = tokio::task::JoinSet::new();
    for path in paths {
        let admin = admin.clone();
        requests.spawn(async move {
            let response = admin.get(&path).await;
            (path, response)
        });
    }
    let mut state = serde_json::Map::new();
    while let Some(joined) = requests.join_next().await {
        let (path, response) = joined.expect("snapshot request");
        assert_eq!(response.status, 200, "GET {path}: {}", response.body);
        state.insert(path, response.body);
    }
    Value::Object(state)
}

/// The audit log total of a residence.
async fn audit_total(admin: &Client, rid: i64) -> i64 {
    let response = admin
        .get(&format!("/api/v1/residences/{rid}/audit?limit=1"))
        .await;
    assert_eq!(response.status, 200, "audit: {}", response.body);
    response.body["total"].as_i64().expect("audit total")
}

/// Checks a JSON error: status, code, a non-empty message and, when given, the field.
fn check_error(
    response: &Response,
    status: u16,
    code: &str,
    field: Option<&str>,
) -> Result<(), String> {
    let error = &response.body["error"];
    let message = error["message"].as_str().unwrap_or_default();
    let field_ok = field.is_none_or(|field| error["field"] == field);
    if response.status == status && error["code"] == code && !message.trim().is_empty() && field_ok
    {
        Ok(())
    } else {
        Err(format!(
            "expected {status} {code} field {field:?}, got {} {}",
            response.status, response.body
        ))
    }
}

#[track_caller]
fn assert_error(response: &Response, status: u16, code: &str, field: Option<&str>, what: &str) {
    if let Err(problem) = check_error(response, status, code, field) {
        panic!("{what}: {problem}");
    }
}

/// A 4xx with a JSON error body of the documented shape.
#[track_caller]
fn assert_json_4xx(response: &Response, what: &str) {
    assert!(
        (400..500).contains(&response.status),
        "{what}: status {} {}",
        response.status,
        response.body
    );
    let error = &response.body["error"];
    assert!(
        error["code"].as_str().is_some_and(|code| !code.is_empty()),
        "{what}: no error code in {}",
        response.body
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| !message.trim().is_empty()),
        "{what}: no error message in {}",
        response.body
    );
}

#[derive(Debug, Clone, Copy)]
enum Expect<'a> {
    /// 422 `invalid_field` naming the field.
    Invalid(&'a str),
    /// 409 `conflict` naming the field.
    Conflict(&'a str),
    /// 404 `not_found`.
    NotFound,
    /// 400 `invalid_path` naming the path parameter.
    BadPath(&'a str),
}

struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    expect: Expect<'static>,
}

/// A table of bad requests.
#[derive(Default)]
struct Cases(Vec<Case>);

impl Cases {
    fn add(&mut self, method: Method, path: &str, body: Option<Value>, expect: Expect<'static>) {
        self.0.push(Case {
            method,
            path: path.to_owned(),
            body,
            expect,
        });
    }

    fn post(&mut self, path: &str, body: Value, expect: Expect<'static>) {
        self.add(Method::POST, path, Some(body), expect);
    }

    fn put(&mut self, path: &str, body: Value, expect: Expect<'static>) {
        self.add(Method::PUT, path, Some(body), expect);
    }

    fn get(&mut self, path: &str, expect: Expect<'static>) {
        self.add(Method::GET, path, None, expect);
    }

    fn delete(&mut self, path: &str, expect: Expect<'static>) {
        self.add(Method::DELETE, path, None, expect);
    }
}

/// Shortens a request body for assertion messages.
fn describe(case: &Case) -> String {
    let body = case.body.as_ref().map(Value::to_string).unwrap_or_default();
    let body: String = if body.chars().count() > 160 {
        format!("{}…", body.chars().take(160).collect::<String>())
    } else {
        body
    };
    format!("{} {} {body}", case.method, case.path)
}

/// Runs each case, checks its error and that nothing visible changed; reports every
/// case that went wrong.
async fn run_cases(admin: &Client, cases: Cases, rids: &[i64]) {
    let mut before = snapshot(admin, rids).await;
    let mut failures = Vec::new();
    for case in cases.0 {
        let what = describe(&case);
        let mutating = case.method != Method::GET;
        let response = admin
            .request(case.method.clone(), &case.path, case.body.clone())
            .await;
        let checked = match case.expect {
            Expect::Invalid(field) => check_error(&response, 422, "invalid_field", Some(field)),
            Expect::Conflict(field) => check_error(&response, 409, "conflict", Some(field)),
            Expect::NotFound => check_error(&response, 404, "not_found", None),
            Expect::BadPath(field) => check_error(&response, 400, "invalid_path", Some(field)),
        };
        if let Err(problem) = checked {
            failures.push(format!("{what}: {problem}"));
        }
        if mutating {
            let after = snapshot(admin, rids).await;
            if after != before {
                failures.push(format!("{what}: changed what clients see"));
                before = after;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad request(s) not refused as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Two residences: `a` with two keys, `b` (the "other residence") with one.
struct World {
    server: TestServer,
    admin: Client,
    a: Fixture,
    b: Fixture,
    badge: i64,
    remote: i64,
    b_key: i64,
}

async fn world() -> World {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let a = common::fixture(&admin, "Les Tilleuls").await;
    let b = common::fixture(&admin, "Les Acacias").await;
    let badge = admin
        .create(
            &a.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": "04 a2 2b 91", "profile_ids": [a.profiles[0]] }),
        )
        .await;
    let remote = admin
        .create(
            &a.path("/keys"),
            json!({ "kind": "remote", "identifier": "00123456" }),
        )
        .await;
    // The same badge may be recorded in another residence.
    let b_key = admin
        .create(
            &b.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": "04A22B91" }),
        )
        .await;
    World {
        server,
        admin,
        a,
        b,
        badge,
        remote,
        b_key,
    }
}

fn key(identifier: &str) -> Value {
    json!({ "kind": "vigik_badge", "identifier": identifier })
}

/// `base` with `field` set to `value`.
fn with(base: &Value, field: &str, value: Value) -> Value {
    let mut body = base.clone();
    body[field] = value;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_payloads_are_refused_naming_the_field_and_change_nothing() {
    use Expect::*;
    let World {
        server,
        admin,
        a,
        b,
        badge,
        remote,
        b_key,
    } = world().await;
    let long = "x".repeat(10_000);
    let mut cases = Cases::default();

    // Residences.
    let residences = "/api/v1/residences";
    let residence = a.path("");
    cases.post(
        residences,
        json!({ "name": "X", "colour": "rouge" }),
        Invalid("colour"),
    );
    cases.post(residences, json!({ "name": 12 }), Invalid("name"));
    cases.post(residences, json!({ "address": "1 rue" }), Invalid("name"));
    cases.post(residences, json!({ "name": long }), Invalid("name"));
    cases.post(residences, json!({ "name": "   " }), Invalid("name"));
    cases.post(residences, json!({ "name": "A\u{0}B" }), Invalid("name"));
    cases.put(
        &residence,
        json!({ "name": "Les Tilleuls", "address": "y".repeat(501) }),
        Invalid("address"),
    );
    cases.put(&residence, json!({ "name": null }), Invalid("name"));

    // Buildings.
    let buildings = a.path("/buildings");
    cases.post(&buildings, json!({ "name": "A" }), Conflict("name"));
    cases.post(&buildings, json!({ "name": " A " }), Conflict("name"));
    cases.post(&buildings, json!({ "name": ["C"] }), Invalid("name"));
    cases.post(&buildings, json!({ "name": long }), Invalid("name"));
    cases.put(
        &a.path(&format!("/buildings/{}", b.buildings[0])),
        json!({ "name": "Volé" }),
        NotFound,
    );
    cases.delete(&a.path(&format!("/buildings/{}", b.buildings[0])), NotFound);

    // Units.
    let units = a.path("/units");
    let unit = json!({ "lot_number": "C01", "kind": "flat" });
    cases.post(
        &units,
        with(&unit, "surface", json!(30)),
        Invalid("surface"),
    );
    cases.post(
        &units,
        with(&unit, "kind", json!("castle")),
        Invalid("kind"),
    );
    cases.post(&units, json!({ "lot_number": "C01" }), Invalid("kind"));
    cases.post(&units, json!({ "kind": "flat" }), Invalid("lot_number"));
    cases.post(&units, with(&unit, "floor", json!("3")), Invalid("floor"));
    cases.post(&units, with(&unit, "floor", json!(1.5)), Invalid("floor"));
    cases.post(&units, with(&unit, "floor", json!(500)), Invalid("floor"));
    cases.post(
        &units,
        with(&unit, "area_m2", json!(-1)),
        Invalid("area_m2"),
    );
    cases.post(
        &units,
        with(&unit, "area_m2", json!(1e9)),
        Invalid("area_m2"),
    );
    cases.post(
        &units,
        with(&unit, "lot_number", json!(long)),
        Invalid("lot_number"),
    );
    cases.post(
        &units,
        with(&unit, "lot_number", json!("A01")),
        Conflict("lot_number"),
    );
    cases.post(
        &units,
        with(&unit, "lot_number", json!(" A01 ")),
        Conflict("lot_number"),
    );
    cases.post(
        &units,
        with(&unit, "building_id", json!(b.buildings[0])),
        Invalid("building_id"),
    );
    cases.post(
        &units,
        with(&unit, "building_id", json!(i64::MAX)),
        Invalid("building_id"),
    );
    cases.post(
        &units,
        with(&unit, "building_id", json!(-1)),
        Invalid("building_id"),
    );
    cases.post(
        &units,
        with(&unit, "building_id", json!(99_999_999_999_999_999_999.0)),
        Invalid("building_id"),
    );
    cases.put(
        &a.path(&format!("/units/{}", a.units[0])),
        json!({ "lot_number": "A01", "kind": "flat", "building_id": b.buildings[0] }),
        Invalid("building_id"),
    );
    cases.put(
        &a.path(&format!("/units/{}", a.units[0])),
        json!({ "lot_number": "B01", "kind": "flat" }),
        Conflict("lot_number"),
    );
    cases.put(
        &a.path(&format!("/units/{}", b.units[0])),
        json!({ "lot_number": "Z99", "kind": "flat" }),
        NotFound,
    );
    cases.delete(&a.path(&format!("/units/{}", b.units[0])), NotFound);
    cases.get(&a.path(&format!("/units/{}", b.units[0])), NotFound);

    // People.
    let people = a.path("/people");
    let person = json!({ "full_name": "Jeanne Martin" });
    cases.post(&people, with(&person, "age", json!(40)), Invalid("age"));
    cases.post(
        &people,
        json!({ "email": "j@example.org" }),
        Invalid("full_name"),
    );
    cases.post(
        &people,
        with(&person, "full_name", json!(long)),
        Invalid("full_name"),
    );
    cases.post(
        &people,
        with(&person, "email", json!("pas-une-adresse")),
        Invalid("email"),
    );
    cases.post(
        &people,
        with(&person, "email", json!(long)),
        Invalid("email"),
    );
    cases.post(
        &people,
        with(&person, "phone", json!("0".repeat(41))),
        Invalid("phone"),
    );
    cases.post(
        &people,
        with(&person, "is_caretaker", json!("oui")),
        Invalid("is_caretaker"),
    );
    cases.post(
        &people,
        with(&person, "notes", json!("n".repeat(2001))),
        Invalid("notes"),
    );
    cases.put(
        &a.path(&format!("/people/{}", b.people[0])),
        person.clone(),
        NotFound,
    );
    cases.delete(&a.path(&format!("/people/{}", b.people[0])), NotFound);

    // Providers.
    let providers = a.path("/providers");
    let provider = json!({ "name": "Ascenseurs du Sud" });
    cases.post(&providers, json!({ "name": "Net'Immo" }), Conflict("name"));
    cases.post(
        &providers,
        with(&provider, "trade", json!("t".repeat(101))),
        Invalid("trade"),
    );
    cases.post(
        &providers,
        with(&provider, "email", json!("a@b")),
        Invalid("email"),
    );
    cases.post(
        &providers,
        with(&provider, "name", json!(long)),
        Invalid("name"),
    );
    cases.post(
        &providers,
        with(&provider, "siret", json!("123")),
        Invalid("siret"),
    );
    cases.delete(&a.path(&format!("/providers/{}", b.provider)), NotFound);

    // Controllers.
    let controllers = a.path("/controllers");
    let controller = json!({ "name": "Centrale 2", "model": "KL-8", "transport": "modbus_tcp", "address": "192.0.2.10:502", "modbus_unit": 2 });
    cases.post(
        &controllers,
        with(&controller, "transport", json!("zigbee")),
        Invalid("transport"),
    );
    cases.post(
        &controllers,
        with(&controller, "address", json!("sans-port")),
        Invalid("address"),
    );
    cases.post(
        &controllers,
        with(&controller, "address", json!("hote:99999")),
        Invalid("address"),
    );
    cases.post(
        &controllers,
        with(&controller, "modbus_unit", json!(0)),
        Invalid("modbus_unit"),
    );
    cases.post(
        &controllers,
        with(&controller, "modbus_unit", json!(248)),
        Invalid("modbus_unit"),
    );
    cases.post(
        &controllers,
        with(&controller, "modbus_unit", json!(null)),
        Invalid("modbus_unit"),
    );
    cases.post(
        &controllers,
        json!({ "name": "Centrale MQTT", "model": "KL-8", "transport": "mqtt", "address": "residence/portes", "modbus_unit": 1 }),
        Invalid("modbus_unit"),
    );
    cases.post(
        &controllers,
        json!({ "name": "Centrale MQTT", "model": "KL-8", "transport": "mqtt", "address": "residence/#" }),
        Invalid("address"),
    );
    cases.post(
        &controllers,
        with(&controller, "name", json!("Centrale")),
        Conflict("name"),
    );
    cases.post(
        &controllers,
        with(&controller, "name", json!(long)),
        Invalid("name"),
    );
    cases.post(
        &controllers,
        with(&controller, "model", json!("")),
        Invalid("model"),
    );
    cases.delete(&a.path(&format!("/controllers/{}", b.controller)), NotFound);

    // Locks.
    let locks = a.path("/locks");
    let lock = json!({ "name": "Local vélos", "kind": "door" });
    cases.post(
        &locks,
        with(&lock, "kind", json!("window")),
        Invalid("kind"),
    );
    cases.post(&locks, with(&lock, "name", json!(long)), Invalid("name"));
    cases.post(
        &locks,
        with(&lock, "name", json!("Hall A")),
        Conflict("name"),
    );
    cases.post(
        &locks,
        with(&lock, "building_id", json!(b.buildings[0])),
        Invalid("building_id"),
    );
    cases.post(
        &locks,
        json!({ "name": "Local vélos", "kind": "door", "controller_id": b.controller, "door_number": 4 }),
        Invalid("controller_id"),
    );
    cases.post(
        &locks,
        json!({ "name": "Local vélos", "kind": "door", "controller_id": a.controller, "door_number": 17 }),
        Invalid("door_number"),
    );
    cases.post(
        &locks,
        json!({ "name": "Local vélos", "kind": "door", "controller_id": a.controller }),
        Invalid("door_number"),
    );
    cases.post(
        &locks,
        with(&lock, "door_number", json!(4)),
        Invalid("controller_id"),
    );
    cases.post(
        &locks,
        json!({ "name": "Local vélos", "kind": "door", "controller_id": a.controller, "door_number": 1 }),
        Conflict("door_number"),
    );
    cases.put(
        &a.path(&format!("/locks/{}", a.locks[0])),
        json!({ "name": "Hall A", "kind": "door", "controller_id": b.controller, "door_number": 1 }),
        Invalid("controller_id"),
    );
    cases.delete(&a.path(&format!("/locks/{}", b.locks[0])), NotFound);

    // Access profiles.
    let profiles = a.path("/profiles");
    let profile = json!({ "name": "Gardien" });
    cases.post(
        &profiles,
        with(&profile, "lock_ids", json!([b.locks[0]])),
        Invalid("lock_ids[0]"),
    );
    cases.post(
        &profiles,
        with(&profile, "lock_ids", json!([a.locks[0], "x"])),
        Invalid("lock_ids[1]"),
    );
    cases.post(
        &profiles,
        with(&profile, "lock_ids", json!("toutes")),
        Invalid("lock_ids"),
    );
    cases.post(
        &profiles,
        with(&profile, "lock_ids", json!((1..=501).collect::<Vec<i64>>())),
        Invalid("lock_ids"),
    );
    cases.post(&profiles, json!({ "name": "Résident A" }), Conflict("name"));
    cases.post(
        &profiles,
        with(&profile, "description", json!("d".repeat(501))),
        Invalid("description"),
    );
    cases.put(
        &a.path(&format!("/profiles/{}", a.profiles[0])),
        json!({ "name": "Résident A", "lock_ids": [a.locks[0], b.locks[2]] }),
        Invalid("lock_ids[1]"),
    );
    cases.delete(&a.path(&format!("/profiles/{}", b.profiles[0])), NotFound);

    // Occupancies.
    let occupancies = a.path("/occupancies");
    let occupancy = json!({ "unit_id": a.units[0], "person_id": a.people[1], "role": "tenant" });
    cases.post(
        &occupancies,
        with(&occupancy, "unit_id", json!(b.units[0])),
        Invalid("unit_id"),
    );
    cases.post(
        &occupancies,
        with(&occupancy, "person_id", json!(b.people[0])),
        Invalid("person_id"),
    );
    cases.post(
        &occupancies,
        with(&occupancy, "role", json!("squatter")),
        Invalid("role"),
    );
    cases.post(
        &occupancies,
        json!({ "person_id": a.people[1], "role": "tenant" }),
        Invalid("unit_id"),
    );
    cases.post(
        &occupancies,
        with(&occupancy, "start_date", json!("0999-01-01")),
        Invalid("start_date"),
    );
    cases.post(
        &occupancies,
        with(&occupancy, "start_date", json!("2026-13-01")),
        Invalid("start_date"),
    );
    cases.post(
        &occupancies,
        with(&occupancy, "start_date", json!("2026-02-30")),
        Invalid("start_date"),
    );
    cases.post(
        &occupancies,
        with(&occupancy, "start_date", json!(20260101)),
        Invalid("start_date"),
    );
    cases.post(
        &occupancies,
        with(&occupancy, "end_date", json!("2201-01-01")),
        Invalid("end_date"),
    );
    cases.post(
        &occupancies,
        json!({ "unit_id": a.units[0], "person_id": a.people[1], "role": "tenant", "start_date": "2026-06-01", "end_date": "2025-06-01" }),
        Invalid("end_date"),
    );

    // Keys.
    let keys = a.path("/keys");
    cases.post(
        &keys,
        with(&key("05A22B91"), "colour", json!("rouge")),
        Invalid("colour"),
    );
    cases.post(
        &keys,
        json!({ "kind": "vigik_badge" }),
        Invalid("identifier"),
    );
    cases.post(&keys, json!({ "identifier": "05A22B91" }), Invalid("kind"));
    cases.post(
        &keys,
        json!({ "kind": "car_key", "identifier": "1" }),
        Invalid("kind"),
    );
    cases.post(
        &keys,
        json!({ "kind": "vigik_badge", "identifier": 123 }),
        Invalid("identifier"),
    );
    for uid in [
        "",
        "0x",
        "04A22B",
        "04A22B9",
        "ZZA22B91",
        "04A22B9180",
        "4294967296",
        "04:A2:2B:9100",
        "04 A2 2B 91 80 12",
        "04:A2::2B:G1",
        "０４Ａ２２Ｂ９１",
        "04A22B91\u{0}",
        &long,
    ] {
        cases.post(&keys, key(uid), Invalid("identifier"));
    }
    for serial in ["4294967296", "12345678901", "12A", "+5", "5e3", "", &long] {
        cases.post(
            &keys,
            json!({ "kind": "remote", "identifier": serial }),
            Invalid("identifier"),
        );
    }
    cases.post(
        &keys,
        json!({ "kind": "other", "identifier": "c".repeat(65) }),
        Invalid("identifier"),
    );
    cases.post(
        &keys,
        with(&key("05A22B91"), "label", json!(long)),
        Invalid("label"),
    );
    cases.post(
        &keys,
        with(&key("05A22B91"), "notes", json!("n".repeat(2001))),
        Invalid("notes"),
    );
    cases.post(
        &keys,
        with(&key("05A22B91"), "status", json!("flying")),
        Invalid("status"),
    );
    for date in ["0999-12-31", "2201-01-01"] {
        cases.post(
            &keys,
            with(&key("05A22B91"), "handed_out_on", json!(date)),
            Invalid("handed_out_on"),
        );
    }
    for date in [
        "2026-13-01",
        "2026-02-30",
        "31/12/2026",
        "2026-01-01T00:00:00Z",
    ] {
        cases.post(
            &keys,
            with(&key("05A22B91"), "handed_out_on", json!(date)),
            Invalid("handed_out_on"),
        );
    }
    for field in ["valid_from", "valid_until"] {
        for time in [
            "0999-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01",
            "demain",
        ] {
            cases.post(
                &keys,
                with(&key("05A22B91"), field, json!(time)),
                Invalid(field),
            );
        }
    }
    for (from, until) in [
        ("2026-06-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z"),
    ] {
        cases.post(
            &keys,
            json!({ "kind": "remote", "identifier": "42", "valid_from": from, "valid_until": until }),
            Invalid("valid_until"),
        );
    }
    for same_badge in [
        "04A22B91",
        "04:a2:2b:91",
        "04-A2-2B-91",
        "0x04a22b91",
        "4:a2:2b:91",
        "2435555844",
    ] {
        cases.post(&keys, key(same_badge), Conflict("identifier"));
    }
    for same_remote in ["123456", "00123456", "123 456", "0000123456"] {
        cases.post(
            &keys,
            json!({ "kind": "remote", "identifier": same_remote }),
            Conflict("identifier"),
        );
    }
    cases.post(
        &keys,
        with(&key("05A22B91"), "unit_id", json!(b.units[0])),
        Invalid("unit_id"),
    );
    cases.post(
        &keys,
        with(&key("05A22B91"), "holder_person_id", json!(b.people[0])),
        Invalid("holder_person_id"),
    );
    cases.post(
        &keys,
        with(&key("05A22B91"), "holder_provider_id", json!(b.provider)),
        Invalid("holder_provider_id"),
    );
    cases.post(
        &keys,
        with(&key("05A22B91"), "profile_ids", json!([b.profiles[0]])),
        Invalid("profile_ids[0]"),
    );
    cases.post(
        &keys,
        json!({ "kind": "vigik_badge", "identifier": "05A22B91", "holder_person_id": a.people[0], "holder_provider_id": a.provider }),
        Invalid("holder_provider_id"),
    );
    cases.post(
        &keys,
        with(
            &key("05A22B91"),
            "profile_ids",
            json!((1..=501).collect::<Vec<i64>>()),
        ),
        Invalid("profile_ids"),
    );
    cases.post(
        &keys,
        with(&key("05A22B91"), "profile_ids", json!(a.profiles[0])),
        Invalid("profile_ids"),
    );
    let badge_path = a.path(&format!("/keys/{badge}"));
    cases.put(
        &badge_path,
        json!({ "identifier": "05A22B91" }),
        Invalid("identifier"),
    );
    cases.put(&badge_path, json!({ "status": "lost" }), Invalid("status"));
    cases.put(
        &badge_path,
        json!({ "unit_id": b.units[0] }),
        Invalid("unit_id"),
    );
    cases.put(
        &badge_path,
        json!({ "profile_ids": [b.profiles[1]] }),
        Invalid("profile_ids[0]"),
    );
    cases.put(&badge_path, json!({ "label": long }), Invalid("label"));
    cases.put(
        &badge_path,
        json!({ "valid_from": "2027-01-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z" }),
        Invalid("valid_until"),
    );
    cases.put(
        &a.path(&format!("/keys/{b_key}")),
        json!({ "label": "x" }),
        NotFound,
    );
    cases.get(&a.path(&format!("/keys/{b_key}")), NotFound);

    // Hand-over and the other key actions.
    let hand_over = a.path(&format!("/keys/{remote}/hand-over"));
    cases.post(&hand_over, json!({}), Invalid("holder_person_id"));
    cases.post(
        &hand_over,
        json!({ "holder": a.people[0] }),
        Invalid("holder"),
    );
    cases.post(
        &hand_over,
        json!({ "holder_person_id": b.people[0] }),
        Invalid("holder_person_id"),
    );
    cases.post(
        &hand_over,
        json!({ "holder_provider_id": b.provider }),
        Invalid("holder_provider_id"),
    );
    cases.post(
        &hand_over,
        json!({ "holder_person_id": a.people[0], "unit_id": b.units[1] }),
        Invalid("unit_id"),
    );
    cases.post(
        &hand_over,
        json!({ "holder_person_id": a.people[0], "holder_provider_id": a.provider }),
        Invalid("holder_provider_id"),
    );
    cases.post(
        &hand_over,
        json!({ "holder_person_id": a.people[0], "handed_out_on": "0999-01-01" }),
        Invalid("handed_out_on"),
    );
    cases.post(
        &hand_over,
        json!({ "holder_person_id": a.people[0], "valid_from": "2027-01-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z" }),
        Invalid("valid_until"),
    );
    cases.post(
        &hand_over,
        json!({ "holder_person_id": a.people[0], "reason": "r".repeat(501) }),
        Invalid("reason"),
    );
    cases.post(
        &hand_over,
        json!({ "holder_person_id": "Claire" }),
        Invalid("holder_person_id"),
    );
    cases.post(
        &a.path(&format!("/keys/{b_key}/hand-over")),
        json!({ "holder_person_id": a.people[0] }),
        NotFound,
    );
    cases.post(
        &a.path(&format!("/keys/{badge}/declare-lost")),
        json!({ "reason": "r".repeat(501) }),
        Invalid("reason"),
    );
    cases.post(
        &a.path(&format!("/keys/{badge}/declare-stolen")),
        json!({ "why": "volé" }),
        Invalid("why"),
    );
    cases.post(
        &a.path(&format!("/keys/{badge}/deactivate")),
        json!({ "reason": 12 }),
        Invalid("reason"),
    );
    cases.post(
        &a.path(&format!("/keys/{b_key}/declare-lost")),
        json!({}),
        NotFound,
    );

    // Members.
    let members = a.path("/members");
    let admin_email = "admin@test.gardien";
    cases.post(
        &members,
        json!({ "email": admin_email, "role": "king" }),
        Invalid("role"),
    );
    cases.post(
        &members,
        json!({ "email": admin_email, "role": "council", "badge": true }),
        Invalid("badge"),
    );
    cases.post(
        &members,
        json!({ "email": "nope", "role": "council" }),
        Invalid("email"),
    );
    cases.post(&members, json!({ "role": "council" }), Invalid("email"));
    cases.post(
        &members,
        json!({ "email": admin_email, "role": "resident", "person_id": b.people[0] }),
        Invalid("person_id"),
    );
    cases.post(
        &members,
        json!({ "email": admin_email, "role": "resident" }),
        Invalid("person_id"),
    );
    cases.post(
        &members,
        json!({ "email": admin_email, "role": "provider", "provider_id": b.provider }),
        Invalid("provider_id"),
    );
    cases.post(
        &members,
        json!({ "email": "nouveau@example.org", "role": "council", "display_name": "Nouveau" }),
        Invalid("password"),
    );
    cases.post(
        &members,
        json!({ "email": "nouveau@example.org", "role": "council", "display_name": "Nouveau", "password": "court" }),
        Invalid("password"),
    );
    cases.post(
        &members,
        json!({ "email": "nouveau@example.org", "role": "council", "display_name": long, "password": common::PASSWORD }),
        Invalid("display_name"),
    );
    cases.post(
        &members,
        json!({ "email": "nouveau@example.org", "role": "council", "password": common::PASSWORD }),
        Invalid("display_name"),
    );
    cases.post(
        &members,
        json!({ "email": "nouveau@example.org", "role": "resident", "person_id": b.people[0], "display_name": "Nouveau", "password": common::PASSWORD }),
        Invalid("person_id"),
    );

    // The refused requests above created no account: these e-mails are still unknown.
    cases.post(
        &members,
        json!({ "email": "nouveau@example.org", "role": "council" }),
        Invalid("password"),
    );

    // API tokens and accounts.
    let tokens = "/api/v1/auth/tokens";
    cases.post(
        tokens,
        json!({ "name": "collecte", "scope": "all" }),
        Invalid("scope"),
    );
    cases.post(tokens, json!({}), Invalid("name"));
    cases.post(tokens, json!({ "name": long }), Invalid("name"));
    cases.post(tokens, json!({ "name": 7 }), Invalid("name"));
    for expiry in [
        json!("0999-01-01T00:00:00Z"),
        json!("2020-01-01T00:00:00Z"),
        json!("2026-13-01T00:00:00Z"),
        json!("9999-01-01T00:00:00Z"),
        json!(1_700_000_000),
    ] {
        cases.post(
            tokens,
            json!({ "name": "collecte", "expires_at": expiry }),
            Invalid("expires_at"),
        );
    }
    let users = "/api/v1/users";
    let user =
        json!({ "email": "u@example.org", "display_name": "U", "password": common::PASSWORD });
    cases.post(users, with(&user, "role", json!("admin")), Invalid("role"));
    cases.post(users, with(&user, "email", json!("u@")), Invalid("email"));
    cases.post(
        users,
        with(&user, "password", json!("court")),
        Invalid("password"),
    );
    cases.post(
        users,
        with(&user, "display_name", json!(long)),
        Invalid("display_name"),
    );
    cases.post(
        users,
        with(&user, "is_admin", json!("oui")),
        Invalid("is_admin"),
    );
    cases.post(
        users,
        with(&user, "email", json!(admin_email)),
        Conflict("email"),
    );

    // Query strings and paths.
    for listing in ["/keys", "/units", "/people", "/locks", "/audit"] {
        let path = a.path(listing);
        cases.get(&format!("{path}?limit=-1"), Invalid("limit"));
        cases.get(&format!("{path}?limit=0"), Invalid("limit"));
        cases.get(&format!("{path}?limit=100000"), Invalid("limit"));
        cases.get(&format!("{path}?limit=abc"), Invalid("limit"));
        cases.get(
            &format!("{path}?limit=99999999999999999999"),
            Invalid("limit"),
        );
        cases.get(&format!("{path}?offset=-5"), Invalid("offset"));
        cases.get(&format!("{path}?colour=rouge"), Invalid("colour"));
    }
    cases.get(&a.path("/keys?status=flying"), Invalid("status"));
    cases.get(&a.path("/keys?unit_id=A01"), Invalid("unit_id"));
    cases.get(
        &a.path("/occupancies?current=peut-etre"),
        Invalid("current"),
    );
    cases.get(&a.path("/audit?since=hier"), Invalid("since"));
    cases.get(&a.path("/audit?entity_id=x"), Invalid("entity_id"));
    cases.get(
        &a.path(&format!("/keys/{badge}/history?limit=100000")),
        Invalid("limit"),
    );
    cases.get(
        &a.path(&format!("/keys/{badge}/history?page=2")),
        Invalid("page"),
    );
    cases.get(
        &a.path(&format!("/locks/{}/keys?at=demain", a.locks[0])),
        Invalid("at"),
    );
    cases.get(&a.path(&format!("/locks/{}/keys", b.locks[0])), NotFound);
    cases.get(&a.path("/keys/abc"), BadPath("id"));
    cases.get(&a.path("/keys/1.5"), BadPath("id"));
    cases.get(&a.path("/keys/99999999999999999999"), BadPath("id"));
    cases.get(&a.path("/keys/-1"), NotFound);
    cases.get("/api/v1/residences/abc/keys", BadPath("rid"));
    cases.get("/api/v1/residences/abc", BadPath("rid"));
    cases.get(
        "/api/v1/residences/99999999999999999999/units",
        BadPath("rid"),
    );
    cases.get("/api/v1/residences/999999/units", NotFound);
    cases.delete(&a.path("/units/abc"), BadPath("id"));
    cases.put(&a.path("/people/abc"), person.clone(), BadPath("id"));
    cases.post(&a.path("/keys/abc/declare-lost"), json!({}), BadPath("id"));
    cases.delete("/api/v1/auth/tokens/abc", BadPath("id"));
    cases.delete("/api/v1/auth/tokens/424242", NotFound);
    cases.delete(&a.path("/members/abc"), BadPath("user_id"));
    cases.delete(&a.path("/members/424242"), NotFound);

    let rids = [a.rid, b.rid];
    let total_a = audit_total(&admin, a.rid).await;
    run_cases(&admin, cases, &rids).await;
    assert_eq!(audit_total(&admin, a.rid).await, total_a);

    // The server still accepts good input afterwards.
    admin.create(&a.path("/keys"), key("05A22B91")).await;
    server.stop().await;
}

/// A cold-water meter of `unit`, read by `gateway`.
fn meter(unit: i64, mbus_id: &str, gateway: i64) -> Value {
    json!({ "kind": "cold_water", "unit_id": unit, "mbus_id": mbus_id, "manufacturer": "KAM",
            "medium": 22, "measure_unit": "m3", "digits": 5, "installed_on": "2025-01-01",
            "initial_index": 0, "gateway_id": gateway })
}

fn gateway(name: &str) -> Value {
    json!({ "name": name, "model": "MBG-250", "transport": "modbus_tcp", "address": "192.0.2.30:502", "modbus_unit": 1 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_meters_gateways_and_consumption_queries_are_refused_and_change_nothing() {
    use Expect::*;
    let World {
        server,
        admin,
        a,
        b,
        ..
    } = world().await;
    let long = "x".repeat(10_000);
    let [a_gateway, b_gateway] = [&a, &b].map(|f| f.path("/gateways"));
    let a_gateway = admin.create(&a_gateway, gateway("Passerelle A")).await;
    let b_gateway = admin.create(&b_gateway, gateway("Passerelle A")).await;
    let a_meter = admin
        .create(&a.path("/meters"), meter(a.units[0], "12345678", a_gateway))
        .await;
    let a_other = admin
        .create(&a.path("/meters"), meter(a.units[1], "12345679", a_gateway))
        .await;
    let b_meter = admin
        .create(&b.path("/meters"), meter(b.units[0], "12345678", b_gateway))
        .await;
    let mut cases = Cases::default();

    // Meters.
    let meters = a.path("/meters");
    let good = meter(a.units[0], "23456789", a_gateway);
    for (field, value) in [
        ("mbus_id", json!("1234567a")),
        ("mbus_id", json!("123456789")),
        ("mbus_id", json!("")),
        ("mbus_id", json!(long)),
        ("mbus_id", json!(23456789)),
        ("manufacturer", json!("K4M")),
        ("manufacturer", json!("KAMS")),
        ("manufacturer", json!("")),
        ("manufacturer", json!("ÉAU")),
        // Heat, not water; not a byte.
        ("medium", json!(4)),
        ("medium", json!(300)),
        ("medium", json!(-1)),
        ("kind", json!("steam")),
        ("measure_unit", json!("kwh")),
        ("measure_unit", json!("litre")),
        ("digits", json!(0)),
        ("digits", json!(13)),
        ("digits", json!(2.5)),
        ("initial_index", json!(100_000)),
        ("initial_index", json!(-0.5)),
        ("initial_index", json!("12")),
        ("installed_on", json!("0999-01-01")),
        ("installed_on", json!("2025-02-30")),
        ("installed_on", json!("01/01/2025")),
        ("version", json!(256)),
        ("label", json!("l".repeat(101))),
        ("unit_id", json!(b.units[0])),
        ("gateway_id", json!(b_gateway)),
        ("gateway_id", json!(999_999)),
        ("building_id", json!(b.buildings[0])),
        ("colour", json!("bleu")),
    ] {
        cases.post(&meters, with(&good, field, value), Invalid(field));
    }
    // Initial index beyond what 3 digits show.
    cases.post(
        &meters,
        with(
            &with(&good, "digits", json!(3)),
            "initial_index",
            json!(1000),
        ),
        Invalid("initial_index"),
    );
    // A flat's meter needs its unit; a building's has none.
    cases.post(
        &meters,
        with(&good, "unit_id", Value::Null),
        Invalid("unit_id"),
    );
    cases.post(
        &meters,
        json!({ "kind": "general_water", "unit_id": a.units[0], "building_id": a.buildings[0], "mbus_id": "1",
                "manufacturer": "KAM", "medium": 7, "measure_unit": "m3", "digits": 6, "installed_on": "2025-01-01" }),
        Invalid("unit_id"),
    );
    for same in ["12345678", "1234 5678", " 12345678 "] {
        cases.post(
            &meters,
            with(&good, "mbus_id", json!(same)),
            Conflict("mbus_id"),
        );
    }
    let a_meter_path = a.path(&format!("/meters/{a_meter}"));
    cases.put(
        &a_meter_path,
        meter(a.units[0], "12345679", a_gateway),
        Conflict("mbus_id"),
    );
    cases.put(
        &a_meter_path,
        with(
            &meter(a.units[0], "12345678", a_gateway),
            "digits",
            json!(20),
        ),
        Invalid("digits"),
    );
    cases.put(
        &a.path(&format!("/meters/{a_other}")),
        meter(a.units[1], " 1234 5678", a_gateway),
        Conflict("mbus_id"),
    );
    let b_meter_path = a.path(&format!("/meters/{b_meter}"));
    cases.put(&b_meter_path, good.clone(), NotFound);
    cases.delete(&b_meter_path, NotFound);
    cases.get(&b_meter_path, NotFound);
    cases.get(&a.path("/meters?kind=steam"), Invalid("kind"));
    cases.get(&a.path("/meters?removed=oui"), Invalid("removed"));
    cases.get(&a.path("/meters?limit=0"), Invalid("limit"));
    cases.get(&a.path("/meters/abc"), BadPath("id"));

    // Replacements.
    let replace = a.path(&format!("/meters/{a_meter}/replace"));
    let replacement = json!({ "replaced_on": "2025-06-01", "final_index": 50, "mbus_id": "34567890", "manufacturer": "KAM" });
    for (field, value) in [
        ("replaced_on", json!("2024-12-31")),
        ("replaced_on", json!("0999-01-01")),
        ("replaced_on", json!("demain")),
        ("final_index", json!(100_000)),
        ("final_index", json!(-1)),
        ("final_index", json!("50")),
        ("mbus_id", json!("abc")),
        ("manufacturer", json!("12")),
        ("medium", json!(4)),
        ("digits", json!(13)),
        ("initial_index", json!(1_000_000)),
        ("reason", json!("r".repeat(501))),
        ("colour", json!("bleu")),
    ] {
        cases.post(&replace, with(&replacement, field, value), Invalid(field));
    }
    cases.post(
        &replace,
        json!({ "final_index": 50 }),
        Invalid("replaced_on"),
    );
    // The new meter's identity is taken: the old meter is left in place.
    cases.post(
        &replace,
        with(&replacement, "mbus_id", json!("12345679")),
        Conflict("mbus_id"),
    );
    cases.post(
        &a.path(&format!("/meters/{b_meter}/replace")),
        replacement.clone(),
        NotFound,
    );

    // Gateways.
    let gateways = a.path("/gateways");
    let good = gateway("Passerelle B");
    cases.post(
        &gateways,
        json!({ "name": "Passerelle MQTT", "model": "MBG-250", "transport": "mqtt", "address": "residence/compteurs" }),
        Invalid("transport"),
    );
    for (field, value) in [
        ("model", json!("XYZ-1")),
        ("model", json!("")),
        ("model", json!("PX-2")),
        ("transport", json!("zigbee")),
        ("address", json!("sans-port")),
        ("modbus_unit", json!(0)),
        ("modbus_unit", json!(null)),
        ("name", json!(long)),
        ("name", json!(" ")),
        ("notes", json!("n".repeat(2001))),
        ("building_id", json!(b.buildings[0])),
        ("colour", json!("bleu")),
    ] {
        cases.post(&gateways, with(&good, field, value), Invalid(field));
    }
    cases.post(
        &gateways,
        with(&good, "name", json!("Passerelle A")),
        Conflict("name"),
    );
    let b_gateway_path = a.path(&format!("/gateways/{b_gateway}"));
    cases.put(&b_gateway_path, good.clone(), NotFound);
    cases.delete(&b_gateway_path, NotFound);
    cases.get(&format!("{b_gateway_path}/status"), NotFound);
    cases.get(&a.path("/gateways/abc/status"), BadPath("id"));
    cases.put(
        &a.path(&format!("/gateways/{a_gateway}")),
        with(&gateway("Passerelle A"), "model", json!("KL-8")),
        Invalid("model"),
    );

    // Readings, consumption and the lists of managers.
    let readings = a.path(&format!("/meters/{a_meter}/readings"));
    cases.get(
        &format!("{readings}?from=2025-03-02&to=2025-03-01"),
        Invalid("to"),
    );
    cases.get(&format!("{readings}?from=hier"), Invalid("from"));
    cases.get(&format!("{readings}?to=0999-01-01"), Invalid("to"));
    cases.get(&format!("{readings}?limit=0"), Invalid("limit"));
    cases.get(&format!("{readings}?offset=-1"), Invalid("offset"));
    cases.get(&a.path(&format!("/meters/{b_meter}/readings")), NotFound);
    for consumption in [
        a.path(&format!("/meters/{a_meter}/consumption")),
        a.path(&format!("/units/{}/consumption", a.units[0])),
    ] {
        let at = |query: &str| format!("{consumption}?{query}");
        cases.get(&at("from=2025-03-01&to=2025-02-01"), Invalid("to"));
        cases.get(&at("from=2199-01-01"), Invalid("from"));
        cases.get(&at("period=week"), Invalid("period"));
        cases.get(&at("period=DAY"), Invalid("period"));
        cases.get(
            &at("from=2000-01-01&to=2025-01-01&period=day"),
            Invalid("to"),
        );
        cases.get(&at("from=2025-13-01"), Invalid("from"));
        cases.get(&at("from=0999-01-01&period=year"), Invalid("from"));
        cases.get(&at("to=2201-01-01"), Invalid("to"));
        cases.get(&at("granularity=month"), Invalid("granularity"));
    }
    cases.get(&a.path(&format!("/meters/{b_meter}/consumption")), NotFound);
    cases.get(
        &a.path(&format!("/units/{}/consumption", b.units[0])),
        NotFound,
    );
    cases.get(&a.path("/units/abc/consumption"), BadPath("id"));
    cases.get(&a.path("/meter-alarms?all=peut-etre"), Invalid("all"));
    cases.get(&a.path("/meter-alarms?meter_id=x"), Invalid("meter_id"));
    cases.get(
        &a.path("/reading-conflicts?meter_id=abc"),
        Invalid("meter_id"),
    );
    cases.get(&a.path("/collections?limit=0"), Invalid("limit"));
    cases.get(&a.path("/collections?limit=101"), Invalid("limit"));

    let rids = [a.rid, b.rid];
    run_cases(&admin, cases, &rids).await;

    // Reading files: refused ones, and a dry run, store nothing.
    let before = snapshot(&admin, &rids).await;
    let readings_total = || async {
        admin
            .get(&a.path(&format!("/meters/{a_meter}/readings")))
            .await
            .body["total"]
            .as_i64()
            .expect("total")
    };
    let file = b"compteur;date;index\n12345678;01/02/2025;20\n".to_vec();
    let import = a.path("/readings/import");
    let mut failures = Vec::new();
    for (query, content_type, bytes, status, field) in [
        ("", "application/json", b"{}".to_vec(), 415, None),
        ("", "text/plain", file.clone(), 415, None),
        ("", "text/csv", Vec::new(), 422, Some("fichier")),
        ("", "text/csv", b"a;b\n1;2\n".to_vec(), 422, None),
        (
            "?dry_run=peut-etre",
            "text/csv",
            file.clone(),
            422,
            Some("dry_run"),
        ),
        (
            "?file_name=",
            "text/csv",
            file.clone(),
            422,
            Some("file_name"),
        ),
        ("?mode=rapide", "text/csv", file.clone(), 422, Some("mode")),
        (
            &format!("?file_name={}", "f".repeat(201)),
            "text/csv",
            file.clone(),
            422,
            Some("file_name"),
        ),
    ] {
        let path = format!("{import}{query}");
        let response = admin.raw(Method::POST, &path, content_type, bytes).await;
        let ok = response.status == status
            && field.is_none_or(|field| response.body["error"]["field"] == field)
            && response.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty());
        if !ok {
            failures.push(format!(
                "POST {path} ({content_type}): {} {}, expected {status} {field:?}",
                response.status, response.body
            ));
        }
    }
    let dry = admin
        .raw(
            Method::POST,
            &format!("{import}?dry_run=true"),
            "text/csv",
            file,
        )
        .await;
    assert_eq!(
        (dry.status, &dry.body["stored"]),
        (200, &json!(1)),
        "{}",
        dry.body
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(readings_total().await, 0);
    assert!(
        snapshot(&admin, &rids).await == before,
        "a refused import or a dry run changed what clients see"
    );

    // The server still accepts good input afterwards.
    admin
        .create(&meters, meter(a.units[0], "23456789", a_gateway))
        .await;
    server.stop().await;
}

/// The error names the element at the index the client sent it at, whatever the order
/// of the ids and however many duplicates come before it.
#[tokio::test]
async fn a_foreign_id_in_a_list_is_named_at_its_index_in_the_request() {
    use Expect::*;
    let World {
        server,
        admin,
        a,
        b,
        b_key,
        ..
    } = world().await;
    // Ids of `a` are smaller than those of `b`: a sorted list would put them first.
    assert!(a.locks[0] < b.locks[0] && a.profiles[0] < b.profiles[0]);
    let mut cases = Cases::default();
    cases.post(
        &b.path("/profiles"),
        json!({ "name": "Mixte", "lock_ids": [b.locks[0], a.locks[0]] }),
        Invalid("lock_ids[1]"),
    );
    cases.post(
        &b.path("/profiles"),
        json!({ "name": "Mixte", "lock_ids": [b.locks[1], b.locks[0], b.locks[1], a.locks[0]] }),
        Invalid("lock_ids[3]"),
    );
    cases.put(
        &b.path(&format!("/profiles/{}", b.profiles[0])),
        json!({ "name": "Résident A", "lock_ids": [b.locks[2], a.locks[1]] }),
        Invalid("lock_ids[1]"),
    );
    cases.post(
        &b.path("/keys"),
        json!({ "kind": "remote", "identifier": "777", "profile_ids": [b.profiles[0], a.profiles[0]] }),
        Invalid("profile_ids[1]"),
    );
    cases.put(
        &b.path(&format!("/keys/{b_key}")),
        json!({ "profile_ids": [b.profiles[1], b.profiles[1], a.profiles[1]] }),
        Invalid("profile_ids[2]"),
    );
    run_cases(&admin, cases, &[a.rid, b.rid]).await;
    server.stop().await;
}

/// A field given twice is refused naming that field, in a body and in a query string.
#[tokio::test]
async fn a_field_given_twice_is_named() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let a = common::fixture(&admin, "Les Tilleuls").await;
    let before = snapshot(&admin, &[a.rid]).await;
    let mut failures = Vec::new();
    for (path, bytes, field) in [
        (
            a.path("/buildings"),
            &br#"{"name":"C","name":"D"}"#[..],
            "name",
        ),
        (
            a.path("/keys"),
            br#"{"kind":"remote","identifier":"1","kind":"other"}"#,
            "kind",
        ),
        (
            a.path("/units"),
            br#"{"lot_number":"C1","kind":"flat","floor":1,"floor":2}"#,
            "floor",
        ),
    ] {
        let response = admin
            .raw(Method::POST, &path, "application/json", bytes.to_vec())
            .await;
        if let Err(problem) = check_error(&response, 422, "invalid_field", Some(field)) {
            failures.push(format!(
                "{} on {path}: {problem}",
                String::from_utf8_lossy(bytes)
            ));
        }
    }
    for (query, field) in [("limit=1&limit=2", "limit"), ("q=a&q=b", "q")] {
        let path = a.path(&format!("/keys?{query}"));
        let response = admin.get(&path).await;
        if let Err(problem) = check_error(&response, 422, "invalid_field", Some(field)) {
            failures.push(format!("GET {path}: {problem}"));
        }
    }
    assert_eq!(
        snapshot(&admin, &[a.rid]).await,
        before,
        "a duplicate field changed something"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

#[tokio::test]
async fn login_refuses_bad_input_with_a_json_error() {
    let server = TestServer::start().await;
    let anonymous = server.anonymous();
    let login = "/api/v1/auth/login";
    let long = "x".repeat(10_000);
    for (body, field) in [
        (
            json!({ "email": "a@b.fr", "password": "x", "remember": true }),
            "remember",
        ),
        (json!({ "email": "a@b.fr" }), "password"),
        (json!({ "password": "x" }), "email"),
        (json!({ "email": 1, "password": "x" }), "email"),
        (json!({ "email": "a@b.fr", "password": ["x"] }), "password"),
        (json!({ "email": long, "password": "x" }), "email"),
        (json!({ "email": "a@b.fr", "password": long }), "password"),
        (json!({ "email": "", "password": "x" }), "email"),
    ] {
        let what = format!(
            "login {}",
            &body.to_string()[..body.to_string().len().min(80)]
        );
        let response = anonymous.post(login, body).await;
        assert_error(&response, 422, "invalid_field", Some(field), &what);
    }
    let response = anonymous
        .raw(
            Method::POST,
            login,
            "application/json",
            b"{\"email\":".to_vec(),
        )
        .await;
    assert_error(&response, 400, "invalid_json", None, "truncated login");
    server.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_a_json_error_and_change_nothing() {
    let World {
        server,
        admin,
        a,
        b,
        ..
    } = world().await;
    let rids = [a.rid, b.rid];
    let before = snapshot(&admin, &rids).await;
    let residences = "/api/v1/residences";
    let keys = a.path("/keys");
    let units = a.path("/units");
    let json_type = "application/json";

    // Invalid JSON syntax.
    for bytes in [
        &b"{\"name\": \"X\","[..],
        b"{name: \"X\"}",
        b"{\"name\": 'X'}",
        b"{\"name\": \"X\",}",
        b"{\"name\" \"X\"}",
        b"{\"name\": \"X\"",
        b"{\"name\": tru}",
        b"{\"name\": 1e400}",
        b"{\"name\": \"\\ud800\"}",
        b"{\"name\": \"\\x41\"}",
        b"{\"name\": \"a\nb\"}",
        b"\xEF\xBB\xBF{\"name\": \"X\"}",
    ] {
        let what = format!("syntax {}", String::from_utf8_lossy(bytes));
        let response = admin
            .raw(Method::POST, residences, json_type, bytes.to_vec())
            .await;
        assert_error(&response, 400, "invalid_json", None, &what);
    }

    // Invalid UTF-8, in a value and in a key.
    for bytes in [
        &b"{\"name\": \"\xff\xfe\"}"[..],
        b"{\"\xc3\x28\": 1}",
        b"{\"name\": \"Caf\xe9\"}",
        b"\xff",
    ] {
        let what = format!("invalid UTF-8 {bytes:?}");
        let response = admin
            .raw(Method::POST, residences, json_type, bytes.to_vec())
            .await;
        assert_json_4xx(&response, &what);
        assert_eq!(response.status, 400, "{what}: {}", response.body);
    }

    // Not JSON at all.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let response = admin
            .raw(
                Method::POST,
                residences,
                content_type,
                br#"{"name":"Texte"}"#.to_vec(),
            )
            .await;
        assert_error(&response, 415, "unsupported_media_type", None, content_type);
    }
    // No content type at all.
    let response = admin
        .http
        .post(format!("{}{residences}", admin.base))
        .bearer_auth(admin.token.as_deref().expect("token"))
        .body(r#"{"name":"Sans type"}"#)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_error(
        &Response { status, body },
        415,
        "unsupported_media_type",
        None,
        "no content type",
    );

    // An empty body on a create names the first missing field.
    for (path, field) in [
        (residences.to_owned(), "name"),
        (keys.clone(), "kind"),
        (units.clone(), "lot_number"),
        (a.path("/occupancies"), "unit_id"),
    ] {
        for body in [&b""[..], b"   \n", b"{}"] {
            let what = format!("empty body {body:?} on {path}");
            let response = admin
                .raw(Method::POST, &path, json_type, body.to_vec())
                .await;
            assert_error(&response, 422, "invalid_field", Some(field), &what);
        }
    }

    // A JSON value that is not an object.
    for body in [
        "null",
        "[]",
        "[{}]",
        "42",
        "-1",
        "\"Résidence\"",
        "true",
        "1e5",
    ] {
        for path in [residences, keys.as_str()] {
            let what = format!("body {body} on {path}");
            let response = admin
                .raw(Method::POST, path, json_type, body.as_bytes().to_vec())
                .await;
            assert_json_4xx(&response, &what);
        }
    }

    // Deeply nested JSON, at the top and in a field.
    let deep = 100_000;
    for bytes in [
        "[".repeat(deep).into_bytes(),
        format!("{}{}", "[".repeat(deep), "]".repeat(deep)).into_bytes(),
        format!("{{\"name\": {}", "[".repeat(deep)).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(deep), "}".repeat(deep)).into_bytes(),
        format!(
            "{{\"kind\":\"vigik_badge\",\"identifier\":\"05A22B91\",\"profile_ids\":[{}]}}",
            "[".repeat(deep)
        )
        .into_bytes(),
    ] {
        let what = format!("deep nesting {}", String::from_utf8_lossy(&bytes[..40]));
        for path in [residences, keys.as_str()] {
            let response = admin
                .raw(Method::POST, path, json_type, bytes.clone())
                .await;
            assert_json_4xx(&response, &what);
        }
    }

    // Oversized bodies: just over the limit and 10 MB, valid JSON or not.
    for size in [1024 * 1024 + 1, 10 * 1024 * 1024] {
        let mut bytes = b"{\"name\": \"".to_vec();
        bytes.resize(size - 2, b'x');
        bytes.extend_from_slice(b"\"}");
        for (path, content_type) in [
            (residences, json_type),
            (keys.as_str(), json_type),
            (keys.as_str(), "text/plain"),
        ] {
            let what = format!("{size} bytes as {content_type} on {path}");
            let response = admin
                .raw(Method::POST, path, content_type, bytes.clone())
                .await;
            assert_error(&response, 413, "payload_too_large", None, &what);
        }
    }

    assert_eq!(
        snapshot(&admin, &rids).await,
        before,
        "a malformed body changed something"
    );
    let health = server.anonymous().get("/health").await;
    assert_eq!(health.status, 200);
    server.stop().await;
}

/// serde also reads a struct from an array of its fields in order; a body that is an
/// array must be refused like any other non-object.
#[tokio::test]
async fn an_array_body_is_refused_even_when_it_lists_every_field() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let a = common::fixture(&admin, "Les Tilleuls").await;
    let before = snapshot(&admin, &[a.rid]).await;
    let mut failures = Vec::new();
    for (path, body) in [
        (
            "/api/v1/residences".to_owned(),
            json!(["Résidence positionnelle", "2 rue"]),
        ),
        (a.path("/buildings"), json!(["Bâtiment positionnel"])),
        (
            a.path("/people"),
            json!(["Personne Positionnelle", null, null, false, ""]),
        ),
        (
            a.path("/keys"),
            json!([
                "remote",
                "31337",
                "",
                null,
                null,
                null,
                null,
                null,
                null,
                null,
                "",
                []
            ]),
        ),
    ] {
        let response = admin.post(&path, body.clone()).await;
        if !(400..500).contains(&response.status) || !response.body["error"]["code"].is_string() {
            failures.push(format!(
                "array body {body} on {path}: {} {}",
                response.status, response.body
            ));
        }
    }
    if snapshot(&admin, &[a.rid]).await != before {
        failures.push("an array body created something".to_owned());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

/// Anything after the JSON value is a syntax error, not ignored.
#[tokio::test]
async fn trailing_characters_after_the_json_value_are_refused() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let a = common::fixture(&admin, "Les Tilleuls").await;
    let before = snapshot(&admin, &[a.rid]).await;
    let mut failures = Vec::new();
    for (path, bytes) in [
        (
            "/api/v1/residences".to_owned(),
            &br#"{"name":"Suite"} garbage"#[..],
        ),
        ("/api/v1/residences".to_owned(), br#"{"name":"Suite 2"}}"#),
        (a.path("/buildings"), br#"{"name":"C"}{"name":"D"}"#),
        (a.path("/buildings"), br#"{"name":"E"},"#),
        (
            a.path("/keys"),
            br#"{"kind":"remote","identifier":"31337"} []"#,
        ),
    ] {
        let response = admin
            .raw(Method::POST, &path, "application/json", bytes.to_vec())
            .await;
        if let Err(problem) = check_error(&response, 400, "invalid_json", None) {
            failures.push(format!(
                "{} on {path}: {problem}",
                String::from_utf8_lossy(bytes)
            ));
        }
    }
    if snapshot(&admin, &[a.rid]).await != before {
        failures.push("a body with trailing characters was taken".to_owned());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

/// Percent-encoded bytes that are not UTF-8 in a path parameter are the client's fault.
#[tokio::test]
async fn invalid_utf8_in_the_path_is_a_400_not_a_500() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let a = common::fixture(&admin, "Les Tilleuls").await;
    let mut failures = Vec::new();
    for (method, path) in [
        (Method::GET, a.path("/keys/%FF")),
        (Method::GET, a.path("/units/%C3%28")),
        (Method::DELETE, a.path("/people/%FF")),
        (Method::POST, a.path("/keys/%FF/declare-lost")),
        (Method::GET, "/api/v1/residences/%FF".to_owned()),
        (Method::GET, "/api/v1/residences/%FF/keys".to_owned()),
        (Method::DELETE, "/api/v1/auth/tokens/%FF".to_owned()),
    ] {
        let response = admin.request(method.clone(), &path, None).await;
        if let Err(problem) = check_error(&response, 400, "invalid_path", None) {
            failures.push(format!("{method} {path}: {problem}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let health = server.anonymous().get("/health").await;
    assert_eq!(health.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let a = common::fixture(&admin, "Les Tilleuls").await;
    let anonymous = server.anonymous();
    for client in [&admin, &anonymous] {
        for path in [
            "/nothing".to_owned(),
            "/api/v1".to_owned(),
            "/api/v1/nothing".to_owned(),
            "/api/v2/residences".to_owned(),
            a.path("/keys/1/frobnicate"),
            a.path("/gadgets"),
            "/api/v1/residences/1/keys/1/2/3".to_owned(),
        ] {
            let response = client.get(&path).await;
            assert_error(&response, 404, "not_found", None, &format!("GET {path}"));
        }
    }
    for (method, path) in [
        (Method::POST, "/health".to_owned()),
        (Method::DELETE, "/api/v1/residences".to_owned()),
        (Method::PUT, "/api/v1/auth/login".to_owned()),
        (Method::GET, "/api/v1/auth/login".to_owned()),
        (Method::PATCH, a.path("/keys/1")),
        (Method::DELETE, a.path("/keys/1")),
        (Method::PUT, a.path("/keys")),
        (Method::GET, a.path("/keys/1/hand-over")),
        (Method::DELETE, a.path("")),
    ] {
        for client in [&admin, &anonymous] {
            let response = client.request(method.clone(), &path, None).await;
            assert_error(
                &response,
                405,
                "method_not_allowed",
                None,
                &format!("{method} {path}"),
            );
        }
    }
    server.stop().await;
}

// ----- Property test: random JSON objects never get a 5xx. -----

/// A JSON tree that can also hold numbers serde_json cannot represent.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// Written as is: 1e400, 30 digits…
    Raw(&'static str),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn render(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Json::Int(value) => out.push_str(&value.to_string()),
            Json::Raw(text) => out.push_str(text),
            Json::Float(value) => out.push_str(&serde_json::to_string(value).expect("float")),
            Json::Str(text) => out.push_str(&serde_json::to_string(text).expect("string")),
            Json::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (index, (name, value)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(name).expect("key"));
                    out.push(':');
                    value.render(out);
                }
                out.push('}');
            }
        }
    }
}

/// Field names of the inputs of the routes under test.
const FIELDS: &[&str] = &[
    "name",
    "address",
    "lot_number",
    "kind",
    "building_id",
    "floor",
    "area_m2",
    "full_name",
    "email",
    "phone",
    "is_caretaker",
    "notes",
    "trade",
    "unit_id",
    "person_id",
    "role",
    "start_date",
    "end_date",
    "model",
    "transport",
    "modbus_unit",
    "controller_id",
    "door_number",
    "description",
    "lock_ids",
    "identifier",
    "label",
    "status",
    "holder_person_id",
    "holder_provider_id",
    "handed_out_on",
    "valid_from",
    "valid_until",
    "profile_ids",
    "reason",
    "expires_at",
    "mbus_id",
    "manufacturer",
    "version",
    "medium",
    "measure_unit",
    "digits",
    "installed_on",
    "initial_index",
    "gateway_id",
    "replaced_on",
    "final_index",
];

/// Values that pass or nearly pass the checks, to get past the first field.
const PLAUSIBLE: &[&str] = &[
    "flat",
    "parking",
    "door",
    "gate",
    "vigik_badge",
    "remote",
    "other",
    "owner",
    "tenant",
    "modbus_tcp",
    "modbus_rtu",
    "mqtt",
    "active",
    "lost",
    "stolen",
    "2026-01-01",
    "0999-01-01",
    "2026-13-01",
    "2201-01-01",
    "2026-01-01T00:00:00Z",
    "1900-01-01T00:00:00Z",
    "2026-01-01T00:00:00+14:00",
    "04A22B91",
    "04:a2:2b:91",
    "2435555844",
    "4294967296",
    "00123456",
    "127.0.0.1:1502",
    "host:0",
    "/dev/ttyUSB0",
    "a/#",
    "claire@example.org",
    "",
    " ",
    "\u{0}",
    "\u{202e}",
    "\u{1F600}",
    "'; DROP TABLE access_keys; --",
    "%_%",
    "cold_water",
    "general_water",
    "heat_cost_allocator",
    "m3",
    "kwh",
    "KAM",
    "12345678",
    "MBG-250",
];

const RAW_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "-0",
    "0.0",
    "1E2",
];

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::Int),
        (-3i64..40).prop_map(Json::Int),
        prop::sample::select(RAW_NUMBERS).prop_map(Json::Raw),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |value| value.is_finite())
            .prop_map(Json::Float),
        any::<String>().prop_map(Json::Str),
        "[0-9a-fA-F:x -]{0,24}".prop_map(Json::Str),
        prop::sample::select(PLAUSIBLE).prop_map(|text| Json::Str(text.to_owned())),
        (0usize..3000).prop_map(|count| Json::Str("é".repeat(count))),
    ]
}

fn value() -> impl Strategy<Value = Json> {
    leaf().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((field_name(), inner), 0..6).prop_map(Json::Object),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "[a-z_]{1,12}",
    ]
}

/// A body: mostly objects of real and junk fields; sometimes another JSON value.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec((field_name(), value()), 0..10).prop_map(Json::Object),
        1 => value(),
    ]
    .prop_map(|json| {
        let mut text = String::new();
        json.render(&mut text);
        text
    })
}

/// A route under fuzzing, with the residence's audit total as last seen.
struct Target<'a> {
    admin: &'a Client,
    rid: i64,
    method: Method,
    path: &'a str,
    audit_total: &'a std::cell::Cell<i64>,
}

/// Sends one random body; a 4xx must be a JSON error and leave the audit log alone.
async fn send_random(target: &Target<'_>, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let (method, path) = (&target.method, target.path);
    let response = target
        .admin
        .raw(method.clone(), path, "application/json", bytes.clone())
        .await;
    let body = String::from_utf8_lossy(&bytes);
    prop_assert!(
        response.status < 500,
        "{} {} {} -> {} {}",
        method,
        path,
        body,
        response.status,
        response.body
    );
    let total = audit_total(target.admin, target.rid).await;
    if response.status >= 400 {
        let error = &response.body["error"];
        prop_assert!(
            error["code"].as_str().is_some_and(|code| !code.is_empty())
                && error["message"]
                    .as_str()
                    .is_some_and(|m| !m.trim().is_empty()),
            "{} {} {} -> {} without a JSON error: {}",
            method,
            path,
            body,
            response.status,
            response.body
        );
        prop_assert!(
            error.get("field").is_none_or(Value::is_string),
            "field is not a string: {}",
            response.body
        );
        prop_assert_eq!(
            total,
            target.audit_total.get(),
            "{} {} {} was refused but wrote to the audit log",
            method,
            path,
            body
        );
    }
    target.audit_total.set(total);
    Ok(())
}

#[test]
fn random_json_objects_never_get_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let World {
        server,
        admin,
        a,
        badge,
        ..
    } = runtime.block_on(world());
    let meter = runtime.block_on(admin.create(
        &a.path("/meters"),
        json!({ "kind": "heating", "unit_id": a.units[0], "mbus_id": "1", "manufacturer": "KAM", "medium": 4,
                "measure_unit": "kwh", "digits": 8, "installed_on": "2025-01-01" }),
    ));
    let routes = [
        (Method::POST, "/api/v1/residences".to_owned()),
        (Method::POST, a.path("/units")),
        (Method::POST, a.path("/people")),
        (Method::POST, a.path("/occupancies")),
        (Method::POST, a.path("/controllers")),
        (Method::POST, a.path("/locks")),
        (Method::POST, a.path("/profiles")),
        (Method::POST, a.path("/keys")),
        (Method::PUT, a.path(&format!("/keys/{badge}"))),
        (Method::POST, a.path(&format!("/keys/{badge}/hand-over"))),
        (Method::POST, "/api/v1/auth/tokens".to_owned()),
        (Method::POST, a.path("/gateways")),
        (Method::POST, a.path("/meters")),
        (Method::PUT, a.path(&format!("/meters/{meter}"))),
        (Method::POST, a.path(&format!("/meters/{meter}/replace"))),
    ];
    let audit = std::cell::Cell::new(runtime.block_on(audit_total(&admin, a.rid)));
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    for (method, path) in &routes {
        let target = Target {
            admin: &admin,
            rid: a.rid,
            method: method.clone(),
            path,
            audit_total: &audit,
        };
        TestRunner::new(config.clone())
            .run(&body(), |body| {
                runtime.block_on(send_random(&target, body.into_bytes()))
            })
            .unwrap_or_else(|failure| panic!("{method} {path}: {failure}"));
    }
    // Random bytes, too.
    let keys = a.path("/keys");
    let target = Target {
        admin: &admin,
        rid: a.rid,
        method: Method::POST,
        path: &keys,
        audit_total: &audit,
    };
    TestRunner::new(config)
        .run(&prop::collection::vec(any::<u8>(), 0..256), |bytes| {
            runtime.block_on(send_random(&target, bytes))
        })
        .unwrap_or_else(|failure| panic!("random bytes: {failure}"));

    runtime.block_on(async {
        let health = server.anonymous().get("/health").await;
        assert_eq!(health.status, 200, "health after fuzzing: {}", health.body);
        let keys = admin.get(&a.path("/keys")).await;
        assert_eq!(keys.status, 200, "listing after fuzzing: {}", keys.body);
        server.stop().await;
    });
}
