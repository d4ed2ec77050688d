//! What esp-rfid controllers publish unasked on `TOPIC/send`: heartbeats and boot
//! messages (the controller is alive; after a boot it is checked at once) and access
//! events (into the access history, with the alert for a key that is not active).
//! Answers to commands (acks, user lists) are the driver's and are ignored here.

use chrono::{DateTime, Utc};
use gardien_drivers::esprfid::{number, uid_from_hex};
use gardien_drivers::{AccessResult, Credential};
use serde_json::{Map, Value};

use crate::storage::sync::ControllerTarget;
use crate::storage::wmbus::NewRejection;
use crate::storage::Store;

/// Largest message looked at; esp-rfid messages are a few hundred bytes.
const MAX_PAYLOAD: usize = 16 * 1024;

/// What a message turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Not for the service (an ack, a user, a log line) or refused and counted.
    Nothing,
    /// A heartbeat or boot of a known controller.
    Controller,
    Access,
    /// From a device no controller of the database matches.
    Unattributed,
}

pub async fn handle(store: &Store, topic: &str, payload: &[u8]) -> crate::Result<Heard> {
    let Some(base) = topic.strip_suffix("/send") else {
        return Ok(Heard::Nothing);
    };
    let fields = match parse(payload) {
        Ok(fields) => fields,
        Err((reason, detail)) => {
            reject(store, topic, reason, &detail, payload).await?;
            return Ok(Heard::Nothing);
        }
    };
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    match text("type") {
        Some(kind @ ("heartbeat" | "boot")) => {
            let Some(ip) = text("ip") else {
                reject(
                    store,
                    topic,
                    "missing_field",
                    &format!("a {kind} message without \"ip\""),
                    payload,
                )
                .await?;
                return Ok(Heard::Nothing);
            };
            let mut tx = store.write().await?;
            let Some(controller) = tx.esp_rfid_by_address(&format!("{base}@{ip}")).await? else {
                tracing::debug!(
                    topic,
                    ip,
                    "{kind} from an esp-rfid no controller is configured for"
                );
                return Ok(Heard::Unattributed);
            };
            tx.controller_heard(controller.id, Utc::now(), text("hostname"))
                .await?;
            if kind == "boot" {
                tracing::info!(
                    controller = controller.id,
                    "esp-rfid restarted: checking its user list"
                );
                tx.controller_booted(controller.id).await?;
            }
            tx.commit().await?;
            Ok(Heard::Controller)
        }
        Some("access") => access(store, topic, base, &fields, payload).await,
        _ => Ok(Heard::Nothing),
    }
}

fn parse(payload: &[u8]) -> Result<Map<String, Value>, (&'static str, String)> {
    if payload.len() > MAX_PAYLOAD {
        return Err((
            "too_large",
            format!(
                "{} bytes; esp-rfid messages are under {MAX_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(("not_an_object", "a JSON value that is not an object".into())),
        Err(error) => Err(("malformed_json", format!("not JSON: {error}"))),
    }
}

async fn access(
    store: &Store,
    topic: &str,
    base: &str,
    fields: &Map<String, Value>,
    payload: &[u8],
) -> crate::Result<Heard> {
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    let hostname = text("hostname");
    let mut tx = store.write().await?;
    let on_topic = tx.esp_rfid_on_topic(base).await?;
    let Some(controller) = attribute(on_topic, hostname) else {
        tracing::warn!(
            topic,
            ?hostname,
            "access event from an esp-rfid no controller matches"
        );
        return Ok(Heard::Unattributed);
    };
    let profile = store.profiles().get(&controller.profile_id).cloned();
    let lengths = profile
        .as_ref()
        .map(|profile| profile.key_support().badge_uid_lengths.clone())
        .unwrap_or_default();
    let uid_text = text("uid").unwrap_or_default();
    let Some(uid) = uid_from_hex(uid_text, &lengths) else {
        drop(tx);
        let detail = format!("uid {uid_text:?} is not hex of {lengths:?} bytes");
        reject(store, topic, "bad_uid", &detail, payload).await?;
        return Ok(Heard::Nothing);
    };
    let result = match text("access") {
        Some("Always" | "Admin") => AccessResult::Granted,
        _ if text("isKnown") == Some("true") => AccessResult::DeniedDoor,
        _ => AccessResult::DeniedUnknown,
    };
    // The device's clock comes from NTP; a missing or absurd time is replaced by now.
    let at = number(fields, "time")
        .and_then(|time| DateTime::from_timestamp(time, 0))
        .filter(|at| (*at - Utc::now()).num_days().abs() < 365)
        .unwrap_or_else(Utc::now);
    let credential = Credential::Uid(uid);
    let event = crate::sync::access::Presented {
        at,
        door: 1,
        credential: &credential,
        result,
    };
    crate::sync::access::record(&mut tx, &controller, &event).await?;
    tx.controller_heard(controller.id, Utc::now(), hostname)
        .await?;
    tx.commit().await?;
    Ok(Heard::Access)
}

/// The controller an access event comes from: the one that last gave this host name,
/// or the only one on the topic.
fn attribute(
    on_topic: Vec<(ControllerTarget, Option<String>)>,
    hostname: Option<&str>,
) -> Option<ControllerTarget> {
    let alone = on_topic.len() == 1;
    let mut named = None;
    let mut only = None;
    for (controller, name) in on_topic {
        if hostname.is_some() && name.as_deref() == hostname {
            named = Some(controller);
        } else if alone {
            only = Some(controller);
        }
    }
    named.or(only)
}

/// The `source` of this module's rows in `mqtt_rejections`.
pub const SOURCE: &str = "esp-rfid";

/// What a refusal reason means, for the council.
pub fn french(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "too_large" => "message trop volumineux pour venir d'une centrale esp-rfid",
        "malformed_json" => "message illisible (JSON invalide)",
        "not_an_object" => "message JSON qui n'est pas un message de centrale",
        "missing_field" => "champ obligatoire absent (ip d'un battement ou d'un démarrage)",
        "bad_uid" => "badge illisible dans un passage (uid non hexadécimal)",
        _ => return None,
    })
}

async fn reject(
    store: &Store,
    topic: &str,
    reason: &str,
    detail: &str,
    payload: &[u8],
) -> crate::Result<()> {
    tracing::warn!(topic, reason, detail, "esp-rfid message refused");
    let excerpt: String = String::from_utf8_lossy(&payload[..payload.len().min(200)]).into();
    let mut tx = store.write().await?;
    // Counted for the residence whose controllers speak on this topic, if any.
    let base = topic.strip_suffix("/send").unwrap_or(topic);
    let residence_id = tx
        .esp_rfid_on_topic(base)
        .await?
        .first()
        .map(|(controller, _)| controller.residence_id);
    tx.record_mqtt_rejection(&NewRejection {
        residence_id,
        source: SOURCE,
        topic,
        reason,
        detail,
        payload_excerpt: &excerpt,
        at: Utc::now(),
    })
    .await?;
    tx.commit().await
}
