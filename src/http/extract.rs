//! Extractors: request bodies, query strings and paths that answer bad input with a
//! JSON error naming the field; and the authenticated user, with or without a
//! residence, so that a handler cannot reach data without passing the checks.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::domain::roles::{Role, Visibility};
use crate::error::Error;
use crate::storage::audit::Actor;
use crate::storage::auth::User;

pub const SESSION_COOKIE: &str = "gardien_session";

/// A JSON body. Unknown fields, wrong types and missing fields are refused with the
/// field's path. An empty body reads as `{}`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // `application/json`, optionally with parameters (`; charset=utf-8`).
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"));
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!(
                            "requête trop volumineuse : {} octets au plus",
                            super::MAX_JSON_BYTES
                        ),
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
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        if !bytes.is_empty() && !is_json {
            // Also keeps cross-site HTML forms out: they cannot send application/json.
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "corps attendu au format JSON (en-tête Content-Type: application/json)",
                None,
            ));
        }
        let invalid_json =
            |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", detail, None);
        // serde would also fill a struct from an array, field by field: only objects.
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(invalid_json("un objet JSON { … } est attendu".into()));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(text);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let detail = err.into_inner();
            if detail.is_syntax() || detail.is_eof() {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("JSON mal formé : {detail}"),
                    None,
                );
            }
            field_error(&path, &detail.to_string())
        })?;
        deserializer
            .end()
            .map_err(|err| invalid_json(format!("JSON mal formé : texte après l'objet ({err})")))?;
        Ok(ApiJson(value))
    }
}

/// A query string, with the same errors as [`ApiJson`].
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|err| field_error(&err.path().to_string(), &err.inner().to_string()))
    }
}

/// Path parameters; a non-numeric id is refused naming the parameter.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::{ErrorKind, Path};
        use axum::extract::rejection::PathRejection;
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(err)) => {
                let field = match err.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key } => Some(key.clone()),
                    _ => None,
                };
                let message = format!(
                    "paramètre de chemin invalide : un identifiant numérique est attendu ({})",
                    err.body_text()
                );
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_path",
                    message,
                    field,
                ))
            }
            Err(other) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                other.body_text(),
                None,
            )),
        }
    }
}

/// Turns a serde message into a French one naming the field.
fn field_error(path: &str, detail: &str) -> ApiError {
    let (field, message) = super::serde_messages::french(path, detail);
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("{field} : {message}"),
        Some(field),
    )
}

/// The authenticated user, from the session cookie or an `Authorization: Bearer` token.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    /// The secret the request came with, so that logout can revoke it.
    pub token: String,
}

impl CurrentUser {
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            name: self.user.email.clone(),
        }
    }
}

/// The token a request carries: the bearer header first, then the session cookie.
pub fn request_token(parts: &Parts) -> Option<String> {
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    bearer.or_else(|| {
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|cookie| cookie.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.to_owned())
    })
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        let token = request_token(parts).ok_or(Error::Unauthenticated)?;
        let hash = crate::auth::token_hash(&token);
        let mut tx = state.store.read().await?;
        let user = tx
            .user_by_token(&hash, chrono::Utc::now())
            .await?
            .ok_or(Error::Unauthenticated)?;
        let current = CurrentUser { user, token };
        parts.extensions.insert(current.clone());
        Ok(current)
    }
}

/// A platform administrator.
pub struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        if current.user.is_admin {
            Ok(Admin(current))
        } else {
            Err(Error::Forbidden("réservé aux administrateurs de la plateforme".into()).into())
        }
    }
}

/// A user with any role in the residence of the path's `{rid}`, with what they may see.
#[derive(Debug, Clone)]
pub struct Member {
    pub current: CurrentUser,
    pub residence_id: i64,
    /// None for a platform administrator without a membership.
    pub role: Option<Role>,
    pub visibility: Visibility,
}

impl Member {
    pub fn actor(&self) -> Actor {
        self.current.actor()
    }
}

impl FromRequestParts<AppState> for Member {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        let invalid_rid = |detail: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                format!("rid : {detail}"),
                Some("rid".into()),
            )
        };
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid_rid("paramètre de chemin illisible (UTF-8 invalide)"))?;
        let raw = params
            .iter()
            .find(|(name, _)| *name == "rid")
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| Error::Internal("route without {rid} behind Member".into()))?;
        let residence_id: i64 = raw.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                format!("rid : identifiant de résidence numérique attendu, reçu « {raw} »"),
                Some("rid".into()),
            )
        })?;
        let mut tx = state.store.read().await?;
        // Someone with no role here learns nothing, not even that the residence exists.
        let not_found = || ApiError::from(Error::NotFound { what: "résidence" });
        let membership = tx.membership(current.user.id, residence_id).await?;
        let (role, visibility) = match (&membership, current.user.is_admin) {
            (Some(m), _) => (
                Some(m.role),
                visibility_of(m.role, m.person_id, m.provider_id),
            ),
            (None, true) => {
                tx.residence(residence_id).await?;
                (None, Visibility::Everything)
            }
            (None, false) => return Err(not_found()),
        };
        Ok(Member {
            current,
            residence_id,
            role,
            visibility,
        })
    }
}

fn visibility_of(role: Role, person: Option<i64>, provider: Option<i64>) -> Visibility {
    match (role, person, provider) {
        (Role::Council | Role::Syndic, _, _) => Visibility::Everything,
        (Role::Resident, Some(person), _) => Visibility::Person(person),
        (Role::Provider, _, Some(provider)) => Visibility::Provider(provider),
        // The schema forbids these; see nothing rather than everything.
        (Role::Resident, None, _) => Visibility::Person(-1),
        (Role::Provider, _, None) => Visibility::Provider(-1),
    }
}

/// A user who manages the residence of `{rid}`: council, syndic, or platform admin.
#[derive(Debug, Clone)]
pub struct Manager(pub Member);

impl Manager {
    pub fn residence_id(&self) -> i64 {
        self.0.residence_id
    }

    pub fn actor(&self) -> Actor {
        self.0.actor()
    }
}

impl FromRequestParts<AppState> for Manager {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let member = Member::from_request_parts(parts, state).await?;
        let manages = member.current.user.is_admin || member.role.is_some_and(Role::manages);
        if manages {
            Ok(Manager(member))
        } else {
            Err(
                Error::Forbidden("réservé au conseil syndical et au syndic de la résidence".into())
                    .into(),
            )
        }
    }
}
