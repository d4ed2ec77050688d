//! Users, their roles per residence, and their sessions and API tokens.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::{diff, Actor, Change};
use super::{Table, Tx};
use crate::domain::roles::Role;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    #[serde(skip)]
    pub password_hash: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Membership {
    pub user_id: i64,
    pub residence_id: i64,
    pub role: Role,
    /// For residents: the person they are in the residence's records.
    pub person_id: Option<i64>,
    /// For providers' staff: their company.
    pub provider_id: Option<i64>,
}

/// A session or API token as listed to its owner; the secret itself is never stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub kind: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Tx {
    pub async fn insert_user(
        &mut self,
        actor: &Actor,
        email: &str,
        display_name: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<User> {
        if self.user_by_email(email).await?.is_some() {
            return Err(Error::conflict(
                Some("email"),
                format!("un compte existe déjà pour {email}"),
            ));
        }
        let user: User = sqlx::query_as(
            "INSERT INTO users (email, display_name, password_hash, is_admin, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
        )
        .bind(email)
        .bind(display_name)
        .bind(password_hash)
        .bind(is_admin)
        .bind(Utc::now())
        .fetch_one(self.conn())
        .await?;
        let change = Change {
            residence_id: None,
            action: "create",
            entity: "user",
            entity_id: user.id,
            reason: "",
            changes: diff(None, Some(&user)),
        };
        self.audit(actor, change).await?;
        Ok(user)
    }

    pub async fn user(&mut self, id: i64) -> Result<User> {
        sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.conn())
            .await?
            .ok_or(Error::NotFound {
                what: "utilisateur",
            })
    }

    pub async fn user_by_email(&mut self, email: &str) -> Result<Option<User>> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(self.conn())
            .await?)
    }

    /// Sets a new password hash and revokes every session and API token of the user
    /// except `keep` (the hash of the token the change was made with): whoever knew the
    /// old password must not stay signed in.
    pub async fn set_password(
        &mut self,
        actor: &Actor,
        user_id: i64,
        password_hash: &str,
        keep: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(self.conn())
            .await?;
        let revoked =
            sqlx::query("DELETE FROM auth_tokens WHERE user_id = $1 AND token_hash <> $2")
                .bind(user_id)
                .bind(keep.unwrap_or_default())
                .execute(self.conn())
                .await?
                .rows_affected();
        let change = Change {
            residence_id: None,
            action: "set_password",
            entity: "user",
            entity_id: user_id,
            reason: "",
            changes: serde_json::json!({ "revoked_tokens": revoked }),
        };
        self.audit(actor, change).await
    }

    pub async fn memberships_of(&mut self, user_id: i64) -> Result<Vec<Membership>> {
        Ok(
            sqlx::query_as("SELECT * FROM memberships WHERE user_id = $1 ORDER BY residence_id")
                .bind(user_id)
                .fetch_all(self.conn())
                .await?,
        )
    }

    pub async fn membership(
        &mut self,
        user_id: i64,
        residence_id: i64,
    ) -> Result<Option<Membership>> {
        Ok(
            sqlx::query_as("SELECT * FROM memberships WHERE user_id = $1 AND residence_id = $2")
                .bind(user_id)
                .bind(residence_id)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    /// The members of a residence with their accounts.
    pub async fn members(&mut self, residence_id: i64) -> Result<Vec<(Membership, User)>> {
        let memberships: Vec<Membership> =
            sqlx::query_as("SELECT * FROM memberships WHERE residence_id = $1 ORDER BY user_id")
                .bind(residence_id)
                .fetch_all(self.conn())
                .await?;
        let mut members = Vec::with_capacity(memberships.len());
        for membership in memberships {
            let user = self.user(membership.user_id).await?;
            members.push((membership, user));
        }
        Ok(members)
    }

    /// Gives `membership.user_id` its role in the residence, replacing any previous one.
    pub async fn set_membership(
        &mut self,
        actor: &Actor,
        membership: &Membership,
    ) -> Result<Membership> {
        let residence = membership.residence_id;
        match membership.role {
            Role::Resident => {
                let person = membership.person_id.ok_or_else(|| {
                    Error::invalid(
                        "person_id",
                        "requis pour un résident : la personne qu'il est dans la résidence",
                    )
                })?;
                self.ensure_in_residence(Table::People, residence, person, "person_id")
                    .await?;
            }
            Role::Provider => {
                let provider = membership.provider_id.ok_or_else(|| {
                    Error::invalid(
                        "provider_id",
                        "requis pour un prestataire : l'entreprise dont il fait partie",
                    )
                })?;
                self.ensure_in_residence(Table::Providers, residence, provider, "provider_id")
                    .await?;
            }
            Role::Council | Role::Syndic => {}
        }
        let before = self.membership(membership.user_id, residence).await?;
        sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND residence_id = $2")
            .bind(membership.user_id)
            .bind(residence)
            .execute(self.conn())
            .await?;
        sqlx::query(
            "INSERT INTO memberships (user_id, residence_id, role, person_id, provider_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(membership.user_id)
        .bind(residence)
        .bind(membership.role)
        .bind(membership.person_id.filter(|_| membership.role == Role::Resident))
        .bind(membership.provider_id.filter(|_| membership.role == Role::Provider))
        .execute(self.conn())
        .await?;
        let after = self
            .membership(membership.user_id, residence)
            .await?
            .ok_or(Error::Internal("membership vanished after insert".into()))?;
        let change = Change {
            residence_id: Some(residence),
            action: if before.is_some() { "update" } else { "create" },
            entity: "membership",
            entity_id: membership.user_id,
            reason: "",
            changes: diff(before.as_ref(), Some(&after)),
        };
        self.audit(actor, change).await?;
        Ok(after)
    }

    pub async fn delete_membership(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        user_id: i64,
    ) -> Result<()> {
        let before = self
            .membership(user_id, residence_id)
            .await?
            .ok_or(Error::NotFound { what: "membre" })?;
        sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND residence_id = $2")
            .bind(user_id)
            .bind(residence_id)
            .execute(self.conn())
            .await?;
        let change = Change {
            residence_id: Some(residence_id),
            action: "delete",
            entity: "membership",
            entity_id: user_id,
            reason: "",
            changes: diff(Some(&before), None),
        };
        self.audit(actor, change).await
    }

    pub async fn insert_token(
        &mut self,
        user_id: i64,
        kind: &str,
        name: &str,
        token_hash: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<TokenInfo> {
        Ok(sqlx::query_as(
            "INSERT INTO auth_tokens (user_id, kind, name, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, kind, name, created_at, expires_at",
        )
        .bind(user_id)
        .bind(kind)
        .bind(name)
        .bind(token_hash)
        .bind(Utc::now())
        .bind(expires_at)
        .fetch_one(self.conn())
        .await?)
    }

    /// The enabled user owning an unexpired token with this hash.
    pub async fn user_by_token(
        &mut self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<User>> {
        Ok(sqlx::query_as(
            "SELECT u.* FROM auth_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) AND NOT u.disabled",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.conn())
        .await?)
    }

    pub async fn api_tokens(&mut self, user_id: i64) -> Result<Vec<TokenInfo>> {
        Ok(sqlx::query_as(
            "SELECT id, kind, name, created_at, expires_at FROM auth_tokens
             WHERE user_id = $1 AND kind = 'api' ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(self.conn())
        .await?)
    }

    pub async fn delete_token(&mut self, user_id: i64, token_id: i64) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM auth_tokens WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(token_id)
            .execute(self.conn())
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound { what: "jeton" });
        }
        Ok(())
    }

    pub async fn delete_token_by_hash(&mut self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM auth_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Removes expired sessions and tokens.
    pub async fn purge_expired_tokens(&mut self, now: DateTime<Utc>) -> Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM auth_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1",
        )
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(deleted.rows_affected())
    }
}
