//! Access profiles: named sets of locks ("Résident bât. A" = hall A + car park) given
//! to keys. A lock's expected key set follows from them.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::{diff, Actor};
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::text;
use crate::error::Result;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AccessProfile {
    pub id: i64,
    pub residence_id: i64,
    pub name: String,
    pub description: String,
    /// The locks this profile opens, by id.
    #[sqlx(skip)]
    pub lock_ids: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    /// 1 to 100 characters, unique in the residence.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Locks of the same residence; at most 500.
    #[serde(default)]
    pub lock_ids: Vec<i64>,
}

impl ProfileInput {
    pub fn validated(mut self) -> Result<Self> {
        self.lock_ids = text::id_list("lock_ids", self.lock_ids)?;
        Ok(ProfileInput {
            name: text::bounded("name", &self.name, 1, 100)?,
            description: text::bounded("description", &self.description, 0, 500)?,
            lock_ids: self.lock_ids,
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProfileFilter {
    /// Only profiles that open this lock.
    pub lock_id: Option<i64>,
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Tx {
    async fn set_profile_locks(
        &mut self,
        residence_id: i64,
        profile_id: i64,
        lock_ids: &[i64],
    ) -> Result<()> {
        for (index, lock) in lock_ids.iter().enumerate() {
            self.ensure_in_residence(
                Table::Locks,
                residence_id,
                *lock,
                &format!("lock_ids[{index}]"),
            )
            .await?;
        }
        sqlx::query("DELETE FROM profile_locks WHERE profile_id = $1")
            .bind(profile_id)
            .execute(self.conn())
            .await?;
        for lock in lock_ids.iter().collect::<std::collections::BTreeSet<_>>() {
            sqlx::query(
                "INSERT INTO profile_locks (residence_id, profile_id, lock_id) VALUES ($1, $2, $3)",
            )
            .bind(residence_id)
            .bind(profile_id)
            .bind(lock)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    async fn with_lock_ids(&mut self, mut profile: AccessProfile) -> Result<AccessProfile> {
        profile.lock_ids = sqlx::query_scalar(
            "SELECT lock_id FROM profile_locks WHERE profile_id = $1 ORDER BY lock_id",
        )
        .bind(profile.id)
        .fetch_all(self.conn())
        .await?;
        Ok(profile)
    }

    pub async fn profile(&mut self, residence_id: i64, id: i64) -> Result<AccessProfile> {
        let profile = self.row(Table::Profiles, residence_id, id).await?;
        self.with_lock_ids(profile).await
    }

    pub async fn profile_named(
        &mut self,
        residence_id: i64,
        name: &str,
    ) -> Result<Option<AccessProfile>> {
        let found: Option<AccessProfile> = sqlx::query_as(
            "SELECT * FROM access_profiles WHERE residence_id = $1 AND name_key = $2",
        )
        .bind(residence_id)
        .bind(text::fold(name))
        .fetch_optional(self.conn())
        .await?;
        match found {
            Some(profile) => Ok(Some(self.with_lock_ids(profile).await?)),
            None => Ok(None),
        }
    }

    pub async fn insert_profile(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &ProfileInput,
    ) -> Result<AccessProfile> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_profiles (residence_id, name, description) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(residence_id)
        .bind(&input.name)
        .bind(&input.description)
        .fetch_one(self.conn())
        .await?;
        self.set_profile_locks(residence_id, id, &input.lock_ids)
            .await?;
        self.set_match_keys(Table::Profiles, id, &[&input.name], Some(&input.name))
            .await?;
        let after = self.profile(residence_id, id).await?;
        self.audit_row(
            actor,
            Table::Profiles,
            (residence_id, id),
            "create",
            diff(None, Some(&after)),
        )
        .await?;
        self.refresh_access(residence_id, None).await?;
        Ok(after)
    }

    pub async fn profiles(
        &mut self,
        residence_id: i64,
        filter: &ProfileFilter,
    ) -> Result<Page<AccessProfile>> {
        let (lock, q) = (filter.lock_id, filter.q.clone());
        let mut page: Page<AccessProfile> = self
            .fetch_page(
                "SELECT *",
                move |sql: &mut QueryBuilder<'static, Db>| {
                    sql.push("FROM access_profiles WHERE residence_id = ")
                        .push_bind(residence_id);
                    if let Some(lock) = lock {
                        sql.push(
                            " AND id IN (SELECT profile_id FROM profile_locks WHERE lock_id = ",
                        )
                        .push_bind(lock)
                        .push(")");
                    }
                    if let Some(q) = &q {
                        sql.push(" AND search_key LIKE ").push_bind(super::like(q));
                    }
                },
                "name, id",
                PageRequest {
                    limit: filter.limit,
                    offset: filter.offset,
                },
            )
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for profile in std::mem::take(&mut page.items) {
            items.push(self.with_lock_ids(profile).await?);
        }
        page.items = items;
        Ok(page)
    }

    pub async fn update_profile(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &ProfileInput,
    ) -> Result<AccessProfile> {
        let before = self.profile(residence_id, id).await?;
        sqlx::query("UPDATE access_profiles SET name = $1, description = $2 WHERE residence_id = $3 AND id = $4")
            .bind(&input.name)
            .bind(&input.description)
            .bind(residence_id)
            .bind(id)
            .execute(self.conn())
            .await?;
        self.set_profile_locks(residence_id, id, &input.lock_ids)
            .await?;
        self.set_match_keys(Table::Profiles, id, &[&input.name], Some(&input.name))
            .await?;
        let after = self.profile(residence_id, id).await?;
        self.audit_row(
            actor,
            Table::Profiles,
            (residence_id, id),
            "update",
            diff(Some(&before), Some(&after)),
        )
        .await?;
        self.refresh_access(residence_id, None).await?;
        Ok(after)
    }

    /// Deletes a profile; the keys that had it lose it, the locks stay.
    pub async fn delete_profile(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
    ) -> Result<()> {
        let before = self.profile(residence_id, id).await?;
        self.remove_profile_from_keys(actor, residence_id, id)
            .await?;
        sqlx::query("DELETE FROM profile_locks WHERE profile_id = $1")
            .bind(id)
            .execute(self.conn())
            .await?;
        self.delete_row(Table::Profiles, residence_id, id).await?;
        self.audit_row(
            actor,
            Table::Profiles,
            (residence_id, id),
            "delete",
            diff(Some(&before), None),
        )
        .await?;
        self.refresh_access(residence_id, None).await
    }
}
