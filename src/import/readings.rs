//! Imports meter readings from a meter-reading provider's file (CSV).
//!
//! Columns, by name (case, accents, spaces and punctuation do not matter):
//! - the meter's M-Bus id (8 digits, leading zeros may be missing): `compteur`,
//!   `numero_compteur`, `n° compteur`, `meter`, `meter_id`, `mbus_id`, `numero`, `id`…
//! - the date: `date`, `date_releve`, `date de relève`, `read_at`, `timestamp`…
//! - the index: `index`, `valeur`, `value`, `releve`…
//! - optionally the unit: `unite`, `unit` (m3/m³, kWh, MWh, HCA/unités); kWh and MWh
//!   are converted into the meter's unit, other differences refused.
//!
//! `;` or `,` separates cells (guessed from the header); decimals take a comma or a
//! point (a decimal comma must then be quoted in a `,`-separated file), with spaces
//! between thousands allowed. Dates: see [`parse_local_instant`] (Europe/Paris time
//! unless an offset is given).
//!
//! The file is streamed: each line is checked in Rust against an in-memory map of the
//! residence's meters (removed ones included: their readings stay valid up to their
//! removal), then stored with [`Tx::store_reading`], all in one transaction. A refused
//! line never touches the database, so nothing needs rolling back line by line. A
//! reading already stored with the same value stores nothing (the same file can be
//! imported again); another value for the same meter and instant is a conflict, kept
//! aside by the storage layer and reported, never overwritten.

use std::collections::HashMap;
use std::fmt::Write;
use std::io::Read;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;

use super::keys::RejectedLine;
use super::table::{
    normalise_name, parse_decimal, parse_local_instant, Row, RowReader, DECIMAL_FORMS,
};
use crate::domain::meter::{rollover_modulus, MbusId, MeasureUnit, MBUS_ID_FORMS};
use crate::domain::roles::Visibility;
use crate::domain::text::LOCAL_TIME_ZONE;
use crate::error::{Error, Result};
use crate::storage::meters::MeterFilter;
use crate::storage::readings::{NewReading, ReadingSource, Stored};
use crate::storage::{Store, Tx};

/// Rejected lines (and conflicting lines) reported in full; the rest are counted.
pub const MAX_REPORTED_LINES: usize = 1000;

/// How often `progress` is called, in lines.
const PROGRESS_EVERY: u64 = 1000;

/// What an import of readings did (or, in a dry run, would do).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ReadingImportReport {
    /// Data lines read (header and blank lines excluded).
    pub lines: u64,
    /// Readings stored that were not there before.
    pub stored: u64,
    /// Readings already stored with the same value (an earlier import, or an earlier
    /// line of this file), left as they were.
    pub duplicates: u64,
    /// Lines whose value differs from the one stored for the same meter and instant:
    /// the stored value stays, the other is kept among the reading conflicts.
    pub conflicts: u64,
    /// Line numbers of the first 1000 conflicts.
    pub conflict_lines: Vec<u64>,
    /// The first 1000 refused lines, with the reason.
    pub rejected: Vec<RejectedLine>,
    /// All refused lines, including those beyond the first 1000.
    pub rejected_total: u64,
    /// True when nothing was written (dry run).
    pub dry_run: bool,
}

impl ReadingImportReport {
    fn reject(&mut self, line: u64, reason: String) {
        self.rejected_total += 1;
        if self.rejected.len() < MAX_REPORTED_LINES {
            self.rejected.push(RejectedLine { line, reason });
        }
    }
}

const METER_NAMES: &[&str] = &[
    "compteur",
    "numero_compteur",
    "numero de compteur",
    "n° compteur",
    "no compteur",
    "num compteur",
    "meter",
    "meter_id",
    "meter_number",
    "mbus_id",
    "id_mbus",
    "numero",
    "id",
];
const DATE_NAMES: &[&str] = &[
    "date",
    "date_releve",
    "date de relève",
    "date du relevé",
    "date_heure",
    "horodatage",
    "read_at",
    "reading_date",
    "timestamp",
];
const INDEX_NAMES: &[&str] = &[
    "index",
    "valeur",
    "value",
    "releve",
    "index_releve",
    "reading",
];
const UNIT_NAMES: &[&str] = &["unite", "unit", "unites", "units"];

struct Columns {
    meter: Option<usize>,
    date: Option<usize>,
    index: Option<usize>,
    unit: Option<usize>,
}

impl Columns {
    fn find<R: Read>(rows: &RowReader<R>) -> Result<Columns> {
        let columns = Columns {
            meter: rows.column(METER_NAMES),
            date: rows.column(DATE_NAMES),
            index: rows.column(INDEX_NAMES),
            unit: rows.column(UNIT_NAMES),
        };
        let missing: Vec<String> = [
            ("compteur", columns.meter, METER_NAMES),
            ("date", columns.date, DATE_NAMES),
            ("index", columns.index, INDEX_NAMES),
        ]
        .into_iter()
        .filter(|(_, found, _)| found.is_none())
        .map(|(what, _, names)| format!("« {what} » (noms acceptés : {})", names.join(", ")))
        .collect();
        if missing.is_empty() {
            return Ok(columns);
        }
        Err(Error::invalid(
            "en-tête",
            format!(
                "colonne{s} {} introuvable{s} ; l'en-tête lu est « {} » (séparateur « {} »)",
                missing.join(", "),
                rows.headers().join(&(rows.separator() as char).to_string()),
                rows.separator() as char,
                s = if missing.len() > 1 { "s" } else { "" },
            ),
        ))
    }
}

/// What the import needs to know of a meter.
struct MeterInfo {
    id: i64,
    mbus_id: String,
    unit: MeasureUnit,
    digits: i64,
    installed_on: NaiveDate,
    removed_on: Option<NaiveDate>,
}

/// The meters of the residence, removed ones included, by M-Bus id.
async fn meter_map(tx: &mut Tx, residence_id: i64) -> Result<HashMap<String, MeterInfo>> {
    const PAGE: i64 = crate::storage::page::MAX_LIMIT;
    let mut meters = HashMap::new();
    let mut offset = 0;
    loop {
        let filter = MeterFilter {
            removed: Some(true),
            limit: Some(PAGE),
            offset: Some(offset),
            ..MeterFilter::default()
        };
        let page = tx
            .meters(residence_id, &filter, Visibility::Everything)
            .await?;
        let count = page.items.len() as i64;
        for meter in page.items {
            meters.insert(
                meter.mbus_id.clone(),
                MeterInfo {
                    id: meter.id,
                    mbus_id: meter.mbus_id,
                    unit: meter.measure_unit,
                    digits: meter.digits,
                    installed_on: meter.installed_on,
                    removed_on: meter.removed_on,
                },
            );
        }
        offset += count;
        if count < PAGE || offset >= page.total {
            return Ok(meters);
        }
    }
}

/// Reads the CSV `source` (streamed, never held whole) and stores its readings in the
/// residence, in one transaction; in a dry run, checks everything and writes nothing.
/// `source_name` (the file's name) goes with each reading, as `name:line`.
/// `progress` is called every 1000 lines and at the end with the number of lines done.
///
/// A file that cannot be read as CSV or lacks a required column is an
/// [`Error::Invalid`] and stores nothing; bad lines are reported and the rest stored.
/// `source` is read synchronously: give a file or bytes in memory, not a pipe that
/// may block.
pub async fn import_readings(
    store: &Store,
    residence_id: i64,
    source: impl Read + Send,
    source_name: &str,
    dry_run: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ReadingImportReport> {
    let mut rows = RowReader::new(source).map_err(|reason| Error::invalid("fichier", reason))?;
    let columns = Columns::find(&rows)?;
    // Lines with more cells than the header in a `,` file: unquoted decimal commas?
    let comma_width = (rows.separator() == b',').then_some(rows.headers().len());
    let mut report = ReadingImportReport {
        dry_run,
        ..ReadingImportReport::default()
    };
    let mut tx = store.write().await?;
    tx.residence(residence_id).await?;
    let meters = meter_map(&mut tx, residence_id).await?;
    let latest = Utc::now() + TimeDelta::days(1);
    let mut source_ref = String::new();
    while let Some(row) = rows
        .next_row()
        .map_err(|reason| Error::invalid("fichier", reason))?
    {
        report.lines += 1;
        match check_line(&row, &columns, &meters, latest, comma_width) {
            Err(reason) => report.reject(row.line, reason),
            Ok((meter, read_at, value)) => {
                source_ref.clear();
                let _ = write!(source_ref, "{source_name}:{}", row.line);
                let stored = tx
                    .store_reading(&NewReading {
                        residence_id,
                        meter_id: meter.id,
                        read_at,
                        value,
                        source: ReadingSource::File,
                        source_ref: &source_ref,
                    })
                    .await?;
                match stored {
                    Stored::New => report.stored += 1,
                    Stored::Duplicate => report.duplicates += 1,
                    Stored::Conflict { .. } => {
                        report.conflicts += 1;
                        if report.conflict_lines.len() < MAX_REPORTED_LINES {
                            report.conflict_lines.push(row.line);
                        }
                    }
                }
            }
        }
        if report.lines % PROGRESS_EVERY == 0 {
            progress(report.lines);
        }
    }
    progress(report.lines);
    if !dry_run {
        tx.commit().await?;
    }
    // A dry run drops `tx`, which rolls back.
    Ok(report)
}

/// Checks one line against the meters; the reason names the column, what was wrong
/// and what is accepted.
fn check_line<'m>(
    row: &Row,
    columns: &Columns,
    meters: &'m HashMap<String, MeterInfo>,
    latest: DateTime<Utc>,
    comma_width: Option<usize>,
) -> std::result::Result<(&'m MeterInfo, DateTime<Utc>, f64), String> {
    if let Some(error) = &row.error {
        let hint = if comma_width.is_some_and(|width| row.width > width) {
            " ; avec la virgule comme séparateur, une virgule décimale doit être entre guillemets (\"12,5\")"
        } else {
            ""
        };
        return Err(format!("ligne : {error}{hint}"));
    }
    let meter = match row.get(columns.meter) {
        "" => return Err(format!("compteur : manquant ; attendu : {MBUS_ID_FORMS}")),
        text => {
            let mbus_id = MbusId::parse("compteur", text).map_err(reason_of)?;
            meters.get(mbus_id.as_str()).ok_or_else(|| {
                format!(
                    "compteur : « {mbus_id} » inconnu dans cette résidence (compteurs déposés compris) ; \
                     déclarez-le avant d'importer ses relevés"
                )
            })?
        }
    };
    let read_at = match row.get(columns.date) {
        "" => {
            return Err(format!(
                "date : manquante ; formes acceptées : {}",
                super::table::LOCAL_INSTANT_FORMS
            ))
        }
        text => parse_local_instant(text).map_err(|reason| format!("date : {reason}"))?,
    };
    let day = read_at.with_timezone(&LOCAL_TIME_ZONE).date_naive();
    if day < meter.installed_on {
        return Err(format!(
            "date : relevé du {}, avant la pose du compteur {} le {}",
            day.format("%d/%m/%Y"),
            meter.mbus_id,
            meter.installed_on.format("%d/%m/%Y")
        ));
    }
    if let Some(removed_on) = meter.removed_on.filter(|removed| day > *removed) {
        return Err(format!(
            "date : relevé du {}, après la dépose du compteur {} le {} (ses relevés valent jusqu'à ce jour-là)",
            day.format("%d/%m/%Y"),
            meter.mbus_id,
            removed_on.format("%d/%m/%Y")
        ));
    }
    if read_at > latest {
        return Err(format!(
            "date : relevé du {} dans le futur (plus d'un jour après maintenant)",
            read_at
                .with_timezone(&LOCAL_TIME_ZONE)
                .format("%d/%m/%Y %H:%M")
        ));
    }
    let top = rollover_modulus(meter.digits);
    let expected = format!(
        "un index de 0 à moins de {top} {} est attendu (compteur {} à {} chiffres)",
        meter.unit.symbol(),
        meter.mbus_id,
        meter.digits
    );
    let text = row.get(columns.index);
    if text.is_empty() {
        return Err(format!("index : manquant ; {expected}"));
    }
    let value = parse_decimal(text).ok_or_else(|| {
        format!(
            "index : « {} » n'est pas un nombre ; formes acceptées : {DECIMAL_FORMS}",
            excerpt(text)
        )
    })?;
    if !value.is_finite() {
        return Err(format!(
            "index : « {} » n'est pas un nombre fini ; {expected}",
            excerpt(text)
        ));
    }
    if value < 0.0 {
        return Err(format!("index : « {text} » est négatif ; {expected}"));
    }
    let value = match row.get(columns.unit) {
        "" => value,
        unit_text => {
            let unit = parse_unit(unit_text).ok_or_else(|| {
                format!(
                    "unité : « {} » inconnue ; unités acceptées : m3 (m³), kWh, MWh, HCA (unités de répartition)",
                    excerpt(unit_text)
                )
            })?;
            meter.unit.convert(value, unit).ok_or_else(|| {
                format!(
                    "unité : un index en {} ne se convertit pas en {}, l'unité du compteur {} ; \
                     seuls kWh et MWh se convertissent l'un en l'autre",
                    unit.symbol(),
                    meter.unit.symbol(),
                    meter.mbus_id
                )
            })?
        }
    };
    if value >= top {
        return Err(format!("index : « {text} » trop grand ; {expected}"));
    }
    Ok((meter, read_at, value))
}

/// The unit of an index as files write it.
fn parse_unit(text: &str) -> Option<MeasureUnit> {
    let name = normalise_name(&text.replace('³', "3"));
    match name.as_str() {
        "m3" | "metrecube" | "metrescubes" | "metrecubes" => Some(MeasureUnit::M3),
        "kwh" => Some(MeasureUnit::Kwh),
        "mwh" => Some(MeasureUnit::Mwh),
        "hca"
        | "u"
        | "unite"
        | "unites"
        | "unitesderepartition"
        | "unitederepartition"
        | "units" => Some(MeasureUnit::Hca),
        _ => None,
    }
}

fn reason_of(err: Error) -> String {
    match err {
        Error::Invalid { field, message } => format!("{field} : {message}"),
        other => other.to_string(),
    }
}

fn excerpt(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_files_write() {
        for (text, unit) in [
            ("m3", MeasureUnit::M3),
            ("M³", MeasureUnit::M3),
            ("kWh", MeasureUnit::Kwh),
            ("MWH", MeasureUnit::Mwh),
            ("HCA", MeasureUnit::Hca),
            ("unités", MeasureUnit::Hca),
        ] {
            assert_eq!(parse_unit(text), Some(unit), "{text}");
        }
        assert_eq!(parse_unit("litres"), None);
    }
}
