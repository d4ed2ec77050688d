//! Residences (co-ownerships): the tenants of the platform.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::audit::{diff, Actor, Change};
use super::Tx;
use crate::domain::text;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Residence {
    pub id: i64,
    pub name: String,
    pub address: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResidenceInput {
    /// 1 to 200 characters.
    pub name: String,
    /// Postal address, up to 500 characters.
    #[serde(default)]
    pub address: String,
}

impl ResidenceInput {
    pub fn validated(self) -> Result<Self> {
        Ok(ResidenceInput {
            name: text::bounded("name", &self.name, 1, 200)?,
            address: text::bounded("address", &self.address, 0, 500)?,
        })
    }
}

impl Tx {
    pub async fn insert_residence(
        &mut self,
        actor: &Actor,
        input: &ResidenceInput,
    ) -> Result<Residence> {
        let residence: Residence = sqlx::query_as(
            "INSERT INTO residences (name, address, created_at) VALUES ($1, $2, $3) RETURNING *",
        )
        .bind(&input.name)
        .bind(&input.address)
        .bind(Utc::now())
        .fetch_one(self.conn())
        .await?;
        let change = Change {
            residence_id: Some(residence.id),
            action: "create",
            entity: "residence",
            entity_id: residence.id,
            reason: "",
            changes: diff(None, Some(&residence)),
        };
        self.audit(actor, change).await?;
        Ok(residence)
    }

    pub async fn residence(&mut self, id: i64) -> Result<Residence> {
        sqlx::query_as("SELECT * FROM residences WHERE id = $1")
            .bind(id)
            .fetch_optional(self.conn())
            .await?
            .ok_or(Error::NotFound { what: "résidence" })
    }

    /// Residences by id; all of them when `ids` is `None` (platform administrators).
    pub async fn residences(&mut self, ids: Option<&[i64]>) -> Result<Vec<Residence>> {
        let mut query = sqlx::QueryBuilder::new("SELECT * FROM residences");
        if let Some(ids) = ids {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            query.push(" WHERE id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            query.push(")");
        }
        query.push(" ORDER BY name, id");
        Ok(query.build_query_as().fetch_all(self.conn()).await?)
    }

    pub async fn update_residence(
        &mut self,
        actor: &Actor,
        id: i64,
        input: &ResidenceInput,
    ) -> Result<Residence> {
        let before = self.residence(id).await?;
        sqlx::query("UPDATE residences SET name = $1, address = $2 WHERE id = $3")
            .bind(&input.name)
            .bind(&input.address)
            .bind(id)
            .execute(self.conn())
            .await?;
        let after = self.residence(id).await?;
        let change = Change {
            residence_id: Some(id),
            action: "update",
            entity: "residence",
            entity_id: id,
            reason: "",
            changes: diff(Some(&before), Some(&after)),
        };
        self.audit(actor, change).await?;
        Ok(after)
    }
}
