//! Buildings of a residence.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::Actor;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::text;
use crate::error::Result;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Building {
    pub id: i64,
    pub residence_id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildingInput {
    /// 1 to 100 characters, unique in the residence ("Bâtiment A").
    pub name: String,
}

impl BuildingInput {
    pub fn validated(self) -> Result<Self> {
        Ok(BuildingInput {
            name: text::bounded("name", &self.name, 1, 100)?,
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BuildingFilter {
    /// Part of the name.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Tx {
    pub async fn insert_building(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &BuildingInput,
    ) -> Result<Building> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO buildings (residence_id, name) VALUES ($1, $2) RETURNING id",
        )
        .bind(residence_id)
        .bind(&input.name)
        .fetch_one(self.conn())
        .await?;
        self.set_match_keys(Table::Buildings, id, &[&input.name], None)
            .await?;
        self.audit_upsert(actor, Table::Buildings, residence_id, id, None)
            .await
    }

    pub async fn building(&mut self, residence_id: i64, id: i64) -> Result<Building> {
        self.row(Table::Buildings, residence_id, id).await
    }

    pub async fn buildings(
        &mut self,
        residence_id: i64,
        filter: &BuildingFilter,
    ) -> Result<Page<Building>> {
        let q = filter.q.clone();
        let page = PageRequest {
            limit: filter.limit,
            offset: filter.offset,
        };
        self.fetch_page(
            "SELECT *",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM buildings WHERE residence_id = ")
                    .push_bind(residence_id);
                if let Some(q) = &q {
                    sql.push(" AND search_key LIKE ").push_bind(super::like(q));
                }
            },
            "name, id",
            page,
        )
        .await
    }

    pub async fn update_building(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &BuildingInput,
    ) -> Result<Building> {
        let before = self.building(residence_id, id).await?;
        sqlx::query("UPDATE buildings SET name = $1 WHERE residence_id = $2 AND id = $3")
            .bind(&input.name)
            .bind(residence_id)
            .bind(id)
            .execute(self.conn())
            .await?;
        self.set_match_keys(Table::Buildings, id, &[&input.name], None)
            .await?;
        self.audit_upsert(actor, Table::Buildings, residence_id, id, Some(&before))
            .await
    }

    pub async fn delete_building(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
    ) -> Result<()> {
        self.delete_audited::<Building>(actor, Table::Buildings, residence_id, id)
            .await
    }
}
