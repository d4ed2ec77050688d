//! Occupancy: who owns, rents or lives in which unit, and since when.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::Actor;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::{text, OccupancyRole};
use crate::error::Result;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Occupancy {
    pub id: i64,
    pub residence_id: i64,
    pub unit_id: i64,
    pub person_id: i64,
    pub role: OccupancyRole,
    pub start_date: Option<NaiveDate>,
    /// None while it lasts.
    pub end_date: Option<NaiveDate>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OccupancyInput {
    pub unit_id: i64,
    pub person_id: i64,
    pub role: OccupancyRole,
    /// YYYY-MM-DD.
    pub start_date: Option<NaiveDate>,
    /// YYYY-MM-DD, after the start.
    pub end_date: Option<NaiveDate>,
}

impl OccupancyInput {
    pub fn validated(self) -> Result<Self> {
        if let Some(date) = self.start_date {
            text::plausible_date("start_date", date)?;
        }
        if let Some(date) = self.end_date {
            text::plausible_date("end_date", date)?;
        }
        text::period("end_date", self.start_date, self.end_date)?;
        Ok(self)
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OccupancyFilter {
    pub unit_id: Option<i64>,
    pub person_id: Option<i64>,
    pub role: Option<OccupancyRole>,
    /// Only occupancies that have not ended.
    pub current: Option<bool>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Tx {
    async fn check_occupancy_refs(
        &mut self,
        residence_id: i64,
        input: &OccupancyInput,
    ) -> Result<()> {
        self.ensure_in_residence(Table::Units, residence_id, input.unit_id, "unit_id")
            .await?;
        self.ensure_in_residence(Table::People, residence_id, input.person_id, "person_id")
            .await
    }

    pub async fn insert_occupancy(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &OccupancyInput,
    ) -> Result<Occupancy> {
        self.check_occupancy_refs(residence_id, input).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO occupancies (residence_id, unit_id, person_id, role, start_date, end_date)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(residence_id)
        .bind(input.unit_id)
        .bind(input.person_id)
        .bind(input.role)
        .bind(input.start_date)
        .bind(input.end_date)
        .fetch_one(self.conn())
        .await?;
        self.audit_upsert(actor, Table::Occupancies, residence_id, id, None)
            .await
    }

    pub async fn occupancy(&mut self, residence_id: i64, id: i64) -> Result<Occupancy> {
        self.row(Table::Occupancies, residence_id, id).await
    }

    pub async fn occupancies(
        &mut self,
        residence_id: i64,
        filter: &OccupancyFilter,
    ) -> Result<Page<Occupancy>> {
        let (unit, person, role, current) = (
            filter.unit_id,
            filter.person_id,
            filter.role,
            filter.current,
        );
        self.fetch_page(
            "SELECT *",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM occupancies WHERE residence_id = ")
                    .push_bind(residence_id);
                if let Some(unit) = unit {
                    sql.push(" AND unit_id = ").push_bind(unit);
                }
                if let Some(person) = person {
                    sql.push(" AND person_id = ").push_bind(person);
                }
                if let Some(role) = role {
                    sql.push(" AND role = ").push_bind(role);
                }
                if current == Some(true) {
                    sql.push(" AND (end_date IS NULL OR end_date >= ")
                        .push_bind(crate::domain::text::local_today())
                        .push(")");
                }
            },
            "unit_id, id",
            PageRequest {
                limit: filter.limit,
                offset: filter.offset,
            },
        )
        .await
    }

    pub async fn update_occupancy(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &OccupancyInput,
    ) -> Result<Occupancy> {
        let before = self.occupancy(residence_id, id).await?;
        self.check_occupancy_refs(residence_id, input).await?;
        sqlx::query(
            "UPDATE occupancies SET unit_id = $1, person_id = $2, role = $3, start_date = $4, end_date = $5
             WHERE residence_id = $6 AND id = $7",
        )
        .bind(input.unit_id)
        .bind(input.person_id)
        .bind(input.role)
        .bind(input.start_date)
        .bind(input.end_date)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        self.audit_upsert(actor, Table::Occupancies, residence_id, id, Some(&before))
            .await
    }

    pub async fn delete_occupancy(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
    ) -> Result<()> {
        self.delete_audited::<Occupancy>(actor, Table::Occupancies, residence_id, id)
            .await
    }
}
