//! Residences: platform administrators create them; their members read them; their
//! managers rename them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::crud::ResidencePath;
use super::error::{ApiResult, ErrorBody};
use super::extract::{Admin, ApiJson, CurrentUser, Manager, Member};
use super::AppState;
use crate::storage::residences::{Residence, ResidenceInput};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, replace))
}

/// The residences the current user has a role in (all of them for an administrator).
#[utoipa::path(get, path = "/residences", tag = "residences", responses((status = 200, body = Vec<Residence>)))]
async fn list(
    State(state): State<AppState>,
    current: CurrentUser,
) -> ApiResult<Json<Vec<Residence>>> {
    let mut tx = state.store.read().await?;
    let residences = if current.user.is_admin {
        tx.residences(None).await?
    } else {
        let ids: Vec<i64> = tx
            .memberships_of(current.user.id)
            .await?
            .iter()
            .map(|m| m.residence_id)
            .collect();
        tx.residences(Some(&ids)).await?
    };
    Ok(Json(residences))
}

/// Creates a residence (platform administrators only).
#[utoipa::path(post, path = "/residences", tag = "residences", request_body = ResidenceInput,
    responses((status = 201, body = Residence), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(input): ApiJson<ResidenceInput>,
) -> ApiResult<(StatusCode, Json<Residence>)> {
    let input = input.validated()?;
    let mut tx = state.store.write().await?;
    let residence = tx.insert_residence(&admin.actor(), &input).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(residence)))
}

#[utoipa::path(get, path = "/residences/{rid}", tag = "residences", params(ResidencePath),
    responses((status = 200, body = Residence), (status = 404, body = ErrorBody)))]
async fn read(State(state): State<AppState>, member: Member) -> ApiResult<Json<Residence>> {
    let mut tx = state.store.read().await?;
    Ok(Json(tx.residence(member.residence_id).await?))
}

#[utoipa::path(put, path = "/residences/{rid}", tag = "residences", params(ResidencePath), request_body = ResidenceInput,
    responses((status = 200, body = Residence), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replace(
    State(state): State<AppState>,
    manager: Manager,
    ApiJson(input): ApiJson<ResidenceInput>,
) -> ApiResult<Json<Residence>> {
    let input = input.validated()?;
    let mut tx = state.store.write().await?;
    let residence = tx
        .update_residence(&manager.actor(), manager.residence_id(), &input)
        .await?;
    tx.commit().await?;
    Ok(Json(residence))
}
