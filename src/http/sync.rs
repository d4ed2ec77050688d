//! What the lock controllers hold compared with the database: per key ("removed from
//! 12 of 14 controllers, 2 pending since 10:02"), per controller, drift found by
//! audits, access events and alerts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::crud::{ItemPath, ResidencePath};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Manager, Member};
use super::AppState;
use crate::domain::key_id::KeyKind;
use crate::domain::text::LOCAL_TIME_ZONE;
use crate::domain::SyncState;
use crate::storage::keys::Key;
use crate::storage::sync::{AccessEventRow, Alert, ControllerStatus, Drift, EventFilter};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(key_sync))
        .routes(routes!(controller_status))
        .routes(routes!(controller_drift))
        .routes(routes!(request_audit))
        .routes(routes!(import_ghost))
        .routes(routes!(alerts))
        .routes(routes!(acknowledge_alert))
        .routes(routes!(access_events))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct KeySyncReport {
    /// In words, for the council: « retiré de 12 centrales sur 14, 2 en attente depuis 10:02 ».
    summary: String,
    controllers: Vec<KeySyncLine>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct KeySyncLine {
    controller_id: i64,
    controller_name: String,
    /// Door mask the controller must hold; 0: the key must not be there.
    doors: i64,
    state: SyncState,
    changed_at: DateTime<Utc>,
    confirmed_at: Option<DateTime<Utc>>,
    attempts: i64,
    error: Option<String>,
}

/// Where the key stands on every controller its profiles reach (or reached).
#[utoipa::path(get, path = "/residences/{rid}/keys/{id}/sync", tag = "sync", params(ItemPath),
    responses((status = 200, body = KeySyncReport), (status = 404, body = ErrorBody)))]
async fn key_sync(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<KeySyncReport>> {
    let mut tx = state.store.read().await?;
    let key = tx
        .key(member.residence_id, path.id, member.visibility)
        .await?;
    let rows = tx.key_sync_of_key(member.residence_id, key.id).await?;
    let mut controllers = Vec::with_capacity(rows.len());
    for row in rows {
        let controller = tx
            .controller(member.residence_id, row.controller_id)
            .await?;
        controllers.push(KeySyncLine {
            controller_id: row.controller_id,
            controller_name: controller.name,
            doors: row.doors,
            state: row.state,
            changed_at: row.changed_at,
            confirmed_at: row.confirmed_at,
            attempts: row.attempts,
            error: row.error,
        });
    }
    Ok(Json(KeySyncReport {
        summary: summary(&key, &controllers),
        controllers,
    }))
}

/// « retiré de 12 centrales sur 14, 2 en attente depuis 10:02, 1 en échec ».
fn summary(key: &Key, lines: &[KeySyncLine]) -> String {
    if lines.is_empty() {
        return "aucune centrale concernée".into();
    }
    let removing = !key.in_force(Utc::now());
    let done = lines
        .iter()
        .filter(|line| line.state == SyncState::Confirmed)
        .count();
    let pending: Vec<&KeySyncLine> = lines
        .iter()
        .filter(|line| line.state == SyncState::Pending)
        .collect();
    let failed = lines
        .iter()
        .filter(|line| line.state == SyncState::Failed)
        .count();
    let verb = if removing {
        "retiré de"
    } else {
        "programmé sur"
    };
    let plural = |n: usize, word: &str| {
        if n > 1 {
            format!("{n} {word}s")
        } else {
            format!("{n} {word}")
        }
    };
    let mut text = format!("{verb} {} sur {}", plural(done, "centrale"), lines.len());
    if let Some(oldest) = pending.iter().map(|line| line.changed_at).min() {
        let since = oldest.with_timezone(&LOCAL_TIME_ZONE).format("%H:%M");
        text.push_str(&format!(", {} en attente depuis {since}", pending.len()));
    }
    if failed > 0 {
        text.push_str(&format!(", {failed} en échec"));
    }
    text
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ControllerReport {
    #[serde(flatten)]
    status: ControllerStatus,
    /// Keys it must hold.
    wanted: i64,
    pending: i64,
    failed: i64,
    /// Several failed visits in a row: the engine waits longer between attempts.
    circuit_open: bool,
    open_drift: usize,
}

/// Last seen, pending and failed changes, table usage against capacity.
#[utoipa::path(get, path = "/residences/{rid}/controllers/{id}/status", tag = "sync", params(ItemPath),
    responses((status = 200, body = ControllerReport), (status = 404, body = ErrorBody)))]
async fn controller_status(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<ControllerReport>> {
    let mut tx = state.store.read().await?;
    tx.controller(manager.residence_id(), path.id).await?;
    let status = tx.controller_status(path.id).await?;
    let rows = tx.key_sync_of_controller(path.id).await?;
    let count = |state: SyncState| rows.iter().filter(|row| row.state == state).count() as i64;
    let open_drift = tx.open_drift(manager.residence_id(), path.id).await?.len();
    Ok(Json(ControllerReport {
        wanted: rows.iter().filter(|row| row.doors != 0).count() as i64,
        pending: count(SyncState::Pending),
        failed: count(SyncState::Failed),
        circuit_open: status.consecutive_failures >= crate::sync::CIRCUIT_OPEN_AFTER,
        open_drift,
        status,
    }))
}

/// Differences the last audit found: entries the database does not know (`ghost`),
/// missing entries, wrong door masks, duplicates.
#[utoipa::path(get, path = "/residences/{rid}/controllers/{id}/drift", tag = "sync", params(ItemPath),
    responses((status = 200, body = Vec<Drift>), (status = 404, body = ErrorBody)))]
async fn controller_drift(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<Vec<Drift>>> {
    let mut tx = state.store.read().await?;
    tx.controller(manager.residence_id(), path.id).await?;
    Ok(Json(tx.open_drift(manager.residence_id(), path.id).await?))
}

/// Reads the controller's whole table at once and reports drift.
#[utoipa::path(post, path = "/residences/{rid}/controllers/{id}/audit", tag = "sync", params(ItemPath),
    responses((status = 202), (status = 404, body = ErrorBody)))]
async fn request_audit(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.write().await?;
    tx.request_audit(manager.residence_id(), path.id).await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ImportGhost {
    /// What the entry is; required for a card number (KL-8), a UID is a badge.
    kind: Option<KeyKind>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct DriftPath {
    #[allow(dead_code)] // `Manager` reads it from the raw path; here for the OpenAPI document.
    rid: i64,
    drift_id: i64,
}

/// Records an unknown entry of a controller as a key with no holder, opening the same
/// doors, for the council to sort out.
#[utoipa::path(post, path = "/residences/{rid}/drift/{drift_id}/import", tag = "sync", params(DriftPath), request_body = ImportGhost,
    responses((status = 201, body = Key), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn import_ghost(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<DriftPath>,
    ApiJson(input): ApiJson<ImportGhost>,
) -> ApiResult<(StatusCode, Json<Key>)> {
    let mut tx = state.store.write().await?;
    let key = tx
        .import_ghost(
            &manager.actor(),
            manager.residence_id(),
            path.drift_id,
            input.kind,
        )
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AlertQuery {
    /// Include acknowledged alerts.
    all: Option<bool>,
}

/// Alerts: inactive keys presented at doors, controllers that lost their memory.
#[utoipa::path(get, path = "/residences/{rid}/alerts", tag = "sync", params(ResidencePath, AlertQuery),
    responses((status = 200, body = Vec<Alert>)))]
async fn alerts(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> ApiResult<Json<Vec<Alert>>> {
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.alerts(manager.residence_id(), !query.all.unwrap_or(false))
            .await?,
    ))
}

#[utoipa::path(post, path = "/residences/{rid}/alerts/{id}/acknowledge", tag = "sync", params(ItemPath),
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody)))]
async fn acknowledge_alert(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<Alert>> {
    let mut tx = state.store.write().await?;
    let alert = tx
        .acknowledge_alert(manager.residence_id(), path.id, &manager.actor().name)
        .await?;
    tx.commit().await?;
    Ok(Json(alert))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    key_id: Option<i64>,
    lock_id: Option<i64>,
    /// `granted`, `denied_unknown`, `denied_door` or `gap`.
    result: Option<String>,
    /// Only events older than this id: the next page.
    before_id: Option<i64>,
    /// 1 to 500 (default 100).
    limit: Option<i64>,
}

const EVENT_RESULTS: [&str; 4] = ["granted", "denied_unknown", "denied_door", "gap"];

/// Access events polled from the controllers, newest first; `gap` rows say how many
/// events a controller's log lost before they could be read.
#[utoipa::path(get, path = "/residences/{rid}/access-events", tag = "sync", params(ResidencePath, EventQuery),
    responses((status = 200, body = Vec<AccessEventRow>), (status = 422, body = ErrorBody)))]
async fn access_events(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> ApiResult<Json<Vec<AccessEventRow>>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(crate::Error::invalid("limit", "doit être compris entre 1 et 500").into());
    }
    if let Some(result) = query
        .result
        .as_deref()
        .filter(|result| !EVENT_RESULTS.contains(result))
    {
        let message = format!(
            "résultat « {result} » inconnu ; valeurs acceptées : {}",
            EVENT_RESULTS.join(", ")
        );
        return Err(crate::Error::invalid("result", message).into());
    }
    let filter = EventFilter {
        key_id: query.key_id,
        lock_id: query.lock_id,
        result: query.result,
        before_id: query.before_id,
        limit,
    };
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.access_events(manager.residence_id(), &filter).await?,
    ))
}
