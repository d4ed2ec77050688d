//! The residence-wide audit log, for its managers.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::crud::ResidencePath;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiQuery, Manager};
use super::AppState;
use crate::storage::audit::{AuditEntry, AuditFilter};
use crate::storage::Page;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Every change in the residence, newest first.
#[utoipa::path(get, path = "/residences/{rid}/audit", tag = "audit", params(ResidencePath, AuditFilter),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(filter): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let mut tx = state.store.read().await?;
    Ok(Json(tx.audit_log(manager.residence_id(), &filter).await?))
}
