//! Property tests of key identifier normalisation (`gardien::domain::key_id`): every
//! way a badge UID or a remote serial gets printed or typed comes out as one canonical
//! identifier, and anything else is refused with the accepted forms, never a panic.

use gardien::domain::key_id::{
    badge_card_number, canonical_identifier, parse_badge_uid, KeyKind, UID_LENGTHS,
};
use proptest::prelude::*;

/// How a reader, a spreadsheet or a person prints a badge UID.
#[derive(Debug, Clone)]
struct HexStyle {
    /// Per hex digit: upper-case or not (a digit ignores it).
    upper: Vec<bool>,
    /// Between bytes, or none.
    separator: Option<char>,
    /// Per byte: with a separator, whether a byte below 0x10 drops its leading zero.
    drop_zero: Vec<bool>,
    prefix: &'static str,
    padding: (String, String),
}

/// Whitespace around what was typed or pasted.
fn padding() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,3}"
}

fn hex_style() -> impl Strategy<Value = HexStyle> {
    (
        prop::collection::vec(any::<bool>(), 40),
        prop::option::of(prop::sample::select(vec![':', ' ', '-'])),
        prop::collection::vec(any::<bool>(), 20),
        prop::sample::select(vec!["", "0x", "0X"]),
        (padding(), padding()),
    )
        .prop_map(|(upper, separator, drop_zero, prefix, padding)| HexStyle {
            upper,
            separator,
            drop_zero,
            prefix,
            padding,
        })
}

/// `bytes` printed in `style`.
fn print_hex(bytes: &[u8], style: &HexStyle) -> String {
    let groups: Vec<String> = bytes
        .iter()
        .enumerate()
        .map(|(index, byte)| {
            let drop = style.separator.is_some() && *byte < 0x10 && style.drop_zero[index];
            if drop {
                format!("{byte:x}")
            } else {
                format!("{byte:02x}")
            }
        })
        .collect();
    let joined = match style.separator {
        Some(separator) => groups.join(&separator.to_string()),
        None => groups.concat(),
    };
    let cased: String = joined
        .chars()
        .enumerate()
        .map(|(index, c)| {
            if style.upper[index % style.upper.len()] {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let (before, after) = &style.padding;
    format!("{before}{}{cased}{after}", style.prefix)
}

/// The canonical form the rules give: upper-case hex, no separators.
fn upper_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

/// The 10-digit decimal printed on 4-byte badges: the UID read little-endian.
fn decimal_le(uid: [u8; 4]) -> String {
    format!("{:010}", u32::from_le_bytes(uid))
}

fn uid_of_valid_length() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(UID_LENGTHS.to_vec())
        .prop_flat_map(|length| prop::collection::vec(any::<u8>(), length))
}

fn uid_of_invalid_length() -> impl Strategy<Value = Vec<u8>> {
    (0usize..=16)
        .prop_filter("not a UID length", |length| !UID_LENGTHS.contains(length))
        .prop_flat_map(|length| prop::collection::vec(any::<u8>(), length))
}

/// Strings near the accepted forms (hex digits, separators, prefixes) or anything at all.
fn arbitrary_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-FxX:\\- \t]{0,32}",
        "[0-9]{8,12}",
        "\\PC{0,80}",
    ]
}

fn assert_refused_with_forms(input: &str) -> Result<(), TestCaseError> {
    match canonical_identifier(KeyKind::VigikBadge, input) {
        Ok(canonical) => Err(TestCaseError::fail(format!(
            "{input:?} accepted as {canonical}"
        ))),
        Err(err) => {
            prop_assert!(
                err.to_string().contains("formes acceptées"),
                "{input:?}: {err}"
            );
            Ok(())
        }
    }
}

/// Remote serial `value` printed with `zeros` leading zeros, optionally grouped by
/// thousands with spaces (`4 294 967 295`), with surrounding whitespace.
fn print_serial(value: u64, zeros: usize, grouped: bool, padding: &(String, String)) -> String {
    let digits = format!("{}{value}", "0".repeat(zeros));
    let printed = if grouped {
        let chars: Vec<char> = digits.chars().collect();
        let head = chars.len() % 3;
        let mut groups = Vec::new();
        if head > 0 {
            groups.push(chars[..head].iter().collect::<String>());
        }
        groups.extend(
            chars[head..]
                .chunks(3)
                .map(|c| c.iter().collect::<String>()),
        );
        groups.join(" ")
    } else {
        digits
    };
    format!("{}{printed}{}", padding.0, padding.1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_printed_form_of_a_badge_uid_gives_its_upper_hex(
        uid in uid_of_valid_length(),
        style in hex_style(),
    ) {
        let form = print_hex(&uid, &style);
        let canonical = canonical_identifier(KeyKind::VigikBadge, &form)
            .map_err(|err| TestCaseError::fail(format!("{form:?} refused: {err}")))?;
        prop_assert_eq!(&canonical, &upper_hex(&uid), "form {:?}", form);
        prop_assert_eq!(parse_badge_uid(&form).expect("parsed above"), uid);
    }

    #[test]
    fn decimal_form_of_a_4_byte_uid_matches_its_hex_form(
        uid in any::<[u8; 4]>(),
        style in hex_style(),
        padding in (padding(), padding()),
    ) {
        let decimal = format!("{}{}{}", padding.0, decimal_le(uid), padding.1);
        let from_decimal = canonical_identifier(KeyKind::VigikBadge, &decimal)
            .map_err(|err| TestCaseError::fail(format!("{decimal:?} refused: {err}")))?;
        let from_hex = canonical_identifier(KeyKind::VigikBadge, &print_hex(&uid, &style))
            .expect("hex form accepted");
        prop_assert_eq!(&from_decimal, &from_hex);
        prop_assert_eq!(&from_decimal, &upper_hex(&uid));
    }

    #[test]
    fn badge_card_number_round_trips_through_the_decimal_form(uid in any::<[u8; 4]>()) {
        let number = badge_card_number(&uid).expect("4-byte UID has a card number");
        prop_assert_eq!(number, u32::from_le_bytes(uid));
        let parsed = parse_badge_uid(&format!("{number:010}")).expect("decimal form accepted");
        prop_assert_eq!(&parsed, &uid.to_vec());
        prop_assert_eq!(badge_card_number(&parsed), Some(number));
        let canonical = canonical_identifier(KeyKind::VigikBadge, &upper_hex(&uid))
            .expect("hex accepted");
        let again = parse_badge_uid(&canonical).expect("canonical accepted");
        prop_assert_eq!(badge_card_number(&again), Some(number));
    }

    #[test]
    fn longer_uids_have_no_card_number(uid in uid_of_valid_length()) {
        prop_assert_eq!(badge_card_number(&uid).is_some(), uid.len() == 4);
    }

    #[test]
    fn ten_digit_numbers_above_32_bits_are_refused(number in (u64::from(u32::MAX) + 1)..=9_999_999_999u64) {
        assert_refused_with_forms(&number.to_string())?;
    }

    #[test]
    fn uids_of_other_lengths_are_refused(uid in uid_of_invalid_length(), style in hex_style()) {
        let form = print_hex(&uid, &style);
        let trimmed = form.trim();
        if trimmed.len() == 10 && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            // Five bytes of hex printed with decimal digits only and nothing else read
            // exactly as the 10-digit decimal form of a 4-byte UID: that reading wins.
            let number: u64 = trimmed.parse().expect("ten digits");
            if let Ok(number) = u32::try_from(number) {
                prop_assert_eq!(
                    canonical_identifier(KeyKind::VigikBadge, &form).expect("decimal form"),
                    upper_hex(&number.to_le_bytes())
                );
                return Ok(());
            }
        }
        assert_refused_with_forms(&form)?;
    }

    #[test]
    fn any_input_is_refused_with_the_forms_or_gives_a_canonical_uid(input in arbitrary_input()) {
        match canonical_identifier(KeyKind::VigikBadge, &input) {
            Ok(canonical) => {
                prop_assert!(
                    [8, 14, 20].contains(&canonical.len()),
                    "{:?} gave {:?}", input, canonical
                );
                prop_assert!(
                    canonical.chars().all(|c| matches!(c, '0'..='9' | 'A'..='F')),
                    "{:?} gave {:?}", input, canonical
                );
            }
            Err(err) => prop_assert!(
                err.to_string().contains("formes acceptées"),
                "{:?}: {}", input, err
            ),
        }
    }

    #[test]
    fn canonical_badge_identifiers_are_fixed_points(
        input in prop_oneof![
            arbitrary_input(),
            (uid_of_valid_length(), hex_style()).prop_map(|(uid, style)| print_hex(&uid, &style)),
            any::<[u8; 4]>().prop_map(decimal_le),
        ],
    ) {
        if let Ok(canonical) = canonical_identifier(KeyKind::VigikBadge, &input) {
            prop_assert_eq!(
                canonical_identifier(KeyKind::VigikBadge, &canonical).ok(),
                Some(canonical.clone()),
                "from {:?}", input
            );
        }
    }

    #[test]
    fn remote_serials_lose_leading_zeros_and_spaces(
        (value, zeros) in any::<u32>().prop_flat_map(|value| {
            // The accepted form is 1 to 10 digits, leading zeros included.
            let room = 10 - value.to_string().len();
            (Just(value), 0..=room)
        }),
        grouped in any::<bool>(),
        padding in (padding(), padding()),
    ) {
        let form = print_serial(u64::from(value), zeros, grouped, &padding);
        let canonical = canonical_identifier(KeyKind::Remote, &form)
            .map_err(|err| TestCaseError::fail(format!("{form:?} refused: {err}")))?;
        prop_assert_eq!(&canonical, &value.to_string(), "form {:?}", form);
        prop_assert_eq!(
            canonical_identifier(KeyKind::Remote, &canonical).ok(),
            Some(canonical.clone())
        );
    }

    #[test]
    fn remote_serials_above_32_bits_are_refused(
        value in (u64::from(u32::MAX) + 1)..=u64::MAX,
        zeros in 0usize..3,
        grouped in any::<bool>(),
        padding in (padding(), padding()),
    ) {
        let form = print_serial(value, zeros, grouped, &padding);
        let err = canonical_identifier(KeyKind::Remote, &form)
            .err()
            .ok_or_else(|| TestCaseError::fail(format!("{form:?} accepted")))?;
        prop_assert!(err.to_string().contains("forme acceptée"), "{:?}: {}", form, err);
    }
}
