//! Checks on free text and dates that come from outside.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

use crate::error::Error;

/// Trims `value` and checks it has between `min` and `max` characters and no control
/// characters.
pub fn bounded(field: &str, value: &str, min: usize, max: usize) -> Result<String, Error> {
    let value = value.trim();
    let count = value.chars().count();
    if count < min {
        return Err(Error::invalid(
            field,
            if min == 1 {
                "ne doit pas être vide".to_owned()
            } else {
                format!("doit contenir au moins {min} caractères")
            },
        ));
    }
    if count > max {
        return Err(Error::invalid(
            field,
            format!("trop long : {count} caractères, {max} au plus"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::invalid(field, "contient des caractères de contrôle"));
    }
    Ok(value.to_owned())
}

/// Like [`bounded`] for an optional value; an empty string counts as absent.
pub fn optional(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, Error> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => bounded(field, text, 1, max).map(Some),
    }
}

/// An e-mail address, lower-cased. Only the shape is checked: one `@`, no spaces.
pub fn email(field: &str, value: &str) -> Result<String, Error> {
    let value = bounded(field, value, 3, 254)?.to_lowercase();
    let shaped = match value.split_once('@') {
        Some((local, domain)) => !local.is_empty() && domain.contains('.') && !domain.contains('@'),
        None => false,
    };
    if shaped && !value.contains(char::is_whitespace) {
        Ok(value)
    } else {
        Err(Error::invalid(
            field,
            format!("adresse e-mail « {value} » invalide (forme attendue : nom@domaine.fr)"),
        ))
    }
}

/// Dates of this domain (hand-out, occupancy) lie between these years.
const FIRST_YEAR: i32 = 1900;
const LAST_YEAR: i32 = 2200;

pub fn plausible_date(field: &str, date: NaiveDate) -> Result<NaiveDate, Error> {
    if (FIRST_YEAR..=LAST_YEAR).contains(&date.year()) {
        Ok(date)
    } else {
        Err(Error::invalid(
            field,
            format!("date {date} hors limites ({FIRST_YEAR}-01-01 à {LAST_YEAR}-12-31)"),
        ))
    }
}

pub fn plausible_time(field: &str, time: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    plausible_date(field, time.date_naive())?;
    // Stored as text and compared as text: keep one precision.
    Ok(time.with_nanosecond(0).unwrap_or(time))
}

/// Checks that an optional period runs forwards.
pub fn period<T: PartialOrd + std::fmt::Display>(
    field: &str,
    from: Option<T>,
    until: Option<T>,
) -> Result<(), Error> {
    match (from, until) {
        (Some(from), Some(until)) if from >= until => Err(Error::invalid(
            field,
            format!("la fin de validité ({until}) doit suivre le début ({from})"),
        )),
        _ => Ok(()),
    }
}

/// A list of ids given by a client: at most 500, kept as sent (repeats included) so
/// that an error names the position the client sent; writers drop repeats.
pub fn id_list(field: &str, ids: Vec<i64>) -> Result<Vec<i64>, Error> {
    const MAX: usize = 500;
    if ids.len() > MAX {
        return Err(Error::invalid(
            field,
            format!("{} éléments : {MAX} au plus", ids.len()),
        ));
    }
    Ok(ids)
}

/// The time zone of the residences gardien serves; dates people see ("handed out
/// today") are dates there, not in UTC.
pub const LOCAL_TIME_ZONE: chrono_tz::Tz = chrono_tz::Europe::Paris;

/// Today's date in the residences' time zone.
pub fn local_today() -> NaiveDate {
    Utc::now().with_timezone(&LOCAL_TIME_ZONE).date_naive()
}

/// Folds text for matching the way people expect: lower case, French accents removed
/// ("Émilie" and "emilie" match). SQLite's `LOWER` only folds ASCII, so matching keys
/// are computed here and stored beside the text.
pub fn fold(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'à' | 'â' | 'ä' | 'á' | 'ã' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' | 'í' | 'ì' => 'i',
            'ô' | 'ö' | 'ó' | 'ò' | 'õ' => 'o',
            'ù' | 'û' | 'ü' | 'ú' => 'u',
            'ÿ' | 'ý' => 'y',
            'ç' => 'c',
            'ñ' => 'n',
            other => other,
        })
        .collect()
}

/// The folded text of several fields, for `q` searches.
pub fn search_key(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|field| fold(field))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_ignores_case_and_french_accents() {
        assert_eq!(fold("  Émilie DURAND "), "emilie durand");
        assert_eq!(fold("Accès Étage 3"), fold("acces etage 3"));
        assert_eq!(search_key(&["Hall A", "PX-2"]), "hall a | px-2");
    }
}
