mod common;

use serde_json::json;

#[tokio::test]
async fn fixture_builds_and_health_answers() {
    let server = common::TestServer::start().await;
    let admin = server.admin().await;
    let fixture = common::fixture(&admin, "Les Tilleuls").await;
    let health = server.anonymous().get("/health").await;
    assert_eq!(health.status, 200);
    let key = admin
        .create(&fixture.path("/keys"), json!({ "kind": "vigik_badge", "identifier": "04 a2 2b 91", "profile_ids": [fixture.profiles[0]] }))
        .await;
    let locks = admin
        .get(&fixture.path(&format!("/keys/{key}/locks")))
        .await;
    assert_eq!(locks.status, 200);
    assert_eq!(locks.body["locks"].as_array().map(Vec::len), Some(2));
    server.stop().await;
}
