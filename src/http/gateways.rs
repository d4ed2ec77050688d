//! Meter gateways, for the council and syndic: the plain resource, where each one's
//! programming stands (« 248 compteurs programmés sur 250, 2 en attente depuis
//! 10:02 »), and the collection runs that read them.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::crud::{crud_routes, ItemPath, ResidencePath};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery, Manager};
use super::AppState;
use crate::domain::text::LOCAL_TIME_ZONE;
use crate::domain::SyncState;
use crate::storage::gateways::{Gateway, GatewayFilter, GatewayInput};
use crate::storage::meter_sync::{GatewaySlot, GatewayStatus, MeterSync};
use crate::storage::readings::{CollectionGateway, CollectionRun};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(gateways::routes())
        .routes(routes!(gateway_status))
        .routes(routes!(collections))
}

crud_routes! {
    mod gateways {
        tag: "gateways",
        collection: "/residences/{rid}/gateways",
        item: "/residences/{rid}/gateways/{id}",
        row: Gateway, input: GatewayInput, filter: GatewayFilter,
        storage: (gateways, gateway, insert_gateway, update_gateway, delete_gateway),
    }
}

/// What went wrong with one meter during a collection.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CollectionProblem {
    pub meter_id: Option<i64>,
    pub mbus_id: String,
    pub problem: String,
}

/// One gateway's part of a collection run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CollectionPart {
    pub run_id: i64,
    pub gateway_id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub meters_expected: i64,
    pub meters_read: i64,
    pub meters_missing: i64,
    pub readings_new: i64,
    pub readings_duplicate: i64,
    pub conflicts: i64,
    pub rejected: i64,
    /// Modbus requests used.
    pub requests: i64,
    /// Why the gateway could not be read at all.
    pub error: Option<String>,
    /// What went wrong with single meters.
    pub problems: Vec<CollectionProblem>,
}

impl From<CollectionGateway> for CollectionPart {
    fn from(part: CollectionGateway) -> Self {
        let problems = match serde_json::from_str(&part.problems) {
            Ok(problems) => problems,
            Err(err) => {
                tracing::warn!(%err, run = part.run_id, gateway = part.gateway_id, "unreadable collection problems");
                vec![CollectionProblem {
                    meter_id: None,
                    mbus_id: String::new(),
                    problem: part.problems.clone(),
                }]
            }
        };
        CollectionPart {
            run_id: part.run_id,
            gateway_id: part.gateway_id,
            started_at: part.started_at,
            finished_at: part.finished_at,
            meters_expected: part.meters_expected,
            meters_read: part.meters_read,
            meters_missing: part.meters_missing,
            readings_new: part.readings_new,
            readings_duplicate: part.readings_duplicate,
            conflicts: part.conflicts,
            rejected: part.rejected,
            requests: part.requests,
            error: part.error,
            problems,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct GatewayReport {
    /// In words: « 248 compteurs programmés sur 250, 2 en attente depuis 10:02 ».
    summary: String,
    gateway: Gateway,
    /// What the gateway last said of itself (firmware, capacity, active slots, errors).
    status: GatewayStatus,
    /// Several failed visits in a row: the engine waits longer between attempts.
    circuit_open: bool,
    /// The meter list as last read from or written to the gateway.
    slots: Vec<GatewaySlot>,
    /// The programming outbox: meters it must hold (`active`) or drop.
    meters: Vec<MeterSync>,
    /// Meters it must hold.
    wanted: i64,
    pending: i64,
    confirmed: i64,
    failed: i64,
    /// Its part of the last collection that read it.
    last_collection: Option<CollectionPart>,
}

/// The gateway's programming and last collection.
#[utoipa::path(get, path = "/residences/{rid}/gateways/{id}/status", tag = "gateways", params(ItemPath),
    responses((status = 200, body = GatewayReport), (status = 404, body = ErrorBody)))]
async fn gateway_status(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<GatewayReport>> {
    let residence = manager.residence_id();
    let mut tx = state.store.read().await?;
    let gateway = tx.gateway(residence, path.id).await?;
    let status = tx.gateway_status(gateway.id).await?;
    let slots = tx.gateway_slots(gateway.id).await?;
    let meters = tx.meter_sync_of_gateway(gateway.id).await?;
    let last_collection = tx
        .collection_parts(residence, None, 1000)
        .await?
        .into_iter()
        .find(|part| part.gateway_id == gateway.id)
        .map(CollectionPart::from);
    let count = |state: SyncState| meters.iter().filter(|row| row.state == state).count() as i64;
    Ok(Json(GatewayReport {
        summary: summary(&meters),
        wanted: meters.iter().filter(|row| row.active).count() as i64,
        pending: count(SyncState::Pending),
        confirmed: count(SyncState::Confirmed),
        failed: count(SyncState::Failed),
        circuit_open: status.consecutive_failures >= crate::sync::CIRCUIT_OPEN_AFTER,
        gateway,
        status,
        slots,
        meters,
        last_collection,
    }))
}

/// « 248 compteurs programmés sur 250, 2 en attente depuis 10:02, 1 en échec ».
fn summary(rows: &[MeterSync]) -> String {
    let wanted = rows.iter().filter(|row| row.active).count();
    let done = rows
        .iter()
        .filter(|row| row.active && row.state == SyncState::Confirmed)
        .count();
    let pending: Vec<&MeterSync> = rows
        .iter()
        .filter(|row| row.state == SyncState::Pending)
        .collect();
    let failed = rows
        .iter()
        .filter(|row| row.state == SyncState::Failed)
        .count();
    if wanted == 0 && pending.is_empty() && failed == 0 {
        return "aucun compteur à programmer".into();
    }
    let mut text = if done > 1 {
        format!("{done} compteurs programmés sur {wanted}")
    } else {
        format!("{done} compteur programmé sur {wanted}")
    };
    if let Some(oldest) = pending.iter().map(|row| row.changed_at).min() {
        let since = oldest.with_timezone(&LOCAL_TIME_ZONE).format("%H:%M");
        text.push_str(&format!(", {} en attente depuis {since}", pending.len()));
    }
    if failed > 0 {
        text.push_str(&format!(", {failed} en échec"));
    }
    text
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CollectionQuery {
    /// Runs, newest first: 1 to 100 (default 20).
    limit: Option<i64>,
}

/// A collection run with this residence's gateways in it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ResidenceCollection {
    id: i64,
    /// `schedule` (nightly) or `manual`.
    trigger: String,
    scheduled_for: Option<NaiveDate>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    /// This residence's gateways read in the run.
    gateways: Vec<CollectionPart>,
}

/// Collection runs that read the residence's gateways, newest first, with each
/// gateway's part (counts, error, problems with single meters).
#[utoipa::path(get, path = "/residences/{rid}/collections", tag = "gateways", params(ResidencePath, CollectionQuery),
    responses((status = 200, body = Vec<ResidenceCollection>), (status = 422, body = ErrorBody)))]
async fn collections(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(query): ApiQuery<CollectionQuery>,
) -> ApiResult<Json<Vec<ResidenceCollection>>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(crate::Error::invalid("limit", "doit être compris entre 1 et 100").into());
    }
    let residence = manager.residence_id();
    let mut tx = state.store.read().await?;
    let runs: Vec<CollectionRun> = tx.collection_runs(residence, limit).await?;
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let parts = tx.collection_parts(residence, Some(run.id), 1000).await?;
        out.push(ResidenceCollection {
            id: run.id,
            trigger: run.trigger,
            scheduled_for: run.scheduled_for,
            started_at: run.started_at,
            finished_at: run.finished_at,
            gateways: parts.into_iter().map(CollectionPart::from).collect(),
        });
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(active: bool, state: SyncState, changed_at: DateTime<Utc>) -> MeterSync {
        MeterSync {
            gateway_id: 1,
            meter_id: 1,
            residence_id: 1,
            active,
            state,
            changed_at,
            confirmed_at: None,
            attempts: 0,
            error: None,
            mbus_id: "00000001".into(),
            manufacturer: "KAM".into(),
            version: 0,
            medium: 7,
        }
    }

    #[test]
    fn summaries_read_like_the_council_says_them() {
        use chrono::TimeZone;
        let at = |h: u32, m: u32| {
            LOCAL_TIME_ZONE
                .with_ymd_and_hms(2026, 3, 2, h, m, 0)
                .single()
                .unwrap()
                .with_timezone(&Utc)
        };
        assert_eq!(summary(&[]), "aucun compteur à programmer");
        let mut rows: Vec<MeterSync> = (0..248)
            .map(|_| row(true, SyncState::Confirmed, at(9, 0)))
            .collect();
        rows.push(row(true, SyncState::Pending, at(10, 2)));
        rows.push(row(true, SyncState::Pending, at(10, 30)));
        // A meter that left and is confirmed gone counts nowhere.
        rows.push(row(false, SyncState::Confirmed, at(8, 0)));
        assert_eq!(
            summary(&rows),
            "248 compteurs programmés sur 250, 2 en attente depuis 10:02"
        );
        rows.push(row(true, SyncState::Failed, at(11, 0)));
        assert_eq!(
            summary(&rows),
            "248 compteurs programmés sur 251, 2 en attente depuis 10:02, 1 en échec"
        );
        assert_eq!(
            summary(&[row(true, SyncState::Pending, at(7, 5))]),
            "0 compteur programmé sur 1, 1 en attente depuis 07:05"
        );
    }
}
