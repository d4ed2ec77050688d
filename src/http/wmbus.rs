//! What the MQTT ingestion could not use: wireless M-Bus ids heard that are no meter
//! of the residence (to declare them), and the messages refused (radio telegrams, and
//! the other MQTT sources counted in the same table). For managers (council, syndic).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::crud::ResidencePath;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiQuery, Manager};
use super::AppState;
use crate::metering::wmbus::{RejectionKind, SOURCE};
use crate::storage::wmbus::{MqttRejection, UnknownMeter};
use crate::storage::{Page, PageRequest};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(unknown_meters))
        .routes(routes!(rejections))
}

/// Ids heard on the radio (through wmbusmeters) that are no meter of the residence,
/// most recently heard first: meters to declare, or neighbours' meters. An id declared
/// since is no longer listed.
#[utoipa::path(get, path = "/residences/{rid}/wmbus/unknown-meters", tag = "readings", params(ResidencePath, PageRequest),
    responses((status = 200, body = Page<UnknownMeter>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn unknown_meters(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<Page<UnknownMeter>>> {
    page.checked()?;
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.wmbus_unknown_meters(manager.residence_id(), page)
            .await?,
    ))
}

/// Messages refused on one topic for one reason.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ExplainedRejection {
    #[serde(flatten)]
    rejection: MqttRejection,
    /// The reason in plain words.
    explanation: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RejectionQuery {
    /// Only messages of this source: `wmbus` (radio meters), `esp-rfid` (controllers).
    source: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
}

/// MQTT messages refused in the residence, radio meters' telegrams first among them
/// (unreadable, dated in the future, of another kind of meter than the one declared…),
/// counted per topic and reason, most recent first. Nothing of a refused message is
/// stored.
#[utoipa::path(get, path = "/residences/{rid}/wmbus/rejections", tag = "readings", params(ResidencePath, RejectionQuery),
    responses((status = 200, body = Page<ExplainedRejection>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rejections(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(query): ApiQuery<RejectionQuery>,
) -> ApiResult<Json<Page<ExplainedRejection>>> {
    let page = PageRequest {
        limit: query.limit,
        offset: query.offset,
    };
    page.checked()?;
    let mut tx = state.store.read().await?;
    let found = tx
        .mqtt_rejections(manager.residence_id(), query.source, page)
        .await?;
    Ok(Json(Page {
        items: found
            .items
            .into_iter()
            .map(|rejection| ExplainedRejection {
                explanation: match rejection.source.as_str() {
                    SOURCE => {
                        RejectionKind::from_code(&rejection.reason).map(RejectionKind::french)
                    }
                    crate::mqtt::esprfid_events::SOURCE => {
                        crate::mqtt::esprfid_events::french(&rejection.reason)
                    }
                    _ => None,
                }
                .map(str::to_owned),
                rejection,
            })
            .collect(),
        total: found.total,
        limit: found.limit,
        offset: found.offset,
    }))
}
