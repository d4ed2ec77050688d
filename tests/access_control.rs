//! Who may do what, through HTTP: anonymous callers, each role of a residence, users of
//! another residence, and the sessions and tokens that carry an identity.

mod common;

use std::collections::HashMap;

use common::{Client, Fixture, Response, TestServer, PASSWORD};
use reqwest::header::SET_COOKIE;
use reqwest::Method;
use serde_json::{json, Value};

/// The error code of an error response (`""` when there is none).
fn code(response: &Response) -> &str {
    response.body["error"]["code"].as_str().unwrap_or("")
}

/// The code an error status must come with.
fn code_of(status: u16) -> Option<&'static str> {
    match status {
        401 => Some("unauthenticated"),
        403 => Some("forbidden"),
        404 => Some("not_found"),
        _ => None,
    }
}

/// Checks status (and error code) of one request; returns a description on mismatch.
fn check(
    who: &str,
    method: &Method,
    path: &str,
    response: &Response,
    expected: u16,
) -> Option<String> {
    let code_ok = code_of(expected).is_none_or(|c| code(response) == c);
    (response.status != expected || !code_ok).then(|| {
        format!(
            "{who}: {method} {path} answered {} {}, expected {expected}",
            response.status, response.body
        )
    })
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} unexpected answer(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every operation of the OpenAPI document, as (method, path template under /api/v1).
async fn documented_routes(client: &Client) -> Vec<(Method, String)> {
    let doc = client.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, 200, "openapi.json: {}", doc.body);
    let mut routes = Vec::new();
    for (path, item) in doc.body["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                routes.push((method, path.clone()));
            }
        }
    }
    assert!(routes.len() > 40, "too few documented routes: {routes:?}");
    routes
}

/// A client presenting `token` as its bearer token.
fn with_token(server: &TestServer, token: &str) -> Client {
    Client {
        token: Some(token.to_owned()),
        ..server.anonymous()
    }
}

/// The id of the user a client acts as.
async fn user_id(client: &Client) -> i64 {
    let me = client.get("/api/v1/me").await;
    assert_eq!(me.status, 200, "/me: {}", me.body);
    me.body["user"]["id"].as_i64().expect("user id")
}

/// Ids of the items of a page.
fn page_ids(response: &Response) -> Vec<i64> {
    common::ids(&response.body["items"])
}

/// Records a parking remote named by `name` (its serial derives from the name) with
/// `fields` (holder, unit, profiles…).
async fn new_key(admin: &Client, f: &Fixture, name: &str, mut fields: Value) -> i64 {
    let serial = name.bytes().fold(17u64, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(u64::from(byte))
    }) % 4_000_000_000;
    fields["kind"] = json!("remote");
    fields["identifier"] = json!(serial.to_string());
    fields["label"] = json!(name);
    admin.create(&f.path("/keys"), fields).await
}

/// Replaces `{role}` in every string of a JSON body.
fn for_role(body: &Value, role: &str) -> Value {
    serde_json::from_str(&body.to_string().replace("{role}", role)).expect("json")
}

/// A cold-water meter of `unit` with M-Bus id `mbus_id`, read by `gateway`.
fn meter_body(unit: i64, mbus_id: &str, gateway: Option<i64>) -> Value {
    json!({ "kind": "cold_water", "unit_id": unit, "mbus_id": mbus_id, "manufacturer": "KAM",
            "medium": 22, "measure_unit": "m3", "digits": 5, "installed_on": "2025-01-01",
            "initial_index": 12.5, "gateway_id": gateway })
}

fn gateway_body(name: &str) -> Value {
    json!({ "name": name, "model": "MBG-250", "transport": "modbus_tcp", "address": "192.0.2.20:502", "modbus_unit": 1 })
}

fn with_building(mut body: Value, building: i64) -> Value {
    body["building_id"] = json!(building);
    body
}

/// A meter gateway and a cold-water meter of the residence's first flat, read by it.
async fn metering(admin: &Client, f: &Fixture) -> (i64, i64) {
    let gateway = admin
        .create(&f.path("/gateways"), gateway_body("Passerelle"))
        .await;
    let meter = admin
        .create(
            &f.path("/meters"),
            meter_body(f.units[0], "10000001", Some(gateway)),
        )
        .await;
    (gateway, meter)
}

/// A small reading file for the import route.
const READING_FILE: &str = "compteur;date;index\n10000001;01/02/2025;20\n";

// ---------------------------------------------------------------------------------------
// 1. Anonymous callers.

#[tokio::test]
async fn anonymous_and_bad_tokens_are_refused_on_every_documented_route() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    // Real data behind id 1, so that a 401 cannot be a disguised 404.
    common::fixture(&admin, "Les Tilleuls").await;
    let anonymous = server.anonymous();

    for open in ["/health", "/api/v1/openapi.json"] {
        let response = anonymous.get(open).await;
        assert_eq!(response.status, 200, "GET {open}: {}", response.body);
    }

    let garbage = with_token(&server, "not-a-token");
    let mut tampered = admin.token.clone().expect("admin token");
    let last = tampered.pop().expect("non-empty token");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let tampered = with_token(&server, &tampered);

    let mut failures = Vec::new();
    for (method, template) in documented_routes(&anonymous).await {
        if template == "/auth/login" {
            continue;
        }
        let path = format!("/api/v1{}", substitute_all(&template, "1"));
        let body = matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
        for (who, client) in [
            ("anonymous", &anonymous),
            ("garbage token", &garbage),
            ("tampered token", &tampered),
        ] {
            let response = client.request(method.clone(), &path, body.clone()).await;
            failures.extend(check(who, &method, &path, &response, 401));
        }
    }
    assert_no_failures(&failures);

    // Other ways of presenting bad credentials.
    let url = format!("{}/api/v1/me", server.base);
    let http = reqwest::Client::new();
    let attempts = [
        ("authorization", "Basic YWRtaW46cGFzc3dvcmQ=".to_owned()),
        ("authorization", "Bearer ".to_owned()),
        (
            "authorization",
            format!("bearer{}", admin.token.as_deref().unwrap_or_default()),
        ),
        ("cookie", "gardien_session=forged".to_owned()),
        ("cookie", "other_cookie=x".to_owned()),
    ];
    for (header, value) in attempts {
        let response = http
            .get(&url)
            .header(header, &value)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401, "{header}: {value}");
        let body: Value = response.json().await.expect("json body");
        assert_eq!(
            body["error"]["code"], "unauthenticated",
            "{header}: {value}"
        );
    }
    // The same route with the real token, so the refusals above are about the token.
    assert_eq!(admin.get("/api/v1/me").await.status, 200);
    server.stop().await;
}

/// Replaces every `{param}` of a path template with `value`.
fn substitute_all(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                value
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------------------
// 2. Each role of a residence.

/// A residence with one account per role: council, syndic, resident (owner of A01),
/// provider (staff of the fixture's provider).
struct Cast {
    server: TestServer,
    admin: Client,
    f: Fixture,
    /// In the order of the expectation arrays: council, syndic, resident, provider.
    roles: [(&'static str, Client); 4],
}

async fn cast() -> Cast {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let council = server
        .member(&admin, f.rid, "conseil@test.gardien", "council", None)
        .await;
    let syndic = server
        .member(&admin, f.rid, "syndic@test.gardien", "syndic", None)
        .await;
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
    Cast {
        server,
        admin,
        f,
        roles: [
            ("council", council),
            ("syndic", syndic),
            ("resident", resident),
            ("provider", provider),
        ],
    }
}

/// One plain resource of a residence, for the CRUD matrix.
struct Family {
    name: &'static str,
    /// An existing row, read by everyone (and written by no one refused).
    existing: i64,
    /// A valid new row; managers create it, rewrite it with the same body and delete it.
    create: Value,
    /// Expected statuses of [list, read, create, replace, delete] for council, syndic,
    /// resident, provider.
    expect: [[u16; 5]; 4],
}

const MANAGES: [u16; 5] = [200, 200, 201, 200, 204];
const REFUSED: [u16; 5] = [403; 5];

#[tokio::test]
async fn each_role_on_the_records_of_the_residence() {
    let Cast {
        server,
        admin,
        f,
        roles,
    } = cast().await;
    let occupancies = admin.get(&f.path("/occupancies")).await;
    let occupancy = page_ids(&occupancies)[0];
    let (gateway, meter) = metering(&admin, &f).await;
    let families = [
        Family {
            name: "buildings",
            existing: f.buildings[0],
            create: json!({ "name": "Annexe" }),
            expect: [MANAGES, MANAGES, REFUSED, REFUSED],
        },
        Family {
            name: "units",
            existing: f.units[0],
            create: json!({ "lot_number": "P-99", "kind": "parking" }),
            // Residents read the units they occupy; providers' staff see no unit.
            expect: [
                MANAGES,
                MANAGES,
                [200, 200, 403, 403, 403],
                [200, 404, 403, 403, 403],
            ],
        },
        Family {
            name: "people",
            existing: f.people[0],
            create: json!({ "full_name": "Paul Nouveau" }),
            expect: [MANAGES, MANAGES, REFUSED, REFUSED],
        },
        Family {
            name: "providers",
            existing: f.provider,
            create: json!({ "name": "Ascenseurs Martin", "trade": "ascenseur" }),
            expect: [MANAGES, MANAGES, REFUSED, REFUSED],
        },
        Family {
            name: "occupancies",
            existing: occupancy,
            create: json!({ "unit_id": f.units[1], "person_id": f.people[1], "role": "tenant" }),
            expect: [MANAGES, MANAGES, REFUSED, REFUSED],
        },
        Family {
            name: "controllers",
            existing: f.controller,
            create: json!({ "name": "Centrale B", "model": "KL-8", "transport": "modbus_tcp", "address": "127.0.0.1:1503", "modbus_unit": 17 }),
            expect: [MANAGES, MANAGES, REFUSED, REFUSED],
        },
        Family {
            name: "locks",
            existing: f.locks[0],
            create: json!({ "name": "Local vélos", "kind": "door", "building_id": f.buildings[1] }),
            expect: [MANAGES, MANAGES, REFUSED, REFUSED],
        },
        Family {
            name: "profiles",
            existing: f.profiles[0],
            create: json!({ "name": "Gardien", "lock_ids": [f.locks[0], f.locks[1]] }),
            expect: [MANAGES, MANAGES, REFUSED, REFUSED],
        },
        Family {
            name: "gateways",
            existing: gateway,
            create: gateway_body("Passerelle B"),
            expect: [MANAGES, MANAGES, REFUSED, REFUSED],
        },
        Family {
            name: "meters",
            existing: meter,
            create: meter_body(f.units[1], "20000002", Some(gateway)),
            // Residents read the meters of the units they occupy; providers' staff none.
            expect: [
                MANAGES,
                MANAGES,
                [200, 200, 403, 403, 403],
                [200, 404, 403, 403, 403],
            ],
        },
    ];

    let audit_total = || async {
        admin.get(&f.path("/audit")).await.body["total"]
            .as_i64()
            .expect("audit total")
    };
    let mut failures = Vec::new();
    let mut refused_roles_start = None;
    for (index, (role, client)) in roles.iter().enumerate() {
        if index == 2 {
            refused_roles_start = Some(audit_total().await);
        }
        for family in &families {
            let expect = family.expect[index];
            let collection = f.path(&format!("/{}", family.name));
            let existing = format!("{collection}/{}", family.existing);
            let mut step = |method: Method, path: &str, response: &Response, expected: u16| {
                failures.extend(check(role, &method, path, response, expected));
            };

            let response = client.get(&collection).await;
            step(Method::GET, &collection, &response, expect[0]);
            let response = client.get(&existing).await;
            step(Method::GET, &existing, &response, expect[1]);
            let response = client.post(&collection, family.create.clone()).await;
            step(Method::POST, &collection, &response, expect[2]);
            // Write to the new row when there is one, else (refused roles) to the existing.
            let target = match response.body["id"].as_i64() {
                Some(id) if response.status == 201 => format!("{collection}/{id}"),
                _ => existing.clone(),
            };
            let response = client.put(&target, family.create.clone()).await;
            step(Method::PUT, &target, &response, expect[3]);
            let response = client.delete(&target).await;
            step(Method::DELETE, &target, &response, expect[4]);
        }
    }
    assert_no_failures(&failures);
    assert_eq!(
        Some(audit_total().await),
        refused_roles_start,
        "refused residents and providers must not have changed anything"
    );
    for family in &families {
        let path = f.path(&format!("/{}/{}", family.name, family.existing));
        assert_eq!(
            admin.get(&path).await.status,
            200,
            "{path} must still exist"
        );
    }

    // What the listings open to residents and providers contain.
    let [_, _, (_, resident), (_, provider)] = &roles;
    let units = resident.get(&f.path("/units")).await;
    assert_eq!(
        page_ids(&units),
        vec![f.units[0]],
        "a resident lists only their flat"
    );
    assert_eq!(units.body["total"], 1);
    let units = provider.get(&f.path("/units")).await;
    assert_eq!(
        page_ids(&units),
        Vec::<i64>::new(),
        "providers' staff see no unit"
    );
    assert_eq!(units.body["total"], 0);
    let other = resident
        .get(&f.path(&format!("/units/{}", f.units[1])))
        .await;
    assert_eq!(
        (other.status, code(&other)),
        (404, "not_found"),
        "{}",
        other.body
    );
    let meters = resident.get(&f.path("/meters")).await;
    assert_eq!(
        page_ids(&meters),
        vec![meter],
        "a resident lists only their flat's meters"
    );
    let meters = provider.get(&f.path("/meters")).await;
    assert_eq!(
        page_ids(&meters),
        Vec::<i64>::new(),
        "providers' staff see no meter"
    );
    server.stop().await;
}

/// One request of the key matrix.
struct Row {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Council, syndic, resident, provider.
    expect: [u16; 4],
}

fn get(path: String, expect: [u16; 4]) -> Row {
    Row {
        method: Method::GET,
        path,
        body: None,
        expect,
    }
}

fn post(path: String, body: Value, expect: [u16; 4]) -> Row {
    Row {
        method: Method::POST,
        path,
        body: Some(body),
        expect,
    }
}

fn put(path: String, body: Value, expect: [u16; 4]) -> Row {
    Row {
        method: Method::PUT,
        path,
        body: Some(body),
        expect,
    }
}

fn delete(path: String, expect: [u16; 4]) -> Row {
    Row {
        method: Method::DELETE,
        path,
        body: None,
        expect,
    }
}

#[tokio::test]
async fn each_role_on_keys_members_audit_and_the_residence() {
    let Cast {
        server,
        admin,
        f,
        roles,
    } = cast().await;
    let [person_a, person_b] = f.people;
    let [unit_a, unit_b] = f.units;
    // Held by the resident; stock key of the resident's flat; held by the neighbour;
    // held by the provider.
    let own = new_key(
        &admin,
        &f,
        "CLAIRE",
        json!({ "holder_person_id": person_a, "unit_id": unit_a, "profile_ids": [f.profiles[0]] }),
    )
    .await;
    let flat = new_key(
        &admin,
        &f,
        "A01 STOCK",
        json!({ "unit_id": unit_a, "profile_ids": [f.profiles[0]] }),
    )
    .await;
    let other = new_key(
        &admin,
        &f,
        "MARC",
        json!({ "holder_person_id": person_b, "unit_id": unit_b, "profile_ids": [f.profiles[1]] }),
    )
    .await;
    let company = new_key(
        &admin,
        &f,
        "NETIMMO",
        json!({ "holder_provider_id": f.provider, "profile_ids": [f.profiles[0]] }),
    )
    .await;
    let leaving_client = server
        .member(&admin, f.rid, "partant@test.gardien", "council", None)
        .await;
    let leaving = user_id(&leaving_client).await;
    let key = |id: i64, rest: &str| f.path(&format!("/keys/{id}{rest}"));
    let reason = json!({ "reason": "contrôle des droits" });
    let residence = admin.get(&f.path("")).await.body;
    // The resident's flat's meter, the neighbour's, and a spare one to replace.
    let (gateway, own_meter) = metering(&admin, &f).await;
    let other_meter = admin
        .create(
            &f.path("/meters"),
            meter_body(unit_b, "10000002", Some(gateway)),
        )
        .await;
    let spare_meter = admin
        .create(&f.path("/meters"), meter_body(unit_b, "10000003", None))
        .await;
    let meter = |id: i64, rest: &str| f.path(&format!("/meters/{id}{rest}"));

    // Rows run in order for each role, council first; each manager's writes leave the
    // keys as they found them, except where a resident or provider acts last.
    let rows = [
        get(f.path(""), [200, 200, 200, 200]),
        put(
            f.path(""),
            json!({ "name": residence["name"], "address": residence["address"] }),
            [200, 200, 403, 403],
        ),
        get(f.path(&format!("/units/{unit_a}")), [200, 200, 200, 404]),
        get(f.path(&format!("/units/{unit_b}")), [200, 200, 404, 404]),
        // Reading keys.
        get(f.path("/keys"), [200, 200, 200, 200]),
        get(key(own, ""), [200, 200, 200, 404]),
        get(key(flat, ""), [200, 200, 200, 404]),
        get(key(other, ""), [200, 200, 404, 404]),
        get(key(company, ""), [200, 200, 404, 200]),
        get(key(own, "/history"), [200, 200, 200, 404]),
        get(key(flat, "/history"), [200, 200, 200, 404]),
        get(key(other, "/history"), [200, 200, 404, 404]),
        get(key(company, "/history"), [200, 200, 404, 200]),
        get(key(own, "/locks"), [200, 200, 200, 404]),
        get(key(other, "/locks"), [200, 200, 404, 404]),
        get(key(company, "/locks"), [200, 200, 404, 200]),
        get(
            f.path(&format!("/locks/{}/keys", f.locks[0])),
            [200, 200, 403, 403],
        ),
        // Writing keys: for managers only, even on one's own key.
        post(
            f.path("/keys"),
            json!({ "kind": "other", "identifier": "NEW {role}" }),
            [201, 201, 403, 403],
        ),
        put(
            key(own, ""),
            json!({ "label": "Badge de Claire", "unit_id": unit_a, "profile_ids": [f.profiles[0]] }),
            [200, 200, 403, 403],
        ),
        post(
            key(own, "/deactivate"),
            reason.clone(),
            [200, 200, 403, 403],
        ),
        post(
            key(own, "/reactivate"),
            reason.clone(),
            [200, 200, 403, 403],
        ),
        post(key(own, "/return"), reason.clone(), [200, 200, 403, 403]),
        post(
            key(own, "/hand-over"),
            json!({ "holder_person_id": person_a, "unit_id": unit_a }),
            [200, 200, 403, 403],
        ),
        post(
            key(company, "/hand-over"),
            json!({ "holder_provider_id": f.provider }),
            [200, 200, 403, 403],
        ),
        // Declaring lost: anyone who sees the key (then managers reactivate it).
        post(
            key(other, "/declare-lost"),
            reason.clone(),
            [200, 200, 404, 404],
        ),
        post(
            key(other, "/reactivate"),
            reason.clone(),
            [200, 200, 403, 403],
        ),
        post(
            key(company, "/declare-lost"),
            reason.clone(),
            [200, 200, 404, 200],
        ),
        post(
            key(company, "/reactivate"),
            reason.clone(),
            [200, 200, 403, 403],
        ),
        post(
            key(own, "/declare-lost"),
            reason.clone(),
            [200, 200, 200, 404],
        ),
        post(
            key(own, "/reactivate"),
            reason.clone(),
            [200, 200, 403, 403],
        ),
        // Members and audit.
        get(f.path("/members"), [200, 200, 403, 403]),
        post(
            f.path("/members"),
            json!({ "email": "nouveau-{role}@test.gardien", "role": "council", "display_name": "Nouveau", "password": PASSWORD }),
            [200, 200, 403, 403],
        ),
        delete(f.path(&format!("/members/{leaving}")), [204, 404, 403, 403]),
        get(f.path("/audit"), [200, 200, 403, 403]),
        // Meters: residents read their flat's, with readings and consumption.
        get(meter(own_meter, "/readings"), [200, 200, 200, 404]),
        get(meter(other_meter, "/readings"), [200, 200, 404, 404]),
        get(
            meter(own_meter, "/consumption?period=day"),
            [200, 200, 200, 404],
        ),
        get(meter(other_meter, "/consumption"), [200, 200, 404, 404]),
        get(
            f.path(&format!("/units/{unit_a}/consumption")),
            [200, 200, 200, 404],
        ),
        get(
            f.path(&format!("/units/{unit_b}/consumption")),
            [200, 200, 404, 404],
        ),
        get(meter(own_meter, "/sync"), [200, 200, 403, 403]),
        get(
            f.path(&format!("/gateways/{gateway}/status")),
            [200, 200, 403, 403],
        ),
        get(f.path("/meter-alarms?all=true"), [200, 200, 403, 403]),
        get(f.path("/reading-conflicts"), [200, 200, 403, 403]),
        get(f.path("/collections"), [200, 200, 403, 403]),
        // Replaced once, by the council: the syndic then finds it removed.
        post(
            meter(spare_meter, "/replace"),
            json!({ "replaced_on": "2025-06-01", "final_index": 40, "mbus_id": "10000004", "manufacturer": "KAM" }),
            [201, 409, 403, 403],
        ),
    ];

    let mut failures = Vec::new();
    for (index, (role, client)) in roles.iter().enumerate() {
        for row in &rows {
            let body = row.body.as_ref().map(|body| for_role(body, role));
            let response = client.request(row.method.clone(), &row.path, body).await;
            failures.extend(check(
                role,
                &row.method,
                &row.path,
                &response,
                row.expect[index],
            ));
        }
    }
    // Reading files: the body is the file itself.
    for (index, (role, client)) in roles.iter().enumerate() {
        let path = f.path("/readings/import?dry_run=true");
        let response = client
            .raw(
                Method::POST,
                &path,
                "text/csv",
                READING_FILE.as_bytes().to_vec(),
            )
            .await;
        failures.extend(check(
            role,
            &Method::POST,
            &path,
            &response,
            [200, 200, 403, 403][index],
        ));
    }
    assert_no_failures(&failures);

    // Nobody refused became a member.
    let members = admin.get(&f.path("/members")).await;
    let emails: Vec<&str> = members
        .body
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["email"].as_str())
        .collect();
    assert!(
        emails.contains(&"nouveau-council@test.gardien")
            && emails.contains(&"nouveau-syndic@test.gardien")
    );
    assert!(
        !emails
            .iter()
            .any(|e| e.starts_with("nouveau-resident") || e.starts_with("nouveau-provider")),
        "{emails:?}"
    );
    // The keys ended as the last allowed action left them.
    let status = |id: i64| {
        let admin = admin.clone();
        let path = key(id, "");
        async move {
            admin.get(&path).await.body["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(status(own).await, "lost", "declared lost by the resident");
    assert_eq!(
        status(company).await,
        "lost",
        "declared lost by the provider"
    );
    assert_eq!(status(other).await, "active");
    assert_eq!(status(flat).await, "active");
    // A removed member loses the residence at once.
    let gone = leaving_client.get(&f.path("/keys")).await;
    assert_eq!(
        (gone.status, code(&gone)),
        (404, "not_found"),
        "{}",
        gone.body
    );

    // What residents and providers list.
    let [_, _, (_, resident), (_, provider)] = &roles;
    let listed = resident.get(&f.path("/keys")).await;
    assert_eq!(
        page_ids(&listed),
        vec![own, flat],
        "the resident's keys and their flat's"
    );
    assert_eq!(listed.body["total"], 2);
    let listed = provider.get(&f.path("/keys")).await;
    assert_eq!(page_ids(&listed), vec![company], "the company's keys only");
    assert_eq!(listed.body["total"], 1);
    // Filters cannot widen what one sees.
    for filter in [
        format!("holder_person_id={person_b}"),
        format!("unit_id={unit_b}"),
        "q=MARC".into(),
    ] {
        let listed = resident.get(&f.path(&format!("/keys?{filter}"))).await;
        assert_eq!(
            (listed.status, page_ids(&listed)),
            (200, vec![]),
            "resident, {filter}"
        );
    }
    let listed = provider
        .get(&f.path(&format!("/keys?holder_person_id={person_a}")))
        .await;
    assert_eq!((listed.status, page_ids(&listed)), (200, vec![]));
    // The resident's key opens hall A and the gate.
    let locks = resident.get(&key(own, "/locks")).await;
    assert_eq!(
        locks.body["locks"].as_array().map(Vec::len),
        Some(2),
        "{}",
        locks.body
    );

    // Stolen and broken (final): on the resident's flat key, and on the company's key.
    let response = resident
        .post(&key(flat, "/declare-stolen"), reason.clone())
        .await;
    assert_eq!(
        (response.status, response.body["status"].as_str()),
        (200, Some("stolen")),
        "{}",
        response.body
    );
    let response = resident
        .post(&key(other, "/declare-stolen"), reason.clone())
        .await;
    assert_eq!(
        (response.status, code(&response)),
        (404, "not_found"),
        "{}",
        response.body
    );
    let response = resident
        .post(&key(company, "/declare-broken"), reason.clone())
        .await;
    assert_eq!(
        (response.status, code(&response)),
        (404, "not_found"),
        "{}",
        response.body
    );
    let response = provider
        .post(&key(other, "/declare-broken"), reason.clone())
        .await;
    assert_eq!(
        (response.status, code(&response)),
        (404, "not_found"),
        "{}",
        response.body
    );
    let response = provider
        .post(&key(company, "/declare-broken"), reason.clone())
        .await;
    assert_eq!(
        (response.status, response.body["status"].as_str()),
        (200, Some("broken")),
        "{}",
        response.body
    );
    assert_eq!(
        status(other).await,
        "active",
        "nobody could touch the neighbour's key"
    );
    // The history records who declared what.
    let history = admin.get(&key(company, "/history")).await;
    assert_eq!(
        history.body["items"][0]["action"], "declare_broken",
        "{}",
        history.body
    );
    assert_eq!(
        history.body["items"][0]["actor"], "agent@test.gardien",
        "{}",
        history.body
    );
    server.stop().await;
}

#[tokio::test]
async fn a_resident_who_moved_out_keeps_only_the_keys_they_hold() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let held = new_key(
        &admin,
        &f,
        "CLAIRE",
        json!({ "holder_person_id": f.people[0], "unit_id": f.units[0] }),
    )
    .await;
    let flat = new_key(&admin, &f, "A01 STOCK", json!({ "unit_id": f.units[0] })).await;
    let resident = server
        .member(
            &admin,
            f.rid,
            "claire@test.gardien",
            "resident",
            Some(f.people[0]),
        )
        .await;
    assert_eq!(
        page_ids(&resident.get(&f.path("/keys")).await),
        vec![held, flat]
    );

    // The occupancy ends: the flat and its stock key disappear, the held key stays.
    let occupancies = admin
        .get(&f.path(&format!("/occupancies?person_id={}", f.people[0])))
        .await;
    let occupancy = page_ids(&occupancies)[0];
    let ended = admin
        .put(
            &f.path(&format!("/occupancies/{occupancy}")),
            json!({ "unit_id": f.units[0], "person_id": f.people[0], "role": "owner", "end_date": "2024-06-30" }),
        )
        .await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(
        page_ids(&resident.get(&f.path("/units")).await),
        Vec::<i64>::new()
    );
    let unit = resident
        .get(&f.path(&format!("/units/{}", f.units[0])))
        .await;
    assert_eq!(unit.status, 404, "{}", unit.body);
    assert_eq!(page_ids(&resident.get(&f.path("/keys")).await), vec![held]);
    let stock = resident
        .post(&f.path(&format!("/keys/{flat}/declare-lost")), json!({}))
        .await;
    assert_eq!(stock.status, 404, "{}", stock.body);
    let own = resident
        .post(&f.path(&format!("/keys/{held}/declare-lost")), json!({}))
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3. Another residence.

/// The ids to put in a residence's paths, by the segment before `{id}`.
async fn path_ids(
    admin: &Client,
    f: &Fixture,
    key: i64,
    member: i64,
) -> HashMap<&'static str, i64> {
    let occupancy = page_ids(&admin.get(&f.path("/occupancies")).await)[0];
    let gateway = page_ids(&admin.get(&f.path("/gateways")).await)[0];
    let meter = page_ids(&admin.get(&f.path("/meters")).await)[0];
    HashMap::from([
        ("buildings", f.buildings[0]),
        ("units", f.units[0]),
        ("people", f.people[0]),
        ("providers", f.provider),
        ("occupancies", occupancy),
        ("controllers", f.controller),
        ("locks", f.locks[0]),
        ("profiles", f.profiles[0]),
        ("keys", key),
        ("members", member),
        ("gateways", gateway),
        ("meters", meter),
        // No alert or drift exists yet: any id must still answer 404 across residences.
        ("alerts", 999_999),
        ("drift", 999_999),
    ])
}

/// A concrete path for a `/residences/{rid}/…` template, with `rid` and the item ids.
fn residence_path(template: &str, rid: i64, ids: &HashMap<&str, i64>) -> String {
    let segments: Vec<&str> = template.split('/').collect();
    let concrete: Vec<String> = segments
        .iter()
        .enumerate()
        .map(|(index, segment)| match *segment {
            "{rid}" => rid.to_string(),
            "{id}" | "{user_id}" | "{drift_id}" => {
                let family = segments[index - 1];
                ids.get(family)
                    .unwrap_or_else(|| panic!("no id for {family} in {template}"))
                    .to_string()
            }
            other if other.starts_with('{') => panic!("unknown parameter {other} in {template}"),
            other => other.to_owned(),
        })
        .collect();
    format!("/api/v1{}", concrete.join("/"))
}

/// A body that would be valid for the route in residence `f`, so that only the
/// residence check can stop it.
fn plausible_body(method: &Method, template: &str, f: &Fixture) -> Option<Value> {
    if !matches!(*method, Method::POST | Method::PUT) {
        return None;
    }
    let segments: Vec<&str> = template
        .split('/')
        .filter(|s| !s.starts_with('{'))
        .collect();
    let body = match (segments.get(2).copied(), segments.last().copied()) {
        (None, _) => json!({ "name": "Intrusion", "address": "" }),
        (Some("buildings"), _) => json!({ "name": "Intrusion" }),
        (Some("units"), _) => json!({ "lot_number": "X-1", "kind": "cellar" }),
        (Some("people"), _) => json!({ "full_name": "Intrus" }),
        (Some("providers"), _) => json!({ "name": "Intrus SARL" }),
        (Some("occupancies"), _) => {
            json!({ "unit_id": f.units[0], "person_id": f.people[1], "role": "tenant" })
        }
        (Some("controllers"), _) => {
            json!({ "name": "Intrus", "model": "PX-2", "transport": "modbus_tcp", "address": "192.0.2.1:502", "modbus_unit": 1 })
        }
        (Some("locks"), _) => json!({ "name": "Intrus", "kind": "gate" }),
        (Some("profiles"), _) => json!({ "name": "Intrus", "lock_ids": [f.locks[0]] }),
        (Some("members"), _) => {
            json!({ "email": "intrus@test.gardien", "role": "council", "display_name": "Intrus", "password": PASSWORD })
        }
        (Some("keys"), Some("keys")) if *method == Method::POST => {
            json!({ "kind": "other", "identifier": "INTRUS" })
        }
        (Some("keys"), Some("keys")) => json!({ "label": "volé", "profile_ids": [f.profiles[1]] }),
        (Some("keys"), Some("hand-over")) => json!({ "holder_person_id": f.people[1] }),
        (Some("keys"), Some(_)) => json!({ "reason": "intrusion" }),
        (Some("alerts" | "drift" | "access-events"), _) => json!({}),
        (Some("gateways"), _) => gateway_body("Intrus"),
        (Some("meters"), Some("replace")) => {
            json!({ "replaced_on": "2025-06-01", "final_index": 40, "mbus_id": "99990001", "manufacturer": "KAM" })
        }
        (Some("meters"), _) => meter_body(f.units[0], "99990000", None),
        // The reading import refuses before reading its body (a CSV file).
        (Some("readings"), _) => json!({}),
        (Some(other), _) => panic!("no plausible body for {method} {template} ({other})"),
    };
    Some(body)
}

/// Everything an administrator sees of a residence.
async fn snapshot(admin: &Client, f: &Fixture, key: i64) -> Vec<Value> {
    let mut state = Vec::new();
    for rest in [
        String::new(),
        "/buildings".into(),
        "/units".into(),
        "/people".into(),
        "/providers".into(),
        "/occupancies".into(),
        "/controllers".into(),
        "/locks".into(),
        "/profiles".into(),
        "/keys".into(),
        "/members".into(),
        "/audit?limit=500".into(),
        format!("/keys/{key}/locks"),
        format!("/locks/{}/keys", f.locks[0]),
        "/gateways".into(),
        "/meters?removed=true".into(),
        "/meter-alarms?all=true".into(),
        "/reading-conflicts".into(),
        "/collections".into(),
    ] {
        let response = admin.get(&f.path(&rest)).await;
        assert_eq!(response.status, 200, "snapshot {rest}: {}", response.body);
        state.push(response.body);
    }
    state
}

#[tokio::test]
async fn members_of_one_residence_cannot_reach_another() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let one = common::fixture(&admin, "Les Tilleuls").await;
    let two = common::fixture(&admin, "Le Clos").await;
    let key_one = new_key(&admin, &one, "UN", json!({ "holder_person_id": one.people[0], "unit_id": one.units[0], "profile_ids": [one.profiles[0]] })).await;
    let key_two = new_key(&admin, &two, "DEUX", json!({ "holder_person_id": two.people[0], "unit_id": two.units[0], "profile_ids": [two.profiles[0]] })).await;
    let council = server
        .member(&admin, one.rid, "conseil1@test.gardien", "council", None)
        .await;
    let council_two = server
        .member(&admin, two.rid, "conseil2@test.gardien", "council", None)
        .await;
    let member_one = user_id(&council).await;
    let member_two = user_id(&council_two).await;
    let created = admin
        .post(
            "/api/v1/users",
            json!({ "email": "seul@test.gardien", "display_name": "Seul", "password": PASSWORD }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let lone = server.login("seul@test.gardien", PASSWORD).await;

    metering(&admin, &one).await;
    metering(&admin, &two).await;
    let ids_one = path_ids(&admin, &one, key_one, member_one).await;
    let ids_two = path_ids(&admin, &two, key_two, member_two).await;
    let before = (
        snapshot(&admin, &one, key_one).await,
        snapshot(&admin, &two, key_two).await,
    );

    let mut failures = Vec::new();
    let routes = documented_routes(&admin).await;
    let residence_routes = routes
        .iter()
        .filter(|(_, template)| template.starts_with("/residences/{rid}"));
    let mut checked = 0;
    for (method, template) in residence_routes {
        // Residence two's own paths: as if it did not exist, for a council member of
        // residence one and for a user with no residence at all.
        // The answer must not differ from that for a residence that does not exist.
        let path = residence_path(template, two.rid, &ids_two);
        let nowhere = residence_path(template, 999_999, &ids_two);
        let body = plausible_body(method, template, &two);
        for (who, client) in [
            ("council of one", &council),
            ("user without residence", &lone),
        ] {
            let response = client.request(method.clone(), &path, body.clone()).await;
            failures.extend(check(who, method, &path, &response, 404));
            let missing = client.request(method.clone(), &nowhere, body.clone()).await;
            if missing.body != response.body {
                failures.push(format!(
                    "{who}: {method} {path} answered {} but {} for no residence",
                    response.body, missing.body
                ));
            }
            checked += 1;
        }
        // A residence's own paths with the other residence's ids, both ways.
        if template.contains("{id}") || template.contains("{user_id}") {
            for (who, client, at, ids) in [
                ("council of one, ids of two", &council, &one, &ids_two),
                ("council of two, ids of one", &council_two, &two, &ids_one),
            ] {
                let path = residence_path(template, at.rid, ids);
                let body = plausible_body(method, template, at);
                let response = client.request(method.clone(), &path, body).await;
                failures.extend(check(who, method, &path, &response, 404));
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "only {checked} requests made");

    // References to residence two's rows in residence one's bodies.
    let refused_references = [
        (
            "/keys",
            json!({ "kind": "other", "identifier": "X", "holder_person_id": two.people[0] }),
            "holder_person_id",
        ),
        (
            "/keys",
            json!({ "kind": "other", "identifier": "X", "holder_provider_id": two.provider }),
            "holder_provider_id",
        ),
        (
            "/keys",
            json!({ "kind": "other", "identifier": "X", "unit_id": two.units[0] }),
            "unit_id",
        ),
        (
            "/keys",
            json!({ "kind": "other", "identifier": "X", "profile_ids": [two.profiles[0]] }),
            "profile_ids[0]",
        ),
        (
            &format!("/keys/{key_one}/hand-over"),
            json!({ "holder_person_id": two.people[0] }),
            "holder_person_id",
        ),
        (
            "/occupancies",
            json!({ "unit_id": two.units[0], "person_id": one.people[0], "role": "tenant" }),
            "unit_id",
        ),
        (
            "/occupancies",
            json!({ "unit_id": one.units[0], "person_id": two.people[0], "role": "tenant" }),
            "person_id",
        ),
        (
            "/profiles",
            json!({ "name": "Mixte", "lock_ids": [two.locks[0]] }),
            "lock_ids[0]",
        ),
        (
            "/locks",
            json!({ "name": "Mixte", "kind": "door", "building_id": two.buildings[0] }),
            "building_id",
        ),
        (
            "/locks",
            json!({ "name": "Mixte", "kind": "door", "controller_id": two.controller, "door_number": 9 }),
            "controller_id",
        ),
        (
            "/units",
            json!({ "lot_number": "M1", "kind": "flat", "building_id": two.buildings[0] }),
            "building_id",
        ),
        (
            "/members",
            json!({ "email": "mixte@test.gardien", "role": "resident", "person_id": two.people[0], "display_name": "M", "password": PASSWORD }),
            "person_id",
        ),
        (
            "/members",
            json!({ "email": "mixte@test.gardien", "role": "provider", "provider_id": two.provider, "display_name": "M", "password": PASSWORD }),
            "provider_id",
        ),
        (
            "/meters",
            meter_body(two.units[0], "99990002", None),
            "unit_id",
        ),
        (
            "/meters",
            meter_body(one.units[0], "99990003", Some(ids_two["gateways"])),
            "gateway_id",
        ),
        (
            "/gateways",
            with_building(gateway_body("Mixte"), two.buildings[0]),
            "building_id",
        ),
    ];
    for (rest, body, field) in refused_references {
        let path = one.path(rest);
        let response = council.post(&path, body.clone()).await;
        if response.status != 422 || response.body["error"]["field"] != field {
            failures.push(format!(
                "POST {path} {body}: {} {}, expected 422 on {field}",
                response.status, response.body
            ));
        }
    }
    assert_no_failures(&failures);

    let after = (
        snapshot(&admin, &one, key_one).await,
        snapshot(&admin, &two, key_two).await,
    );
    assert!(
        before.0 == after.0,
        "residence one changed:\n{:#?}\n{:#?}",
        before.0,
        after.0
    );
    assert!(
        before.1 == after.1,
        "residence two changed:\n{:#?}\n{:#?}",
        before.1,
        after.1
    );

    // The residence list shows one's own residences only.
    let names = |response: Response| -> Vec<String> {
        response
            .body
            .as_array()
            .expect("residences")
            .iter()
            .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        names(council.get("/api/v1/residences").await),
        ["Les Tilleuls"]
    );
    assert_eq!(
        names(council_two.get("/api/v1/residences").await),
        ["Le Clos"]
    );
    assert_eq!(
        names(lone.get("/api/v1/residences").await),
        Vec::<String>::new()
    );
    assert_eq!(
        names(admin.get("/api/v1/residences").await),
        ["Le Clos", "Les Tilleuls"]
    );
    server
        .member(&admin, two.rid, "conseil1@test.gardien", "syndic", None)
        .await;
    assert_eq!(
        names(council.get("/api/v1/residences").await),
        ["Le Clos", "Les Tilleuls"]
    );
    let read = council.get(&two.path("")).await;
    assert_eq!(
        read.status, 200,
        "a role in two now opens it: {}",
        read.body
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. Sessions and tokens.

#[tokio::test]
async fn the_session_cookie_authenticates_and_logout_revokes_it() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    server
        .member(&admin, f.rid, "conseil@test.gardien", "council", None)
        .await;

    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let url = |path: &str| format!("{}{path}", server.base);
    let response = browser
        .post(url("/api/v1/auth/login"))
        .json(&json!({ "email": "conseil@test.gardien", "password": PASSWORD }))
        .send()
        .await
        .expect("login sent");
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("gardien_session="))
        .expect("a gardien_session cookie")
        .to_owned();
    let body: Value = response.json().await.expect("login body");
    let token = body["token"].as_str().expect("token").to_owned();
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(
        attributes[0],
        format!("gardien_session={token}"),
        "{cookie}"
    );
    assert!(attributes.contains(&"HttpOnly"), "{cookie}");
    assert!(attributes.contains(&"SameSite=Strict"), "{cookie}");
    assert!(attributes.contains(&"Path=/"), "{cookie}");

    // The cookie alone authenticates, with the roles of its user.
    let me = browser.get(url("/api/v1/me")).send().await.expect("sent");
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["user"]["email"], "conseil@test.gardien");
    assert_eq!(me["memberships"][0]["role"], "council");
    let keys = browser
        .get(url(&f.path("/keys")))
        .send()
        .await
        .expect("sent");
    assert_eq!(keys.status(), 200);
    let users = browser
        .post(url("/api/v1/users"))
        .json(&json!({ "email": "x@test.gardien", "display_name": "X", "password": PASSWORD }))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        users.status(),
        403,
        "the cookie carries the council's rights, no more"
    );

    // Logout ends the session: the cookie is cleared and the token no longer works.
    let bearer = with_token(&server, &token);
    assert_eq!(bearer.get("/api/v1/me").await.status, 200);
    let logout = browser
        .post(url("/api/v1/auth/logout"))
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 204);
    let cleared = logout
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cleared.starts_with("gardien_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        browser
            .get(url("/api/v1/me"))
            .send()
            .await
            .expect("sent")
            .status(),
        401
    );
    let revoked = bearer.get("/api/v1/me").await;
    assert_eq!((revoked.status, code(&revoked)), (401, "unauthenticated"));
    let cookie_only = reqwest::Client::new()
        .get(url("/api/v1/me"))
        .header("cookie", format!("gardien_session={token}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        cookie_only.status(),
        401,
        "a revoked session cookie replayed by hand"
    );

    // Logging out with a bearer token revokes that token only.
    let first = server.login("conseil@test.gardien", PASSWORD).await;
    let second = server.login("conseil@test.gardien", PASSWORD).await;
    assert_eq!(
        first.post("/api/v1/auth/logout", json!({})).await.status,
        204
    );
    assert_eq!(first.get("/api/v1/me").await.status, 401);
    assert_eq!(second.get("/api/v1/me").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn wrong_credentials_get_no_session() {
    let server = TestServer::start().await;
    server.admin().await;
    let http = reqwest::Client::new();
    let attempts = [
        ("admin@test.gardien", "wrong-password-123"),
        ("admin@test.gardien", ""),
        ("nobody@test.gardien", PASSWORD),
        ("ADMIN@test.gardien", "Test-Password-123"),
    ];
    for (email, password) in attempts {
        let response = http
            .post(format!("{}/api/v1/auth/login", server.base))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401, "{email} / {password}");
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "no cookie for {email}"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "bad_credentials", "{email}: {body}");
        assert!(body.get("token").is_none(), "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn api_tokens_act_as_their_user_until_revoked() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let council = server
        .member(&admin, f.rid, "conseil@test.gardien", "council", None)
        .await;
    let council_id = user_id(&council).await;

    let created = council
        .post(
            "/api/v1/auth/tokens",
            json!({ "name": "collecte nocturne" }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = created.body["token"].as_str().expect("token").to_owned();
    let token_id = created.body["info"]["id"].as_i64().expect("token id");
    assert_eq!(created.body["info"]["name"], "collecte nocturne");

    let script = with_token(&server, &secret);
    assert_eq!(
        user_id(&script).await,
        council_id,
        "the token acts as its creator"
    );
    assert_eq!(
        script.get(&f.path("/audit")).await.status,
        200,
        "with the creator's role"
    );
    assert_eq!(
        script
            .post("/api/v1/residences", json!({ "name": "X" }))
            .await
            .status,
        403
    );

    // Listed without its secret; sessions are not listed.
    let listed = council.get("/api/v1/auth/tokens").await;
    assert_eq!(listed.status, 200);
    let tokens = listed.body.as_array().expect("tokens");
    assert_eq!(tokens.len(), 1, "{}", listed.body);
    assert_eq!(tokens[0]["id"], token_id);
    assert_eq!(tokens[0]["name"], "collecte nocturne");
    let text = listed.body.to_string();
    assert!(
        !text.contains(&secret),
        "the secret is shown once only: {text}"
    );
    assert!(
        tokens[0].get("token").is_none() && tokens[0].get("token_hash").is_none(),
        "{text}"
    );
    // Someone else's list and someone else's revocation.
    assert_eq!(admin.get("/api/v1/auth/tokens").await.body, json!([]));
    let foreign = admin
        .delete(&format!("/api/v1/auth/tokens/{token_id}"))
        .await;
    assert_eq!(
        (foreign.status, code(&foreign)),
        (404, "not_found"),
        "{}",
        foreign.body
    );
    assert_eq!(
        script.get("/api/v1/me").await.status,
        200,
        "still valid after a foreign revocation"
    );

    // Revoked by its owner.
    assert_eq!(
        council
            .delete(&format!("/api/v1/auth/tokens/{token_id}"))
            .await
            .status,
        204
    );
    let revoked = script.get("/api/v1/me").await;
    assert_eq!((revoked.status, code(&revoked)), (401, "unauthenticated"));
    assert_eq!(council.get("/api/v1/auth/tokens").await.body, json!([]));
    assert_eq!(
        council
            .delete(&format!("/api/v1/auth/tokens/{token_id}"))
            .await
            .status,
        404
    );
    assert_eq!(
        council.get("/api/v1/me").await.status,
        200,
        "the session was not revoked with it"
    );

    // A token cannot be created already expired.
    let past = council
        .post(
            "/api/v1/auth/tokens",
            json!({ "name": "vieux", "expires_at": "2020-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(past.status, 422, "{}", past.body);
    server.stop().await;
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions_and_api_tokens() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let council = server
        .member(&admin, f.rid, "conseil@test.gardien", "council", None)
        .await;
    let other_session = server.login("conseil@test.gardien", PASSWORD).await;
    let new_password = "another-password-456";
    let created = council
        .post(
            "/api/v1/auth/tokens",
            json!({ "name": "script du conseil" }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let mut script = council.clone();
    script.token = created.body["token"].as_str().map(str::to_owned);

    let wrong = council
        .post(
            "/api/v1/auth/password",
            json!({ "current_password": "not-the-password", "new_password": new_password }),
        )
        .await;
    assert_eq!(wrong.status, 422, "{}", wrong.body);
    assert_eq!(wrong.body["error"]["field"], "current_password");
    assert_eq!(
        other_session.get("/api/v1/me").await.status,
        200,
        "a refused change ends nothing"
    );
    let login = server
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({ "email": "conseil@test.gardien", "password": new_password }),
        )
        .await;
    assert_eq!(login.status, 401, "a refused change keeps the old password");

    let changed = council
        .post(
            "/api/v1/auth/password",
            json!({ "current_password": PASSWORD, "new_password": new_password }),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.body);
    let ended = other_session.get("/api/v1/me").await;
    assert_eq!((ended.status, code(&ended)), (401, "unauthenticated"));
    let revoked = script.get("/api/v1/me").await;
    assert_eq!(
        (revoked.status, code(&revoked)),
        (401, "unauthenticated"),
        "API tokens are revoked too"
    );
    assert_eq!(
        council.get("/api/v1/me").await.status,
        200,
        "the session that made the change stays open"
    );
    let old = server
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({ "email": "conseil@test.gardien", "password": PASSWORD }),
        )
        .await;
    assert_eq!((old.status, code(&old)), (401, "bad_credentials"));
    let fresh = server.login("conseil@test.gardien", new_password).await;
    assert_eq!(fresh.get(&f.path("/keys")).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn only_platform_administrators_create_accounts_and_residences() {
    let Cast {
        server,
        admin,
        f,
        roles,
    } = cast().await;
    let account =
        json!({ "email": "nouveau@test.gardien", "display_name": "Nouveau", "password": PASSWORD });
    let residence = json!({ "name": "Les Peupliers", "address": "2 rue du Test" });
    for (role, client) in &roles {
        for (path, body) in [
            ("/api/v1/users", &account),
            ("/api/v1/residences", &residence),
        ] {
            let response = client.post(path, body.clone()).await;
            assert_eq!(
                (response.status, code(&response)),
                (403, "forbidden"),
                "{role}: POST {path}: {}",
                response.body
            );
        }
        let escalate = client
            .post("/api/v1/users", json!({ "email": "root@test.gardien", "display_name": "R", "password": PASSWORD, "is_admin": true }))
            .await;
        assert_eq!(escalate.status, 403, "{role}: {}", escalate.body);
    }
    // Nothing was created; the administrator can.
    let listed = admin.get("/api/v1/residences").await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
    );
    assert_eq!(
        server
            .anonymous()
            .post(
                "/api/v1/auth/login",
                json!({ "email": "nouveau@test.gardien", "password": PASSWORD })
            )
            .await
            .status,
        401
    );
    assert_eq!(admin.post("/api/v1/users", account).await.status, 201);
    assert_eq!(
        admin.post("/api/v1/residences", residence).await.status,
        201
    );
    // Members see their residence only, not the new one.
    for (role, client) in &roles {
        let listed = client.get("/api/v1/residences").await;
        assert_eq!(
            common::ids(&listed.body),
            vec![f.rid],
            "{role}: {}",
            listed.body
        );
    }
    server.stop().await;
}
