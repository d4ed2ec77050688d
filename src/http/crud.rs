//! The five routes of a plain resource of a residence (list, create, read, replace,
//! delete), written once. Every route needs a manager of the residence (council,
//! syndic, platform admin); resources with finer rules (units, keys) are written by
//! hand.

use serde::Deserialize;

/// `/residences/{rid}/…`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ResidencePath {
    /// Residence id.
    #[allow(dead_code)] // `Member` reads it from the raw path; here for the OpenAPI document.
    pub rid: i64,
}

/// `/residences/{rid}/…/{id}`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ItemPath {
    /// Residence id.
    #[allow(dead_code)] // `Member` reads it from the raw path; here for the OpenAPI document.
    pub rid: i64,
    /// Id of the item in the residence.
    pub id: i64,
}

/// Generates `pub mod $module` with the five handlers and `routes()`. Storage methods
/// are named after the resource: `$list`, `$get`, `$insert`, `$update`, `$delete`.
macro_rules! crud_routes {
    (
        mod $module:ident {
            tag: $tag:tt,
            collection: $collection:tt,
            item: $item:tt,
            row: $row:ident,
            input: $input:ident,
            filter: $filter:ident,
            storage: ($list:ident, $get:ident, $insert:ident, $update:ident, $delete:ident) $(,)?
        }
    ) => {
        pub mod $module {
            use axum::extract::State;
            use axum::http::StatusCode;
            use axum::Json;
            use utoipa_axum::router::OpenApiRouter;
            use utoipa_axum::routes;

            use super::*;
            use $crate::http::crud::{ItemPath, ResidencePath};
            use $crate::http::error::{ApiResult, ErrorBody};
            use $crate::http::extract::{ApiJson, ApiPath, ApiQuery, Manager};
            use $crate::http::AppState;
            use $crate::storage::Page;

            pub fn routes() -> OpenApiRouter<AppState> {
                OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, replace, delete))
            }

            #[utoipa::path(get, path = $collection, tag = $tag, params(ResidencePath, $filter),
                responses((status = 200, body = Page<$row>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
            async fn list(State(state): State<AppState>, manager: Manager, ApiQuery(filter): ApiQuery<$filter>) -> ApiResult<Json<Page<$row>>> {
                let mut tx = state.store.read().await?;
                Ok(Json(tx.$list(manager.residence_id(), &filter).await?))
            }

            #[utoipa::path(post, path = $collection, tag = $tag, params(ResidencePath), request_body = $input,
                responses((status = 201, body = $row), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
            async fn create(State(state): State<AppState>, manager: Manager, ApiJson(input): ApiJson<$input>) -> ApiResult<(StatusCode, Json<$row>)> {
                let input = input.validated()?;
                let mut tx = state.store.write().await?;
                let created = tx.$insert(&manager.actor(), manager.residence_id(), &input).await?;
                tx.commit().await?;
                Ok((StatusCode::CREATED, Json(created)))
            }

            #[utoipa::path(get, path = $item, tag = $tag, params(ItemPath),
                responses((status = 200, body = $row), (status = 404, body = ErrorBody)))]
            async fn read(State(state): State<AppState>, manager: Manager, ApiPath(path): ApiPath<ItemPath>) -> ApiResult<Json<$row>> {
                let mut tx = state.store.read().await?;
                Ok(Json(tx.$get(manager.residence_id(), path.id).await?))
            }

            #[utoipa::path(put, path = $item, tag = $tag, params(ItemPath), request_body = $input,
                responses((status = 200, body = $row), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
            async fn replace(
                State(state): State<AppState>,
                manager: Manager,
                ApiPath(path): ApiPath<ItemPath>,
                ApiJson(input): ApiJson<$input>,
            ) -> ApiResult<Json<$row>> {
                let input = input.validated()?;
                let mut tx = state.store.write().await?;
                let updated = tx.$update(&manager.actor(), manager.residence_id(), path.id, &input).await?;
                tx.commit().await?;
                Ok(Json(updated))
            }

            #[utoipa::path(delete, path = $item, tag = $tag, params(ItemPath),
                responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
            async fn delete(State(state): State<AppState>, manager: Manager, ApiPath(path): ApiPath<ItemPath>) -> ApiResult<StatusCode> {
                let mut tx = state.store.write().await?;
                tx.$delete(&manager.actor(), manager.residence_id(), path.id).await?;
                tx.commit().await?;
                Ok(StatusCode::NO_CONTENT)
            }
        }
    };
}
pub(crate) use crud_routes;
