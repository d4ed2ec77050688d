//! The residence's records managed by its council and syndic: buildings, people,
//! providers, occupancies, controllers, locks, access profiles (plain CRUD), and
//! units, which residents may also read (their own).

use utoipa_axum::router::OpenApiRouter;

use super::crud::crud_routes;
use super::AppState;
use crate::storage::buildings::{Building, BuildingFilter, BuildingInput};
use crate::storage::controllers::{Controller, ControllerFilter, ControllerInput};
use crate::storage::locks::{Lock, LockFilter, LockInput};
use crate::storage::occupancies::{Occupancy, OccupancyFilter, OccupancyInput};
use crate::storage::people::{Person, PersonFilter, PersonInput};
use crate::storage::profiles::{AccessProfile, ProfileFilter, ProfileInput};
use crate::storage::providers::{Provider, ProviderFilter, ProviderInput};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(buildings::routes())
        .merge(units::routes())
        .merge(people::routes())
        .merge(providers::routes())
        .merge(occupancies::routes())
        .merge(controllers::routes())
        .merge(locks::routes())
        .merge(profiles::routes())
}

crud_routes! {
    mod buildings {
        tag: "buildings",
        collection: "/residences/{rid}/buildings",
        item: "/residences/{rid}/buildings/{id}",
        row: Building, input: BuildingInput, filter: BuildingFilter,
        storage: (buildings, building, insert_building, update_building, delete_building),
    }
}

crud_routes! {
    mod people {
        tag: "people",
        collection: "/residences/{rid}/people",
        item: "/residences/{rid}/people/{id}",
        row: Person, input: PersonInput, filter: PersonFilter,
        storage: (people, person, insert_person, update_person, delete_person),
    }
}

crud_routes! {
    mod providers {
        tag: "providers",
        collection: "/residences/{rid}/providers",
        item: "/residences/{rid}/providers/{id}",
        row: Provider, input: ProviderInput, filter: ProviderFilter,
        storage: (providers, provider, insert_provider, update_provider, delete_provider),
    }
}

crud_routes! {
    mod occupancies {
        tag: "occupancies",
        collection: "/residences/{rid}/occupancies",
        item: "/residences/{rid}/occupancies/{id}",
        row: Occupancy, input: OccupancyInput, filter: OccupancyFilter,
        storage: (occupancies, occupancy, insert_occupancy, update_occupancy, delete_occupancy),
    }
}

crud_routes! {
    mod controllers {
        tag: "controllers",
        collection: "/residences/{rid}/controllers",
        item: "/residences/{rid}/controllers/{id}",
        row: Controller, input: ControllerInput, filter: ControllerFilter,
        storage: (controllers, controller, insert_controller, update_controller, delete_controller),
    }
}

crud_routes! {
    mod locks {
        tag: "locks",
        collection: "/residences/{rid}/locks",
        item: "/residences/{rid}/locks/{id}",
        row: Lock, input: LockInput, filter: LockFilter,
        storage: (locks, lock, insert_lock, update_lock, delete_lock),
    }
}

crud_routes! {
    mod profiles {
        tag: "profiles",
        collection: "/residences/{rid}/profiles",
        item: "/residences/{rid}/profiles/{id}",
        row: AccessProfile, input: ProfileInput, filter: ProfileFilter,
        storage: (profiles, profile, insert_profile, update_profile, delete_profile),
    }
}

/// Units: managers see and edit all of them, residents read the ones they occupy.
mod units {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::Json;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    use crate::http::crud::{ItemPath, ResidencePath};
    use crate::http::error::{ApiResult, ErrorBody};
    use crate::http::extract::{ApiJson, ApiPath, ApiQuery, Manager, Member};
    use crate::http::AppState;
    use crate::storage::units::{Unit, UnitFilter, UnitInput};
    use crate::storage::Page;

    pub fn routes() -> OpenApiRouter<AppState> {
        OpenApiRouter::new()
            .routes(routes!(list, create))
            .routes(routes!(read, replace, delete))
    }

    /// Lists units; a resident sees only the units they occupy.
    #[utoipa::path(get, path = "/residences/{rid}/units", tag = "units", params(ResidencePath, UnitFilter),
        responses((status = 200, body = Page<Unit>), (status = 422, body = ErrorBody)))]
    async fn list(
        State(state): State<AppState>,
        member: Member,
        ApiQuery(filter): ApiQuery<UnitFilter>,
    ) -> ApiResult<Json<Page<Unit>>> {
        let mut tx = state.store.read().await?;
        Ok(Json(
            tx.units(member.residence_id, &filter, member.visibility)
                .await?,
        ))
    }

    #[utoipa::path(post, path = "/residences/{rid}/units", tag = "units", params(ResidencePath), request_body = UnitInput,
        responses((status = 201, body = Unit), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
    async fn create(
        State(state): State<AppState>,
        manager: Manager,
        ApiJson(input): ApiJson<UnitInput>,
    ) -> ApiResult<(StatusCode, Json<Unit>)> {
        let input = input.validated()?;
        let mut tx = state.store.write().await?;
        let unit = tx
            .insert_unit(&manager.actor(), manager.residence_id(), &input)
            .await?;
        tx.commit().await?;
        Ok((StatusCode::CREATED, Json(unit)))
    }

    #[utoipa::path(get, path = "/residences/{rid}/units/{id}", tag = "units", params(ItemPath),
        responses((status = 200, body = Unit), (status = 404, body = ErrorBody)))]
    async fn read(
        State(state): State<AppState>,
        member: Member,
        ApiPath(path): ApiPath<ItemPath>,
    ) -> ApiResult<Json<Unit>> {
        let mut tx = state.store.read().await?;
        Ok(Json(
            tx.unit(member.residence_id, path.id, member.visibility)
                .await?,
        ))
    }

    #[utoipa::path(put, path = "/residences/{rid}/units/{id}", tag = "units", params(ItemPath), request_body = UnitInput,
        responses((status = 200, body = Unit), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
    async fn replace(
        State(state): State<AppState>,
        manager: Manager,
        ApiPath(path): ApiPath<ItemPath>,
        ApiJson(input): ApiJson<UnitInput>,
    ) -> ApiResult<Json<Unit>> {
        let input = input.validated()?;
        let mut tx = state.store.write().await?;
        let unit = tx
            .update_unit(&manager.actor(), manager.residence_id(), path.id, &input)
            .await?;
        tx.commit().await?;
        Ok(Json(unit))
    }

    #[utoipa::path(delete, path = "/residences/{rid}/units/{id}", tag = "units", params(ItemPath),
        responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
    async fn delete(
        State(state): State<AppState>,
        manager: Manager,
        ApiPath(path): ApiPath<ItemPath>,
    ) -> ApiResult<StatusCode> {
        let mut tx = state.store.write().await?;
        tx.delete_unit(&manager.actor(), manager.residence_id(), path.id)
            .await?;
        tx.commit().await?;
        Ok(StatusCode::NO_CONTENT)
    }
}
