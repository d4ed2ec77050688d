//! Black-box tests of the import of a meter-reading provider's file
//! (`gardien::import::readings::import_readings`) on a real SQLite file in a temporary
//! directory. The residence, its lots and meters are written with the storage layer,
//! which also reads the results back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use gardien::domain::meter::{
    MeasureUnit, MeterKind, MEDIUM_COLD_WATER, MEDIUM_HEAT, MEDIUM_WARM_WATER,
};
use gardien::domain::UnitKind;
use gardien::error::Error;
use gardien::import::readings::{import_readings, ReadingImportReport};
use gardien::storage::audit::Actor;
use gardien::storage::meters::{MeterInput, ReplacementInput};
use gardien::storage::residences::ResidenceInput;
use gardien::storage::units::UnitInput;
use gardien::storage::{Store, Tx};
use tempfile::TempDir;

/// M-Bus ids of the meters of the test residence.
const COLD: &str = "12345678";
/// Written `1234` in files: leading zeros may be missing.
const HOT: &str = "00001234";
/// Counts in MWh.
const HEAT: &str = "20000001";
/// Replaced on 15/01/2025 by `NEW`.
const OLD: &str = "30000001";
const NEW: &str = "30000002";

struct Site {
    _dir: TempDir,
    store: Store,
    residence: i64,
}

/// Meter ids by M-Bus id.
struct Meters {
    cold: i64,
    hot: i64,
    heat: i64,
    old: i64,
    new: i64,
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339 instant")
        .to_utc()
}

fn meter_input(kind: MeterKind, unit_id: i64, mbus_id: &str) -> MeterInput {
    let (medium, measure_unit, digits) = match kind {
        MeterKind::HotWater => (MEDIUM_WARM_WATER, MeasureUnit::M3, 5),
        MeterKind::Heating => (MEDIUM_HEAT, MeasureUnit::Mwh, 6),
        _ => (MEDIUM_COLD_WATER, MeasureUnit::M3, 5),
    };
    MeterInput {
        kind,
        unit_id: Some(unit_id),
        building_id: None,
        mbus_id: mbus_id.into(),
        manufacturer: "KAM".into(),
        version: 1,
        medium: i64::from(medium),
        measure_unit,
        digits,
        installed_on: date(2024, 1, 1),
        initial_index: 0.0,
        gateway_id: None,
        label: String::new(),
    }
    .validated()
    .expect("valid meter")
}

async fn add_meter(tx: &mut Tx, residence: i64, kind: MeterKind, unit: i64, mbus_id: &str) -> i64 {
    tx.insert_meter(
        &Actor::system("test"),
        residence,
        &meter_input(kind, unit, mbus_id),
    )
    .await
    .expect("meter")
    .id
}

impl Site {
    /// A residence with two lots: lot 12 has cold water, hot water and heating
    /// meters; lot 14 had meter `OLD`, replaced by `NEW` on 15/01/2025.
    async fn new() -> (Site, Meters) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("gardien.db");
        let store = Store::open(path.to_str().expect("UTF-8 path"))
            .await
            .expect("opening the database");
        let actor = Actor::system("test");
        let mut tx = store.write().await.expect("write transaction");
        let residence = tx
            .insert_residence(
                &actor,
                &ResidenceInput {
                    name: "Les Tilleuls".into(),
                    address: String::new(),
                }
                .validated()
                .expect("valid residence"),
            )
            .await
            .expect("residence")
            .id;
        let lot = |number: &str| {
            UnitInput {
                lot_number: number.into(),
                kind: UnitKind::Flat,
                building_id: None,
                floor: None,
                area_m2: None,
            }
            .validated()
            .expect("valid lot")
        };
        let lot_12 = tx
            .insert_unit(&actor, residence, &lot("12"))
            .await
            .expect("lot 12")
            .id;
        let lot_14 = tx
            .insert_unit(&actor, residence, &lot("14"))
            .await
            .expect("lot 14")
            .id;
        let cold = add_meter(&mut tx, residence, MeterKind::ColdWater, lot_12, COLD).await;
        let hot = add_meter(&mut tx, residence, MeterKind::HotWater, lot_12, HOT).await;
        let heat = add_meter(&mut tx, residence, MeterKind::Heating, lot_12, HEAT).await;
        let old = add_meter(&mut tx, residence, MeterKind::ColdWater, lot_14, OLD).await;
        let (new, _) = tx
            .replace_meter(
                &actor,
                residence,
                old,
                &ReplacementInput {
                    replaced_on: date(2025, 1, 15),
                    final_index: 50.0,
                    mbus_id: NEW.into(),
                    manufacturer: "KAM".into(),
                    version: 1,
                    medium: None,
                    digits: None,
                    initial_index: 0.0,
                    reason: "fuite".into(),
                },
            )
            .await
            .expect("replacement");
        // A meter of another residence, with an id a file of this one might mention.
        let other = tx
            .insert_residence(
                &actor,
                &ResidenceInput {
                    name: "Les Platanes".into(),
                    address: String::new(),
                }
                .validated()
                .expect("valid residence"),
            )
            .await
            .expect("other residence")
            .id;
        let other_lot = tx
            .insert_unit(&actor, other, &lot("1"))
            .await
            .expect("other lot")
            .id;
        tx.insert_meter(
            &actor,
            other,
            &meter_input(MeterKind::ColdWater, other_lot, "55555555"),
        )
        .await
        .expect("other meter");
        tx.commit().await.expect("commit");
        let site = Site {
            _dir: dir,
            store,
            residence,
        };
        let meters = Meters {
            cold,
            hot,
            heat,
            old,
            new: new.id,
        };
        (site, meters)
    }

    async fn import(&self, csv: impl AsRef<[u8]>, dry_run: bool) -> ReadingImportReport {
        self.try_import(csv, dry_run)
            .await
            .expect("the file is accepted")
    }

    async fn try_import(
        &self,
        csv: impl AsRef<[u8]>,
        dry_run: bool,
    ) -> Result<ReadingImportReport, Error> {
        // The API runs the import inside a handler: its future must be `Send`.
        fn send<F: std::future::Future + Send>(future: F) -> F {
            future
        }
        send(import_readings(
            &self.store,
            self.residence,
            csv.as_ref(),
            "releves.csv",
            dry_run,
            &|_| {},
        ))
        .await
    }

    /// The stored readings of a meter, oldest first.
    async fn readings(&self, meter_id: i64) -> Vec<(DateTime<Utc>, f64)> {
        let mut tx = self.store.read().await.expect("read transaction");
        tx.readings_between(&[meter_id], None, None)
            .await
            .expect("readings")
            .into_iter()
            .map(|reading| (reading.read_at, reading.value))
            .collect()
    }

    async fn reading_count(&self, meters: &Meters) -> usize {
        let mut tx = self.store.read().await.expect("read transaction");
        tx.readings_between(
            &[meters.cold, meters.hot, meters.heat, meters.old, meters.new],
            None,
            None,
        )
        .await
        .expect("readings")
        .len()
    }
}

fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{actual} instead of {expected}"
    );
}

/// The reasons given for the refused lines, by line number.
fn reasons(report: &ReadingImportReport) -> Vec<(u64, &str)> {
    report
        .rejected
        .iter()
        .map(|rejected| (rejected.line, rejected.reason.as_str()))
        .collect()
}

#[tokio::test]
async fn semicolons_decimal_commas_and_french_dates() {
    let (site, meters) = Site::new().await;
    let report = site
        .import(
            "Compteur;Date;Index\n\
             12345678;01/03/2025;123,456\n\
             1234;2/3/2025;12\u{a0}345,5\n\
             \n\
             0001234;03/03/2025;12 346\n",
            false,
        )
        .await;
    assert_eq!(report.lines, 3, "{report:?}");
    assert_eq!(report.stored, 3);
    assert_eq!(report.rejected_total, 0, "{report:?}");
    assert!(!report.dry_run);
    let cold = site.readings(meters.cold).await;
    // Midnight in Paris, winter time.
    assert_eq!(cold.len(), 1);
    assert_eq!(cold[0].0, utc("2025-02-28T23:00:00Z"));
    assert_close(cold[0].1, 123.456);
    let hot = site.readings(meters.hot).await;
    assert_eq!(
        hot.iter().map(|r| r.0).collect::<Vec<_>>(),
        [utc("2025-03-01T23:00:00Z"), utc("2025-03-02T23:00:00Z")]
    );
    assert_close(hot[0].1, 12_345.5);
    assert_close(hot[1].1, 12_346.0);
}

#[tokio::test]
async fn commas_quoted_decimals_and_iso_instants() {
    let (site, meters) = Site::new().await;
    let report = site
        .import(
            "meter_id,read_at,value\n\
             12345678,2025-03-01T08:00:00+01:00,\"12,5\"\n\
             12345678,2025-07-01T08:00:00Z,13.25\n\
             12345678,2025-07-02T08:00:00,\"14\"\n\
             12345678,2025-07-03 08:00,15\n\
             12345678,2025-07-04T08:00:00,15,5\n",
            false,
        )
        .await;
    assert_eq!(report.stored, 4, "{report:?}");
    let rejected = reasons(&report);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].0, 6);
    assert!(
        rejected[0].1.contains("4 cellules au lieu de 3"),
        "{rejected:?}"
    );
    assert!(rejected[0].1.contains("entre guillemets"), "{rejected:?}");
    let cold = site.readings(meters.cold).await;
    let expected = [
        ("2025-03-01T07:00:00Z", 12.5),
        ("2025-07-01T08:00:00Z", 13.25),
        // Paris summer time, UTC+2.
        ("2025-07-02T06:00:00Z", 14.0),
        ("2025-07-03T06:00:00Z", 15.0),
    ];
    assert_eq!(cold.len(), expected.len());
    for ((at, value), (expected_at, expected_value)) in cold.iter().zip(expected) {
        assert_eq!(*at, utc(expected_at));
        assert_close(*value, expected_value);
    }
}

#[tokio::test]
async fn byte_order_mark_accented_headers_and_units() {
    let (site, meters) = Site::new().await;
    let report = site
        .import(
            "\u{feff}N° Compteur ; Date de Relève ; Valeur ; Unité\r\n\
             20000001;01/03/2025;1 234 567,5;kWh\r\n\
             20000001;02/03/2025;1235,1;MWh\r\n\
             20000001;03/03/2025;1236;\r\n\
             12345678;01/03/2025;10;m³\r\n\
             12345678;02/03/2025;11;M3\r\n\
             12345678;03/03/2025;12;kWh\r\n\
             12345678;04/03/2025;13;litres\r\n\
             20000001;04/03/2025;2000000000;kWh\r\n",
            false,
        )
        .await;
    assert_eq!(report.lines, 8);
    assert_eq!(report.stored, 5, "{report:?}");
    let rejected = reasons(&report);
    assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [7, 8, 9]);
    assert!(rejected[0].1.starts_with("unité :"), "{rejected:?}");
    assert!(
        rejected[0].1.contains("kWh ne se convertit pas en m³"),
        "{rejected:?}"
    );
    assert!(
        rejected[1].1.contains("« litres » inconnue"),
        "{rejected:?}"
    );
    assert!(
        rejected[1].1.contains("m3 (m³), kWh, MWh, HCA"),
        "{rejected:?}"
    );
    // 2 000 000 MWh does not fit on 6 digits.
    assert!(rejected[2].1.starts_with("index :"), "{rejected:?}");
    assert!(
        rejected[2].1.contains("moins de 1000000 MWh"),
        "{rejected:?}"
    );
    let heat = site.readings(meters.heat).await;
    assert_eq!(heat.len(), 3);
    assert_close(heat[0].1, 1234.5675);
    assert_close(heat[1].1, 1235.1);
    assert_close(heat[2].1, 1236.0);
    assert_eq!(site.readings(meters.cold).await.len(), 2);
}

#[tokio::test]
async fn every_bad_line_is_reported_and_good_lines_go_in() {
    let (site, meters) = Site::new().await;
    let future = (Utc::now() + TimeDelta::days(3))
        .format("%d/%m/%Y")
        .to_string();
    let tomorrow = (Utc::now() + TimeDelta::hours(12))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let file = format!(
        "compteur;date;index\n\
         12345678;01/03/2025;1\n\
         99999999;01/03/2025;1\n\
         12A45678;01/03/2025;1\n\
         ;01/03/2025;1\n\
         55555555;01/03/2025;1\n\
         12345678;32/01/2025;1\n\
         12345678;01/03/25;1\n\
         12345678;;1\n\
         12345678;2025-03-30T02:30:00;1\n\
         12345678;02/03/2025;douze\n\
         12345678;03/03/2025;-1\n\
         12345678;04/03/2025;100000\n\
         12345678;05/03/2025;inf\n\
         12345678;06/03/2025;NaN\n\
         12345678;07/03/2025;\n\
         12345678;31/12/2023;1\n\
         30000001;16/01/2025;1\n\
         30000002;14/01/2025;1\n\
         12345678;{future};1\n\
         12345678;01/03/2025\n\
         12345678;08/03/2025;1;2\n\
         12345678;2025-10-26T02:30:00;2\n\
         1234;{tomorrow};99999,999\n"
    );
    let report = site.import(file, false).await;
    assert_eq!(report.lines, 23);
    assert_eq!(report.stored, 3, "{report:#?}");
    assert_eq!(report.rejected_total, 20);
    let expected: [(u64, &[&str]); 20] = [
        (
            3,
            &["compteur :", "« 99999999 » inconnu dans cette résidence"],
        ),
        (4, &["compteur :", "12A45678", "8 chiffres"]),
        (5, &["compteur : manquant", "8 chiffres"]),
        // Another residence's meter is unknown here.
        (6, &["« 55555555 » inconnu"]),
        (
            7,
            &[
                "date :",
                "« 32/01/2025 » illisible",
                "JJ/MM/AAAA",
                "AAAA-MM-JJ",
            ],
        ),
        (8, &["date :", "« 01/03/25 » illisible", "formes acceptées"]),
        (9, &["date : manquante", "formes acceptées"]),
        (10, &["date :", "n'existe pas à Paris", "+01:00"]),
        (
            11,
            &["index :", "« douze » n'est pas un nombre", "12345,678"],
        ),
        (
            12,
            &["index :", "« -1 » est négatif", "de 0 à moins de 100000"],
        ),
        (
            13,
            &[
                "index :",
                "« 100000 » trop grand",
                "moins de 100000 m³",
                "5 chiffres",
            ],
        ),
        (14, &["index :", "« inf » n'est pas un nombre fini"]),
        (15, &["index :", "« NaN » n'est pas un nombre fini"]),
        (16, &["index : manquant"]),
        (
            17,
            &["date :", "avant la pose du compteur 12345678 le 01/01/2024"],
        ),
        (
            18,
            &[
                "date :",
                "après la dépose du compteur 30000001 le 15/01/2025",
            ],
        ),
        (
            19,
            &["date :", "avant la pose du compteur 30000002 le 15/01/2025"],
        ),
        (20, &["date :", "dans le futur"]),
        (21, &["ligne :", "2 cellules au lieu de 3", "« ; »"]),
        (22, &["ligne :", "4 cellules au lieu de 3"]),
    ];
    let rejected = reasons(&report);
    assert_eq!(
        rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
        expected.iter().map(|e| e.0).collect::<Vec<_>>(),
        "{rejected:#?}"
    );
    for ((line, reason), (_, parts)) in rejected.iter().zip(expected) {
        for part in parts {
            assert!(
                reason.contains(part),
                "line {line}: {reason:?} lacks {part:?}"
            );
        }
    }
    // The good lines: line 2, an ambiguous autumn time (the earlier one, UTC+2), and a
    // reading less than a day ahead (clocks differ).
    let cold = site.readings(meters.cold).await;
    assert_eq!(
        cold.iter().map(|r| r.0).collect::<Vec<_>>(),
        [utc("2025-02-28T23:00:00Z"), utc("2025-10-26T00:30:00Z")]
    );
    assert_eq!(site.readings(meters.hot).await.len(), 1);
}

#[tokio::test]
async fn a_missing_column_refuses_the_file() {
    let (site, meters) = Site::new().await;
    let Err(Error::Invalid { field, message }) = site
        .try_import("Compteur;Valeur\n12345678;12\n", false)
        .await
    else {
        panic!("a file without dates is refused");
    };
    assert_eq!(field, "en-tête");
    assert!(message.contains("« date »"), "{message}");
    assert!(message.contains("date_releve"), "{message}");
    assert!(message.contains("Compteur;Valeur"), "{message}");
    assert!(!message.contains("« index »"), "{message}");
    let Err(Error::Invalid { message, .. }) = site.try_import("", false).await else {
        panic!("an empty file is refused");
    };
    assert!(message.contains("vide"), "{message}");
    assert_eq!(site.reading_count(&meters).await, 0);
}

#[tokio::test]
async fn importing_again_stores_nothing_twice() {
    let (site, meters) = Site::new().await;
    let file = "compteur;date;index\n\
                12345678;01/03/2025;10\n\
                12345678;02/03/2025;11,5\n\
                1234;01/03/2025;3\n\
                12345678;01/03/2025;10,0\n";
    let first = site.import(file, false).await;
    assert_eq!((first.stored, first.duplicates, first.conflicts), (3, 1, 0));
    let second = site.import(file, false).await;
    assert_eq!(
        (second.stored, second.duplicates, second.conflicts),
        (0, 4, 0)
    );
    assert_eq!(second.lines, 4);
    assert_eq!(site.reading_count(&meters).await, 3);
}

#[tokio::test]
async fn a_conflicting_value_is_reported_and_the_stored_one_stays() {
    let (site, meters) = Site::new().await;
    site.import("compteur;date;index\n12345678;01/03/2025;10\n", false)
        .await;
    let report = site
        .import(
            "compteur;date;index\n\
             12345678;02/03/2025;11\n\
             12345678;01/03/2025;10,5\n\
             12345678;02/03/2025;11,2\n\
             12345678;01/03/2025;10\n",
            false,
        )
        .await;
    assert_eq!(report.stored, 1, "{report:?}");
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.conflicts, 2);
    assert_eq!(report.conflict_lines, [3, 4]);
    assert_eq!(report.rejected_total, 0);
    let cold = site.readings(meters.cold).await;
    assert_eq!(cold.len(), 2);
    assert_close(cold[0].1, 10.0);
    assert_close(cold[1].1, 11.0);
    let mut tx = site.store.read().await.expect("read transaction");
    let conflicts = tx
        .reading_conflicts(site.residence, Some(meters.cold))
        .await
        .expect("conflicts");
    let mut offered: Vec<(f64, f64, String)> = conflicts
        .into_iter()
        .map(|c| (c.stored_value, c.offered_value, c.source_ref))
        .collect();
    offered.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(
        offered,
        [
            (10.0, 10.5, "releves.csv:3".to_owned()),
            (11.0, 11.2, "releves.csv:4".to_owned())
        ]
    );
}

#[tokio::test]
async fn readings_of_a_replaced_meter_go_to_the_right_meter() {
    let (site, meters) = Site::new().await;
    let report = site
        .import(
            "compteur;date;index\n\
             30000001;10/01/2025;45\n\
             30000001;2025-01-15T10:00:00;50\n\
             30000002;15/01/2025;0\n\
             30000002;01/02/2025;4,5\n\
             30000001;01/02/2025;52\n",
            false,
        )
        .await;
    assert_eq!(report.stored, 4, "{report:?}");
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].line, 6);
    let old = site.readings(meters.old).await;
    let new = site.readings(meters.new).await;
    assert_eq!(old.iter().map(|r| r.1).collect::<Vec<_>>(), [45.0, 50.0]);
    assert_eq!(new.iter().map(|r| r.1).collect::<Vec<_>>(), [0.0, 4.5]);
    assert_eq!(old[1].0, utc("2025-01-15T09:00:00Z"));
}

#[tokio::test]
async fn a_dry_run_reports_the_same_and_writes_nothing() {
    let (site, meters) = Site::new().await;
    site.import("compteur;date;index\n12345678;01/03/2025;10\n", false)
        .await;
    let file = "compteur;date;index\n\
                12345678;01/03/2025;10\n\
                12345678;01/03/2025;9\n\
                12345678;02/03/2025;11\n\
                12345678;02/03/2025;11\n\
                99999999;02/03/2025;11\n";
    let dry = site.import(file, true).await;
    assert!(dry.dry_run);
    assert_eq!(
        (
            dry.stored,
            dry.duplicates,
            dry.conflicts,
            dry.rejected_total
        ),
        (1, 2, 1, 1)
    );
    assert_eq!(site.readings(meters.cold).await.len(), 1);
    let mut tx = site.store.read().await.expect("read transaction");
    assert!(tx
        .reading_conflicts(site.residence, None)
        .await
        .expect("conflicts")
        .is_empty());
    drop(tx);
    let real = site.import(file, false).await;
    assert!(!real.dry_run);
    assert_eq!(
        serde_json::to_value(&ReadingImportReport {
            dry_run: false,
            ..dry
        })
        .expect("report as JSON"),
        serde_json::to_value(&real).expect("report as JSON")
    );
    assert_eq!(site.readings(meters.cold).await.len(), 2);
}

#[tokio::test]
async fn a_large_file_with_many_bad_lines() {
    let (site, meters) = Site::new().await;
    const LINES: u64 = 20_000;
    let mut file = String::from("compteur;date;index\n");
    let ids = [COLD, HOT, HEAT, NEW];
    let first = date(2025, 1, 15);
    let mut bad = 0;
    for n in 0..LINES {
        let day = first + TimeDelta::days((n / 4 % 300) as i64);
        // From 04:00, clear of the spring clock change.
        let hour = 4 + n / 1200;
        if n % 13 == 5 {
            // Unknown meters: more than the 1000 refusals reported in full.
            file.push_str(&format!(
                "9{n:07};{}T{hour:02}:00:00;1\n",
                day.format("%Y-%m-%d")
            ));
            bad += 1;
        } else {
            let id = ids[(n % 4) as usize];
            file.push_str(&format!(
                "{id};{}T{hour:02}:00:00;{},{:03}\n",
                day.format("%Y-%m-%d"),
                n / 10,
                n % 1000
            ));
        }
    }
    let calls = Mutex::new(Vec::new());
    let last = AtomicU64::new(0);
    let report = import_readings(
        &site.store,
        site.residence,
        file.as_bytes(),
        "gros.csv",
        false,
        &|done| {
            last.store(done, Ordering::Relaxed);
            calls.lock().expect("progress calls").push(done);
        },
    )
    .await
    .expect("import");
    assert_eq!(report.lines, LINES);
    assert_eq!(report.rejected_total, bad);
    assert!(bad > 1000);
    assert_eq!(report.rejected.len(), 1000);
    assert_eq!(report.rejected[0].line, 7);
    assert_eq!(
        report.stored + report.duplicates + report.conflicts,
        LINES - bad
    );
    assert_eq!(report.conflicts, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(site.reading_count(&meters).await as u64, report.stored);
    let calls = calls.into_inner().expect("progress calls");
    assert_eq!(calls.len(), 21, "{calls:?}");
    assert!(calls.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(last.load(Ordering::Relaxed), LINES);
}
