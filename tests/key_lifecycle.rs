//! A key's life through the API: hand-over, loss, the status rules, the sets of keys
//! each lock must accept, validity periods, holders, and identifier normalisation.

mod common;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::{ids, Client, Fixture, Response};
use serde_json::{json, Value};

const ADMIN_EMAIL: &str = "admin@test.gardien";
/// The sets of the three locks when none of them accepts any key.
const NO_KEYS: [Vec<i64>; 3] = [Vec::new(), Vec::new(), Vec::new()];

/// RFC 3339 in UTC with a `Z`, safe in a query string.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Creates a Vigik badge with these extra fields and returns its id.
async fn badge(admin: &Client, f: &Fixture, identifier: &str, extra: Value) -> i64 {
    let mut body = json!({ "kind": "vigik_badge", "identifier": identifier });
    for (name, value) in extra.as_object().expect("object") {
        body[name] = value.clone();
    }
    admin.create(&f.path("/keys"), body).await
}

async fn key(admin: &Client, f: &Fixture, key: i64) -> Value {
    let response = admin.get(&f.path(&format!("/keys/{key}"))).await;
    assert_eq!(response.status, 200, "key {key}: {}", response.body);
    response.body
}

/// POSTs a lifecycle action (`declare-lost`, `return`…) with its reason.
async fn act(admin: &Client, f: &Fixture, key: i64, action: &str, reason: &str) -> Response {
    admin
        .post(
            &f.path(&format!("/keys/{key}/{action}")),
            json!({ "reason": reason }),
        )
        .await
}

async fn hand_over(admin: &Client, f: &Fixture, key: i64, body: Value) -> Response {
    admin
        .post(&f.path(&format!("/keys/{key}/hand-over")), body)
        .await
}

/// Ids of the keys `lock` must accept; `query` is empty or `?at=…`.
async fn lock_set(admin: &Client, f: &Fixture, lock: i64, query: &str) -> Vec<i64> {
    let response = admin
        .get(&f.path(&format!("/locks/{lock}/keys{query}")))
        .await;
    assert_eq!(
        response.status, 200,
        "lock {lock}{query}: {}",
        response.body
    );
    ids(&response.body)
}

/// The sets of Hall A, Hall B and Portail, now.
async fn sets(admin: &Client, f: &Fixture) -> [Vec<i64>; 3] {
    [
        lock_set(admin, f, f.locks[0], "").await,
        lock_set(admin, f, f.locks[1], "").await,
        lock_set(admin, f, f.locks[2], "").await,
    ]
}

async fn history(admin: &Client, f: &Fixture, key: i64) -> Value {
    let response = admin.get(&f.path(&format!("/keys/{key}/history"))).await;
    assert_eq!(response.status, 200, "history of {key}: {}", response.body);
    response.body
}

/// Asserts an error answer: status, stable code, field at fault, a message in words.
fn assert_refused(response: &Response, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(response.status, status, "{}", response.body);
    let error = &response.body["error"];
    assert_eq!(error["code"], code, "{}", response.body);
    assert_eq!(error["field"].as_str(), field, "{}", response.body);
    assert!(
        !error["message"].as_str().unwrap_or_default().is_empty(),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn a_key_from_hand_over_to_loss_leaves_its_locks_and_a_history() {
    let server = common::TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;

    // A badge in the council's stock: it opens nothing yet.
    let id = badge(
        &admin,
        &f,
        "04A22B91",
        json!({ "label": "Badge 12", "status": "returned", "profile_ids": [f.profiles[0]] }),
    )
    .await;
    let stock = key(&admin, &f, id).await;
    assert_eq!(stock["status"], "returned");
    assert_eq!(stock["holder_person_id"], Value::Null);
    assert_eq!(sets(&admin, &f).await, NO_KEYS);

    // Handed over to Claire for flat A01, today by default.
    let today = Utc::now().date_naive().to_string();
    let response = hand_over(
        &admin,
        &f,
        id,
        json!({ "holder_person_id": f.people[0], "unit_id": f.units[0], "reason": "Emménagement" }),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let handed = &response.body;
    assert_eq!(handed["status"], "active");
    assert_eq!(handed["holder_person_id"], f.people[0]);
    assert_eq!(handed["holder_name"], "Claire Dupont");
    assert_eq!(handed["unit_id"], f.units[0]);
    assert_eq!(handed["handed_out_on"], today.as_str());
    assert_eq!(
        key(&admin, &f, id).await,
        *handed,
        "GET agrees with the answer"
    );
    assert_eq!(sets(&admin, &f).await, [vec![id], vec![], vec![id]]);
    let opens = admin.get(&f.path(&format!("/keys/{id}/locks"))).await;
    assert_eq!(opens.body["in_force"], true, "{}", opens.body);

    // Claire loses it: it leaves every lock, but still says what it used to open.
    let response = act(&admin, &f, id, "declare-lost", "Perdu au marché").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["status"], "lost");
    assert_eq!(
        response.body["holder_name"], "Claire Dupont",
        "who lost it stays on record"
    );
    assert_eq!(sets(&admin, &f).await, NO_KEYS);
    let opens = admin.get(&f.path(&format!("/keys/{id}/locks"))).await;
    assert_eq!(opens.status, 200, "{}", opens.body);
    assert_eq!(opens.body["in_force"], false);
    let names: Vec<&str> = opens.body["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .filter_map(|lock| lock["name"].as_str())
        .collect();
    assert_eq!(names, ["Hall A", "Portail"]);

    // The history, newest first: who, what, why.
    let log = history(&admin, &f, id).await;
    assert_eq!(log["total"], 3, "{log}");
    let entries = log["items"].as_array().expect("items");
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["declare_lost", "hand_over", "create"]);
    let lost = &entries[0];
    assert_eq!(lost["entity"], "key");
    assert_eq!(lost["entity_id"], id);
    assert_eq!(lost["reason"], "Perdu au marché");
    assert_eq!(lost["actor"], ADMIN_EMAIL);
    assert_eq!(
        lost["changes"]["status"],
        json!({ "from": "active", "to": "lost" })
    );
    let handed = &entries[1];
    assert_eq!(handed["reason"], "Emménagement");
    assert_eq!(handed["actor"], ADMIN_EMAIL);
    assert_eq!(
        handed["changes"]["status"],
        json!({ "from": "returned", "to": "active" })
    );
    assert_eq!(
        handed["changes"]["holder_person_id"],
        json!({ "from": null, "to": f.people[0] })
    );
    assert_eq!(entries[2]["changes"]["identifier"]["to"], "04A22B91");

    // The residence's audit log tells the same story.
    let audit = admin
        .get(&f.path(&format!("/audit?entity=key&entity_id={id}")))
        .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert_eq!(audit.body["items"], log["items"]);
    assert_eq!(audit.body["total"], 3);
    server.stop().await;
}

#[tokio::test]
async fn stolen_and_broken_are_final_lost_can_be_found_and_return_clears_the_holder() {
    let server = common::TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let held_by_claire = json!({ "holder_person_id": f.people[0], "profile_ids": [f.profiles[0]] });

    // Stolen and broken: every way back is refused, and nothing changes.
    for (identifier, declare, status) in [
        ("04000001", "declare-stolen", "stolen"),
        ("04000002", "declare-broken", "broken"),
    ] {
        let id = badge(&admin, &f, identifier, held_by_claire.clone()).await;
        let response = act(&admin, &f, id, declare, "").await;
        assert_eq!(response.status, 200, "{declare}: {}", response.body);
        assert_eq!(response.body["status"], status);
        let before = key(&admin, &f, id).await;
        for refused in [
            act(&admin, &f, id, "reactivate", "retrouvé").await,
            act(&admin, &f, id, "return", "").await,
            hand_over(&admin, &f, id, json!({ "holder_person_id": f.people[1] })).await,
        ] {
            assert_refused(&refused, 409, "conflict", Some("status"));
            let message = refused.body["error"]["message"].as_str().expect("message");
            assert!(message.contains("impossible"), "in French: {message}");
        }
        assert_eq!(key(&admin, &f, id).await, before, "{status} key unchanged");
        assert_eq!(history(&admin, &f, id).await["total"], 2, "nothing logged");
        assert_eq!(sets(&admin, &f).await, NO_KEYS);
    }

    // Lost, then found again: back in its locks.
    let found = badge(&admin, &f, "04000003", held_by_claire.clone()).await;
    assert_eq!(
        act(&admin, &f, found, "declare-lost", "").await.body["status"],
        "lost"
    );
    assert_eq!(sets(&admin, &f).await, NO_KEYS);
    let response = act(&admin, &f, found, "reactivate", "Retrouvé dans le hall").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["status"], "active");
    assert_eq!(response.body["holder_name"], "Claire Dupont");
    assert_eq!(sets(&admin, &f).await, [vec![found], vec![], vec![found]]);

    // Returned: back in stock, no holder, no lock.
    let response = act(&admin, &f, found, "return", "Déménagement").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["status"], "returned");
    assert_eq!(response.body["holder_person_id"], Value::Null);
    assert_eq!(response.body["holder_name"], Value::Null);
    assert_eq!(
        response.body["unit_id"],
        Value::Null,
        "no longer the flat's key"
    );
    assert_eq!(sets(&admin, &f).await, NO_KEYS);

    // Deactivate only from active.
    assert_refused(
        &act(&admin, &f, found, "deactivate", "").await,
        409,
        "conflict",
        Some("status"),
    );
    assert_eq!(
        act(&admin, &f, found, "reactivate", "").await.body["status"],
        "active"
    );
    let response = act(&admin, &f, found, "deactivate", "Recensement").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["status"], "deactivated");
    assert_eq!(sets(&admin, &f).await, NO_KEYS);
    assert_refused(
        &act(&admin, &f, found, "deactivate", "").await,
        409,
        "conflict",
        Some("status"),
    );
    let lost = badge(&admin, &f, "04000004", json!({ "status": "lost" })).await;
    assert_refused(
        &act(&admin, &f, lost, "deactivate", "").await,
        409,
        "conflict",
        Some("status"),
    );
    server.stop().await;
}

#[tokio::test]
async fn the_keys_a_lock_expects_follow_profiles_and_status() {
    let server = common::TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let [hall_a, hall_b, gate] = f.locks;
    let [profile_a, profile_b] = f.profiles;

    // A key that is not active is in no set, whatever its profiles.
    for (index, status) in ["lost", "stolen", "broken", "returned", "deactivated"]
        .iter()
        .enumerate()
    {
        badge(
            &admin,
            &f,
            &format!("0400010{index}"),
            json!({ "status": status, "profile_ids": [profile_a, profile_b] }),
        )
        .await;
    }
    assert_eq!(sets(&admin, &f).await, NO_KEYS);

    let a = badge(
        &admin,
        &f,
        "04000001",
        json!({ "profile_ids": [profile_a] }),
    )
    .await;
    let b = badge(
        &admin,
        &f,
        "04000002",
        json!({ "profile_ids": [profile_b] }),
    )
    .await;
    assert_eq!(sets(&admin, &f).await, [vec![a], vec![b], vec![a, b]]);

    let set_profile_locks = |locks: Vec<i64>| {
        let admin = admin.clone();
        let path = f.path(&format!("/profiles/{profile_a}"));
        async move {
            let body = json!({ "name": "Résident A", "description": "", "lock_ids": locks });
            let response = admin.put(&path, body).await;
            assert_eq!(response.status, 200, "{}", response.body);
        }
    };

    // Profile A gains Hall B, then keeps Hall A only.
    set_profile_locks(vec![hall_a, hall_b, gate]).await;
    assert_eq!(sets(&admin, &f).await, [vec![a], vec![a, b], vec![a, b]]);
    set_profile_locks(vec![hall_a]).await;
    assert_eq!(sets(&admin, &f).await, [vec![a], vec![b], vec![b]]);

    // Key a moves from profile A to profile B.
    let response = admin
        .put(
            &f.path(&format!("/keys/{a}")),
            json!({ "label": "Badge a", "unit_id": null, "valid_from": null, "valid_until": null,
                    "notes": "", "profile_ids": [profile_b] }),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["profile_ids"], json!([profile_b]));
    assert_eq!(sets(&admin, &f).await, [vec![], vec![a, b], vec![a, b]]);

    // Deactivated, b leaves every set yet keeps its profiles.
    assert_eq!(
        act(&admin, &f, b, "deactivate", "").await.body["status"],
        "deactivated"
    );
    assert_eq!(sets(&admin, &f).await, [vec![], vec![a], vec![a]]);
    let opens = admin.get(&f.path(&format!("/keys/{b}/locks"))).await;
    assert_eq!(opens.body["in_force"], false);
    assert_eq!(ids(&opens.body["locks"]), [hall_b, gate]);

    // Deleting profile B takes its keys out of its locks.
    let response = admin
        .delete(&f.path(&format!("/profiles/{profile_b}")))
        .await;
    assert_eq!(response.status, 204, "{}", response.body);
    assert_eq!(sets(&admin, &f).await, NO_KEYS);
    assert_eq!(key(&admin, &f, a).await["profile_ids"], json!([]));
    let opens = admin.get(&f.path(&format!("/keys/{a}/locks"))).await;
    assert_eq!(opens.body["locks"], json!([]));
    // The key's history says why it stopped opening.
    let latest = &history(&admin, &f, a).await["items"][0];
    assert_eq!(latest["reason"], "profil d'accès supprimé");
    assert_eq!(
        latest["changes"]["profile_ids"],
        json!({ "from": [profile_b], "to": [] })
    );
    server.stop().await;
}

#[tokio::test]
async fn a_contractor_badge_opens_only_within_its_validity() {
    let server = common::TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let hall_a = f.locks[0];
    let now = Utc::now();
    let from = DateTime::from_timestamp(now.timestamp(), 0).expect("now") + Duration::days(1);
    let until = from + Duration::days(6);

    // Refused when the period runs backwards.
    let backwards = admin
        .post(
            &f.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": "04000009",
                    "valid_from": rfc3339(until), "valid_until": rfc3339(from) }),
        )
        .await;
    assert_refused(&backwards, 422, "invalid_field", Some("valid_until"));

    let resident = badge(
        &admin,
        &f,
        "04000001",
        json!({ "profile_ids": [f.profiles[0]] }),
    )
    .await;
    let contractor = badge(
        &admin,
        &f,
        "04000002",
        json!({ "holder_provider_id": f.provider, "profile_ids": [f.profiles[0]],
                "valid_from": rfc3339(from), "valid_until": rfc3339(until) }),
    )
    .await;
    let at = |instant: DateTime<Utc>| format!("?at={}", rfc3339(instant));

    assert_eq!(lock_set(&admin, &f, hall_a, "").await, [resident]);
    let opens = admin
        .get(&f.path(&format!("/keys/{contractor}/locks")))
        .await;
    assert_eq!(opens.body["in_force"], false, "not yet");
    for (instant, expected, why) in [
        (now, vec![resident], "before the period"),
        (from, vec![resident, contractor], "from its first second"),
        (
            from + Duration::hours(30),
            vec![resident, contractor],
            "inside",
        ),
        (
            until - Duration::seconds(1),
            vec![resident, contractor],
            "last second",
        ),
        (until, vec![resident], "the end is excluded"),
        (
            until + Duration::days(1),
            vec![resident],
            "after the period",
        ),
    ] {
        assert_eq!(
            lock_set(&admin, &f, hall_a, &at(instant)).await,
            expected,
            "{why}"
        );
    }

    // An offset other than Z, its `+` URL-encoded: the same instant as `from + 2h`.
    let paris = "?at=".to_owned()
        + &(from + Duration::hours(3))
            .format("%Y-%m-%dT%H:%M:%S%%2B01:00")
            .to_string();
    assert_eq!(
        lock_set(&admin, &f, hall_a, &paris).await,
        [resident, contractor]
    );
    server.stop().await;
}

#[tokio::test]
async fn hand_over_to_a_provider_and_refusals_that_change_nothing() {
    let server = common::TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let other = common::fixture(&admin, "Les Acacias").await;
    let id = badge(
        &admin,
        &f,
        "04000001",
        json!({ "status": "returned", "profile_ids": [f.profiles[1]] }),
    )
    .await;

    let response = hand_over(
        &admin,
        &f,
        id,
        json!({ "holder_provider_id": f.provider, "reason": "Ménage des halls" }),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["status"], "active");
    assert_eq!(response.body["holder_provider_id"], f.provider);
    assert_eq!(response.body["holder_person_id"], Value::Null);
    assert_eq!(response.body["holder_name"], "Net'Immo");
    let listed = admin
        .get(&f.path(&format!("/keys?holder_provider_id={}", f.provider)))
        .await;
    assert_eq!(ids(&listed.body["items"]), [id]);

    let before = key(&admin, &f, id).await;
    let both = hand_over(
        &admin,
        &f,
        id,
        json!({ "holder_person_id": f.people[0], "holder_provider_id": f.provider }),
    )
    .await;
    assert_refused(&both, 422, "invalid_field", Some("holder_provider_id"));

    let foreign_unit = hand_over(
        &admin,
        &f,
        id,
        json!({ "holder_person_id": f.people[1], "unit_id": other.units[1] }),
    )
    .await;
    assert_refused(&foreign_unit, 422, "invalid_field", Some("unit_id"));

    let foreign_person = hand_over(
        &admin,
        &f,
        id,
        json!({ "holder_person_id": other.people[0] }),
    )
    .await;
    assert_refused(
        &foreign_person,
        422,
        "invalid_field",
        Some("holder_person_id"),
    );

    assert_eq!(key(&admin, &f, id).await, before, "refusals change nothing");
    assert_eq!(
        history(&admin, &f, id).await["total"],
        2,
        "create, hand_over"
    );
    let elsewhere = admin.get(&other.path(&format!("/keys/{id}"))).await;
    assert_refused(&elsewhere, 404, "not_found", None);
    server.stop().await;
}

#[tokio::test]
async fn one_badge_whatever_the_way_its_identifier_is_typed() {
    let server = common::TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;

    let created = admin
        .post(
            &f.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": "04:a2:2b:91" }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["identifier"], "04A22B91");
    let id = created.body["id"].as_i64().expect("id");

    for typed in ["04A22B91", "2435555844"] {
        let again = admin
            .post(
                &f.path("/keys"),
                json!({ "kind": "vigik_badge", "identifier": typed }),
            )
            .await;
        assert_refused(&again, 409, "conflict", Some("identifier"));
        let message = again.body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("04A22B91") && message.contains(&id.to_string()),
            "names the existing key: {message}"
        );
    }
    let badges = admin.get(&f.path("/keys?kind=vigik_badge")).await;
    assert_eq!(ids(&badges.body["items"]), [id]);

    let remote = admin
        .post(
            &f.path("/keys"),
            json!({ "kind": "remote", "identifier": "00123456" }),
        )
        .await;
    assert_eq!(remote.status, 201, "{}", remote.body);
    assert_eq!(remote.body["identifier"], "123456");
    let again = admin
        .post(
            &f.path("/keys"),
            json!({ "kind": "remote", "identifier": "123456" }),
        )
        .await;
    assert_refused(&again, 409, "conflict", Some("identifier"));

    let bad = admin
        .post(
            &f.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": "04A22B" }),
        )
        .await;
    assert_refused(&bad, 422, "invalid_field", Some("identifier"));
    server.stop().await;
}
