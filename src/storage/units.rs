//! Units (lots): flats, parking spaces, cellars, shops.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::Actor;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::roles::Visibility;
use crate::domain::{text, UnitKind};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Unit {
    pub id: i64,
    pub residence_id: i64,
    pub building_id: Option<i64>,
    pub lot_number: String,
    pub kind: UnitKind,
    pub floor: Option<i64>,
    pub area_m2: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitInput {
    /// Lot number from the co-ownership's rules, unique in the residence ("12", "P-04").
    pub lot_number: String,
    pub kind: UnitKind,
    pub building_id: Option<i64>,
    /// -10 (basement levels) to 200.
    pub floor: Option<i64>,
    /// Above 0, at most 100000.
    pub area_m2: Option<f64>,
}

impl UnitInput {
    pub fn validated(self) -> Result<Self> {
        if let Some(floor) = self.floor {
            if !(-10..=200).contains(&floor) {
                return Err(Error::invalid(
                    "floor",
                    format!("étage {floor} hors limites (-10 à 200)"),
                ));
            }
        }
        if let Some(area) = self.area_m2 {
            if !(area.is_finite() && area > 0.0 && area <= 100_000.0) {
                return Err(Error::invalid(
                    "area_m2",
                    "surface hors limites (plus de 0 et au plus 100000 m²)",
                ));
            }
        }
        Ok(UnitInput {
            lot_number: text::bounded("lot_number", &self.lot_number, 1, 20)?,
            ..self
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UnitFilter {
    pub building_id: Option<i64>,
    pub kind: Option<UnitKind>,
    /// Part of the lot number.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// SQL condition on `units.id` for what a user may see.
pub(crate) fn push_unit_visibility(
    sql: &mut QueryBuilder<'static, Db>,
    column: &str,
    visibility: Visibility,
) {
    match visibility {
        Visibility::Everything => {}
        Visibility::Person(person) => {
            sql.push(format!(
                " AND {column} IN (SELECT unit_id FROM occupancies WHERE person_id = "
            ));
            sql.push_bind(person);
            sql.push(" AND (end_date IS NULL OR end_date >= ");
            sql.push_bind(crate::domain::text::local_today());
            sql.push("))");
        }
        // Providers see no units.
        Visibility::Provider(_) => {
            sql.push(" AND 1 = 0");
        }
    }
}

impl Tx {
    async fn check_unit_refs(&mut self, residence_id: i64, input: &UnitInput) -> Result<()> {
        if let Some(building) = input.building_id {
            self.ensure_in_residence(Table::Buildings, residence_id, building, "building_id")
                .await?;
        }
        Ok(())
    }

    pub async fn insert_unit(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &UnitInput,
    ) -> Result<Unit> {
        self.check_unit_refs(residence_id, input).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO units (residence_id, building_id, lot_number, kind, floor, area_m2)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(residence_id)
        .bind(input.building_id)
        .bind(&input.lot_number)
        .bind(input.kind)
        .bind(input.floor)
        .bind(input.area_m2)
        .fetch_one(self.conn())
        .await?;
        self.set_match_keys(Table::Units, id, &[&input.lot_number], None)
            .await?;
        self.audit_upsert(actor, Table::Units, residence_id, id, None)
            .await
    }

    pub async fn unit(
        &mut self,
        residence_id: i64,
        id: i64,
        visibility: Visibility,
    ) -> Result<Unit> {
        let mut sql = QueryBuilder::new("SELECT * FROM units WHERE residence_id = ");
        sql.push_bind(residence_id).push(" AND id = ").push_bind(id);
        push_unit_visibility(&mut sql, "id", visibility);
        sql.build_query_as()
            .fetch_optional(self.conn())
            .await?
            .ok_or(Error::NotFound {
                what: Table::Units.french(),
            })
    }

    pub async fn unit_by_lot(
        &mut self,
        residence_id: i64,
        lot_number: &str,
    ) -> Result<Option<Unit>> {
        Ok(
            sqlx::query_as("SELECT * FROM units WHERE residence_id = $1 AND lot_number = $2")
                .bind(residence_id)
                .bind(lot_number.trim())
                .fetch_optional(self.conn())
                .await?,
        )
    }

    pub async fn units(
        &mut self,
        residence_id: i64,
        filter: &UnitFilter,
        visibility: Visibility,
    ) -> Result<Page<Unit>> {
        let (building, kind, q) = (filter.building_id, filter.kind, filter.q.clone());
        self.fetch_page(
            "SELECT *",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM units WHERE residence_id = ")
                    .push_bind(residence_id);
                push_unit_visibility(sql, "id", visibility);
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
            "lot_number, id",
            PageRequest {
                limit: filter.limit,
                offset: filter.offset,
            },
        )
        .await
    }

    pub async fn update_unit(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &UnitInput,
    ) -> Result<Unit> {
        let before: Unit = self.row(Table::Units, residence_id, id).await?;
        self.check_unit_refs(residence_id, input).await?;
        sqlx::query(
            "UPDATE units SET building_id = $1, lot_number = $2, kind = $3, floor = $4, area_m2 = $5
             WHERE residence_id = $6 AND id = $7",
        )
        .bind(input.building_id)
        .bind(&input.lot_number)
        .bind(input.kind)
        .bind(input.floor)
        .bind(input.area_m2)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        self.set_match_keys(Table::Units, id, &[&input.lot_number], None)
            .await?;
        self.audit_upsert(actor, Table::Units, residence_id, id, Some(&before))
            .await
    }

    pub async fn delete_unit(&mut self, actor: &Actor, residence_id: i64, id: i64) -> Result<()> {
        self.delete_audited::<Unit>(actor, Table::Units, residence_id, id)
            .await
    }
}
