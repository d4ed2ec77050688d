//! Black-box tests of `gardien import keys FILE.csv --residence ID [--dry-run]`: the real
//! binary against a real SQLite file in a temporary directory. The residence is created
//! with the CLI too; lots and access profiles, which the CLI does not create, are written
//! with the library, which also reads the results back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use gardien::domain::key_id::KeyKind;
use gardien::domain::key_status::KeyStatus;
use gardien::domain::roles::Visibility;
use gardien::domain::{LockKind, UnitKind};
use gardien::storage::audit::Actor;
use gardien::storage::keys::{Key, KeyFilter};
use gardien::storage::locks::LockInput;
use gardien::storage::people::PersonFilter;
use gardien::storage::profiles::ProfileInput;
use gardien::storage::units::UnitInput;
use gardien::storage::{Store, Tx};
use tempfile::TempDir;
use tokio::process::Command;

/// Exit code when some lines were refused and the rest imported.
const SOME_REFUSED: i32 = 3;
/// Keys by kind (`vigik_badge`, `remote`) and canonical identifier.
type KeyIds = BTreeSet<(&'static str, String)>;
/// Listings are paged; this is the largest page.
const PAGE: i64 = 500;

/// A temporary directory holding the database and the CSV files; the binary runs in it
/// so that no stray `gardien.toml` is read.
struct Site {
    dir: TempDir,
}

/// What a run of the binary gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// What the test writes with the library before importing.
struct Seeded {
    residence: i64,
    lot_12: i64,
    lot_p04: i64,
    resident_profile: i64,
    parking_profile: i64,
}

/// What the database holds for a residence after a run.
struct Snapshot {
    keys: Vec<Key>,
    people: Vec<String>,
}

impl Site {
    fn new() -> Site {
        Site {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn database(&self) -> PathBuf {
        self.dir.path().join("gardien.db")
    }

    fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("writing the CSV file");
        path
    }

    async fn gardien(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_gardien"))
            .args(args)
            .current_dir(self.dir.path())
            .env("GARDIEN_DATABASE_URL", self.database())
            .env("GARDIEN_LOG", "warn")
            .env_remove("GARDIEN_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .await
            .expect("running the gardien binary");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    /// `gardien residence add NAME`, which prints the new id.
    async fn add_residence(&self, name: &str) -> i64 {
        let run = self.gardien(&["residence", "add", name]).await;
        assert_eq!(run.code, Some(0), "residence add: {}", run.stderr);
        run.stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("residence add printed {:?}", run.stdout))
    }

    async fn import(&self, file: &Path, residence: i64, dry_run: bool) -> Run {
        let residence = residence.to_string();
        let mut args = vec![
            "import",
            "keys",
            file.to_str().expect("UTF-8 path"),
            "--residence",
            &residence,
        ];
        if dry_run {
            args.push("--dry-run");
        }
        self.gardien(&args).await
    }

    async fn store(&self) -> Store {
        Store::open(self.database().to_str().expect("UTF-8 path"))
            .await
            .expect("opening the test database")
    }

    /// Runs `write` in one committed transaction on the database.
    async fn write<T>(&self, write: impl AsyncFnOnce(&mut Tx) -> T) -> T {
        let store = self.store().await;
        let mut tx = store.write().await.expect("write transaction");
        let result = write(&mut tx).await;
        tx.commit().await.expect("commit");
        store.close().await;
        result
    }

    /// A residence with lots `12` and `P-04`, and profiles `Résident` (hall door) and
    /// `Parking` (car park gate).
    async fn seeded() -> (Site, Seeded) {
        let site = Site::new();
        let residence = site.add_residence("Les Tilleuls").await;
        let seeded = site
            .write(async |tx: &mut Tx| {
                let lot_12 = add_unit(tx, residence, "12", UnitKind::Flat).await;
                let lot_p04 = add_unit(tx, residence, "P-04", UnitKind::Parking).await;
                let hall = add_lock(tx, residence, "Hall A", LockKind::Door).await;
                let gate = add_lock(tx, residence, "Portail parking", LockKind::Gate).await;
                Seeded {
                    residence,
                    lot_12,
                    lot_p04,
                    resident_profile: add_profile(tx, residence, "Résident", hall).await,
                    parking_profile: add_profile(tx, residence, "Parking", gate).await,
                }
            })
            .await;
        (site, seeded)
    }

    async fn snapshot(&self, residence: i64) -> Snapshot {
        let store = self.store().await;
        let mut tx = store.read().await.expect("read transaction");
        let mut keys = Vec::new();
        loop {
            let filter = KeyFilter {
                limit: Some(PAGE),
                offset: Some(keys.len() as i64),
                ..KeyFilter::default()
            };
            let page = tx
                .keys(residence, &filter, Visibility::Everything)
                .await
                .expect("listing keys");
            let done = page.items.is_empty();
            keys.extend(page.items);
            if done || keys.len() as i64 >= page.total {
                break;
            }
        }
        let mut people = Vec::new();
        loop {
            let filter = PersonFilter {
                limit: Some(PAGE),
                offset: Some(people.len() as i64),
                ..PersonFilter::default()
            };
            let page = tx.people(residence, &filter).await.expect("listing people");
            let done = page.items.is_empty();
            people.extend(page.items.into_iter().map(|person| person.full_name));
            if done || people.len() as i64 >= page.total {
                break;
            }
        }
        drop(tx);
        store.close().await;
        Snapshot { keys, people }
    }
}

async fn add_unit(tx: &mut Tx, residence: i64, lot: &str, kind: UnitKind) -> i64 {
    let input = UnitInput {
        lot_number: lot.into(),
        kind,
        building_id: None,
        floor: None,
        area_m2: None,
    }
    .validated()
    .expect("valid unit");
    tx.insert_unit(&Actor::system("test"), residence, &input)
        .await
        .expect("inserting a unit")
        .id
}

async fn add_lock(tx: &mut Tx, residence: i64, name: &str, kind: LockKind) -> i64 {
    let input = LockInput {
        name: name.into(),
        kind,
        building_id: None,
        controller_id: None,
        door_number: None,
    }
    .validated()
    .expect("valid lock");
    tx.insert_lock(&Actor::system("test"), residence, &input)
        .await
        .expect("inserting a lock")
        .id
}

async fn add_profile(tx: &mut Tx, residence: i64, name: &str, lock: i64) -> i64 {
    let input = ProfileInput {
        name: name.into(),
        description: String::new(),
        lock_ids: vec![lock],
    }
    .validated()
    .expect("valid profile");
    tx.insert_profile(&Actor::system("test"), residence, &input)
        .await
        .expect("inserting a profile")
        .id
}

impl Run {
    /// `(line, reason)` of each `ligne N refusée : reason` line of the report.
    fn rejections(&self) -> Vec<(u64, &str)> {
        self.stdout
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("ligne ")?;
                let (number, reason) = rest.split_once(" refusée : ")?;
                Some((number.parse().ok()?, reason))
            })
            .collect()
    }

    /// The closing line of the report (`N lignes lues : …`).
    fn summary(&self) -> &str {
        self.stdout
            .lines()
            .find(|line| line.contains("lignes lues"))
            .unwrap_or_else(|| panic!("no summary in the report:\n{}", self.stdout))
    }

    fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.code,
            Some(expected),
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// Each refused line is named once, with its reason; no other line is refused.
    fn assert_rejections(&self, expected: &[(u64, &str)]) {
        let rejections = self.rejections();
        let numbers: Vec<u64> = rejections.iter().map(|(line, _)| *line).collect();
        let expected_numbers: Vec<u64> = expected.iter().map(|(line, _)| *line).collect();
        assert_eq!(
            numbers, expected_numbers,
            "refused lines in\n{}",
            self.stdout
        );
        for ((line, reason), (_, fragment)) in rejections.iter().zip(expected) {
            assert!(
                reason.contains(fragment),
                "line {line}: reason {reason:?} lacks {fragment:?}"
            );
        }
    }
}

/// The report's closing line, as the command prints it.
fn summary(lines: usize, imported: usize, already: usize, refused: usize, people: usize) -> String {
    format!(
        "{lines} lignes lues : {imported} clés importées, {already} déjà enregistrées, \
         {refused} refusées, {people} détenteurs créés"
    )
}

impl Snapshot {
    fn key(&self, kind: KeyKind, identifier: &str) -> &Key {
        self.keys
            .iter()
            .find(|key| key.kind == kind && key.identifier == identifier)
            .unwrap_or_else(|| panic!("no {kind:?} key {identifier}; keys: {:?}", self.ids()))
    }

    fn ids(&self) -> KeyIds {
        self.keys
            .iter()
            .map(|key| (key.kind.as_str(), key.identifier.clone()))
            .collect()
    }
}

fn ids<'a>(keys: impl IntoIterator<Item = (KeyKind, &'a str)>) -> KeyIds {
    keys.into_iter()
        .map(|(kind, identifier)| (kind.as_str(), identifier.to_owned()))
        .collect()
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
}

/// A council's spreadsheet: good lines in several forms, and one of each mistake.
const MIXED_CSV: &str = "\
identifiant;type;libellé;statut;détenteur;lot;profils;date_remise
04A22B91;badge;Badge 1;actif;Mme Claire Dupont;12;Résident|Parking;01/03/2026
04 5a 2b 91 80 12 34;vigik;Badge 2;;M. Karim Benali;12;Résident;2026-03-02
00123456;télécommande;Bip parking;;Mme Claire Dupont;P-04;Parking;
04A22B;badge;Badge court;;;;;
0A0B0C0D;badge;Badge lot inconnu;;;99;;
0B0C0D0E;badge;Badge profil inconnu;;;;Piscine;
0C0D0E0F;badge;Badge date;;Mme Inconnue;;;31/02/2026
0D0E0F10;badge;cellules
04:a2:2b:91;badge;Doublon;;;;;
1122334455667788990A;;Badge 10 octets;perdu;;;;
0067305985;badge;Badge décimal;;;;;
";

const MIXED_LINES: usize = 11;
const MIXED_IMPORTED: usize = 5;
const MIXED_HOLDERS: usize = 2;

/// The lines of [`MIXED_CSV`] that must be refused, with a part of the reason.
const MIXED_REJECTIONS: [(u64, &str); 6] = [
    (
        5,
        "identifiant : identifiant de badge « 04A22B » invalide ; formes acceptées",
    ),
    (6, "lot : lot « 99 » inconnu"),
    (7, "profils : profil d'accès « Piscine » inconnu"),
    (8, "date_remise : date « 31/02/2026 » illisible"),
    (9, "3 cellules au lieu de 8"),
    (10, "identifiant : 04A22B91 figure déjà à la ligne 2"),
];

fn mixed_keys() -> KeyIds {
    ids([
        (KeyKind::VigikBadge, "04A22B91"),
        (KeyKind::VigikBadge, "045A2B91801234"),
        (KeyKind::Remote, "123456"),
        (KeyKind::VigikBadge, "1122334455667788990A"),
        (KeyKind::VigikBadge, "01020304"),
    ])
}

#[tokio::test]
async fn mixed_file_imports_good_lines_and_names_each_refused_line() {
    let (site, seeded) = Site::seeded().await;
    let file = site.write_file("badges.csv", MIXED_CSV);

    let run = site.import(&file, seeded.residence, false).await;

    run.assert_code(SOME_REFUSED);
    run.assert_rejections(&MIXED_REJECTIONS);
    assert_eq!(
        run.summary(),
        summary(MIXED_LINES, MIXED_IMPORTED, 0, 6, MIXED_HOLDERS)
    );
    let db = site.snapshot(seeded.residence).await;
    assert_eq!(db.ids(), mixed_keys());
    // The holder of the refused line 8 was rolled back with it.
    let mut people = db.people.clone();
    people.sort();
    assert_eq!(people, ["M. Karim Benali", "Mme Claire Dupont"]);

    let badge = db.key(KeyKind::VigikBadge, "04A22B91");
    assert_eq!(badge.label, "Badge 1");
    assert_eq!(badge.status, KeyStatus::Active);
    assert_eq!(badge.holder_name.as_deref(), Some("Mme Claire Dupont"));
    assert_eq!(badge.unit_id, Some(seeded.lot_12));
    assert_eq!(
        badge.profile_ids,
        [seeded.resident_profile, seeded.parking_profile]
    );
    assert_eq!(badge.handed_out_on, Some(date(2026, 3, 1)));

    let long_badge = db.key(KeyKind::VigikBadge, "045A2B91801234");
    assert_eq!(long_badge.holder_name.as_deref(), Some("M. Karim Benali"));
    assert_eq!(long_badge.profile_ids, [seeded.resident_profile]);
    assert_eq!(long_badge.handed_out_on, Some(date(2026, 3, 2)));

    let remote = db.key(KeyKind::Remote, "123456");
    assert_eq!(remote.label, "Bip parking");
    assert!(remote.holder_person_id.is_some());
    assert_eq!(remote.holder_person_id, badge.holder_person_id);
    assert_eq!(remote.unit_id, Some(seeded.lot_p04));
    assert_eq!(remote.profile_ids, [seeded.parking_profile]);
    assert_eq!(remote.handed_out_on, None);

    let lost = db.key(KeyKind::VigikBadge, "1122334455667788990A");
    assert_eq!(lost.status, KeyStatus::Lost);
    assert_eq!(lost.holder_person_id, None);
    assert!(lost.profile_ids.is_empty());

    assert_eq!(
        db.key(KeyKind::VigikBadge, "01020304").label,
        "Badge décimal"
    );
}

#[tokio::test]
async fn importing_the_same_file_again_creates_nothing() {
    let (site, seeded) = Site::seeded().await;
    let file = site.write_file("badges.csv", MIXED_CSV);
    site.import(&file, seeded.residence, false)
        .await
        .assert_code(SOME_REFUSED);
    let before = site.snapshot(seeded.residence).await;

    let run = site.import(&file, seeded.residence, false).await;

    run.assert_code(SOME_REFUSED);
    run.assert_rejections(&MIXED_REJECTIONS);
    assert_eq!(run.summary(), summary(MIXED_LINES, 0, MIXED_IMPORTED, 6, 0));
    let after = site.snapshot(seeded.residence).await;
    assert_eq!(after.ids(), mixed_keys());
    assert_eq!(after.keys.len(), before.keys.len());
    assert_eq!(after.people, before.people);
}

#[tokio::test]
async fn comma_file_with_english_headers_and_bom_is_imported() {
    let (site, seeded) = Site::seeded().await;
    // As a spreadsheet exports it: byte-order mark, CRLF, a quoted cell with a comma.
    let file = site.write_file(
        "export.csv",
        "\u{feff}Identifier,Kind,Label,Status,Holder,Unit,Profiles,Handed out on\r\n\
         04:a2:2b:91,vigik_badge,Hall badge,active,Jane Doe,12,Résident|Parking,2026-03-01\r\n\
         \"00 123 456\",remote,\"Gate, car park\",,Jane Doe,P-04,Parking,\r\n",
    );

    let run = site.import(&file, seeded.residence, false).await;

    run.assert_code(0);
    run.assert_rejections(&[]);
    assert_eq!(run.summary(), summary(2, 2, 0, 0, 1));
    let db = site.snapshot(seeded.residence).await;
    assert_eq!(
        db.ids(),
        ids([
            (KeyKind::VigikBadge, "04A22B91"),
            (KeyKind::Remote, "123456")
        ])
    );
    let badge = db.key(KeyKind::VigikBadge, "04A22B91");
    assert_eq!(badge.label, "Hall badge");
    assert_eq!(badge.holder_name.as_deref(), Some("Jane Doe"));
    assert_eq!(badge.unit_id, Some(seeded.lot_12));
    assert_eq!(
        badge.profile_ids,
        [seeded.resident_profile, seeded.parking_profile]
    );
    assert_eq!(badge.handed_out_on, Some(date(2026, 3, 1)));
    let remote = db.key(KeyKind::Remote, "123456");
    assert_eq!(remote.label, "Gate, car park");
    assert_eq!(remote.unit_id, Some(seeded.lot_p04));
    assert_eq!(remote.holder_person_id, badge.holder_person_id);
    assert_eq!(db.people, ["Jane Doe"]);
}

#[tokio::test]
async fn dry_run_checks_every_line_and_writes_nothing() {
    let (site, seeded) = Site::seeded().await;
    let file = site.write_file("badges.csv", MIXED_CSV);

    let run = site.import(&file, seeded.residence, true).await;

    run.assert_code(SOME_REFUSED);
    run.assert_rejections(&MIXED_REJECTIONS);
    assert_eq!(
        run.summary(),
        format!(
            "{} (essai : rien n'a été enregistré)",
            summary(MIXED_LINES, MIXED_IMPORTED, 0, 6, MIXED_HOLDERS)
        )
    );
    let db = site.snapshot(seeded.residence).await;
    assert!(db.keys.is_empty(), "keys written: {:?}", db.ids());
    assert!(db.people.is_empty(), "people written: {:?}", db.people);
}

#[tokio::test]
async fn file_without_identifier_column_fails_and_writes_nothing() {
    let (site, seeded) = Site::seeded().await;
    let file = site.write_file(
        "sans-identifiant.csv",
        "type;libellé;détenteur\nbadge;Badge 1;Mme Claire Dupont\n",
    );

    let run = site.import(&file, seeded.residence, false).await;

    run.assert_code(1);
    assert!(
        run.stderr.contains("colonne « identifiant » introuvable"),
        "stderr: {}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("lignes lues"),
        "stdout: {}",
        run.stdout
    );
    let db = site.snapshot(seeded.residence).await;
    assert!(db.keys.is_empty(), "keys written: {:?}", db.ids());
    assert!(db.people.is_empty(), "people written: {:?}", db.people);
}

#[tokio::test]
async fn large_file_is_imported_in_one_run() {
    const LINES: u32 = 2000;
    const HOLDERS: u32 = 40;
    let (site, seeded) = Site::seeded().await;
    let mut csv =
        String::from("identifiant;type;libellé;statut;détenteur;lot;profils;date_remise\n");
    let mut expected = BTreeSet::new();
    for i in 0..LINES {
        let uid = (0x1000_0000 + i * 7919).to_be_bytes();
        // Hex as printed, hex as a reader prints it, decimal as printed on the badge.
        let printed = match i % 3 {
            0 => uid.iter().map(|b| format!("{b:02X}")).collect::<String>(),
            1 => uid.map(|b| format!("{b:02x}")).join(":"),
            _ => format!("{:010}", u32::from_le_bytes(uid)),
        };
        let lot = if i % 5 == 0 { "12" } else { "" };
        csv.push_str(&format!(
            "{printed};badge;Badge {i};;Habitant {:02};{lot};Résident;01/03/2026\n",
            i % HOLDERS
        ));
        expected.insert((
            KeyKind::VigikBadge.as_str(),
            uid.map(|b| format!("{b:02X}")).concat(),
        ));
    }
    let file = site.write_file("inventaire.csv", csv);

    let run = site.import(&file, seeded.residence, false).await;

    run.assert_code(0);
    assert_eq!(
        run.summary(),
        summary(LINES as usize, LINES as usize, 0, 0, HOLDERS as usize)
    );
    let db = site.snapshot(seeded.residence).await;
    assert_eq!(db.ids(), expected);
    assert_eq!(db.people.len(), HOLDERS as usize);
    assert!(db
        .keys
        .iter()
        .all(|key| key.profile_ids == [seeded.resident_profile]));
    let with_lot = db
        .keys
        .iter()
        .filter(|key| key.unit_id == Some(seeded.lot_12));
    assert_eq!(with_lot.count(), (LINES / 5) as usize);
}

// French names often begin with an accented capital: Émilie, Élodie, Étage.

#[tokio::test]
async fn holder_named_with_an_accented_capital_is_created_once() {
    let (site, seeded) = Site::seeded().await;
    let file = site.write_file(
        "badges.csv",
        "identifiant;détenteur\n04A22B91;Émilie Durand\n04A22B92;Émilie Durand\n",
    );

    let run = site.import(&file, seeded.residence, false).await;

    run.assert_code(0);
    assert_eq!(run.summary(), summary(2, 2, 0, 0, 1));
    let db = site.snapshot(seeded.residence).await;
    assert_eq!(db.people, ["Émilie Durand"]);
    assert_eq!(
        db.key(KeyKind::VigikBadge, "04A22B91").holder_person_id,
        db.key(KeyKind::VigikBadge, "04A22B92").holder_person_id
    );
}

#[tokio::test]
async fn profile_named_with_an_accented_capital_is_found() {
    let (site, seeded) = Site::seeded().await;
    let residence = seeded.residence;
    let profile = site
        .write(async |tx: &mut Tx| {
            let lock = add_lock(tx, residence, "Porte palière", LockKind::Door).await;
            add_profile(tx, residence, "Accès Étage 3", lock).await
        })
        .await;
    let file = site.write_file(
        "badges.csv",
        "identifiant;profils\n04A22B91;Accès Étage 3\n",
    );

    let run = site.import(&file, residence, false).await;

    run.assert_code(0);
    assert_eq!(run.summary(), summary(1, 1, 0, 0, 0));
    let db = site.snapshot(residence).await;
    assert_eq!(
        db.key(KeyKind::VigikBadge, "04A22B91").profile_ids,
        [profile]
    );
}
