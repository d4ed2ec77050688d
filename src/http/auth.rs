//! Login, logout, the current user, and API tokens for automation.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, CurrentUser, SESSION_COOKIE};
use super::AppState;
use crate::auth;
use crate::domain::text;
use crate::error::Error;
use crate::storage::auth::{Membership, TokenInfo, User};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(delete_token))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginInput {
    email: String,
    password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct LoginOutput {
    /// Send as `Authorization: Bearer <token>`; the same value is set as a cookie.
    token: String,
    expires_at: DateTime<Utc>,
    user: User,
}

/// Opens a session. Answers with a token and sets the `gardien_session` cookie
/// (HttpOnly, SameSite=Strict).
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginInput, security(()),
    responses((status = 200, body = LoginOutput), (status = 401, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<LoginInput>,
) -> ApiResult<(HeaderMap, Json<LoginOutput>)> {
    let email = text::bounded("email", &input.email, 1, 254)?.to_lowercase();
    let password = input.password;
    if password.chars().count() > auth::MAX_PASSWORD_CHARS {
        return Err(Error::invalid("password", "trop long").into());
    }
    let user = state.store.read().await?.user_by_email(&email).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = tokio::task::spawn_blocking(move || {
        let hash = stored.as_deref().unwrap_or_else(|| auth::decoy_hash());
        auth::verify_password(&password, hash)
    })
    .await
    .map_err(|err| Error::Internal(format!("password check task failed: {err}")))?;
    let user = match user {
        Some(user) if verified && !user.disabled => user,
        _ => {
            tracing::info!(%email, "login refused");
            let message = "adresse e-mail ou mot de passe incorrect";
            return Err(super::error::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_credentials",
                message,
                None,
            ));
        }
    };
    let token = auth::new_token("session");
    let expires_at = Utc::now() + Duration::hours(state.config.session_hours);
    let mut tx = state.store.write().await?;
    tx.insert_token(
        user.id,
        "session",
        "",
        &auth::token_hash(&token),
        Some(expires_at),
    )
    .await?;
    tx.purge_expired_tokens(Utc::now()).await?;
    tx.commit().await?;
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        state.config.session_hours * 3600
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|err| Error::Internal(err.to_string()))?,
    );
    Ok((
        headers,
        Json(LoginOutput {
            token,
            expires_at,
            user,
        }),
    ))
}

/// Ends the session (or revokes the API token) the request came with.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(
    State(state): State<AppState>,
    current: CurrentUser,
) -> ApiResult<(HeaderMap, StatusCode)> {
    let mut tx = state.store.write().await?;
    tx.delete_token_by_hash(&auth::token_hash(&current.token))
        .await?;
    tx.commit().await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gardien_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok((headers, StatusCode::NO_CONTENT))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Me {
    user: User,
    memberships: Vec<Membership>,
}

/// The current user and their roles per residence.
#[utoipa::path(get, path = "/me", tag = "auth", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Json<Me>> {
    let mut tx = state.store.read().await?;
    let memberships = tx.memberships_of(current.user.id).await?;
    Ok(Json(Me {
        user: current.user,
        memberships,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordInput {
    current_password: String,
    /// 10 to 256 characters.
    new_password: String,
}

/// Changes the current user's password. Every other session and every API token of
/// the user is revoked; the session that made the change stays open.
#[utoipa::path(post, path = "/auth/password", tag = "auth", request_body = PasswordInput,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(input): ApiJson<PasswordInput>,
) -> ApiResult<StatusCode> {
    auth::check_new_password(&input.new_password).map_err(|err| match err {
        Error::Invalid { message, .. } => Error::invalid("new_password", message),
        other => other,
    })?;
    let stored = current.user.password_hash.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        auth::verify_password(&input.current_password, &stored)
            .then(|| auth::hash_password(&input.new_password))
    })
    .await
    .map_err(|err| Error::Internal(format!("password task failed: {err}")))?;
    let hash = hashed
        .ok_or_else(|| Error::invalid("current_password", "mot de passe actuel incorrect"))??;
    let mut tx = state.store.write().await?;
    let keep = auth::token_hash(&current.token);
    tx.set_password(&current.actor(), current.user.id, &hash, Some(&keep))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The current user's API tokens (the secrets are never shown again).
#[utoipa::path(get, path = "/auth/tokens", tag = "auth", responses((status = 200, body = Vec<TokenInfo>)))]
async fn list_tokens(
    State(state): State<AppState>,
    current: CurrentUser,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let mut tx = state.store.read().await?;
    Ok(Json(tx.api_tokens(current.user.id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenInput {
    /// What the token is for ("collecte nocturne"), 1 to 100 characters.
    name: String,
    /// None: until revoked.
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NewToken {
    /// Shown once: store it now.
    token: String,
    info: TokenInfo,
}

/// Creates an API token acting as the current user, for scripts and automation.
#[utoipa::path(post, path = "/auth/tokens", tag = "auth", request_body = TokenInput,
    responses((status = 201, body = NewToken), (status = 422, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(input): ApiJson<TokenInput>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    let name = text::bounded("name", &input.name, 1, 100)?;
    if let Some(expiry) = input.expires_at {
        text::plausible_time("expires_at", expiry)?;
        if expiry <= Utc::now() {
            return Err(
                Error::invalid("expires_at", "la date d'expiration est déjà passée").into(),
            );
        }
    }
    let token = auth::new_token("api");
    let mut tx = state.store.write().await?;
    let info = tx
        .insert_token(
            current.user.id,
            "api",
            &name,
            &auth::token_hash(&token),
            input.expires_at,
        )
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(NewToken { token, info })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct TokenPath {
    id: i64,
}

/// Revokes one of the current user's tokens.
#[utoipa::path(delete, path = "/auth/tokens/{id}", tag = "auth", params(TokenPath),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_token(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(path): ApiPath<TokenPath>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.write().await?;
    tx.delete_token(current.user.id, path.id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
