//! A CSV file as councils and providers export it: a header line, `;` or `,` as
//! separator, cells looked up by column name (several names accepted per column).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// The rows of a CSV file, with their line numbers.
pub struct Table {
    columns: HashMap<String, usize>,
    pub rows: Vec<Row>,
}

pub struct Row {
    /// Line number in the file, 1-based, the header being line 1.
    pub line: u64,
    cells: Vec<String>,
    /// Set when the line did not parse as CSV or has the wrong number of cells.
    pub error: Option<String>,
}

impl Table {
    /// Parses `data`, guessing the separator from the header line.
    pub fn parse(data: &[u8]) -> Result<Table, String> {
        let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data); // Excel's UTF-8 BOM
        let header_line = data.split(|b| *b == b'\n').next().unwrap_or_default();
        let count = |sep: u8| header_line.iter().filter(|b| **b == sep).count();
        let separator = if count(b';') >= count(b',') {
            b';'
        } else {
            b','
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(separator)
            .flexible(true)
            .has_headers(true)
            .from_reader(data);
        let headers = reader
            .headers()
            .map_err(|err| format!("ligne d'en-tête illisible : {err}"))?
            .iter()
            .map(normalise_name)
            .collect::<Vec<_>>();
        if headers.iter().all(String::is_empty) {
            return Err(
                "fichier vide : une ligne d'en-tête nommant les colonnes est attendue".into(),
            );
        }
        let columns = headers
            .iter()
            .enumerate()
            .map(|(index, name)| (name.clone(), index))
            .collect();
        let mut rows = Vec::new();
        for record in reader.records() {
            let row = match record {
                Ok(record) => {
                    let line = record.position().map(|p| p.line()).unwrap_or_default();
                    let error = (record.len() != headers.len()).then(|| {
                        format!(
                            "{} cellules au lieu de {} (séparateur « {} »)",
                            record.len(),
                            headers.len(),
                            separator as char
                        )
                    });
                    let cells = record.iter().map(|cell| cell.trim().to_owned()).collect();
                    Row { line, cells, error }
                }
                Err(err) => {
                    let line = err.position().map(|p| p.line()).unwrap_or_default();
                    Row {
                        line,
                        cells: Vec::new(),
                        error: Some(format!("ligne illisible : {err}")),
                    }
                }
            };
            // Spreadsheets leave blank lines at the end.
            if row.error.is_some() || row.cells.iter().any(|cell| !cell.is_empty()) {
                rows.push(row);
            }
        }
        Ok(Table { columns, rows })
    }

    /// The index of the first column found under any of `names`.
    pub fn column(&self, names: &[&str]) -> Option<usize> {
        names
            .iter()
            .find_map(|name| self.columns.get(&normalise_name(name)).copied())
    }
}

impl Row {
    /// The cell of `column`, or `""` when the column is absent or the cell empty.
    pub fn get(&self, column: Option<usize>) -> &str {
        column
            .and_then(|index| self.cells.get(index))
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Column names compare without case, accents, spaces or punctuation.
fn normalise_name(name: &str) -> String {
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
    fn dates_people_type() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(parse_date("01/03/2026"), Some(date));
        assert_eq!(parse_date("2026-03-01"), Some(date));
        assert_eq!(parse_date("2026-03-01T10:00:00+01:00"), Some(date));
        assert_eq!(parse_date("31/02/2026"), None);
    }
}
