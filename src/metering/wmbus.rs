//! Wireless M-Bus meters heard by wmbusmeters and published over MQTT
//! (`shared/devices/wmbusmeters-json.md`): from "this payload came on topic T for
//! residence R" to a stored reading, alarms, an unknown id counted, or a rejection
//! counted. The MQTT client and the subscriptions live elsewhere.
//!
//! # The telegram
//!
//! One JSON object of at most [`MAX_PAYLOAD_BYTES`], checked before parsing. Read:
//! - `id` (required): a string of up to 8 decimal digits. wmbusmeters may print hex
//!   ids (some Diehl meters); gardien cannot declare those, so they are refused.
//! - `timestamp` (required): an RFC 3339 instant (wmbusmeters writes UTC with `Z`),
//!   truncated to the second; more than [`FUTURE_TOLERANCE_SECONDS`] ahead of the
//!   service clock is refused, as for a gateway clock.
//! - the index (required), the first present of [`INDEX_FIELDS`]: `total_m3` (water,
//!   gas), `total_energy_consumption_kwh` / `_mwh` / `_gj` / `_mj` (heat; GJ and MJ
//!   are turned into kWh here), `current_hca` (heat cost allocators). A JSON number,
//!   finite and 0 or more. A `null` counts as absent.
//! - `meter` (the driver), `media`, `name`: optional strings, kept for unknown ids.
//! - status words from `current_status`, `status` and `current_alarms`, separated by
//!   spaces or commas, case ignored; see [`word_meaning`] for the mapping onto the
//!   same [`AlarmKind`]s as a gateway's status bits. `previous_alarms` is history and
//!   is not read.
//!
//! Every other field is ignored: drivers only ever gain fields.
//!
//! # What is stored
//!
//! The meter is found by id in the residence. Like a provider's file, a removed
//! meter's telegrams still count up to its removal day (a late delivery), and none
//! before the installation day. The index goes into the meter's unit
//! ([`MeasureUnit::convert`]); one that does not convert is a kind mismatch (an
//! allocator's telegram for a water meter), one that does not fit the meter's digits
//! is refused ([`check_index`](crate::storage::meters)). The reading is stored with
//! [`Tx::store_reading`] (source `mqtt`, reference `wmbus:<topic>`), so a redelivery
//! is a duplicate and another value at the same instant a conflict.
//!
//! Alarms are set ([`Tx::set_meter_alarms`], the whole set, as a gateway read-out
//! does) only from a telegram that has a status field, is no conflict, is of a meter
//! in place, and is the meter's newest reading: an older telegram delivered late
//! neither reopens nor clears anything. A telegram without status field (iperl,
//! fhkvdataiii) leaves alarms as they are.
//!
//! Anything refused is counted per (residence, topic, reason) in `mqtt_rejections`
//! and logged (a warning when the count reaches a power of two, so a flood does not
//! flood the log); an unknown id is counted in `wmbus_unknown_meters`. Neither stores
//! a value.
//!
//! Speed: [`ingest`] is one short write transaction per message; [`ingest_many`] takes
//! a backlog in one, which is what sustains a high rate (SQLite has one writer, and
//! each statement and commit has a fixed cost). Parsing happens before the write lock
//! is taken, and a batch looks its meters up (with their newest reading and whether
//! they have an open alarm) in one statement, so a telegram of a known meter in
//! working order costs one insert.

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::meter::{rollover_modulus, MbusId, MeasureUnit};
use crate::domain::text::LOCAL_TIME_ZONE;
use crate::error::Result;
use crate::storage::meters::check_index;
use crate::storage::readings::{AlarmKind, NewReading, ReadingSource, Stored};
use crate::storage::wmbus::{MeterRef, NewRejection, UnknownSighting};
use crate::storage::{Store, Tx};

/// Largest payload parsed; a wmbusmeters telegram is a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Telegrams dated further ahead of the service clock are refused, with the same
/// tolerance as a gateway's readings.
pub use super::checks::FUTURE_TOLERANCE_SECONDS;

/// The `source` of this module's rows in `mqtt_rejections`.
pub const SOURCE: &str = "wmbus";

/// Index fields, in the order they are looked for, with their unit and the factor
/// that turns them into it.
pub const INDEX_FIELDS: [(&str, MeasureUnit, f64); 6] = [
    ("total_m3", MeasureUnit::M3, 1.0),
    ("total_energy_consumption_kwh", MeasureUnit::Kwh, 1.0),
    ("total_energy_consumption_mwh", MeasureUnit::Mwh, 1.0),
    (
        "total_energy_consumption_gj",
        MeasureUnit::Kwh,
        1e6 / 3600.0,
    ),
    ("total_energy_consumption_mj", MeasureUnit::Kwh, 1.0 / 3.6),
    ("current_hca", MeasureUnit::Hca, 1.0),
];

/// Fields whose words say the meter's state now.
pub const STATUS_FIELDS: [&str; 3] = ["current_status", "status", "current_alarms"];

const EXCERPT_CHARS: usize = 200;
/// Longest topic, driver, media or name kept (they are labels, not data).
const LABEL_CHARS: usize = 200;

crate::domain::text_enum!(
    /// Why a message was refused; the grouping key of `mqtt_rejections`.
    RejectionKind {
        TooLarge => "too_large",
        MalformedJson => "malformed_json",
        NotAnObject => "not_an_object",
        MissingField => "missing_field",
        WrongType => "wrong_type",
        BadId => "bad_id",
        BadTimestamp => "bad_timestamp",
        FutureTimestamp => "future_timestamp",
        BadIndex => "bad_index",
        NoIndex => "no_index",
        KindMismatch => "kind_mismatch",
        IndexOutOfRange => "index_out_of_range",
        BeforeInstallation => "before_installation",
        AfterRemoval => "after_removal",
        TooManyUnknownMeters => "too_many_unknown_meters",
    }
);

impl RejectionKind {
    pub const ALL: [RejectionKind; 15] = [
        RejectionKind::TooLarge,
        RejectionKind::MalformedJson,
        RejectionKind::NotAnObject,
        RejectionKind::MissingField,
        RejectionKind::WrongType,
        RejectionKind::BadId,
        RejectionKind::BadTimestamp,
        RejectionKind::FutureTimestamp,
        RejectionKind::BadIndex,
        RejectionKind::NoIndex,
        RejectionKind::KindMismatch,
        RejectionKind::IndexOutOfRange,
        RejectionKind::BeforeInstallation,
        RejectionKind::AfterRemoval,
        RejectionKind::TooManyUnknownMeters,
    ];

    pub fn from_code(code: &str) -> Option<RejectionKind> {
        RejectionKind::ALL.into_iter().find(|k| k.as_str() == code)
    }

    /// What it means, for the council and the syndic.
    pub fn french(self) -> &'static str {
        match self {
            RejectionKind::TooLarge => "message trop volumineux pour être un télégramme",
            RejectionKind::MalformedJson => "message illisible (JSON invalide)",
            RejectionKind::NotAnObject => "message JSON qui n'est pas un télégramme",
            RejectionKind::MissingField => "champ obligatoire absent (id, horodatage)",
            RejectionKind::WrongType => "champ d'un type inattendu",
            RejectionKind::BadId => "identifiant de compteur illisible",
            RejectionKind::BadTimestamp => "horodatage illisible",
            RejectionKind::FutureTimestamp => {
                "télégramme daté du futur : horloge du récepteur radio à vérifier"
            }
            RejectionKind::BadIndex => "index qui n'est pas un nombre positif",
            RejectionKind::NoIndex => "aucun index reconnu dans le télégramme",
            RejectionKind::KindMismatch => {
                "télégramme d'un autre type de compteur que celui déclaré"
            }
            RejectionKind::IndexOutOfRange => "index au-delà de l'affichage du compteur",
            RejectionKind::BeforeInstallation => "relevé antérieur à la pose du compteur",
            RejectionKind::AfterRemoval => "relevé postérieur à la dépose du compteur",
            RejectionKind::TooManyUnknownMeters => {
                "trop de compteurs inconnus déjà listés : celui-ci n'est que compté"
            }
        }
    }
}

/// A refused message: why, and the explanation for logs (English), which names what
/// was wrong and what is accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub detail: String,
}

impl Rejection {
    fn new(kind: RejectionKind, detail: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

/// The index a telegram carries, in the unit named by its field.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub field: &'static str,
    pub value: f64,
    pub unit: MeasureUnit,
}

/// What the status fields say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Alarms present, each once, with a French detail naming the words.
    pub alarms: Vec<(AlarmKind, String)>,
    /// Words of no known meaning (logged, otherwise ignored).
    pub unknown_words: Vec<String>,
}

/// One wmbusmeters telegram, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Telegram {
    pub id: MbusId,
    /// UTC, to the second.
    pub read_at: DateTime<Utc>,
    /// The wmbusmeters driver (`meter` field): `iperl`, `kamwater`, `kamheat`…
    pub driver: String,
    pub media: String,
    pub name: String,
    pub index: Index,
    /// `None` when the telegram has no status field: it says nothing about alarms.
    pub status: Option<Status>,
}

/// What a status word means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordMeaning {
    /// Nothing wrong (`OK`, `no_alarm`).
    Clear,
    /// Known, and no alarm: `DRY` (no water in the pipe, e.g. water shut off in an
    /// empty flat; not a fault of the meter).
    Informative,
    Alarm(AlarmKind),
    Unknown,
}

/// The status words of wmbusmeters drivers, upper-cased, and the gateway alarm each
/// maps onto: multical21/kamwater (`LEAK`, `BURST`, `REVERSE`, `DRY`), kamheat (its
/// error-flag names), Diehl izar (`leakage`, `back_flow`, `meter_blocked`, frauds,
/// `no_alarm`) and the generic `TAMPER`, `LOW_BATTERY`, `ERROR`.
const WORDS: &[(&str, WordMeaning)] = &[
    ("OK", WordMeaning::Clear),
    ("NO_ALARM", WordMeaning::Clear),
    ("DRY", WordMeaning::Informative),
    ("LEAK", WordMeaning::Alarm(AlarmKind::Leak)),
    ("LEAKAGE", WordMeaning::Alarm(AlarmKind::Leak)),
    (
        "IN_A1_LEAKAGE_IN_THE_SYSTEM",
        WordMeaning::Alarm(AlarmKind::Leak),
    ),
    (
        "IN_B1_LEAKAGE_IN_THE_SYSTEM",
        WordMeaning::Alarm(AlarmKind::Leak),
    ),
    (
        "IN_A2_LEAKAGE_IN_THE_SYSTEM",
        WordMeaning::Alarm(AlarmKind::Leak),
    ),
    (
        "IN_B2_LEAKAGE_IN_THE_SYSTEM",
        WordMeaning::Alarm(AlarmKind::Leak),
    ),
    (
        "V1_V2_LEAKAGE_WATER_LOSS",
        WordMeaning::Alarm(AlarmKind::Leak),
    ),
    (
        "V1_V2_LEAKAGE_WATER_PENETRATION",
        WordMeaning::Alarm(AlarmKind::Leak),
    ),
    ("BURST", WordMeaning::Alarm(AlarmKind::Burst)),
    (
        "V1_V2_BURST_WATER_LOSS",
        WordMeaning::Alarm(AlarmKind::Burst),
    ),
    (
        "V1_V2_BURST_WATER_PENETRATION",
        WordMeaning::Alarm(AlarmKind::Burst),
    ),
    ("REVERSE", WordMeaning::Alarm(AlarmKind::ReverseFlow)),
    ("REVERSE_FLOW", WordMeaning::Alarm(AlarmKind::ReverseFlow)),
    ("BACK_FLOW", WordMeaning::Alarm(AlarmKind::ReverseFlow)),
    ("BACKFLOW", WordMeaning::Alarm(AlarmKind::ReverseFlow)),
    (
        "WRONG_FLOW_DIRECTION",
        WordMeaning::Alarm(AlarmKind::ReverseFlow),
    ),
    (
        "V2_WRONG_FLOW_DIRECTION",
        WordMeaning::Alarm(AlarmKind::ReverseFlow),
    ),
    ("TAMPER", WordMeaning::Alarm(AlarmKind::Tamper)),
    ("MAGNET", WordMeaning::Alarm(AlarmKind::Tamper)),
    ("SENSOR_FRAUD", WordMeaning::Alarm(AlarmKind::Tamper)),
    ("MECHANICAL_FRAUD", WordMeaning::Alarm(AlarmKind::Tamper)),
    ("LOW_BATTERY", WordMeaning::Alarm(AlarmKind::LowBattery)),
    (
        "LOW_BATTERY_LEVEL",
        WordMeaning::Alarm(AlarmKind::LowBattery),
    ),
    ("BATTERY_LOW", WordMeaning::Alarm(AlarmKind::LowBattery)),
    ("ERROR", WordMeaning::Alarm(AlarmKind::MeterError)),
    ("METER_ERROR", WordMeaning::Alarm(AlarmKind::MeterError)),
    ("METER_BLOCKED", WordMeaning::Alarm(AlarmKind::MeterError)),
    ("GENERAL_ALARM", WordMeaning::Alarm(AlarmKind::MeterError)),
    ("SENSOR_ERROR", WordMeaning::Alarm(AlarmKind::MeterError)),
    (
        "V1_COMMUNICATION_ERROR",
        WordMeaning::Alarm(AlarmKind::MeterError),
    ),
    (
        "V2_COMMUNICATION_ERROR",
        WordMeaning::Alarm(AlarmKind::MeterError),
    ),
];

/// The meaning of one status word, case ignored.
pub fn word_meaning(word: &str) -> WordMeaning {
    WORDS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(word))
        .map_or(WordMeaning::Unknown, |(_, meaning)| *meaning)
}

/// Parses and checks one telegram; `now` is the service clock.
pub fn parse(payload: &[u8], now: DateTime<Utc>) -> std::result::Result<Telegram, Rejection> {
    use RejectionKind as K;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Rejection::new(
            K::TooLarge,
            format!(
                "payload of {} bytes; at most {MAX_PAYLOAD_BYTES} bytes are accepted (a wmbusmeters telegram is a few hundred)",
                payload.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(payload).map_err(|err| {
        Rejection::new(
            K::MalformedJson,
            format!("not JSON ({err}); expected one wmbusmeters telegram, a JSON object such as {{\"id\":\"12345678\",\"total_m3\":6.408,\"timestamp\":\"2026-11-20T02:00:11Z\"}}"),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(Rejection::new(
            K::NotAnObject,
            format!(
                "a JSON {}; expected one wmbusmeters telegram, a JSON object",
                json_type(&value)
            ),
        ));
    };

    let id_text = required_string(&fields, "id", "a string of up to 8 decimal digits")?;
    let id = MbusId::parse("id", id_text).map_err(|_| {
        Rejection::new(
            K::BadId,
            format!(
                "\"id\" is {}; expected up to 8 decimal digits (hexadecimal ids cannot be declared as meters)",
                quoted(id_text)
            ),
        )
    })?;

    let stamp = required_string(&fields, "timestamp", "an ISO-8601 UTC instant")?;
    let read_at = DateTime::parse_from_rfc3339(stamp)
        .ok()
        .and_then(|at| at.with_timezone(&Utc).with_nanosecond(0))
        .ok_or_else(|| {
            Rejection::new(
                K::BadTimestamp,
                format!(
                    "\"timestamp\" is {}; expected an ISO-8601 instant such as 2026-11-20T02:00:11Z",
                    quoted(stamp)
                ),
            )
        })?;
    let ahead = (read_at - now).num_seconds();
    if ahead > FUTURE_TOLERANCE_SECONDS {
        return Err(Rejection::new(
            K::FutureTimestamp,
            format!(
                "\"timestamp\" {stamp} is {ahead} s ahead of the service clock; at most {FUTURE_TOLERANCE_SECONDS} s \
                 are accepted (check the clock of the wmbusmeters host)"
            ),
        ));
    }

    let index = index(&fields)?;
    let status = status(&fields)?;
    Ok(Telegram {
        id,
        read_at,
        driver: label(optional_string(&fields, "meter")?),
        media: label(optional_string(&fields, "media")?),
        name: label(optional_string(&fields, "name")?),
        index,
        status,
    })
}

fn index(fields: &Map<String, Value>) -> std::result::Result<Index, Rejection> {
    for (field, unit, factor) in INDEX_FIELDS {
        let raw = match fields.get(field) {
            None | Some(Value::Null) => continue,
            Some(raw) => raw,
        };
        // `as_f64` is `None` for anything but a number ("nan" written as a string).
        return match raw.as_f64().map(|v| v * factor) {
            Some(value) if value.is_finite() && value >= 0.0 => Ok(Index { field, value, unit }),
            _ => Err(Rejection::new(
                RejectionKind::BadIndex,
                format!(
                    "\"{field}\" is {}; expected a JSON number, finite and 0 or more",
                    describe(raw)
                ),
            )),
        };
    }
    let names: Vec<&str> = INDEX_FIELDS.iter().map(|(name, _, _)| *name).collect();
    Err(Rejection::new(
        RejectionKind::NoIndex,
        format!(
            "no index field; expected one of {} (water: total_m3, heat: total_energy_consumption_*, heat cost allocators: current_hca)",
            names.join(", ")
        ),
    ))
}

fn status(fields: &Map<String, Value>) -> std::result::Result<Option<Status>, Rejection> {
    let mut said = false;
    let mut status = Status::default();
    let mut words_of: Vec<(AlarmKind, Vec<String>)> = Vec::new();
    for field in STATUS_FIELDS {
        let Some(text) = optional_string(fields, field)? else {
            continue;
        };
        said = true;
        for word in text.split([' ', ',', '\t']).filter(|w| !w.is_empty()) {
            match word_meaning(word) {
                WordMeaning::Clear | WordMeaning::Informative => {}
                WordMeaning::Alarm(kind) => match words_of.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, words)) if !words.iter().any(|w| w == word) => {
                        words.push(word.to_owned())
                    }
                    Some(_) => {}
                    None => words_of.push((kind, vec![word.to_owned()])),
                },
                WordMeaning::Unknown => {
                    if !status.unknown_words.iter().any(|w| w == word) {
                        status.unknown_words.push(label(Some(word)));
                    }
                }
            }
        }
    }
    status.alarms = words_of
        .into_iter()
        .map(|(kind, words)| {
            (
                kind,
                format!(
                    "{} (radio : {})",
                    super::checks::reported_by_meter(kind),
                    words.join(" ")
                ),
            )
        })
        .collect();
    Ok(said.then_some(status))
}

fn required_string<'a>(
    fields: &'a Map<String, Value>,
    field: &str,
    accepted: &str,
) -> std::result::Result<&'a str, Rejection> {
    optional_string(fields, field)?.ok_or_else(|| {
        Rejection::new(
            RejectionKind::MissingField,
            format!("no \"{field}\"; expected {accepted}"),
        )
    })
}

/// A string field; absent or `null` is `None`, another type is refused.
fn optional_string<'a>(
    fields: &'a Map<String, Value>,
    field: &str,
) -> std::result::Result<Option<&'a str>, Rejection> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(Rejection::new(
            RejectionKind::WrongType,
            format!("\"{field}\" is {}; expected a string", describe(other)),
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as a log line shows it: its type, and the start of a string or number.
fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the string {}", quoted(text)),
        Value::Number(number) => format!("the number {}", truncate(&number.to_string(), 40)),
        other => format!("a JSON {}", json_type(other)),
    }
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", truncate(text, 40))
}

fn label(text: Option<&str>) -> String {
    truncate(text.unwrap_or(""), LABEL_CHARS)
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The start of a payload, as text, for the rejection row.
pub fn payload_excerpt(payload: &[u8]) -> String {
    // Enough bytes for 200 characters of up to 4 bytes; the rest is not looked at.
    let head = &payload[..payload.len().min(EXCERPT_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let mut excerpt = truncate(&text, EXCERPT_CHARS);
    if head.len() < payload.len() && !excerpt.ends_with('…') {
        excerpt.push('…');
    }
    excerpt
}

/// Judges a telegram against the meter it names: the index in the meter's unit, or
/// why it cannot be one of its readings.
pub fn reading_value(meter: &MeterRef, telegram: &Telegram) -> std::result::Result<f64, Rejection> {
    use RejectionKind as K;
    let day = telegram
        .read_at
        .with_timezone(&LOCAL_TIME_ZONE)
        .date_naive();
    if day < meter.installed_on {
        return Err(Rejection::new(
            K::BeforeInstallation,
            format!(
                "telegram of {} is dated before meter {} was installed on {}; readings from that day on are accepted",
                telegram.read_at, meter.mbus_id, meter.installed_on
            ),
        ));
    }
    if let Some(removed_on) = meter.removed_on.filter(|removed| day > *removed) {
        return Err(Rejection::new(
            K::AfterRemoval,
            format!(
                "meter {} was removed on {removed_on}; its telegrams count up to that day, this one is of {} \
                 (a removed meter still on the air?)",
                meter.mbus_id, telegram.read_at
            ),
        ));
    }
    let index = &telegram.index;
    let value = meter
        .measure_unit
        .convert(index.value, index.unit)
        .ok_or_else(|| {
            Rejection::new(
                K::KindMismatch,
                format!(
                    "\"{}\" is an index in {}, but meter {} is a {} meter counting in {}; \
                 expected {}",
                    index.field,
                    index.unit.as_str(),
                    meter.mbus_id,
                    meter.kind.as_str(),
                    meter.measure_unit.as_str(),
                    fields_for(meter.measure_unit)
                ),
            )
        })?;
    check_index("index", value, meter.digits).map_err(|_| {
        Rejection::new(
            K::IndexOutOfRange,
            format!(
                "\"{}\" {} is {value} {} for meter {}, which shows 0 to below {} ({} digits)",
                index.field,
                index.value,
                meter.measure_unit.as_str(),
                meter.mbus_id,
                rollover_modulus(meter.digits),
                meter.digits
            ),
        )
    })
}

/// The index fields that fit a meter counting in `unit`.
fn fields_for(unit: MeasureUnit) -> String {
    let fitting: Vec<&str> = INDEX_FIELDS
        .iter()
        .filter(|(_, from, _)| unit.convert(1.0, *from).is_some())
        .map(|(name, _, _)| *name)
        .collect();
    fitting.join(" or ")
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// A new reading, in the meter's unit.
    Stored {
        meter_id: i64,
        read_at: DateTime<Utc>,
        value: f64,
        /// Whether the meter's alarms were set from this telegram.
        alarms_set: bool,
    },
    /// The same reading was already there (a redelivery); nothing stored.
    Duplicate {
        meter_id: i64,
        read_at: DateTime<Utc>,
        alarms_set: bool,
    },
    /// Another value was stored for this meter and instant; it stays, this one is kept
    /// among the reading conflicts. Alarms untouched.
    Conflict {
        meter_id: i64,
        read_at: DateTime<Utc>,
        stored: f64,
        offered: f64,
    },
    /// No meter of the residence has this id; counted in `wmbus_unknown_meters`.
    UnknownMeter { mbus_id: String, telegrams: i64 },
    /// Refused and counted in `mqtt_rejections`; nothing else written.
    Rejected(Rejection),
    /// Not a telegram and not an error: the wmbusmeters bridge state
    /// (`…/bridge/state`, `online` or `offline`). Nothing written.
    Ignored(String),
}

/// One message for [`ingest_many`].
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub residence_id: i64,
    pub topic: &'a str,
    pub payload: &'a [u8],
}

/// Ingests one message received on `topic` for residence `residence_id`, in one
/// short write transaction. Bad input is an `Ok` outcome (counted, logged); an `Err`
/// is the database's (the message may be retried).
pub async fn ingest(
    store: &Store,
    residence_id: i64,
    topic: &str,
    payload: &[u8],
) -> Result<Ingested> {
    let mut outcomes = ingest_many(
        store,
        &[Message {
            residence_id,
            topic,
            payload,
        }],
    )
    .await?;
    Ok(outcomes
        .pop()
        .unwrap_or_else(|| Ingested::Ignored(String::new())))
}

/// Ingests messages in order in one write transaction, which is what makes a backlog
/// go fast (SQLite commits one at a time). Outcomes are in the messages' order. On a
/// database error nothing is written and the error is returned.
pub async fn ingest_many(store: &Store, messages: &[Message<'_>]) -> Result<Vec<Ingested>> {
    let now = now();
    // Parsing, the costly part, happens before the write lock is taken.
    let parsed: Vec<_> = messages
        .iter()
        .map(|message| (!is_bridge_state(message.topic)).then(|| parse(message.payload, now)))
        .collect();
    let mut wanted: HashMap<i64, HashSet<&str>> = HashMap::new();
    for (message, parsed) in messages.iter().zip(&parsed) {
        if let Some(Ok(telegram)) = parsed {
            wanted
                .entry(message.residence_id)
                .or_default()
                .insert(telegram.id.as_str());
        }
    }
    let mut tx = store.write().await?;
    // The batch's meters, looked up once; kept up to date below as readings go in.
    let mut meters: HashMap<i64, HashMap<String, MeterRef>> = HashMap::new();
    for (residence_id, ids) in &wanted {
        let ids: Vec<&str> = ids.iter().copied().collect();
        let found = tx.meters_by_mbus_ids(*residence_id, &ids).await?;
        meters.insert(
            *residence_id,
            found.into_iter().map(|m| (m.mbus_id.clone(), m)).collect(),
        );
    }
    let mut outcomes = Vec::with_capacity(messages.len());
    for (message, parsed) in messages.iter().zip(&parsed) {
        let outcome = match parsed {
            None => Ingested::Ignored(format!(
                "wmbusmeters bridge state: {}",
                payload_excerpt(message.payload)
            )),
            Some(Err(rejection)) => reject(&mut tx, message, rejection.clone(), now).await?,
            Some(Ok(telegram)) => {
                let meter = meters
                    .get_mut(&message.residence_id)
                    .and_then(|known| known.get_mut(telegram.id.as_str()));
                ingest_telegram(&mut tx, message, telegram, meter, now).await?
            }
        };
        outcomes.push(outcome);
    }
    tx.commit().await?;
    for (message, outcome) in messages.iter().zip(&outcomes) {
        log(message, outcome);
    }
    Ok(outcomes)
}

/// Counts a message refused by the caller itself (a topic of no residence, say:
/// `residence_id` is `None` then); answers the count of its row.
pub async fn record_rejection(
    store: &Store,
    residence_id: Option<i64>,
    topic: &str,
    rejection: &Rejection,
    payload: &[u8],
) -> Result<i64> {
    let mut tx = store.write().await?;
    let count = count_rejection(&mut tx, residence_id, topic, rejection, payload, now()).await?;
    tx.commit().await?;
    log_rejection(topic, rejection, count);
    Ok(count)
}

/// The service clock to the second, so that stored instants sort as text.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(0).unwrap_or(now)
}

fn is_bridge_state(topic: &str) -> bool {
    topic.ends_with("/bridge/state")
}

async fn count_rejection(
    tx: &mut Tx,
    residence_id: Option<i64>,
    topic: &str,
    rejection: &Rejection,
    payload: &[u8],
    at: DateTime<Utc>,
) -> Result<i64> {
    let topic = truncate(topic, LABEL_CHARS);
    let excerpt = payload_excerpt(payload);
    tx.record_mqtt_rejection(&NewRejection {
        residence_id,
        source: SOURCE,
        topic: &topic,
        reason: rejection.kind.as_str(),
        detail: &rejection.detail,
        payload_excerpt: &excerpt,
        at,
    })
    .await
}

async fn reject(
    tx: &mut Tx,
    message: &Message<'_>,
    rejection: Rejection,
    at: DateTime<Utc>,
) -> Result<Ingested> {
    let count = count_rejection(
        tx,
        Some(message.residence_id),
        message.topic,
        &rejection,
        message.payload,
        at,
    )
    .await?;
    log_rejection(message.topic, &rejection, count);
    Ok(Ingested::Rejected(rejection))
}

async fn ingest_telegram(
    tx: &mut Tx,
    message: &Message<'_>,
    telegram: &Telegram,
    meter: Option<&mut MeterRef>,
    now: DateTime<Utc>,
) -> Result<Ingested> {
    let residence_id = message.residence_id;
    let topic = truncate(message.topic, LABEL_CHARS);
    let Some(meter) = meter else {
        let sighting = UnknownSighting {
            residence_id,
            mbus_id: telegram.id.as_str(),
            topic: &topic,
            driver: &telegram.driver,
            media: &telegram.media,
            name: &telegram.name,
            at: now,
        };
        return match tx.record_unknown_meter(&sighting).await? {
            Some(telegrams) => Ok(Ingested::UnknownMeter {
                mbus_id: telegram.id.to_string(),
                telegrams,
            }),
            None => {
                let rejection = Rejection::new(
                    RejectionKind::TooManyUnknownMeters,
                    format!(
                        "meter id {} is no meter of the residence, which already lists {} unknown ids; \
                         declare the meters heard or configure wmbusmeters to publish only the residence's",
                        telegram.id,
                        crate::storage::wmbus::MAX_UNKNOWN_METERS
                    ),
                );
                reject(tx, message, rejection, now).await
            }
        };
    };
    if let Some(status) = telegram
        .status
        .as_ref()
        .filter(|s| !s.unknown_words.is_empty())
    {
        tracing::info!(
            topic = message.topic,
            mbus_id = %telegram.id,
            driver = telegram.driver,
            words = ?status.unknown_words,
            "wmbus status words of no known meaning, ignored"
        );
    }
    let value = match reading_value(meter, telegram) {
        Ok(value) => value,
        Err(rejection) => return reject(tx, message, rejection, now).await,
    };
    let source_ref = format!("wmbus:{topic}");
    let stored = tx
        .store_reading(&NewReading {
            residence_id,
            meter_id: meter.id,
            read_at: telegram.read_at,
            value,
            source: ReadingSource::Mqtt,
            source_ref: &source_ref,
        })
        .await?;
    if let Stored::Conflict { stored } = stored {
        return Ok(Ingested::Conflict {
            meter_id: meter.id,
            read_at: telegram.read_at,
            stored,
            offered: value,
        });
    }
    let newest = meter
        .latest_read_at
        .is_none_or(|latest| telegram.read_at >= latest);
    meter.latest_read_at = meter.latest_read_at.max(Some(telegram.read_at));
    let alarms_set = match &telegram.status {
        Some(status) if newest && meter.removed_on.is_none() => {
            // Nothing open and nothing said: nothing to write.
            if meter.alarmed || !status.alarms.is_empty() {
                tx.set_meter_alarms(residence_id, meter.id, &status.alarms, telegram.read_at)
                    .await?;
                meter.alarmed = !status.alarms.is_empty();
            }
            true
        }
        _ => false,
    };
    Ok(match stored {
        Stored::New => Ingested::Stored {
            meter_id: meter.id,
            read_at: telegram.read_at,
            value,
            alarms_set,
        },
        _ => Ingested::Duplicate {
            meter_id: meter.id,
            read_at: telegram.read_at,
            alarms_set,
        },
    })
}

/// Logs what became of a message; rejections are logged where they are counted.
fn log(message: &Message<'_>, outcome: &Ingested) {
    let (residence, topic) = (message.residence_id, message.topic);
    match outcome {
        Ingested::Stored {
            meter_id,
            read_at,
            value,
            alarms_set,
        } => {
            tracing::debug!(residence, topic, meter_id, %read_at, value, alarms_set, "wmbus reading stored")
        }
        Ingested::Duplicate {
            meter_id, read_at, ..
        } => {
            tracing::debug!(residence, topic, meter_id, %read_at, "wmbus reading already stored")
        }
        Ingested::Conflict {
            meter_id,
            read_at,
            stored,
            offered,
        } => tracing::warn!(
            residence, topic, meter_id, %read_at, stored, offered,
            "wmbus reading differs from the one stored for the same instant; kept as a conflict"
        ),
        Ingested::UnknownMeter { mbus_id, telegrams } => {
            if *telegrams == 1 {
                tracing::info!(
                    residence,
                    topic,
                    mbus_id,
                    "wmbus telegram from an id that is no meter of the residence"
                )
            } else {
                tracing::debug!(
                    residence,
                    topic,
                    mbus_id,
                    telegrams,
                    "wmbus telegram from an unknown id"
                )
            }
        }
        Ingested::Rejected(_) => {}
        Ingested::Ignored(what) => tracing::debug!(topic, what, "wmbus message ignored"),
    }
}

/// A warning at counts 1, 2, 4, 8…: a flood of bad messages is visible without
/// flooding the log; every count is in `mqtt_rejections`.
fn log_rejection(topic: &str, rejection: &Rejection, count: i64) {
    let reason = rejection.kind.as_str();
    let detail = &rejection.detail;
    if count > 0 && (count as u64).is_power_of_two() {
        tracing::warn!(topic, reason, count, detail, "wmbus message refused");
    } else {
        tracing::debug!(topic, reason, count, detail, "wmbus message refused");
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::domain::meter::MeterKind;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_000_000, 0).unwrap_or_default()
    }

    fn parsed(json: &str) -> std::result::Result<Telegram, Rejection> {
        parse(json.as_bytes(), now())
    }

    fn kinds(telegram: &Telegram) -> Vec<AlarmKind> {
        let status = telegram.status.as_ref().map_or(&[][..], |s| &s.alarms[..]);
        status.iter().map(|(kind, _)| *kind).collect()
    }

    const KAMWATER: &str = r#"{"_":"telegram","media":"cold water","meter":"kamwater","name":"Apt12Cold","id":"76348799",
        "total_m3":6.408,"target_m3":6.408,"current_status":"DRY","time_dry":"22-31 days","timestamp":"2026-11-20T02:00:11Z"}"#;

    #[test]
    fn the_shapes_of_the_drivers() {
        let water = parsed(KAMWATER).expect("kamwater");
        assert_eq!(water.id.as_str(), "76348799");
        assert_eq!(water.read_at.to_rfc3339(), "2026-11-20T02:00:11+00:00");
        assert_eq!(
            (water.driver.as_str(), water.name.as_str()),
            ("kamwater", "Apt12Cold")
        );
        assert_eq!(
            water.index,
            Index {
                field: "total_m3",
                value: 6.408,
                unit: MeasureUnit::M3
            }
        );
        // DRY is known and raises nothing; the status was said, so alarms clear.
        assert_eq!(water.status, Some(Status::default()));

        let heat = parsed(r#"{"id":"36363636","meter":"kamheat","media":"heat","status":"LOW_BATTERY_LEVEL SENSOR_ERROR",
            "total_energy_consumption_kwh":165,"total_volume_m3":5.45,"timestamp":"2026-11-20T02:00:00.250Z"}"#)
        .expect("kamheat");
        assert_eq!(heat.index.unit, MeasureUnit::Kwh);
        assert_eq!(heat.read_at.timestamp_subsec_nanos(), 0);
        assert_eq!(
            kinds(&heat),
            vec![AlarmKind::LowBattery, AlarmKind::MeterError]
        );

        let gj = parsed(
            r#"{"id":"1","total_energy_consumption_gj":3.6,"timestamp":"2026-11-20T02:00:00Z"}"#,
        )
        .expect("GJ");
        assert_eq!(gj.id.as_str(), "00000001");
        assert!((gj.index.value - 1000.0).abs() < 1e-9, "{}", gj.index.value);
        assert_eq!(gj.status, None);

        let hca = parsed(r#"{"id":"11776622","meter":"fhkvdataiii","current_hca":131,"current_date":"2020-02-08T02:00:00Z",
            "previous_hca":1026,"previous_date":"2019-12-31T02:00:00Z","timestamp":"2026-11-20T02:00:00Z"}"#)
        .expect("fhkvdataiii");
        assert_eq!(hca.index.unit, MeasureUnit::Hca);
        assert_eq!(hca.index.value, 131.0);
        assert_eq!(hca.status, None);

        let izar = parsed(r#"{"id":"21242472","meter":"izar","total_m3":3.488,"current_alarms":"leakage,back_flow,underflow",
            "previous_alarms":"meter_blocked","timestamp":"2026-11-20T02:00:00+01:00"}"#)
        .expect("izar");
        assert_eq!(izar.read_at.to_rfc3339(), "2026-11-20T01:00:00+00:00");
        assert_eq!(kinds(&izar), vec![AlarmKind::Leak, AlarmKind::ReverseFlow]);
        let status = izar.status.expect("a status");
        assert_eq!(status.unknown_words, vec!["underflow".to_owned()]);
        assert!(
            status.alarms[0].1.contains("leakage"),
            "{}",
            status.alarms[0].1
        );
    }

    #[test]
    fn status_words_map_onto_gateway_alarms() {
        for (word, meaning) in [
            ("OK", WordMeaning::Clear),
            ("no_alarm", WordMeaning::Clear),
            ("dry", WordMeaning::Informative),
            ("LEAK", WordMeaning::Alarm(AlarmKind::Leak)),
            ("BURST", WordMeaning::Alarm(AlarmKind::Burst)),
            ("REVERSE", WordMeaning::Alarm(AlarmKind::ReverseFlow)),
            ("back_flow", WordMeaning::Alarm(AlarmKind::ReverseFlow)),
            ("TAMPER", WordMeaning::Alarm(AlarmKind::Tamper)),
            ("LOW_BATTERY", WordMeaning::Alarm(AlarmKind::LowBattery)),
            ("meter_blocked", WordMeaning::Alarm(AlarmKind::MeterError)),
            ("SOMETHING_NEW", WordMeaning::Unknown),
        ] {
            assert_eq!(word_meaning(word), meaning, "{word}");
        }
        // Words repeated across fields count once; OK beside an alarm clears nothing.
        let both = parsed(r#"{"id":"1","total_m3":1,"current_status":"LEAK BURST","status":"LEAK,OK","timestamp":"2026-11-20T02:00:00Z"}"#)
            .expect("telegram");
        assert_eq!(kinds(&both), vec![AlarmKind::Leak, AlarmKind::Burst]);
    }

    #[test]
    fn bad_input_is_named() {
        use RejectionKind as K;
        let huge = format!(
            r#"{{"id":"1","total_m3":1,"pad":"{}","timestamp":"2026-11-20T02:00:00Z"}}"#,
            "x".repeat(MAX_PAYLOAD_BYTES)
        );
        for (payload, kind, names) in [
            (huge.as_str(), K::TooLarge, "65536"),
            (r#"{"id":"1","total_m3":1"#, K::MalformedJson, "not JSON"),
            (r#"{"id":"1","total_m3":NaN}"#, K::MalformedJson, "not JSON"),
            (r#"[1,2]"#, K::NotAnObject, "array"),
            (
                r#"{"total_m3":1,"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::MissingField,
                "\"id\"",
            ),
            (
                r#"{"id":"1","total_m3":1}"#,
                K::MissingField,
                "\"timestamp\"",
            ),
            (
                r#"{"id":12345678,"total_m3":1,"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::WrongType,
                "\"id\" is the number",
            ),
            (
                r#"{"id":"2124589c","total_m3":1,"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::BadId,
                "2124589c",
            ),
            (
                r#"{"id":"123456789","total_m3":1,"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::BadId,
                "8 decimal digits",
            ),
            (
                r#"{"id":"1","total_m3":1,"timestamp":"20/11/2026 02:00"}"#,
                K::BadTimestamp,
                "2026-11-20T02:00:11Z",
            ),
            (
                r#"{"id":"1","total_m3":1,"timestamp":"2026-11-20T02:00:00"}"#,
                K::BadTimestamp,
                "ISO-8601",
            ),
            (
                r#"{"id":"1","total_m3":1,"timestamp":"2027-01-01T00:00:00Z"}"#,
                K::FutureTimestamp,
                "ahead",
            ),
            (
                r#"{"id":"1","total_m3":"nan","timestamp":"2026-11-20T02:00:00Z"}"#,
                K::BadIndex,
                "the string \"nan\"",
            ),
            (
                r#"{"id":"1","total_m3":-0.5,"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::BadIndex,
                "0 or more",
            ),
            (
                r#"{"id":"1","total_m3":{},"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::BadIndex,
                "object",
            ),
            (
                r#"{"id":"1","total_m3":null,"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::NoIndex,
                "current_hca",
            ),
            (
                r#"{"id":"1","total_m3":1,"status":7,"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::WrongType,
                "\"status\"",
            ),
            (
                r#"{"id":"1","total_m3":1,"name":["a"],"timestamp":"2026-11-20T02:00:00Z"}"#,
                K::WrongType,
                "\"name\"",
            ),
        ] {
            let rejection = parsed(payload).expect_err(payload);
            assert_eq!(rejection.kind, kind, "{payload}: {rejection}");
            assert!(rejection.detail.contains(names), "{payload}: {rejection}");
        }
        // Just within the tolerance of the service clock.
        let soon = (now() + chrono::Duration::seconds(FUTURE_TOLERANCE_SECONDS)).to_rfc3339();
        let payload = format!(r#"{{"id":"1","total_m3":1,"timestamp":"{soon}"}}"#);
        assert!(parsed(&payload).is_ok());
        assert_eq!(
            parse(b"\xff\xfe{", now()).map_err(|r| r.kind),
            Err(K::MalformedJson)
        );
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(payload_excerpt(b"{\"id\":1}"), "{\"id\":1}");
        let long = "é".repeat(1000);
        let excerpt = payload_excerpt(long.as_bytes());
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1);
        assert!(excerpt.ends_with('…'));
        assert_eq!(payload_excerpt(b"\xff"), "\u{fffd}");
    }

    fn meter(unit: MeasureUnit, kind: MeterKind) -> MeterRef {
        MeterRef {
            id: 1,
            kind,
            mbus_id: "00000001".into(),
            measure_unit: unit,
            digits: 5,
            installed_on: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            removed_on: None,
            latest_read_at: None,
            alarmed: false,
        }
    }

    fn telegram(field: &str, value: f64, stamp: &str) -> Telegram {
        let json = format!(r#"{{"id":"1","{field}":{value},"timestamp":"{stamp}"}}"#);
        parsed(&json).expect("a telegram")
    }

    #[test]
    fn readings_are_judged_against_the_meter() {
        use RejectionKind as K;
        let t = "2026-06-01T02:00:00Z";
        let heat = meter(MeasureUnit::Mwh, MeterKind::Heating);
        assert_eq!(
            reading_value(&heat, &telegram("total_energy_consumption_kwh", 1500.0, t)),
            Ok(1.5)
        );
        let water = meter(MeasureUnit::M3, MeterKind::ColdWater);
        assert_eq!(
            reading_value(&water, &telegram("total_m3", 12.5, t)),
            Ok(12.5)
        );
        let judged = |meter: &MeterRef, telegram: &Telegram| {
            reading_value(meter, telegram).map_err(|r| (r.kind, r.detail))
        };
        let Err((kind, detail)) = judged(&water, &telegram("current_hca", 3.0, t)) else {
            panic!("an allocator's telegram for a water meter");
        };
        assert_eq!(kind, K::KindMismatch);
        assert!(detail.contains("expected total_m3"), "{detail}");
        assert_eq!(
            judged(&water, &telegram("total_m3", 100_000.0, t)).map_err(|e| e.0),
            Err(K::IndexOutOfRange)
        );
        // 31 December 23:30 UTC is 1 January in Paris: the installation day.
        assert!(judged(&water, &telegram("total_m3", 1.0, "2025-12-31T23:30:00Z")).is_ok());
        assert_eq!(
            judged(&water, &telegram("total_m3", 1.0, "2025-12-31T22:30:00Z")).map_err(|e| e.0),
            Err(K::BeforeInstallation)
        );
        let removed = MeterRef {
            removed_on: NaiveDate::from_ymd_opt(2026, 5, 31),
            ..water
        };
        assert!(judged(&removed, &telegram("total_m3", 1.0, "2026-05-31T20:00:00Z")).is_ok());
        assert_eq!(
            judged(&removed, &telegram("total_m3", 1.0, t)).map_err(|e| e.0),
            Err(K::AfterRemoval)
        );
    }

    #[test]
    fn rejection_codes_round_trip() {
        for kind in RejectionKind::ALL {
            assert_eq!(RejectionKind::from_code(kind.as_str()), Some(kind));
            assert!(!kind.french().is_empty());
        }
        assert_eq!(RejectionKind::from_code("nope"), None);
    }
}
