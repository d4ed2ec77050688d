//! Keys: records, lifecycle actions, history, and which locks a key opens / which keys
//! a lock accepts.
//!
//! Residents and providers' staff see the keys that are theirs and may declare them
//! lost, stolen or broken; everything else is for the council and syndic.

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
use crate::domain::key_status::KeyAction;
use crate::storage::audit::{AuditEntry, AuditFilter};
use crate::storage::keys::{ActionInput, HandOverInput, Key, KeyFilter, KeyInput, KeyUpdate};
use crate::storage::locks::Lock;
use crate::storage::Page;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, replace))
        .routes(routes!(history))
        .routes(routes!(key_locks))
        .routes(routes!(lock_keys))
        .routes(routes!(hand_over))
        .routes(routes!(declare_lost))
        .routes(routes!(declare_stolen))
        .routes(routes!(declare_broken))
        .routes(routes!(return_key))
        .routes(routes!(deactivate))
        .routes(routes!(reactivate))
}

/// Lists keys; residents and providers see only theirs.
#[utoipa::path(get, path = "/residences/{rid}/keys", tag = "keys", params(ResidencePath, KeyFilter),
    responses((status = 200, body = Page<Key>), (status = 422, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    member: Member,
    ApiQuery(filter): ApiQuery<KeyFilter>,
) -> ApiResult<Json<Page<Key>>> {
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.keys(member.residence_id, &filter, member.visibility)
            .await?,
    ))
}

/// Records a key. The identifier is stored in canonical form; the same key cannot be
/// recorded twice in a residence.
#[utoipa::path(post, path = "/residences/{rid}/keys", tag = "keys", params(ResidencePath), request_body = KeyInput,
    responses((status = 201, body = Key), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    manager: Manager,
    ApiJson(input): ApiJson<KeyInput>,
) -> ApiResult<(StatusCode, Json<Key>)> {
    let input = input.validated()?;
    let mut tx = state.store.write().await?;
    let key = tx
        .insert_key(&manager.actor(), manager.residence_id(), &input)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(get, path = "/residences/{rid}/keys/{id}", tag = "keys", params(ItemPath),
    responses((status = 200, body = Key), (status = 404, body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<Key>> {
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.key(member.residence_id, path.id, member.visibility)
            .await?,
    ))
}

/// Replaces a key's label, unit, validity, notes and profiles. Status and holder change
/// through the lifecycle actions.
#[utoipa::path(put, path = "/residences/{rid}/keys/{id}", tag = "keys", params(ItemPath), request_body = KeyUpdate,
    responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replace(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<KeyUpdate>,
) -> ApiResult<Json<Key>> {
    let input = input.validated()?;
    let mut tx = state.store.write().await?;
    let key = tx
        .update_key(&manager.actor(), manager.residence_id(), path.id, &input)
        .await?;
    tx.commit().await?;
    Ok(Json(key))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Every change made to the key, newest first: who, when, what, why.
#[utoipa::path(get, path = "/residences/{rid}/keys/{id}/history", tag = "keys", params(ItemPath, HistoryQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 404, body = ErrorBody)))]
async fn history(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let mut tx = state.store.read().await?;
    tx.key(member.residence_id, path.id, member.visibility)
        .await?;
    let filter = AuditFilter {
        entity: Some("key".into()),
        entity_id: Some(path.id),
        limit: query.limit,
        offset: query.offset,
        ..AuditFilter::default()
    };
    Ok(Json(tx.audit_log(member.residence_id, &filter).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct KeyLocks {
    /// Whether the key opens these locks now (active and within its validity).
    in_force: bool,
    /// The locks its access profiles reach.
    locks: Vec<Lock>,
}

/// What this key opens.
#[utoipa::path(get, path = "/residences/{rid}/keys/{id}/locks", tag = "keys", params(ItemPath),
    responses((status = 200, body = KeyLocks), (status = 404, body = ErrorBody)))]
async fn key_locks(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<KeyLocks>> {
    let mut tx = state.store.read().await?;
    let key = tx
        .key(member.residence_id, path.id, member.visibility)
        .await?;
    let locks = tx.key_locks(member.residence_id, key.id).await?;
    Ok(Json(KeyLocks {
        in_force: key.in_force(Utc::now()),
        locks,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AtQuery {
    /// The instant to evaluate validity periods at (default: now).
    at: Option<DateTime<Utc>>,
}

/// Who can open this lock: the keys it must accept (active, within validity, with a
/// profile that includes the lock).
#[utoipa::path(get, path = "/residences/{rid}/locks/{id}/keys", tag = "locks", params(ItemPath, AtQuery),
    responses((status = 200, body = Vec<Key>), (status = 404, body = ErrorBody)))]
async fn lock_keys(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
    ApiQuery(query): ApiQuery<AtQuery>,
) -> ApiResult<Json<Vec<Key>>> {
    let mut tx = state.store.read().await?;
    let at = query.at.unwrap_or_else(Utc::now);
    tx.lock(manager.residence_id(), path.id).await?;
    Ok(Json(
        tx.lock_expected_keys(manager.residence_id(), path.id, at)
            .await?,
    ))
}

/// Hands the key to a person or a provider; it becomes active.
#[utoipa::path(post, path = "/residences/{rid}/keys/{id}/hand-over", tag = "keys", params(ItemPath), request_body = HandOverInput,
    responses((status = 200, body = Key), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn hand_over(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<HandOverInput>,
) -> ApiResult<Json<Key>> {
    let input = input.validated()?;
    let mut tx = state.store.write().await?;
    let key = tx
        .hand_over_key(&manager.actor(), manager.residence_id(), path.id, &input)
        .await?;
    tx.commit().await?;
    Ok(Json(key))
}

/// Applies a status action on behalf of `member`, who must be able to see the key.
async fn act(
    state: AppState,
    member: Member,
    id: i64,
    action: KeyAction,
    input: ActionInput,
) -> ApiResult<Json<Key>> {
    let mut tx = state.store.write().await?;
    let key = tx
        .key_action(
            &member.actor(),
            member.residence_id,
            id,
            action,
            &input.reason,
            member.visibility,
        )
        .await?;
    tx.commit().await?;
    Ok(Json(key))
}

/// Declares the key lost: it leaves every lock's expected set. Residents and providers
/// may declare their own keys.
#[utoipa::path(post, path = "/residences/{rid}/keys/{id}/declare-lost", tag = "keys", params(ItemPath), request_body = ActionInput,
    responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn declare_lost(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<ActionInput>,
) -> ApiResult<Json<Key>> {
    act(state, member, path.id, KeyAction::DeclareLost, input).await
}

/// Declares the key stolen (final: it can never be reactivated).
#[utoipa::path(post, path = "/residences/{rid}/keys/{id}/declare-stolen", tag = "keys", params(ItemPath), request_body = ActionInput,
    responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn declare_stolen(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<ActionInput>,
) -> ApiResult<Json<Key>> {
    act(state, member, path.id, KeyAction::DeclareStolen, input).await
}

/// Declares the key broken (final).
#[utoipa::path(post, path = "/residences/{rid}/keys/{id}/declare-broken", tag = "keys", params(ItemPath), request_body = ActionInput,
    responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn declare_broken(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<ActionInput>,
) -> ApiResult<Json<Key>> {
    act(state, member, path.id, KeyAction::DeclareBroken, input).await
}

/// The key came back to the council: it leaves its holder, its unit and every lock.
#[utoipa::path(post, path = "/residences/{rid}/keys/{id}/return", tag = "keys", params(ItemPath), request_body = ActionInput,
    responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn return_key(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<ActionInput>,
) -> ApiResult<Json<Key>> {
    act(state, manager.0, path.id, KeyAction::Return, input).await
}

/// Deactivates the key (e.g. not declared during a census); its holder keeps it.
#[utoipa::path(post, path = "/residences/{rid}/keys/{id}/deactivate", tag = "keys", params(ItemPath), request_body = ActionInput,
    responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn deactivate(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<ActionInput>,
) -> ApiResult<Json<Key>> {
    act(state, manager.0, path.id, KeyAction::Deactivate, input).await
}

/// Reactivates a deactivated, returned or found (lost) key.
#[utoipa::path(post, path = "/residences/{rid}/keys/{id}/reactivate", tag = "keys", params(ItemPath), request_body = ActionInput,
    responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reactivate(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<ActionInput>,
) -> ApiResult<Json<Key>> {
    act(state, manager.0, path.id, KeyAction::Reactivate, input).await
}
