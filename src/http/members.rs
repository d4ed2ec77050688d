//! Accounts and who may do what in a residence. A platform admin creates accounts; a
//! residence's managers give roles in it (creating the account if needed).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::crud::ResidencePath;
use super::error::{ApiResult, ErrorBody};
use super::extract::{Admin, ApiJson, ApiPath, Manager};
use super::AppState;
use crate::auth;
use crate::domain::roles::Role;
use crate::domain::text;
use crate::error::Error;
use crate::storage::auth::{Membership, User};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(list_members, add_member))
        .routes(routes!(remove_member))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserInput {
    email: String,
    /// 1 to 200 characters.
    display_name: String,
    /// 10 to 256 characters.
    password: String,
    #[serde(default)]
    is_admin: bool,
}

/// Creates an account (platform administrators only).
#[utoipa::path(post, path = "/users", tag = "members", request_body = UserInput,
    responses((status = 201, body = User), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(input): ApiJson<UserInput>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let email = text::email("email", &input.email)?;
    let name = text::bounded("display_name", &input.display_name, 1, 200)?;
    let hash = auth::hash_new_password(input.password).await?;
    let mut tx = state.store.write().await?;
    let user = tx
        .insert_user(&admin.actor(), &email, &name, &hash, input.is_admin)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Member {
    #[serde(flatten)]
    membership: Membership,
    email: String,
    display_name: String,
}

/// The residence's members and their roles.
#[utoipa::path(get, path = "/residences/{rid}/members", tag = "members", params(ResidencePath),
    responses((status = 200, body = Vec<Member>), (status = 403, body = ErrorBody)))]
async fn list_members(
    State(state): State<AppState>,
    manager: Manager,
) -> ApiResult<Json<Vec<Member>>> {
    let mut tx = state.store.read().await?;
    let members = tx.members(manager.residence_id()).await?;
    Ok(Json(
        members
            .into_iter()
            .map(|(membership, user)| Member {
                membership,
                email: user.email,
                display_name: user.display_name,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MemberInput {
    email: String,
    role: Role,
    /// Required for `resident`: the person they are in the residence's records.
    person_id: Option<i64>,
    /// Required for `provider`: their company.
    provider_id: Option<i64>,
    /// For a new account: its name (1 to 200 characters).
    display_name: Option<String>,
    /// For a new account: its password (10 to 256 characters).
    password: Option<String>,
}

/// Gives a user a role in the residence, creating the account when the e-mail is new
/// (then `display_name` and `password` are required). Replaces any previous role here.
#[utoipa::path(post, path = "/residences/{rid}/members", tag = "members", params(ResidencePath), request_body = MemberInput,
    responses((status = 200, body = Member), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    manager: Manager,
    ApiJson(input): ApiJson<MemberInput>,
) -> ApiResult<Json<Member>> {
    let email = text::email("email", &input.email)?;
    let existing = state.store.read().await?.user_by_email(&email).await?;
    // Hash before taking the write lock: argon2 is slow on purpose.
    let new_account = match (&existing, input.password) {
        (Some(_), _) => None,
        (None, Some(password)) => {
            let name = input
                .display_name
                .as_deref()
                .ok_or_else(|| Error::invalid("display_name", "requis pour créer un compte"))?;
            let name = text::bounded("display_name", name, 1, 200)?;
            Some((name, auth::hash_new_password(password).await?))
        }
        (None, None) => {
            return Err(Error::invalid(
                "password",
                "requis pour créer un compte : aucun compte n'existe pour cette adresse",
            )
            .into())
        }
    };
    let actor = manager.actor();
    let mut tx = state.store.write().await?;
    let user = match new_account {
        Some((name, hash)) => tx.insert_user(&actor, &email, &name, &hash, false).await?,
        None => tx.user_by_email(&email).await?.ok_or(Error::NotFound {
            what: "utilisateur",
        })?,
    };
    let membership = Membership {
        user_id: user.id,
        residence_id: manager.residence_id(),
        role: input.role,
        person_id: input.person_id,
        provider_id: input.provider_id,
    };
    let membership = tx.set_membership(&actor, &membership).await?;
    tx.commit().await?;
    Ok(Json(Member {
        membership,
        email: user.email,
        display_name: user.display_name,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct MemberPath {
    #[allow(dead_code)] // `Manager` reads it from the raw path; here for the OpenAPI document.
    rid: i64,
    user_id: i64,
}

/// Takes away a user's role in the residence (the account stays).
#[utoipa::path(delete, path = "/residences/{rid}/members/{user_id}", tag = "members", params(MemberPath),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(path): ApiPath<MemberPath>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.write().await?;
    tx.delete_membership(&manager.actor(), manager.residence_id(), path.user_id)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
