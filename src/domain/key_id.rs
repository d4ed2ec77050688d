//! Key identifiers: what people type and readers print, turned into one canonical form.
//!
//! - Vigik badges (Mifare) are identified by their UID of 4, 7 or 10 bytes. Canonical
//!   form: upper-case hex, no separators (`04A22B91`). Accepted: hex in any case, with
//!   or without `:`, space or `-` between bytes, an optional `0x`; and for 4-byte UIDs
//!   the 10-digit decimal printed on many badges, which is the UID read little-endian
//!   (`2435555844` is `04A22B91`).
//! - Remotes are identified by the serial printed on them, a decimal number that fits
//!   in 32 bits (controllers store it as a card number). Canonical form: the decimal
//!   number without leading zeros.
//! - Other keys (mechanical keys, fobs of unknown make): free text, trimmed, spaces
//!   collapsed, upper-cased, at most 64 characters.

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum KeyKind {
    VigikBadge,
    Remote,
    Other,
}

impl KeyKind {
    pub const ALL: [KeyKind; 3] = [KeyKind::VigikBadge, KeyKind::Remote, KeyKind::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::VigikBadge => "vigik_badge",
            KeyKind::Remote => "remote",
            KeyKind::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<KeyKind> {
        let text = text.trim().to_ascii_lowercase();
        KeyKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

pub const BADGE_FORMS: &str = "UID hexadécimal de 4, 7 ou 10 octets, avec ou sans séparateurs \
     « : », « - » ou espace (ex. 04A22B91, 04:a2:2b:91, 04 A2 2B 91 80 12 34), ou, pour un \
     badge de 4 octets, le nombre décimal de 10 chiffres imprimé sur le badge (ex. 2435555844)";
pub const REMOTE_FORMS: &str =
    "numéro de série décimal imprimé sur la télécommande, de 1 à 10 chiffres, au plus 4294967295 (ex. 00123456)";
pub const OTHER_FORMS: &str = "texte de 1 à 64 caractères imprimables";

/// Badge UID lengths in bytes that Mifare cards use.
pub const UID_LENGTHS: [usize; 3] = [4, 7, 10];

/// Parses what a person typed into the canonical identifier of a key of that kind.
pub fn canonical_identifier(kind: KeyKind, input: &str) -> Result<String, Error> {
    match kind {
        KeyKind::VigikBadge => parse_badge_uid(input).map(hex::encode_upper),
        KeyKind::Remote => parse_remote_serial(input).map(|serial| serial.to_string()),
        KeyKind::Other => parse_other(input),
    }
}

/// Parses a badge UID into its bytes, in reading order.
pub fn parse_badge_uid(input: &str) -> Result<Vec<u8>, Error> {
    let refuse = || {
        Error::invalid(
            "identifier",
            format!(
                "identifiant de badge « {} » invalide ; formes acceptées : {BADGE_FORMS}",
                shorten(input)
            ),
        )
    };
    let text = input.trim();
    if text.len() == 10 && text.bytes().all(|b| b.is_ascii_digit()) {
        let number: u32 = text.parse().map_err(|_| refuse())?;
        return Ok(number.to_le_bytes().to_vec());
    }
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let groups: Vec<&str> = text
        .split([':', '-', ' '])
        .filter(|group| !group.is_empty())
        .collect();
    let hex_digits: String = if groups.len() > 1 {
        // Separated bytes: each group is one byte, a reader may drop its leading zero.
        let mut digits = String::with_capacity(groups.len() * 2);
        for group in groups {
            if group.len() > 2 {
                return Err(refuse());
            }
            if group.len() == 1 {
                digits.push('0');
            }
            digits.push_str(group);
        }
        digits
    } else {
        groups.concat()
    };
    let bytes = hex::decode(&hex_digits).map_err(|_| refuse())?;
    if UID_LENGTHS.contains(&bytes.len()) {
        Ok(bytes)
    } else {
        Err(refuse())
    }
}

/// The 32-bit card number of a 4-byte UID, as KL-8 controllers and badge printers use it.
pub fn badge_card_number(uid: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = uid.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

pub fn parse_remote_serial(input: &str) -> Result<u32, Error> {
    let trimmed = input.trim();
    // Separators go between digits; a leading sign is not a serial.
    let signed = trimmed.starts_with(['-', '+']);
    let digits: String = trimmed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.'))
        .collect();
    let valid = !signed
        && !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit());
    valid
        .then(|| digits.parse::<u32>().ok())
        .flatten()
        .ok_or_else(|| {
            Error::invalid(
                "identifier",
                format!(
                    "numéro de télécommande « {} » invalide ; forme acceptée : {REMOTE_FORMS}",
                    shorten(input)
                ),
            )
        })
}

fn parse_other(input: &str) -> Result<String, Error> {
    let text = input
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    let count = text.chars().count();
    if (1..=64).contains(&count) && !text.chars().any(char::is_control) {
        Ok(text)
    } else {
        Err(Error::invalid(
            "identifier",
            format!(
                "identifiant « {} » invalide ; forme acceptée : {OTHER_FORMS}",
                shorten(input)
            ),
        ))
    }
}

/// Error messages quote the input; keep a megabyte of garbage out of them.
fn shorten(input: &str) -> String {
    const MAX: usize = 40;
    if input.chars().count() <= MAX {
        input.to_owned()
    } else {
        let head: String = input.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badge_forms_from_the_field() {
        for form in [
            "04A22B91",
            "04a22b91",
            "04:A2:2B:91",
            "04 a2 2b 91",
            "04-A2-2B-91",
            "0x04A22B91",
            "4:a2:2b:91",
            "2435555844",
        ] {
            assert_eq!(
                canonical_identifier(KeyKind::VigikBadge, form).unwrap(),
                "04A22B91",
                "{form}"
            );
        }
        assert_eq!(
            canonical_identifier(KeyKind::VigikBadge, "04 5a 2b 91 80 12 34").unwrap(),
            "045A2B91801234"
        );
    }

    #[test]
    fn badge_refusals_show_accepted_forms() {
        for bad in [
            "",
            "04A22B",
            "04A22B9",
            "ZZA22B91",
            "04A22B9180",
            "4294967296",
            "123:4",
        ] {
            let err = canonical_identifier(KeyKind::VigikBadge, bad).unwrap_err();
            assert!(err.to_string().contains("formes acceptées"), "{bad}: {err}");
        }
    }

    #[test]
    fn remotes_and_others() {
        assert_eq!(
            canonical_identifier(KeyKind::Remote, "00123456").unwrap(),
            "123456"
        );
        assert_eq!(
            canonical_identifier(KeyKind::Remote, "4 294 967 295").unwrap(),
            "4294967295"
        );
        assert!(canonical_identifier(KeyKind::Remote, "4294967296").is_err());
        assert!(canonical_identifier(KeyKind::Remote, "12A").is_err());
        assert_eq!(
            canonical_identifier(KeyKind::Other, "  clé  boîte ").unwrap(),
            "CLÉ BOÎTE"
        );
        assert!(canonical_identifier(KeyKind::Other, "   ").is_err());
    }
}
