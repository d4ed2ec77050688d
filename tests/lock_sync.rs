//! End to end over real sockets: the API, the engine, simulated PX-2 and KL-8
//! controllers. What the database says a lock accepts becomes true on the controllers.

mod common;

use common::{eventually, eventually_async, px2_table, TestServer};
use serde_json::json;

#[tokio::test]
async fn a_lost_badge_leaves_the_controller_and_nothing_else_changes() {
    let (px2, px2_server) = common::px2_device(100).await;
    let server = TestServer::start_with_sync(common::test_sync_config()).await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let moved = admin
        .put(
            &f.path(&format!("/controllers/{}", f.controller)),
            json!({ "name": "Centrale", "model": "PX-2", "transport": "modbus_tcp",
                    "address": px2_server.local_addr().to_string(), "modbus_unit": 1 }),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);

    // Profile A opens hall A (door 1) and the gate (door 3): mask 0b101.
    let claire = admin
        .create(&f.path("/keys"), json!({ "kind": "vigik_badge", "identifier": "04A22B91", "profile_ids": [f.profiles[0]] }))
        .await;
    admin
        .create(&f.path("/keys"), json!({ "kind": "vigik_badge", "identifier": "04:11:22:33:44:55:66", "profile_ids": [f.profiles[1]] }))
        .await;
    let programmed = vec![
        ("04112233445566".to_string(), 0b110),
        ("04A22B91".to_string(), 0b101),
    ];
    eventually(
        10,
        "both badges programmed",
        || px2_table(&px2),
        |table| *table == programmed,
    )
    .await;

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
        |table| *table == programmed[..1],
    )
    .await;
    let sync_path = f.path(&format!("/keys/{claire}/sync"));
    let report = eventually_async(
        10,
        "the removal confirmed",
        || admin.get(&sync_path),
        |response| response.body["controllers"][0]["state"] == "confirmed",
    )
    .await;
    assert_eq!(
        report.body["summary"], "retiré de 1 centrale sur 1",
        "{}",
        report.body
    );
    let status = admin
        .get(&f.path(&format!("/controllers/{}/status", f.controller)))
        .await;
    assert_eq!(status.body["pending"], 0, "{}", status.body);
    assert_eq!(status.body["used"], 1, "{}", status.body);
    server.stop().await;
    px2_server.stop().await;
}
