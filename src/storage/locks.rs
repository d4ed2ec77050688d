//! Locks: doors and gates, each on a door output of a controller.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::Actor;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::{text, LockKind};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Lock {
    pub id: i64,
    pub residence_id: i64,
    pub name: String,
    pub kind: LockKind,
    pub building_id: Option<i64>,
    pub controller_id: Option<i64>,
    pub door_number: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockInput {
    /// 1 to 100 characters, unique in the residence ("Hall A", "Portail parking").
    pub name: String,
    pub kind: LockKind,
    pub building_id: Option<i64>,
    /// The controller that drives it; given with `door_number` or not at all.
    pub controller_id: Option<i64>,
    /// The controller's door output, 1 to 16.
    pub door_number: Option<i64>,
}

impl LockInput {
    pub fn validated(self) -> Result<Self> {
        match (self.controller_id, self.door_number) {
            (Some(_), None) => {
                return Err(Error::invalid(
                    "door_number",
                    "requis avec controller_id : sortie de porte de 1 à 16",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::invalid("controller_id", "requis avec door_number"))
            }
            (_, Some(door)) if !(1..=16).contains(&door) => {
                return Err(Error::invalid(
                    "door_number",
                    format!("{door} hors limites : sortie de porte de 1 à 16"),
                ))
            }
            _ => {}
        }
        Ok(LockInput {
            name: text::bounded("name", &self.name, 1, 100)?,
            ..self
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LockFilter {
    pub controller_id: Option<i64>,
    pub building_id: Option<i64>,
    pub kind: Option<LockKind>,
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Tx {
    async fn check_lock_refs(&mut self, residence_id: i64, input: &LockInput) -> Result<()> {
        if let Some(building) = input.building_id {
            self.ensure_in_residence(Table::Buildings, residence_id, building, "building_id")
                .await?;
        }
        if let Some(controller) = input.controller_id {
            self.ensure_in_residence(
                Table::Controllers,
                residence_id,
                controller,
                "controller_id",
            )
            .await?;
        }
        Ok(())
    }

    pub async fn insert_lock(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &LockInput,
    ) -> Result<Lock> {
        self.check_lock_refs(residence_id, input).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO locks (residence_id, name, kind, building_id, controller_id, door_number)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(residence_id)
        .bind(&input.name)
        .bind(input.kind)
        .bind(input.building_id)
        .bind(input.controller_id)
        .bind(input.door_number)
        .fetch_one(self.conn())
        .await?;
        self.set_match_keys(Table::Locks, id, &[&input.name], None)
            .await?;
        let lock = self
            .audit_upsert(actor, Table::Locks, residence_id, id, None)
            .await?;
        self.refresh_access(residence_id, None).await?;
        Ok(lock)
    }

    pub async fn lock(&mut self, residence_id: i64, id: i64) -> Result<Lock> {
        self.row(Table::Locks, residence_id, id).await
    }

    pub async fn locks(&mut self, residence_id: i64, filter: &LockFilter) -> Result<Page<Lock>> {
        let (controller, building, kind, q) = (
            filter.controller_id,
            filter.building_id,
            filter.kind,
            filter.q.clone(),
        );
        self.fetch_page(
            "SELECT *",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM locks WHERE residence_id = ")
                    .push_bind(residence_id);
                if let Some(controller) = controller {
                    sql.push(" AND controller_id = ").push_bind(controller);
                }
                if let Some(building) = building {
                    sql.push(" AND building_id = ").push_bind(building);
                }
                if let Some(kind) = kind {
                    sql.push(" AND kind = ").push_bind(kind);
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
        .await
    }

    pub async fn update_lock(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &LockInput,
    ) -> Result<Lock> {
        let before = self.lock(residence_id, id).await?;
        self.check_lock_refs(residence_id, input).await?;
        sqlx::query(
            "UPDATE locks SET name = $1, kind = $2, building_id = $3, controller_id = $4, door_number = $5
             WHERE residence_id = $6 AND id = $7",
        )
        .bind(&input.name)
        .bind(input.kind)
        .bind(input.building_id)
        .bind(input.controller_id)
        .bind(input.door_number)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        self.set_match_keys(Table::Locks, id, &[&input.name], None)
            .await?;
        let lock = self
            .audit_upsert(actor, Table::Locks, residence_id, id, Some(&before))
            .await?;
        self.refresh_access(residence_id, None).await?;
        Ok(lock)
    }

    pub async fn delete_lock(&mut self, actor: &Actor, residence_id: i64, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM profile_locks WHERE lock_id = $1")
            .bind(id)
            .execute(self.conn())
            .await?;
        self.delete_audited::<Lock>(actor, Table::Locks, residence_id, id)
            .await?;
        self.refresh_access(residence_id, None).await
    }
}
