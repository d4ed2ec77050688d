//! Meters, their readings and consumption. Managers (council, syndic) see and edit
//! every meter; residents read the meters of the units they occupy, their readings
//! and consumption; providers' staff see no meter. Alarms, reading conflicts and
//! reading-file imports are for managers.

use std::io::Cursor;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::crud::{ItemPath, ResidencePath};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Manager, Member};
use super::AppState;
use crate::domain::consumption::{periods, Granularity};
use crate::domain::roles::Visibility;
use crate::domain::text;
use crate::error::Error;
use crate::import::readings::{import_readings, ReadingImportReport};
use crate::metering::usage::{self, Series};
use crate::storage::meter_sync::MeterSync;
use crate::storage::meters::{Meter, MeterFilter, MeterInput, Replacement, ReplacementInput};
use crate::storage::readings::{MeterAlarm, Reading, ReadingConflict, ReadingFilter};
use crate::storage::{Page, PageRequest};

/// Largest reading file accepted by the import route.
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, replace, delete))
        .routes(routes!(replace_meter))
        .routes(routes!(meter_sync))
        .routes(routes!(readings))
        .routes(routes!(meter_consumption))
        .routes(routes!(unit_consumption))
        .routes(routes!(alarms))
        .routes(routes!(conflicts))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(import))
                .layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
}

/// Lists meters; a resident sees only the meters of the units they occupy.
#[utoipa::path(get, path = "/residences/{rid}/meters", tag = "meters", params(ResidencePath, MeterFilter),
    responses((status = 200, body = Page<Meter>), (status = 422, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    member: Member,
    ApiQuery(filter): ApiQuery<MeterFilter>,
) -> ApiResult<Json<Page<Meter>>> {
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.meters(member.residence_id, &filter, member.visibility)
            .await?,
    ))
}

/// Records a meter; the gateway it is assigned to is programmed with it.
#[utoipa::path(post, path = "/residences/{rid}/meters", tag = "meters", params(ResidencePath), request_body = MeterInput,
    responses((status = 201, body = Meter), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    manager: Manager,
    ApiJson(input): ApiJson<MeterInput>,
) -> ApiResult<(StatusCode, Json<Meter>)> {
    let input = input.validated()?;
    let mut tx = state.store.write().await?;
    let meter = tx
        .insert_meter(&manager.actor(), manager.residence_id(), &input)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(meter)))
}

#[utoipa::path(get, path = "/residences/{rid}/meters/{id}", tag = "meters", params(ItemPath),
    responses((status = 200, body = Meter), (status = 404, body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<Meter>> {
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.meter(member.residence_id, path.id, member.visibility)
            .await?,
    ))
}

/// Rewrites a meter in place (a removed meter no longer changes: its history stays).
#[utoipa::path(put, path = "/residences/{rid}/meters/{id}", tag = "meters", params(ItemPath), request_body = MeterInput,
    responses((status = 200, body = Meter), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replace(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<MeterInput>,
) -> ApiResult<Json<Meter>> {
    let input = input.validated()?;
    let mut tx = state.store.write().await?;
    let meter = tx
        .update_meter(&manager.actor(), manager.residence_id(), path.id, &input)
        .await?;
    tx.commit().await?;
    Ok(Json(meter))
}

/// Deletes a meter entered by mistake; one with readings is refused (replace it).
#[utoipa::path(delete, path = "/residences/{rid}/meters/{id}", tag = "meters", params(ItemPath),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.write().await?;
    tx.delete_meter(&manager.actor(), manager.residence_id(), path.id)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ReplacedMeter {
    /// The new meter.
    meter: Meter,
    replacement: Replacement,
}

/// Replaces a meter by a new one at the same place: the old one is kept, removed with
/// its final index; the new one starts at its initial index; the gateway is
/// reprogrammed.
#[utoipa::path(post, path = "/residences/{rid}/meters/{id}/replace", tag = "meters", params(ItemPath), request_body = ReplacementInput,
    responses((status = 201, body = ReplacedMeter), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replace_meter(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
    ApiJson(input): ApiJson<ReplacementInput>,
) -> ApiResult<(StatusCode, Json<ReplacedMeter>)> {
    let mut tx = state.store.write().await?;
    let (meter, replacement) = tx
        .replace_meter(&manager.actor(), manager.residence_id(), path.id, &input)
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(ReplacedMeter { meter, replacement }),
    ))
}

/// Where the meter stands on the gateways it was assigned to: must be read (`active`)
/// or dropped, pending, confirmed or failed.
#[utoipa::path(get, path = "/residences/{rid}/meters/{id}/sync", tag = "meters", params(ItemPath),
    responses((status = 200, body = Vec<MeterSync>), (status = 404, body = ErrorBody)))]
async fn meter_sync(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<ItemPath>,
) -> ApiResult<Json<Vec<MeterSync>>> {
    let mut tx = state.store.read().await?;
    let meter = tx
        .meter(manager.residence_id(), path.id, Visibility::Everything)
        .await?;
    Ok(Json(
        tx.meter_sync_of_meter(manager.residence_id(), meter.id)
            .await?,
    ))
}

/// A page of the meter's readings, newest first; `from` and `to` are local dates
/// (Europe/Paris), both included.
#[utoipa::path(get, path = "/residences/{rid}/meters/{id}/readings", tag = "readings", params(ItemPath, ReadingFilter),
    responses((status = 200, body = Page<Reading>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn readings(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
    ApiQuery(filter): ApiQuery<ReadingFilter>,
) -> ApiResult<Json<Page<Reading>>> {
    let (from, to) = usage::instant_range(filter.from, filter.to)?;
    let page = PageRequest {
        limit: filter.limit,
        offset: filter.offset,
    };
    page.checked()?;
    let mut tx = state.store.read().await?;
    let meter = tx
        .meter(member.residence_id, path.id, member.visibility)
        .await?;
    Ok(Json(tx.readings_page(meter.id, from, to, page).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ConsumptionQuery {
    /// First day (local date), included. Default: 30 days before `to` by day, 11
    /// months before by month, 4 years before by year.
    from: Option<NaiveDate>,
    /// Last day (local date), included. Default: today.
    to: Option<NaiveDate>,
    /// `day` (at most 3660 days), `month` (default) or `year`.
    period: Option<Granularity>,
}

impl ConsumptionQuery {
    fn periods(&self) -> crate::Result<(NaiveDate, NaiveDate, Granularity)> {
        let granularity = self.period.unwrap_or(Granularity::Month);
        let (from, to) = usage::date_range(self.from, self.to, granularity)?;
        Ok((from, to, granularity))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct MeterConsumption {
    /// The meter asked about.
    meter_id: i64,
    from: NaiveDate,
    to: NaiveDate,
    period: Granularity,
    /// Its position: it, the meters it replaced and those that replaced it.
    #[serde(flatten)]
    series: Series,
}

/// The consumption of the meter's position per local day, month or year: the meter,
/// those it replaced and those that replaced it, each from its own indexes.
#[utoipa::path(get, path = "/residences/{rid}/meters/{id}/consumption", tag = "consumption", params(ItemPath, ConsumptionQuery),
    responses((status = 200, body = MeterConsumption), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn meter_consumption(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
    ApiQuery(query): ApiQuery<ConsumptionQuery>,
) -> ApiResult<Json<MeterConsumption>> {
    let (from, to, granularity) = query.periods()?;
    let periods = periods(from, to, granularity);
    let mut tx = state.store.read().await?;
    let meter = tx
        .meter(member.residence_id, path.id, member.visibility)
        .await?;
    let series = usage::meter_series(&mut tx, member.residence_id, &meter, &periods).await?;
    Ok(Json(MeterConsumption {
        meter_id: meter.id,
        from,
        to,
        period: granularity,
        series,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UnitConsumption {
    unit_id: i64,
    from: NaiveDate,
    to: NaiveDate,
    period: Granularity,
    /// One per meter position of the unit (cold water, hot water, heating…).
    series: Vec<Series>,
}

/// The consumption of each meter position of a unit (removed meters included) per
/// local day, month or year.
#[utoipa::path(get, path = "/residences/{rid}/units/{id}/consumption", tag = "consumption", params(ItemPath, ConsumptionQuery),
    responses((status = 200, body = UnitConsumption), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn unit_consumption(
    State(state): State<AppState>,
    member: Member,
    ApiPath(path): ApiPath<ItemPath>,
    ApiQuery(query): ApiQuery<ConsumptionQuery>,
) -> ApiResult<Json<UnitConsumption>> {
    let (from, to, granularity) = query.periods()?;
    let periods = periods(from, to, granularity);
    let mut tx = state.store.read().await?;
    let unit = tx
        .unit(member.residence_id, path.id, member.visibility)
        .await?;
    let series = usage::unit_series(&mut tx, member.residence_id, unit.id, &periods).await?;
    Ok(Json(UnitConsumption {
        unit_id: unit.id,
        from,
        to,
        period: granularity,
        series,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AlarmQuery {
    meter_id: Option<i64>,
    /// Include cleared alarms.
    all: Option<bool>,
}

/// Meter alarms (leak, burst, tamper, low battery, no answer…), newest first; open
/// ones only unless `all=true`.
#[utoipa::path(get, path = "/residences/{rid}/meter-alarms", tag = "readings", params(ResidencePath, AlarmQuery),
    responses((status = 200, body = Vec<MeterAlarm>), (status = 422, body = ErrorBody)))]
async fn alarms(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(query): ApiQuery<AlarmQuery>,
) -> ApiResult<Json<Vec<MeterAlarm>>> {
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.meter_alarms(
            manager.residence_id(),
            query.meter_id,
            query.all.unwrap_or(false),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ConflictQuery {
    meter_id: Option<i64>,
}

/// Readings offered with another value than the one stored for the same meter and
/// instant (the stored one stays), newest first.
#[utoipa::path(get, path = "/residences/{rid}/reading-conflicts", tag = "readings", params(ResidencePath, ConflictQuery),
    responses((status = 200, body = Vec<ReadingConflict>), (status = 422, body = ErrorBody)))]
async fn conflicts(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(query): ApiQuery<ConflictQuery>,
) -> ApiResult<Json<Vec<ReadingConflict>>> {
    let mut tx = state.store.read().await?;
    Ok(Json(
        tx.reading_conflicts(manager.residence_id(), query.meter_id)
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// Check the file and report without storing anything (default false).
    dry_run: Option<bool>,
    /// The file's name, recorded with each reading (default `envoi`).
    file_name: Option<String>,
}

/// The body of the import route: the file itself, up to [`MAX_IMPORT_BYTES`].
struct CsvBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for CsvBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase());
        let accepted = ["text/csv", "application/octet-stream"];
        if !media_type
            .as_deref()
            .is_some_and(|media_type| accepted.contains(&media_type))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "corps attendu : le fichier CSV lui-même (en-tête Content-Type: text/csv ou application/octet-stream)",
                None,
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("fichier trop volumineux : {MAX_IMPORT_BYTES} octets au plus"),
                    None,
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "corps de requête illisible",
                    None,
                )
            }
        })?;
        Ok(CsvBody(bytes))
    }
}

/// Imports a meter-reading provider's CSV file (meter M-Bus id, date, index, optional
/// unit): each reading is stored once; refused lines and conflicting values are
/// reported. With `dry_run=true` nothing is stored.
#[utoipa::path(post, path = "/residences/{rid}/readings/import", tag = "readings", params(ResidencePath, ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "Le fichier CSV du relevé (64 Mio au plus)"),
    responses((status = 200, body = ReadingImportReport), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn import(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(query): ApiQuery<ImportQuery>,
    CsvBody(bytes): CsvBody,
) -> ApiResult<Json<ReadingImportReport>> {
    let file_name = match query.file_name.as_deref() {
        None => "envoi".to_owned(),
        Some(name) => text::bounded("file_name", name, 1, 200)?,
    };
    if bytes.is_empty() {
        return Err(Error::invalid("fichier", "le fichier envoyé est vide").into());
    }
    let report = import_readings(
        &state.store,
        manager.residence_id(),
        Cursor::new(bytes),
        &file_name,
        query.dry_run.unwrap_or(false),
        &|_| {},
    )
    .await?;
    Ok(Json(report))
}
