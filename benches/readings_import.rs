//! Benchmark of the import of a meter-reading provider's CSV file
//! (`gardien::import::readings::import_readings`). It measures and prints; it asserts
//! nothing about time. Run with `cargo bench --bench readings_import` (release build).
//!
//! The file: `READINGS_IMPORT_LINES` data lines (default 500,000: 5,000 meters × 100
//! days; `READINGS_IMPORT_LINES=1000000` for 10,000 meters), one line per meter and day
//! in date order, `;` separated, decimal comma, `dd/mm/yyyy` dates, a unit column, and
//! 12 bad lines spread through it.
//! `cargo test --all-targets` builds this file and runs it without `--bench`: it then
//! only says so and returns.
//!
//! Why 500,000 and one run by default: on a 2-core VM the import stores about 5,000
//! lines per second, so 1,000,000 lines took 3 min to import, 5 min to re-import and
//! 3 min for the raw insert, over 11 min in all; half the file keeps the whole run
//! near 6 min. Throughput does not depend on the size (the cost is per statement).
//!
//! Each measurement runs in a child process (this binary again, told what to do by the
//! `READINGS_IMPORT_CHILD` variable) so that its peak resident memory (VmHWM in
//! `/proc/self/status`) is its own:
//! - baseline: opens the store (a copy of the prepared database) and does nothing else;
//! - import: opens the store and imports the file, on a fresh copy each run
//!   (`READINGS_IMPORT_RUNS`, default 1);
//! - re-import: the same file again into the database the first import filled (every
//!   line a duplicate), once;
//! - raw insert: the same rows (meter ids, instants, values, source refs) inserted
//!   through sqlx in one transaction with the statement `store_reading` uses, one
//!   statement per row, no CSV, no parsing, no checks: what the import's own work
//!   costs on top of sqlx and SQLite (each run, on a fresh copy);
//! - raw batched insert: the same rows, 100 per INSERT statement: what SQLite itself
//!   costs once the per-statement round trip is mostly gone (each run).

mod common;

use common::{load_average, median_min_max};
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use gardien::domain::meter::{MeasureUnit, MeterKind};
use gardien::domain::UnitKind;
use gardien::storage::audit::Actor;
use gardien::storage::meters::MeterInput;
use gardien::storage::readings::ReadingSource;
use gardien::storage::residences::ResidenceInput;
use gardien::storage::units::UnitInput;
use gardien::storage::Store;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::QueryBuilder;

const LINES: u64 = 500_000;
const RUNS: usize = 1;
/// Rows per statement in the batched raw insert (7 values each).
const BATCH: usize = 100;
const METERS: u64 = 10_000;
const DAYS: u64 = 100;
/// First M-Bus id; meter i is FIRST_ID + i.
const FIRST_ID: u64 = 20_000_001;
const CSV_NAME: &str = "releves-fournisseur.csv";
const CHILD: &str = "READINGS_IMPORT_CHILD";

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs benches without it.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("readings_import: a benchmark; run it with `cargo bench --bench readings_import`");
        return;
    }
    let started = Instant::now();
    parent();
    println!(
        "Total benchmark time: {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.replace('_', "").parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------
// The file: one line per meter and day, plus a few bad lines
// ---------------------------------------------------------------------------------

/// The shape of the file for a number of data lines.
#[derive(Debug, Clone, Copy)]
struct Shape {
    lines: u64,
    meters: u64,
    /// Good lines: the first `good` (day, meter) pairs in date order.
    good: u64,
    /// The first day of readings (local dates, Paris).
    first_day: NaiveDate,
}

/// Lines that the import must refuse, one of each kind; `{id}` is a known meter.
const BAD_LINES: [&str; 12] = [
    "99999999;{day};123,456;m3",    // unknown meter
    "12AB5678;{day};123,456;m3",    // not an M-Bus id
    "{id};31/02/{year};123,456;m3", // no such date
    "{id};2026/13/45;123,456;m3",   // unreadable date
    "{id};{before};123,456;m3",     // before the meter's installation
    "{id};{future};123,456;m3",     // in the future
    "{id};{day};douze;m3",          // not a number
    "{id};{day};-3,5;m3",           // negative
    "{id};{day};;m3",               // missing index
    "{id};{day};123456,789;m3",     // too big for a 5-digit water meter
    "{id};{day};123,456;litres",    // unknown unit
    "{id};{day};123,456;kWh",       // kWh on a m³ meter
];

impl Shape {
    fn new(lines: u64) -> Shape {
        let bad = BAD_LINES.len() as u64;
        let lines = lines.max(bad + 1);
        let good = lines - bad;
        let meters = METERS.min(good.div_ceil(DAYS)).max(1);
        let days = good.div_ceil(meters);
        let today = Utc::now()
            .with_timezone(&chrono_tz::Europe::Paris)
            .date_naive();
        Shape {
            lines,
            meters,
            good,
            first_day: today - chrono::Days::new(days + 1),
        }
    }

    fn days(&self) -> u64 {
        self.good.div_ceil(self.meters)
    }

    fn installed_on(&self) -> NaiveDate {
        self.first_day - chrono::Days::new(1)
    }

    /// Where the bad lines go: spread evenly among the good ones.
    fn bad_after(&self, k: u64) -> u64 {
        (k + 1) * self.good / (BAD_LINES.len() as u64 + 1)
    }

    fn mbus_id(meter: u64) -> u64 {
        FIRST_ID + meter
    }

    /// Meter i: cold water (m³), hot water (m³), heating (kWh), in turn.
    fn is_heat(meter: u64) -> bool {
        meter % 3 == 2
    }

    /// The index of `meter` on `day`, in thousandths of its unit.
    fn milli(meter: u64, day: u64) -> u64 {
        let spread = (meter * 7919) % 1000;
        if Shape::is_heat(meter) {
            (5_000 + spread * 40) * 1000 + day * (20_000 + spread * 30)
        } else {
            (50 + spread / 2) * 1000 + day * (100 + spread / 4)
        }
    }

    fn date(&self, day: u64) -> NaiveDate {
        self.first_day + chrono::Days::new(day)
    }

    /// The data lines in file order.
    fn lines(&self) -> Lines {
        Lines {
            shape: *self,
            index: 0,
            next_bad: 0,
        }
    }

    /// Writes the CSV; answers its size in bytes.
    fn write_csv(&self, path: &Path) -> u64 {
        let file = std::fs::File::create(path).expect("create the CSV file");
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all("N° compteur;Date de relève;Index;Unité\n".as_bytes())
            .expect("write");
        let mut line = String::with_capacity(64);
        let days = self.days();
        let fmt = |date: NaiveDate| date.format("%d/%m/%Y").to_string();
        let dates: Vec<String> = (0..days).map(|d| fmt(self.date(d))).collect();
        for data in self.lines() {
            line.clear();
            match data {
                Line::Good { meter, day } => {
                    let milli = Shape::milli(meter, day);
                    let _ = writeln!(
                        line,
                        "{};{};{},{:03};{}",
                        Shape::mbus_id(meter),
                        dates[day as usize],
                        milli / 1000,
                        milli % 1000,
                        if Shape::is_heat(meter) { "kWh" } else { "m3" }
                    );
                }
                Line::Bad(k) => {
                    let text = BAD_LINES[k]
                        .replace("{id}", &Shape::mbus_id(0).to_string())
                        .replace("{day}", &dates[0])
                        .replace("{year}", &self.first_day.format("%Y").to_string())
                        .replace(
                            "{before}",
                            &fmt(self.installed_on() - chrono::Days::new(10)),
                        )
                        .replace(
                            "{future}",
                            &fmt(Utc::now().date_naive() + chrono::Days::new(30)),
                        );
                    let _ = writeln!(line, "{text}");
                }
            }
            out.write_all(line.as_bytes()).expect("write the CSV file");
        }
        out.flush().expect("flush the CSV file");
        std::fs::metadata(path).map(|m| m.len()).unwrap_or_default()
    }
}

/// One data line of the file.
#[derive(Debug, Clone, Copy)]
enum Line {
    Good {
        meter: u64,
        day: u64,
    },
    /// The k-th of `BAD_LINES`.
    Bad(usize),
}

struct Lines {
    shape: Shape,
    index: u64,
    next_bad: usize,
}

impl Iterator for Lines {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        let shape = &self.shape;
        let bad_due = self.next_bad < BAD_LINES.len()
            && (self.index >= shape.good || shape.bad_after(self.next_bad as u64) == self.index);
        if bad_due {
            self.next_bad += 1;
            return Some(Line::Bad(self.next_bad - 1));
        }
        if self.index >= shape.good {
            return None;
        }
        let index = self.index;
        self.index += 1;
        Some(Line::Good {
            meter: index % shape.meters,
            day: index / shape.meters,
        })
    }
}

fn paris_midnight(date: NaiveDate) -> DateTime<Utc> {
    chrono_tz::Europe::Paris
        .from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .expect("midnight exists in Paris")
        .with_timezone(&Utc)
}

// ---------------------------------------------------------------------------------
// The prepared database: one residence, its flats and meters, no readings
// ---------------------------------------------------------------------------------

async fn prepare_database(path: &Path, shape: &Shape) -> i64 {
    let store = Store::open(&path.display().to_string())
        .await
        .expect("open the database");
    let actor = Actor::system("bench");
    let mut tx = store.write().await.expect("write");
    let residence = ResidenceInput {
        name: "Résidence du fichier fournisseur".into(),
        address: "2 rue du Banc d'Essai".into(),
    }
    .validated()
    .expect("valid residence");
    let rid = tx
        .insert_residence(&actor, &residence)
        .await
        .expect("residence")
        .id;
    let mut unit = 0;
    for meter in 0..shape.meters {
        if meter % 3 == 0 {
            let input = UnitInput {
                lot_number: format!("L{:05}", meter / 3 + 1),
                kind: UnitKind::Flat,
                building_id: None,
                floor: None,
                area_m2: None,
            }
            .validated()
            .expect("valid unit");
            unit = tx.insert_unit(&actor, rid, &input).await.expect("unit").id;
        }
        let (kind, medium, measure_unit, digits) = match meter % 3 {
            0 => (MeterKind::ColdWater, 0x16, MeasureUnit::M3, 5),
            1 => (MeterKind::HotWater, 0x06, MeasureUnit::M3, 5),
            _ => (MeterKind::Heating, 0x04, MeasureUnit::Kwh, 8),
        };
        let input = MeterInput {
            kind,
            unit_id: Some(unit),
            building_id: None,
            mbus_id: Shape::mbus_id(meter).to_string(),
            manufacturer: "KAM".into(),
            version: 1,
            medium,
            measure_unit,
            digits,
            installed_on: shape.installed_on(),
            initial_index: 0.0,
            gateway_id: None,
            label: String::new(),
        }
        .validated()
        .expect("valid meter");
        tx.insert_meter(&actor, rid, &input).await.expect("meter");
    }
    tx.commit().await.expect("commit");
    store.close().await;
    rid
}

/// A fresh copy of the prepared database (the WAL too, if one was left).
fn fresh_copy(template: &Path, target: &Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(target, suffix));
    }
    std::fs::copy(template, target).expect("copy the database");
    let wal = with_suffix(template, "-wal");
    if wal.exists() {
        std::fs::copy(&wal, with_suffix(target, "-wal")).expect("copy the WAL");
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------

/// What a child reports, as `key=value` words on one `RESULT` line.
#[derive(Debug, Default, Clone)]
struct Outcome {
    seconds: f64,
    lines: u64,
    stored: u64,
    duplicates: u64,
    conflicts: u64,
    rejected: u64,
    hwm_kib: u64,
}

impl Outcome {
    fn line(&self) -> String {
        format!(
            "RESULT seconds={} lines={} stored={} duplicates={} conflicts={} rejected={} hwm_kib={}",
            self.seconds,
            self.lines,
            self.stored,
            self.duplicates,
            self.conflicts,
            self.rejected,
            self.hwm_kib
        )
    }

    fn parse(text: &str) -> Option<Outcome> {
        let line = text.lines().find(|l| l.starts_with("RESULT "))?;
        let mut outcome = Outcome::default();
        for word in line.split_whitespace().skip(1) {
            let (key, value) = word.split_once('=')?;
            match key {
                "seconds" => outcome.seconds = value.parse().ok()?,
                "lines" => outcome.lines = value.parse().ok()?,
                "stored" => outcome.stored = value.parse().ok()?,
                "duplicates" => outcome.duplicates = value.parse().ok()?,
                "conflicts" => outcome.conflicts = value.parse().ok()?,
                "rejected" => outcome.rejected = value.parse().ok()?,
                "hwm_kib" => outcome.hwm_kib = value.parse().ok()?,
                _ => {}
            }
        }
        Some(outcome)
    }

    fn rate(&self) -> f64 {
        self.lines as f64 / self.seconds.max(1e-9)
    }
}

/// Peak resident set size of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

fn child_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set for the child"))
}

fn child(mode: &str) {
    let db = PathBuf::from(child_env("READINGS_IMPORT_DB"));
    let rid: i64 = child_env("READINGS_IMPORT_RESIDENCE")
        .parse()
        .expect("residence id");
    let mut outcome = runtime().block_on(async {
        match mode {
            "baseline" => {
                let store = Store::open(&db.display().to_string()).await.expect("open");
                store
                    .read()
                    .await
                    .expect("read")
                    .residence(rid)
                    .await
                    .expect("residence");
                store.close().await;
                Outcome::default()
            }
            "import" => {
                let csv = PathBuf::from(child_env("READINGS_IMPORT_CSV"));
                let store = Store::open(&db.display().to_string()).await.expect("open");
                let start = Instant::now();
                let file = std::fs::File::open(&csv).expect("open the CSV file");
                let report = gardien::import::readings::import_readings(
                    &store,
                    rid,
                    std::io::BufReader::new(file),
                    CSV_NAME,
                    false,
                    &|_| {},
                )
                .await
                .expect("the import runs");
                let seconds = start.elapsed().as_secs_f64();
                store.close().await;
                Outcome {
                    seconds,
                    lines: report.lines,
                    stored: report.stored,
                    duplicates: report.duplicates,
                    conflicts: report.conflicts,
                    rejected: report.rejected_total,
                    hwm_kib: 0,
                }
            }
            "raw" | "raw-batch" => {
                let lines: u64 = child_env("READINGS_IMPORT_LINES").parse().expect("lines");
                let batch = if mode == "raw" { 1 } else { BATCH };
                raw_insert(&db, rid, &Shape::new(lines), batch).await
            }
            other => panic!("unknown child mode {other}"),
        }
    });
    outcome.hwm_kib = vm_hwm_kib();
    println!("{}", outcome.line());
}

/// The good lines' rows, inserted with `store_reading`'s statement in one transaction,
/// `batch` rows per statement.
async fn raw_insert(db: &Path, rid: i64, shape: &Shape, batch: usize) -> Outcome {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .expect("database url")
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open the database");
    let ids: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, mbus_id FROM meters WHERE residence_id = $1")
            .bind(rid)
            .fetch_all(&pool)
            .await
            .expect("meters");
    let by_mbus: std::collections::HashMap<String, i64> =
        ids.into_iter().map(|(id, mbus)| (mbus, id)).collect();
    let meter_ids: Vec<i64> = (0..shape.meters)
        .map(|m| by_mbus[&format!("{:08}", Shape::mbus_id(m))])
        .collect();
    let instants: Vec<DateTime<Utc>> = (0..shape.days())
        .map(|d| paris_midnight(shape.date(d)))
        .collect();
    // The file's line numbers (header = 1, bad lines counted), for the same source refs.
    let mut rows = (2u64..)
        .zip(shape.lines())
        .filter_map(|(line, data)| match data {
            Line::Good { meter, day } => Some((
                meter_ids[meter as usize],
                instants[day as usize],
                Shape::milli(meter, day) as f64 / 1000.0,
                format!("{CSV_NAME}:{line}"),
            )),
            Line::Bad(_) => None,
        });

    let start = Instant::now();
    let mut tx = pool.begin().await.expect("begin");
    let mut stored = 0;
    let mut chunk = Vec::with_capacity(batch);
    loop {
        chunk.clear();
        chunk.extend(rows.by_ref().take(batch));
        if chunk.is_empty() {
            break;
        }
        let mut sql = QueryBuilder::<Sqlite>::new(
            "INSERT INTO meter_readings (meter_id, read_at, residence_id, value, source, source_ref, received_at) ",
        );
        let now = Utc::now();
        sql.push_values(
            chunk.drain(..),
            |mut values, (meter, at, value, source_ref)| {
                values
                    .push_bind(meter)
                    .push_bind(at)
                    .push_bind(rid)
                    .push_bind(value)
                    .push_bind(ReadingSource::File)
                    .push_bind(source_ref)
                    .push_bind(now);
            },
        );
        sql.push(" ON CONFLICT (meter_id, read_at) DO NOTHING");
        let done = sql.build().execute(&mut *tx).await.expect("insert");
        stored += done.rows_affected();
    }
    tx.commit().await.expect("commit");
    let seconds = start.elapsed().as_secs_f64();
    pool.close().await;
    Outcome {
        seconds,
        lines: shape.good,
        stored,
        ..Outcome::default()
    }
}

/// Runs this binary as a child in `mode`; answers what it reported.
fn spawn(mode: &str, db: &Path, csv: &Path, rid: i64, shape: &Shape) -> Outcome {
    let exe = std::env::current_exe().expect("this benchmark's path");
    let output = Command::new(exe)
        .env(CHILD, mode)
        .env("READINGS_IMPORT_DB", db)
        .env("READINGS_IMPORT_CSV", csv)
        .env("READINGS_IMPORT_RESIDENCE", rid.to_string())
        .env("READINGS_IMPORT_LINES", shape.lines.to_string())
        .output()
        .expect("start a child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    match Outcome::parse(&stdout) {
        Some(outcome) if output.status.success() => outcome,
        _ => panic!(
            "child {mode} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

// ---------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------

fn machine() {
    let m = common::machine();
    println!("gardien readings import benchmark (cargo bench --bench readings_import)");
    println!(
        "Machine: {}, {} cores in /proc/cpuinfo, {} available, load {}",
        m.model,
        m.logical,
        m.available,
        load_average()
    );
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Median (the lower middle for an even count).
fn median(values: &[f64]) -> f64 {
    median_min_max(values).0
}

fn row(label: &str, outcomes: &[Outcome], baseline_kib: u64) {
    let rates: Vec<f64> = outcomes.iter().map(Outcome::rate).collect();
    let seconds: Vec<f64> = outcomes.iter().map(|o| o.seconds).collect();
    let hwm = outcomes.iter().map(|o| o.hwm_kib).max().unwrap_or_default();
    println!(
        "  {label:<34} {:>4} {:>9.2} s {:>8.2} s {:>8.2} s {:>9.0} {:>10} {:>12}",
        outcomes.len(),
        median(&seconds),
        seconds.iter().copied().fold(f64::INFINITY, f64::min),
        seconds.iter().copied().fold(0.0, f64::max),
        median(&rates),
        mib(hwm),
        format!("+{}", mib(hwm.saturating_sub(baseline_kib)))
    );
}

fn parent() {
    machine();
    let shape = Shape::new(env_number("READINGS_IMPORT_LINES", LINES));
    let runs = env_number("READINGS_IMPORT_RUNS", RUNS as u64) as usize;
    let dir = tempfile::tempdir().expect("temporary directory");
    let csv = dir.path().join(CSV_NAME);
    let template = dir.path().join("prepared.db");

    let start = Instant::now();
    let bytes = shape.write_csv(&csv);
    let generated = start.elapsed();
    let start = Instant::now();
    let rid = runtime().block_on(prepare_database(&template, &shape));
    let prepared = start.elapsed();
    println!(
        "File: {} data lines + header, {:.1} MiB, written in {:.1} s: {} meters × {} days (date order), {} good lines",
        shape.lines,
        bytes as f64 / (1024.0 * 1024.0),
        generated.as_secs_f64(),
        shape.meters,
        shape.days(),
        shape.good
    );
    println!(
        "  + {} bad lines (meter, date, index, unit); `;`, decimal comma, dd/mm/yyyy, unit column",
        BAD_LINES.len()
    );
    println!(
        "Database: SQLite file (WAL), 1 residence, {} flats, {} meters (Store API) in {:.1} s, a fresh copy per measurement",
        shape.meters.div_ceil(3),
        shape.meters,
        prepared.as_secs_f64()
    );
    println!("Each measurement is a child process (this binary again); time = the call alone, store already open");

    let db = |name: &str| dir.path().join(name);
    let baseline = {
        fresh_copy(&template, &db("baseline.db"));
        spawn("baseline", &db("baseline.db"), &csv, rid, &shape)
    };
    let mut imports = Vec::new();
    let mut reimports = Vec::new();
    let mut raws = Vec::new();
    let mut batched = Vec::new();
    for run in 0..runs {
        let path = db(&format!("import-{run}.db"));
        fresh_copy(&template, &path);
        imports.push(spawn("import", &path, &csv, rid, &shape));
        if run == 0 {
            reimports.push(spawn("import", &path, &csv, rid, &shape));
        }
        let _ = std::fs::remove_file(&path);
        for (mode, results) in [("raw", &mut raws), ("raw-batch", &mut batched)] {
            let path = db(&format!("{mode}-{run}.db"));
            fresh_copy(&template, &path);
            results.push(spawn(mode, &path, &csv, rid, &shape));
            let _ = std::fs::remove_file(&path);
        }
    }

    println!("Results (rows/s = data lines / time, median; peak RSS = VmHWM of the child process)");
    println!(
        "  {:<34} {:>4} {:>11} {:>10} {:>10} {:>9} {:>10} {:>12}",
        "", "runs", "median", "min", "max", "rows/s", "peak RSS", "vs baseline"
    );
    println!(
        "  {:<34} {:>4} {:>11} {:>10} {:>10} {:>9} {:>10} {:>12}",
        "baseline child: open the store",
        1,
        "",
        "",
        "",
        "",
        mib(baseline.hwm_kib),
        ""
    );
    row("import, fresh database", &imports, baseline.hwm_kib);
    row(
        "re-import, same file (duplicates)",
        &reimports,
        baseline.hwm_kib,
    );
    row("raw sqlx, 1 row per INSERT", &raws, baseline.hwm_kib);
    row(
        &format!("raw sqlx, {BATCH} rows per INSERT"),
        &batched,
        baseline.hwm_kib,
    );

    let first = &imports[0];
    let again = &reimports[0];
    println!(
        "  import:    {} lines, {} stored, {} duplicates, {} conflicts, {} refused (expected {} stored, {} refused){}",
        first.lines,
        first.stored,
        first.duplicates,
        first.conflicts,
        first.rejected,
        shape.good,
        BAD_LINES.len(),
        if first.stored == shape.good && first.rejected == BAD_LINES.len() as u64 {
            ""
        } else {
            " — MISMATCH"
        }
    );
    println!(
        "  re-import: {} lines, {} stored, {} duplicates, {} conflicts, {} refused; {:.2}× the import's time",
        again.lines,
        again.stored,
        again.duplicates,
        again.conflicts,
        again.rejected,
        again.seconds / first.seconds.max(1e-9)
    );
    println!(
        "  raw:       {} rows inserted one per statement, {} in batches (the good lines, same values and refs)",
        raws.first().map_or(0, |r| r.stored),
        batched.first().map_or(0, |r| r.stored)
    );
    let seconds =
        |outcomes: &[Outcome]| median(&outcomes.iter().map(|o| o.seconds).collect::<Vec<_>>());
    let (import_s, raw_s, batch_s) = (seconds(&imports), seconds(&raws), seconds(&batched));
    println!(
        "  per line: import {:.1} µs = raw row insert {:.1} µs + {:.1} µs of parsing, checks and bookkeeping;",
        import_s * 1e6 / shape.lines as f64,
        raw_s * 1e6 / shape.good as f64,
        (import_s - raw_s) * 1e6 / shape.lines as f64,
    );
    println!(
        "  the same rows batched take {:.1} µs each: {:.0}% of the import's time is the per-statement round trip",
        batch_s * 1e6 / shape.good as f64,
        100.0 * (raw_s - batch_s) / import_s.max(1e-9)
    );
}
