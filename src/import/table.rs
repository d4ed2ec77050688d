//! A CSV file as councils and providers export it: a header line, `;` or `,` as
//! separator, cells looked up by column name (several names accepted per column).
//!
//! [`RowReader`] streams the rows of any `Read` (a provider's file of a million
//! readings is never held whole); [`Table`] collects them, for small files.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Chain, Cursor, Read};

use chrono::{
    DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike,
    Utc,
};

use crate::domain::text::LOCAL_TIME_ZONE;

/// The rows of a CSV file, with their line numbers.
pub struct Table {
    columns: HashMap<String, usize>,
    pub rows: Vec<Row>,
}

pub struct Row {
    /// Line number in the file, 1-based, the header being line 1.
    pub line: u64,
    /// Number of cells the line had.
    pub width: usize,
    cells: csv::StringRecord,
    /// Set when the line did not parse as CSV or has the wrong number of cells.
    pub error: Option<String>,
}

/// The longest header line accepted (the separator is guessed from it).
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// What the CSV reader reads: the header line already read, the rest of the file, and
/// one more line end.
type Source<R> = Chain<Chain<Cursor<Vec<u8>>, BufReader<R>>, &'static [u8]>;

/// The rows of a CSV file, read one at a time from `R`. The header line is read when
/// the reader is made: it names the columns and decides the separator.
pub struct RowReader<R: Read> {
    reader: csv::Reader<Source<R>>,
    columns: HashMap<String, usize>,
    headers: Vec<String>,
    separator: u8,
    record: csv::ByteRecord,
    failed: bool,
}

impl<R: Read> RowReader<R> {
    /// Reads the header line of `source`, guessing the separator from it (`;` unless
    /// the line holds more `,`). A UTF-8 byte order mark (Excel's) is skipped.
    pub fn new(source: R) -> Result<RowReader<R>, String> {
        let mut source = BufReader::with_capacity(64 * 1024, source);
        let mut header_line = Vec::new();
        (&mut source)
            .take(MAX_HEADER_BYTES)
            .read_until(b'\n', &mut header_line)
            .map_err(|err| format!("lecture du fichier impossible : {err}"))?;
        if header_line.len() as u64 >= MAX_HEADER_BYTES && !header_line.ends_with(b"\n") {
            return Err(format!(
                "ligne d'en-tête de plus de {} Kio : est-ce bien un fichier CSV ?",
                MAX_HEADER_BYTES / 1024
            ));
        }
        if header_line.starts_with(b"\xEF\xBB\xBF") {
            header_line.drain(..3);
        }
        let count = |sep: u8| header_line.iter().filter(|b| **b == sep).count();
        let separator = if count(b';') >= count(b',') {
            b';'
        } else {
            b','
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(separator)
            .flexible(true)
            // Lines end at `\n` only (a `\r` before it is trimmed with the cell), and
            // the file gets one more `\n`, so that every record ends with one: then
            // the line count after a record tells its line. (csv's own record
            // positions miss skipped blank lines and count `\r\n` late.)
            .terminator(csv::Terminator::Any(b'\n'))
            .has_headers(true)
            .from_reader(Cursor::new(header_line).chain(source).chain(&b"\n"[..]));
        let headers = reader
            .headers()
            .map_err(|err| format!("ligne d'en-tête illisible : {err}"))?
            .iter()
            .map(|name| name.trim().to_owned())
            .collect::<Vec<_>>();
        if headers.iter().all(|name| normalise_name(name).is_empty()) {
            return Err(
                "fichier vide : une ligne d'en-tête nommant les colonnes est attendue".into(),
            );
        }
        let mut columns = HashMap::new();
        for (index, name) in headers.iter().enumerate() {
            columns.entry(normalise_name(name)).or_insert(index);
        }
        Ok(RowReader {
            reader,
            columns,
            headers,
            separator,
            record: csv::ByteRecord::new(),
            failed: false,
        })
    }

    /// The index of the first column found under any of `names`.
    pub fn column(&self, names: &[&str]) -> Option<usize> {
        find_column(&self.columns, names)
    }

    /// The column names as written in the header line.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The separator guessed from the header line.
    pub fn separator(&self) -> u8 {
        self.separator
    }

    /// The next row that is not blank, `None` at the end of the file. A line that is
    /// not CSV or has the wrong number of cells is a row with `error` set; only a
    /// failure to read the source is an `Err`, after which the reader stays at its end.
    pub fn next_row(&mut self) -> Result<Option<Row>, String> {
        if self.failed {
            return Ok(None);
        }
        loop {
            let row = match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(None),
                Ok(true) => {
                    let breaks = self.record.as_slice().iter().filter(|b| **b == b'\n');
                    let line = self.reader.position().line() - 1 - breaks.count() as u64;
                    let width = self.record.len();
                    match csv::StringRecord::from_byte_record(std::mem::take(&mut self.record)) {
                        Ok(cells) => {
                            // Spreadsheets leave blank lines at the end.
                            if cells.iter().all(|cell| cell.trim().is_empty()) {
                                continue;
                            }
                            let error = (width != self.headers.len()).then(|| {
                                format!(
                                    "{width} cellules au lieu de {} (séparateur « {} »)",
                                    self.headers.len(),
                                    self.separator as char
                                )
                            });
                            Row {
                                line,
                                width,
                                cells,
                                error,
                            }
                        }
                        Err(err) => {
                            self.record = err.into_byte_record();
                            Row {
                                line,
                                width,
                                cells: csv::StringRecord::new(),
                                error: Some(
                                    "ligne illisible : caractères hors UTF-8 (enregistrez le fichier en « CSV UTF-8 »)"
                                        .into(),
                                ),
                            }
                        }
                    }
                }
                Err(err) => {
                    if let csv::ErrorKind::Io(io) = err.kind() {
                        self.failed = true;
                        return Err(format!("lecture du fichier interrompue : {io}"));
                    }
                    Row {
                        line: self.reader.position().line(),
                        width: 0,
                        cells: csv::StringRecord::new(),
                        error: Some(format!("ligne illisible : {err}")),
                    }
                }
            };
            return Ok(Some(row));
        }
    }
}

impl<R: Read> Iterator for RowReader<R> {
    type Item = Result<Row, String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().transpose()
    }
}

impl Table {
    /// Parses `data`, guessing the separator from the header line.
    pub fn parse(data: &[u8]) -> Result<Table, String> {
        let mut reader = RowReader::new(data)?;
        let rows = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok(Table {
            columns: reader.columns,
            rows,
        })
    }

    /// The index of the first column found under any of `names`.
    pub fn column(&self, names: &[&str]) -> Option<usize> {
        find_column(&self.columns, names)
    }
}

fn find_column(columns: &HashMap<String, usize>, names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|name| columns.get(&normalise_name(name)).copied())
}

impl Row {
    /// The cell of `column`, trimmed, or `""` when the column is absent or the cell empty.
    pub fn get(&self, column: Option<usize>) -> &str {
        column
            .and_then(|index| self.cells.get(index))
            .map(str::trim)
            .unwrap_or("")
    }
}

/// Column names compare without case, accents, spaces or punctuation.
pub fn normalise_name(name: &str) -> String {
    crate::domain::text::fold(name)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

pub const DATE_FORMS: &str = "JJ/MM/AAAA, AAAA-MM-JJ ou AAAA-MM-JJThh:mm:ss(Z ou ±hh:mm)";

/// A date as people type it: `dd/mm/yyyy`, `yyyy-mm-dd`, or an ISO-8601 date-time.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let text = text.trim();
    NaiveDate::parse_from_str(text, "%d/%m/%Y")
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y-%m-%d"))
        .ok()
        .or_else(|| parse_instant(text).map(|t| t.date_naive()))
}

/// An instant: ISO-8601 with offset, a naive date-time taken as UTC, or a date (its
/// midnight UTC).
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%d/%m/%Y %H:%M:%S",
        "%d/%m/%Y %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%d/%m/%Y")
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y-%m-%d"))
        .ok()
        .map(|date| date.and_time(NaiveTime::MIN).and_utc())
}

/// The forms [`parse_local_instant`] reads, for messages.
pub const LOCAL_INSTANT_FORMS: &str = "JJ/MM/AAAA ou AAAA-MM-JJ (minuit, heure de Paris), \
     JJ/MM/AAAA hh:mm[:ss] ou AAAA-MM-JJThh:mm[:ss] (heure de Paris), \
     AAAA-MM-JJThh:mm:ssZ ou AAAA-MM-JJThh:mm:ss+01:00 (avec décalage)";

/// An instant as a provider's file gives it, truncated to the second:
/// - a date (`dd/mm/yyyy`, `yyyy-mm-dd`): the start of that day in Europe/Paris;
/// - a date and time without offset (`T` or a space between them): Europe/Paris local
///   time; a time skipped by the spring clock change is refused, a time repeated in
///   autumn is the earlier of the two;
/// - a date and time with `Z` or `±hh:mm` (`±hhmm`, `±hh`): that instant.
///
/// The error is a French reason naming the forms accepted.
pub fn parse_local_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let unreadable = || {
        format!(
            "« {} » illisible ; formes acceptées : {LOCAL_INSTANT_FORMS}",
            excerpt(text)
        )
    };
    let (day, time) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(text[at + 1..].trim())),
        None => (text, None),
    };
    let day = parse_day(day).ok_or_else(unreadable)?;
    let Some(time) = time else {
        return local_midnight(day).ok_or_else(unreadable);
    };
    let (clock, offset) = split_offset(time).ok_or_else(unreadable)?;
    let clock = NaiveTime::parse_from_str(clock, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(clock, "%H:%M"))
        .map_err(|_| unreadable())?;
    let naive = day.and_time(clock.with_nanosecond(0).unwrap_or(clock));
    let instant = match offset {
        Some(offset) => offset.from_local_datetime(&naive).single(),
        None => match LOCAL_TIME_ZONE.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.fixed_offset()),
            LocalResult::None => {
                return Err(format!(
                    "« {} » : cette heure n'existe pas à Paris (passage à l'heure d'été, les \
                     horloges sautent de 02:00 à 03:00) ; indiquez le décalage, par exemple \
                     {}T{}+01:00",
                    excerpt(text),
                    day.format("%Y-%m-%d"),
                    naive.format("%H:%M:%S")
                ))
            }
        },
    };
    instant.map(|t| t.to_utc()).ok_or_else(unreadable)
}

/// `dd/mm/yyyy` or `yyyy-mm-dd`, the year in four digits.
fn parse_day(text: &str) -> Option<NaiveDate> {
    let number = |part: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u32>().ok())
            .flatten()
    };
    let parts: Vec<&str> = if text.contains('/') {
        text.split('/').rev().collect()
    } else {
        text.split('-').collect()
    };
    match parts[..] {
        [year, month, day] => NaiveDate::from_ymd_opt(
            number(year, 4..=4)? as i32,
            number(month, 1..=2)?,
            number(day, 1..=2)?,
        ),
        _ => None,
    }
}

/// Splits `hh:mm:ss±hh:mm` (or `…Z`) into the clock and the offset, if any.
fn split_offset(time: &str) -> Option<(&str, Option<FixedOffset>)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock.trim_end(), FixedOffset::east_opt(0)));
    }
    let Some(at) = time.rfind(['+', '-']) else {
        return Some((time, None));
    };
    let (clock, offset) = (time[..at].trim_end(), &time[at + 1..]);
    let digits: String = offset.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().unwrap_or(0);
    if hours > 18 || minutes > 59 || (offset.contains(':') && digits.len() != 4) {
        return None;
    }
    let seconds = (hours * 60 + minutes) * 60;
    let sign = if time.as_bytes()[at] == b'-' { -1 } else { 1 };
    Some((clock, Some(FixedOffset::east_opt(sign * seconds)?)))
}

/// The first instant of `day` in Europe/Paris.
fn local_midnight(day: NaiveDate) -> Option<DateTime<Utc>> {
    let midnight = day.and_time(NaiveTime::MIN);
    match LOCAL_TIME_ZONE.from_local_datetime(&midnight) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.to_utc()),
        // A midnight skipped by a clock change: the day starts where the gap ends.
        LocalResult::None => (1..=4).find_map(|hours| {
            LOCAL_TIME_ZONE
                .from_local_datetime(&(midnight + chrono::TimeDelta::hours(hours)))
                .earliest()
                .map(|t| t.to_utc())
        }),
    }
}

/// The forms [`parse_decimal`] reads, for messages.
pub const DECIMAL_FORMS: &str = "12345,678 ou 12345.678 (espaces de milliers permis : 12 345,678)";

/// A decimal number as spreadsheets write it: decimal comma or point, spaces
/// (non-breaking ones too) between thousands, or `.`/`,` as thousands separator when
/// the other one is the decimal mark (`12.345,678`, `12,345.678`). May be infinite
/// or NaN (`inf`, `NaN`, a huge exponent): the caller checks.
pub fn parse_decimal(text: &str) -> Option<f64> {
    let mut number: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let commas = number.matches(',').count();
    let points = number.matches('.').count();
    match (commas, points) {
        (0, _) | (1, 0) => {}
        (_, 0) => return None,
        _ => {
            // Both: the last one is the decimal mark, the other groups thousands.
            let decimal = number.rfind([',', '.'])?;
            let mark = number.as_bytes()[decimal];
            let grouping = if mark == b',' { '.' } else { ',' };
            if number.matches(mark as char).count() != 1 {
                return None;
            }
            let whole = &number[..decimal];
            let groups: Vec<&str> = whole
                .trim_start_matches(['+', '-'])
                .split(grouping)
                .collect();
            let well_grouped = groups.iter().enumerate().all(|(i, group)| {
                group.bytes().all(|b| b.is_ascii_digit())
                    && if i == 0 {
                        (1..=3).contains(&group.len())
                    } else {
                        group.len() == 3
                    }
            });
            if !well_grouped {
                return None;
            }
            number = number.replace(grouping, "");
        }
    }
    number.replace(',', ".").parse().ok()
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
    fn separators_and_header_names() {
        let table =
            Table::parse("\u{feff}Identifiant;Libellé\n04A22B91;Badge 1\n\n".as_bytes()).unwrap();
        assert_eq!(table.rows.len(), 1);
        assert_eq!(table.rows[0].get(table.column(&["libelle"])), "Badge 1");
        assert_eq!(table.rows[0].line, 2);
        let table = Table::parse(b"uid,label\n04A22B91,x,extra\n").unwrap();
        assert!(table.rows[0].error.is_some());
    }

    #[test]
    fn streaming_rows_keep_their_line_numbers() {
        let mut data = "\u{feff}N° compteur;Date de relève;Valeur\r\n\
                        1;01/03/2026;\"12,5\"\r\n\
                        \r\n\
                        ;;\r\n\
                        2;\"multi\nligne\";3\r\n\
                        3;x\r\n"
            .as_bytes()
            .to_vec();
        data.extend_from_slice(b"4;\xff;5\n");
        let mut reader = RowReader::new(data.as_slice()).unwrap();
        assert_eq!(reader.separator(), b';');
        let meter = reader.column(&["n° compteur"]);
        let value = reader.column(&["valeur"]);
        assert_eq!(meter, Some(0));
        assert_eq!(reader.column(&["date de releve"]), Some(1));
        let rows: Vec<Row> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(
            rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 5, 7, 8]
        );
        assert_eq!(rows[0].get(value), "12,5");
        assert!(rows[0].error.is_none());
        assert!(rows[2]
            .error
            .as_deref()
            .unwrap()
            .contains("2 cellules au lieu de 3"));
        assert!(rows[3].error.as_deref().unwrap().contains("UTF-8"));
    }

    #[test]
    fn empty_and_endless_headers() {
        assert!(RowReader::new(&b""[..]).is_err());
        assert!(RowReader::new(&b";;\n1;2\n"[..]).is_err());
        let long = vec![b'a'; 70_000];
        assert!(RowReader::new(long.as_slice()).is_err());
    }

    #[test]
    fn dates_people_type() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(parse_date("01/03/2026"), Some(date));
        assert_eq!(parse_date("2026-03-01"), Some(date));
        assert_eq!(parse_date("2026-03-01T10:00:00+01:00"), Some(date));
        assert_eq!(parse_date("31/02/2026"), None);
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn local_instants() {
        // Winter (UTC+1), summer (UTC+2).
        assert_eq!(
            parse_local_instant("01/03/2026"),
            Ok(utc("2026-02-28T23:00:00Z"))
        );
        assert_eq!(
            parse_local_instant("2026-07-01"),
            Ok(utc("2026-06-30T22:00:00Z"))
        );
        assert_eq!(
            parse_local_instant("1/7/2026 08:30"),
            Ok(utc("2026-07-01T06:30:00Z"))
        );
        assert_eq!(
            parse_local_instant("2026-07-01T08:30:15.75"),
            Ok(utc("2026-07-01T06:30:15Z"))
        );
        assert_eq!(
            parse_local_instant("2026-07-01 08:30:15"),
            Ok(utc("2026-07-01T06:30:15Z"))
        );
        for (text, expected) in [
            ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00Z"),
            ("2026-03-01T10:00:00+01:00", "2026-03-01T09:00:00Z"),
            ("2026-03-01T10:00:00-0230", "2026-03-01T12:30:00Z"),
            ("2026-03-01T10:00+05", "2026-03-01T05:00:00Z"),
            ("2026-03-01 10:00:00 +01:00", "2026-03-01T09:00:00Z"),
        ] {
            assert_eq!(parse_local_instant(text), Ok(utc(expected)), "{text}");
        }
        // Spring forward: 02:30 does not exist; autumn back: 02:30 happens twice.
        let gap = parse_local_instant("2026-03-29T02:30:00").unwrap_err();
        assert!(gap.contains("n'existe pas"), "{gap}");
        assert_eq!(
            parse_local_instant("2026-10-25T02:30:00"),
            Ok(utc("2026-10-25T00:30:00Z"))
        );
        for bad in [
            "",
            "01/03/26",
            "2026/03/01",
            "31/02/2026",
            "2026-03-01T25:00",
            "2026-03-01T10:00:00+1",
            "2026-03-01T10:00:00+25:00",
            "hier",
        ] {
            let reason = parse_local_instant(bad).unwrap_err();
            assert!(reason.contains("formes acceptées"), "{bad}: {reason}");
        }
    }

    #[test]
    fn decimals_people_type() {
        for (text, expected) in [
            ("12", 12.0),
            ("12,5", 12.5),
            ("12.5", 12.5),
            ("12 345,678", 12_345.678),
            ("12\u{a0}345,678", 12_345.678),
            ("12\u{202f}345.678", 12_345.678),
            ("12.345,678", 12_345.678),
            ("1,234,567.5", 1_234_567.5),
            ("-3,25", -3.25),
            ("1e3", 1000.0),
        ] {
            assert_eq!(parse_decimal(text), Some(expected), "{text}");
        }
        for bad in [
            "",
            "abc",
            "1,2,3",
            "1.2.3",
            "12,34.5,6",
            "1,23.5",
            "12 m3",
            "0x10",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
        assert!(parse_decimal("inf").is_some_and(f64::is_infinite));
        assert!(parse_decimal("NaN").is_some_and(f64::is_nan));
        assert!(parse_decimal("1e400").is_some_and(f64::is_infinite));
    }
}
