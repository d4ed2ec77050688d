//! Anomaly scenarios seen through the gateway: each changes what the driver reads
//! exactly as its ground-truth record says.

mod common;

use common::connect;
use common::mbg::{config, gateway, program, read_out, readings, Decoded, DAY, T0};
use gardien_simulators::mbg::profile::date;
use gardien_simulators::mbg::{generate, status, ScenarioPlan};
use gardien_simulators::{
    serve_tcp, GroundTruth, MbgDevice, Scenario, ScenarioKind, SlotConfig, TruthRecord,
};
use serde_json::Value;
use tokio_modbus::client::Context;

const HOUR: i64 = 3600;

/// Sets the virtual clock, runs a read-out, and reads the `count` first slots.
async fn read_at(mbg: &MbgDevice, ctx: &mut Context, t: i64, count: u16) -> Vec<Decoded> {
    mbg.set_time(t);
    read_out(ctx).await;
    readings(ctx, count, 2).await
}

fn number(record: &TruthRecord, field: &str) -> f64 {
    record.expected[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {:?}", record.expected))
}

fn scenario(kind: ScenarioKind, meter_id: u32, start: i64, end: Option<i64>) -> Scenario {
    Scenario {
        kind,
        meter_id,
        start,
        end,
    }
}

#[tokio::test]
async fn scenarios_change_the_physics_as_recorded() {
    let (mbg, all) = gateway(config(0x0201), 5);
    // Flat 0 stands empty this winter; flats 1 to 4 are lived in.
    assert!(!all[0].profile.vacancies.is_empty());
    let meters = &all[3..];
    assert!(meters.iter().all(|m| m.profile.vacancies.is_empty()));
    let ids: Vec<u32> = meters.iter().map(|m| m.id).collect();
    let apply = |s: Scenario| mbg.apply(&s).expect("scenario applies");
    let leak_start = T0 + DAY;
    let leak = apply(scenario(
        ScenarioKind::Leak {
            litres_per_hour: 20.0,
        },
        ids[0],
        leak_start,
        Some(leak_start + 3 * DAY),
    ));
    let stuck = apply(scenario(
        ScenarioKind::Stuck,
        ids[1],
        T0 + DAY,
        Some(T0 + 6 * DAY),
    ));
    let over = apply(scenario(
        ScenarioKind::OverConsumption { factor: 3.0 },
        ids[2],
        T0 + DAY,
        Some(T0 + 4 * DAY),
    ));
    let back_at = T0 + 2 * DAY + 12 * HOUR;
    let back = apply(scenario(
        ScenarioKind::Backwards { drop: 2.0 },
        ids[3],
        back_at,
        None,
    ));
    let roll = apply(scenario(
        ScenarioKind::Rollover { before_wrap: 0.3 },
        ids[4],
        T0,
        Some(T0 + 20 * DAY),
    ));
    let swap_at = T0 + 3 * DAY;
    let swap = apply(scenario(
        ScenarioKind::Replaced {
            new_id: 40_000_001,
            new_initial: 0.005,
        },
        ids[6],
        swap_at,
        None,
    ));
    let silent_at = T0 + 5 * DAY;
    let silent = apply(scenario(ScenarioKind::NoAnswer, ids[7], silent_at, None));

    let server = serve_tcp(mbg.clone(), "127.0.0.1:0").await.expect("serve");
    let mut ctx = connect(server.local_addr(), 1).await;
    for (slot, meter) in (0u16..).zip(meters) {
        program(&mut ctx, slot, &SlotConfig::for_meter(meter)).await;
    }
    let value = |d: &Decoded| d.value;

    // Rollover: just below the top at the start, past it at the recorded instant.
    let first = read_at(&mbg, &mut ctx, T0, 12).await;
    assert_eq!(value(&first[4]), number(&roll, "index_at_start"));
    assert_eq!(value(&first[4]), 99_999.7);
    let wraps_at = roll.expected["wraps_at_unix"]
        .as_i64()
        .expect("wraps in the period");
    let before = read_at(&mbg, &mut ctx, wraps_at - 1, 12).await;
    let after = read_at(&mbg, &mut ctx, wraps_at, 12).await;
    assert_eq!(value(&before[4]), number(&roll, "index_before_wrap"));
    assert_eq!(value(&after[4]), number(&roll, "index_after_wrap"));
    assert!(value(&before[4]) > 99_999.0 && value(&after[4]) < 0.01);

    // Leak: water flows at night, at least the leak's rate (01:00-04:00 in Paris).
    let night = leak_start + DAY;
    let one = read_at(&mbg, &mut ctx, night, 12).await;
    let four = read_at(&mbg, &mut ctx, night + 3 * HOUR, 12).await;
    assert!(
        four[0].raw - one[0].raw >= 60,
        "{} L",
        four[0].raw - one[0].raw
    );
    assert_eq!(leak.expected["leaked"], 1.44);
    assert_eq!(leak.end_unix, Some(leak_start + 3 * DAY));

    // Stuck: the index does not move during the period, moves again after.
    let frozen = number(&stuck, "index_frozen_at");
    let during = read_at(&mbg, &mut ctx, T0 + 3 * DAY, 12).await;
    assert_eq!(value(&during[1]), frozen);
    assert!(number(&stuck, "uncounted") > 0.1);
    let freed = read_at(&mbg, &mut ctx, T0 + 7 * DAY, 12).await;
    assert!(value(&freed[1]) > frozen);

    // Backwards: one drop of 2 m³ at the instant.
    let before = read_at(&mbg, &mut ctx, back_at - 1, 12).await;
    let after = read_at(&mbg, &mut ctx, back_at, 12).await;
    assert_eq!(value(&before[3]), number(&back, "index_before"));
    assert_eq!(value(&after[3]), number(&back, "index_after"));
    assert_eq!(before[3].raw - after[3].raw, 2000);

    // Over-consumption: the heat meter counts what the record says.
    let start = read_at(&mbg, &mut ctx, T0 + DAY, 12).await;
    let end = read_at(&mbg, &mut ctx, T0 + 4 * DAY, 12).await;
    let counted = value(&end[2]) - value(&start[2]);
    let actual = number(&over, "actual_consumption");
    assert!((counted - actual).abs() <= 1.0, "{counted} {actual}");
    assert!((actual - 3.0 * number(&over, "normal_consumption")).abs() < 1.0);

    // Replaced: the old id is gone from the loop; the slot keeps the old data until
    // the client programs the new id.
    let last_old = read_at(&mbg, &mut ctx, swap_at - 1, 12).await;
    let final_index = number(&swap, "old_final_index");
    assert!((value(&last_old[6]) - final_index).abs() <= 0.001);
    let swapped = read_at(&mbg, &mut ctx, swap_at, 12).await;
    assert_eq!(swapped[6].status, status::NO_ANSWER);
    assert_eq!(
        (swapped[6].id_echo, swapped[6].raw),
        (ids[6], last_old[6].raw)
    );
    let new_meter = mbg.with_bus(|bus| bus.meter(40_000_001).cloned()).unwrap();
    program(&mut ctx, 6, &SlotConfig::for_meter(&new_meter)).await;
    let renewed = read_at(&mbg, &mut ctx, swap_at, 12).await;
    assert_eq!((renewed[6].status, renewed[6].id_echo), (0, 40_000_001));
    assert_eq!(value(&renewed[6]), 0.005);
    assert_eq!(swap.expected["new_meter_id"], "40000001");

    // No answer from the instant on.
    let last = read_at(&mbg, &mut ctx, silent_at - 1, 12).await;
    assert_eq!(last[7].status, 0);
    let quiet = read_at(&mbg, &mut ctx, silent_at + DAY, 12).await;
    assert_eq!(quiet[7].status, status::NO_ANSWER);
    assert_eq!(quiet[7].time, last[7].time);
    assert_eq!(value(&last[7]), number(&silent, "index_when_silenced"));

    // The ground truth names the gateway and survives a trip through a file.
    let truth = mbg.ground_truth();
    let kinds: Vec<&str> = truth.scenarios.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "leak",
            "stuck",
            "over_consumption",
            "backwards",
            "rollover",
            "replaced",
            "no_answer"
        ]
    );
    assert!(truth
        .scenarios
        .iter()
        .all(|r| r.gateway.as_deref() == Some("building-a") && r.unit_id == Some(1)));
    let path = std::env::temp_dir().join(format!("mbg-truth-{}.json", std::process::id()));
    truth.write(&path).unwrap();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["schema"], "gardien-sim/mbg-ground-truth/1");
    assert_eq!(json["scenarios"][3]["start"], "2025-01-17T12:00:00Z");
    assert_eq!(json["scenarios"][3]["end_unix"], back_at);
    assert_eq!(GroundTruth::read(&path).unwrap(), truth);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn generated_scenarios_cover_every_kind() {
    let (mbg, meters) = gateway(config(0x0104), 30);
    let plan = ScenarioPlan {
        seed: 21,
        from: date(2025, 1, 20),
        to: date(2025, 4, 1),
        per_kind: 3,
        first_new_id: 90_000_001,
    };
    let scenarios = generate(&meters, &plan);
    assert_eq!(scenarios.len(), 21);
    for s in &scenarios {
        mbg.apply(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    }
    let truth = mbg.ground_truth();
    for kind in ScenarioKind::NAMES {
        let n = truth.scenarios.iter().filter(|r| r.kind == kind).count();
        assert_eq!(n, 3, "{kind}");
    }
    for record in &truth.scenarios {
        assert!(record.start_unix >= plan.from);
        assert!(record.expected["finding"].is_string());
        assert_eq!(record.meter_id.len(), 8);
    }
    // Same seed, same scenarios, same truth.
    let (again, _) = gateway(config(0x0104), 30);
    for s in generate(&meters, &plan) {
        again.apply(&s).unwrap();
    }
    assert_eq!(again.ground_truth(), truth);
}
