//! Meters and their replacements. A replaced meter stays, removed, with its final
//! index, so that its readings keep their meaning and consumption never subtracts the
//! index of one meter from another's.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::{self, Actor};
use super::units::push_unit_visibility;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::meter::{manufacturer, rollover_modulus, MbusId, MeasureUnit, MeterKind};
use crate::domain::roles::Visibility;
use crate::domain::text;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Meter {
    pub id: i64,
    pub residence_id: i64,
    pub kind: MeterKind,
    /// The unit (flat) of an individual meter.
    pub unit_id: Option<i64>,
    /// The building of a building meter (or of the unit, for information).
    pub building_id: Option<i64>,
    /// M-Bus identification number, 8 digits.
    pub mbus_id: String,
    /// M-Bus manufacturer code, 3 letters.
    pub manufacturer: String,
    pub version: i64,
    /// M-Bus medium code (7 water, 22 cold water, 6 warm water, 4 heat, 8 HCA…).
    pub medium: i64,
    pub measure_unit: MeasureUnit,
    /// Integer digits of the index: it wraps to 0 after 10^digits.
    pub digits: i64,
    pub installed_on: NaiveDate,
    pub initial_index: f64,
    /// Set when the meter was replaced (or taken out), with its last index.
    pub removed_on: Option<NaiveDate>,
    pub final_index: Option<f64>,
    /// The gateway that reads it.
    pub gateway_id: Option<i64>,
    pub label: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeterInput {
    pub kind: MeterKind,
    /// Required for a unit's meter (cold water, hot water, heating, heat cost
    /// allocator); absent for a building's.
    pub unit_id: Option<i64>,
    pub building_id: Option<i64>,
    /// 8 digits (leading zeros may be left out).
    pub mbus_id: String,
    /// 3 letters, e.g. "KAM".
    pub manufacturer: String,
    /// 0 to 255.
    #[serde(default)]
    pub version: i64,
    /// M-Bus medium code matching the kind.
    pub medium: i64,
    pub measure_unit: MeasureUnit,
    /// 1 to 12: integer digits before the index wraps to 0 (5 on most water meters).
    pub digits: i64,
    pub installed_on: NaiveDate,
    /// Index at installation, 0 or more and below 10^digits.
    #[serde(default)]
    pub initial_index: f64,
    pub gateway_id: Option<i64>,
    #[serde(default)]
    pub label: String,
}

/// What a meter replacement needs: the old meter's last index and the new meter.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplacementInput {
    pub replaced_on: NaiveDate,
    /// The old meter's index when it was taken out.
    pub final_index: f64,
    /// The new meter's M-Bus identity and first index.
    pub mbus_id: String,
    pub manufacturer: String,
    #[serde(default)]
    pub version: i64,
    /// Default: the old meter's.
    pub medium: Option<i64>,
    /// Default: the old meter's.
    pub digits: Option<i64>,
    #[serde(default)]
    pub initial_index: f64,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Replacement {
    pub id: i64,
    pub residence_id: i64,
    pub old_meter_id: i64,
    pub new_meter_id: i64,
    pub replaced_on: NaiveDate,
    pub final_index: f64,
    pub initial_index: f64,
    pub reason: String,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MeterFilter {
    pub unit_id: Option<i64>,
    pub building_id: Option<i64>,
    pub gateway_id: Option<i64>,
    pub kind: Option<MeterKind>,
    /// Include meters that were replaced or taken out (default: only meters in place).
    pub removed: Option<bool>,
    /// Part of the M-Bus id or label.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

fn check_byte(field: &str, value: i64) -> Result<i64> {
    if (0..=255).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            field,
            format!("{value} hors limites : de 0 à 255"),
        ))
    }
}

fn check_digits(digits: i64) -> Result<i64> {
    if (1..=12).contains(&digits) {
        Ok(digits)
    } else {
        Err(Error::invalid(
            "digits",
            format!("{digits} hors limites : nombre de chiffres entiers de l'index, de 1 à 12"),
        ))
    }
}

/// An index the meter can show: finite, 0 or more, below 10^digits.
pub(crate) fn check_index(field: &str, value: f64, digits: i64) -> Result<f64> {
    let top = rollover_modulus(digits);
    if value.is_finite() && value >= 0.0 && value < top {
        Ok(value)
    } else {
        Err(Error::invalid(
            field,
            format!("{value} : un index de 0 à moins de {top} est attendu (compteur à {digits} chiffres)"),
        ))
    }
}

fn check_medium(kind: MeterKind, medium: i64) -> Result<i64> {
    let medium = check_byte("medium", medium)?;
    if kind.accepts_medium(medium as u8) {
        Ok(medium)
    } else {
        Err(Error::invalid(
            "medium",
            format!(
                "le code de fluide M-Bus {medium} ne convient pas à un compteur {} (eau 7 ou 22, eau chaude 6 ou 21, chaleur 4 ou 12, répartiteur 8, gaz 3, électricité 2)",
                kind.french()
            ),
        ))
    }
}

impl MeterInput {
    pub fn validated(self) -> Result<Self> {
        let mbus_id = MbusId::parse("mbus_id", &self.mbus_id)?.to_string();
        let digits = check_digits(self.digits)?;
        match (self.kind.is_individual(), self.unit_id) {
            (true, None) => {
                return Err(Error::invalid(
                    "unit_id",
                    format!(
                        "requis : un compteur {} appartient à un lot",
                        self.kind.french()
                    ),
                ))
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    "unit_id",
                    format!(
                        "sans objet : un compteur {} appartient à un bâtiment (building_id)",
                        self.kind.french()
                    ),
                ))
            }
            _ => {}
        }
        if !self.kind.accepts_unit(self.measure_unit) {
            return Err(Error::invalid(
                "measure_unit",
                format!(
                    "« {} » ne convient pas à un compteur {}",
                    self.measure_unit.as_str(),
                    self.kind.french()
                ),
            ));
        }
        Ok(MeterInput {
            mbus_id,
            manufacturer: manufacturer("manufacturer", &self.manufacturer)?,
            version: check_byte("version", self.version)?,
            medium: check_medium(self.kind, self.medium)?,
            digits,
            installed_on: text::plausible_date("installed_on", self.installed_on)?,
            initial_index: check_index("initial_index", self.initial_index, digits)?,
            label: text::bounded("label", &self.label, 0, 100)?,
            ..self
        })
    }
}

impl Tx {
    async fn check_meter_refs(&mut self, residence_id: i64, input: &MeterInput) -> Result<()> {
        if let Some(unit) = input.unit_id {
            self.ensure_in_residence(Table::Units, residence_id, unit, "unit_id")
                .await?;
        }
        if let Some(building) = input.building_id {
            self.ensure_in_residence(Table::Buildings, residence_id, building, "building_id")
                .await?;
        }
        if let Some(gateway) = input.gateway_id {
            self.ensure_in_residence(Table::Gateways, residence_id, gateway, "gateway_id")
                .await?;
        }
        Ok(())
    }

    /// The meter already known under `mbus_id`, as a conflict naming it.
    async fn mbus_id_taken(&mut self, residence_id: i64, mbus_id: &str, except: i64) -> Result<()> {
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM meters WHERE residence_id = $1 AND mbus_id = $2 AND id <> $3",
        )
        .bind(residence_id)
        .bind(mbus_id)
        .bind(except)
        .fetch_optional(self.conn())
        .await?;
        match existing {
            Some(id) => Err(Error::conflict(
                Some("mbus_id"),
                format!("le compteur {mbus_id} existe déjà dans la résidence (compteur n°{id})"),
            )),
            None => Ok(()),
        }
    }

    pub async fn insert_meter(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &MeterInput,
    ) -> Result<Meter> {
        self.check_meter_refs(residence_id, input).await?;
        self.mbus_id_taken(residence_id, &input.mbus_id, 0).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meters (residence_id, kind, unit_id, building_id, mbus_id, manufacturer, version, medium,
                                 measure_unit, digits, installed_on, initial_index, gateway_id, label)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(residence_id)
        .bind(input.kind)
        .bind(input.unit_id)
        .bind(input.building_id)
        .bind(&input.mbus_id)
        .bind(&input.manufacturer)
        .bind(input.version)
        .bind(input.medium)
        .bind(input.measure_unit)
        .bind(input.digits)
        .bind(input.installed_on)
        .bind(input.initial_index)
        .bind(input.gateway_id)
        .bind(&input.label)
        .fetch_one(self.conn())
        .await
        .map_err(super::classify)?;
        self.set_match_keys(Table::Meters, id, &[&input.mbus_id, &input.label], None)
            .await?;
        let meter: Meter = self
            .audit_upsert(actor, Table::Meters, residence_id, id, None)
            .await?;
        if let Some(gateway) = meter.gateway_id {
            self.refresh_gateway_targets(residence_id, gateway).await?;
        }
        Ok(meter)
    }

    /// A meter of the residence that `visibility` lets the caller see.
    pub async fn meter(
        &mut self,
        residence_id: i64,
        id: i64,
        visibility: Visibility,
    ) -> Result<Meter> {
        let mut sql = QueryBuilder::new("SELECT * FROM meters WHERE residence_id = ");
        sql.push_bind(residence_id).push(" AND id = ").push_bind(id);
        push_unit_visibility(&mut sql, "unit_id", visibility);
        sql.build_query_as()
            .fetch_optional(self.conn())
            .await?
            .ok_or(Error::NotFound {
                what: Table::Meters.french(),
            })
    }

    pub async fn meters(
        &mut self,
        residence_id: i64,
        filter: &MeterFilter,
        visibility: Visibility,
    ) -> Result<Page<Meter>> {
        let (unit, building, gateway, kind) = (
            filter.unit_id,
            filter.building_id,
            filter.gateway_id,
            filter.kind,
        );
        let (removed, q) = (filter.removed.unwrap_or(false), filter.q.clone());
        self.fetch_page(
            "SELECT *",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM meters WHERE residence_id = ")
                    .push_bind(residence_id);
                push_unit_visibility(sql, "unit_id", visibility);
                if let Some(unit) = unit {
                    sql.push(" AND unit_id = ").push_bind(unit);
                }
                if let Some(building) = building {
                    sql.push(" AND building_id = ").push_bind(building);
                }
                if let Some(gateway) = gateway {
                    sql.push(" AND gateway_id = ").push_bind(gateway);
                }
                if let Some(kind) = kind {
                    sql.push(" AND kind = ").push_bind(kind);
                }
                if !removed {
                    sql.push(" AND removed_on IS NULL");
                }
                if let Some(q) = &q {
                    sql.push(" AND search_key LIKE ").push_bind(super::like(q));
                }
            },
            "mbus_id, id",
            PageRequest {
                limit: filter.limit,
                offset: filter.offset,
            },
        )
        .await
    }

    pub async fn update_meter(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &MeterInput,
    ) -> Result<Meter> {
        let before = self.meter(residence_id, id, Visibility::Everything).await?;
        if before.removed_on.is_some() {
            return Err(Error::conflict(
                None,
                "ce compteur a été déposé : il ne se modifie plus (son historique est conservé)",
            ));
        }
        self.check_meter_refs(residence_id, input).await?;
        self.mbus_id_taken(residence_id, &input.mbus_id, id).await?;
        sqlx::query(
            "UPDATE meters SET kind = $1, unit_id = $2, building_id = $3, mbus_id = $4, manufacturer = $5, version = $6,
                    medium = $7, measure_unit = $8, digits = $9, installed_on = $10, initial_index = $11,
                    gateway_id = $12, label = $13
             WHERE residence_id = $14 AND id = $15",
        )
        .bind(input.kind)
        .bind(input.unit_id)
        .bind(input.building_id)
        .bind(&input.mbus_id)
        .bind(&input.manufacturer)
        .bind(input.version)
        .bind(input.medium)
        .bind(input.measure_unit)
        .bind(input.digits)
        .bind(input.installed_on)
        .bind(input.initial_index)
        .bind(input.gateway_id)
        .bind(&input.label)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await
        .map_err(super::classify)?;
        self.set_match_keys(Table::Meters, id, &[&input.mbus_id, &input.label], None)
            .await?;
        let meter = self
            .audit_upsert(actor, Table::Meters, residence_id, id, Some(&before))
            .await?;
        for gateway in [before.gateway_id, meter.gateway_id].into_iter().flatten() {
            self.refresh_gateway_targets(residence_id, gateway).await?;
        }
        Ok(meter)
    }

    /// Deletes a meter entered by mistake. A meter with readings is refused: replace
    /// it instead, its history stays.
    pub async fn delete_meter(&mut self, actor: &Actor, residence_id: i64, id: i64) -> Result<()> {
        let meter = self.meter(residence_id, id, Visibility::Everything).await?;
        let readings: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM meter_readings WHERE meter_id = $1")
                .bind(id)
                .fetch_one(self.conn())
                .await?;
        if readings > 0 {
            return Err(Error::conflict(
                None,
                format!("ce compteur a {readings} relevé(s) : déclarez son remplacement plutôt que de le supprimer"),
            ));
        }
        for table in ["meter_sync", "meter_alarms", "reading_conflicts"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE meter_id = $1"))
                .bind(id)
                .execute(self.conn())
                .await?;
        }
        self.delete_audited::<Meter>(actor, Table::Meters, residence_id, id)
            .await?;
        if let Some(gateway) = meter.gateway_id {
            self.refresh_gateway_targets(residence_id, gateway).await?;
        }
        Ok(())
    }

    /// Replaces meter `id` by a new one on the same unit (or building) and gateway: the
    /// old one is removed with its final index, the new one starts at its initial
    /// index, and the gateway is reprogrammed.
    pub async fn replace_meter(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &ReplacementInput,
    ) -> Result<(Meter, Replacement)> {
        let old = self.meter(residence_id, id, Visibility::Everything).await?;
        if old.removed_on.is_some() {
            return Err(Error::conflict(
                None,
                "ce compteur a déjà été déposé : remplacez le compteur qui l'a remplacé",
            ));
        }
        let replaced_on = text::plausible_date("replaced_on", input.replaced_on)?;
        if replaced_on < old.installed_on {
            return Err(Error::invalid(
                "replaced_on",
                format!(
                    "le {replaced_on} précède la pose du compteur ({})",
                    old.installed_on
                ),
            ));
        }
        let final_index = check_index("final_index", input.final_index, old.digits)?;
        let reason = text::bounded("reason", &input.reason, 0, 500)?;
        let new = MeterInput {
            kind: old.kind,
            unit_id: old.unit_id,
            building_id: old.building_id,
            mbus_id: input.mbus_id.clone(),
            manufacturer: input.manufacturer.clone(),
            version: input.version,
            medium: input.medium.unwrap_or(old.medium),
            measure_unit: old.measure_unit,
            digits: input.digits.unwrap_or(old.digits),
            installed_on: replaced_on,
            initial_index: input.initial_index,
            gateway_id: old.gateway_id,
            label: old.label.clone(),
        }
        .validated()?;
        sqlx::query("UPDATE meters SET removed_on = $1, final_index = $2 WHERE id = $3")
            .bind(replaced_on)
            .bind(final_index)
            .bind(id)
            .execute(self.conn())
            .await?;
        let removed = self.meter(residence_id, id, Visibility::Everything).await?;
        self.audit(
            actor,
            audit::Change {
                residence_id: Some(residence_id),
                action: "replace",
                entity: Table::Meters.entity(),
                entity_id: id,
                reason: &reason,
                changes: audit::diff(Some(&old), Some(&removed)),
            },
        )
        .await?;
        let meter = self.insert_meter(actor, residence_id, &new).await?;
        let replacement_id: i64 = sqlx::query_scalar(
            "INSERT INTO meter_replacements (residence_id, old_meter_id, new_meter_id, replaced_on, final_index, initial_index, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(residence_id)
        .bind(id)
        .bind(meter.id)
        .bind(replaced_on)
        .bind(final_index)
        .bind(meter.initial_index)
        .bind(&reason)
        .fetch_one(self.conn())
        .await?;
        let replacement = sqlx::query_as("SELECT * FROM meter_replacements WHERE id = $1")
            .bind(replacement_id)
            .fetch_one(self.conn())
            .await?;
        Ok((meter, replacement))
    }

    /// The meters in place that gateway `gateway_id` must read.
    pub async fn meters_on_gateway(&mut self, gateway_id: i64) -> Result<Vec<Meter>> {
        Ok(sqlx::query_as(
            "SELECT * FROM meters WHERE gateway_id = $1 AND removed_on IS NULL ORDER BY id",
        )
        .bind(gateway_id)
        .fetch_all(self.conn())
        .await?)
    }

    /// The meters that followed one another at the position of `meter` (same unit or
    /// building, same kind, linked by replacements), oldest first.
    pub async fn meter_chain(&mut self, residence_id: i64, meter: &Meter) -> Result<Vec<Meter>> {
        let mut chain = vec![meter.clone()];
        // Walk back to the first meter, then forward to the last.
        let mut first = meter.id;
        while let Some(old) = sqlx::query_scalar::<_, i64>(
            "SELECT old_meter_id FROM meter_replacements WHERE residence_id = $1 AND new_meter_id = $2",
        )
        .bind(residence_id)
        .bind(first)
        .fetch_optional(self.conn())
        .await?
        {
            chain.insert(0, self.meter(residence_id, old, Visibility::Everything).await?);
            first = old;
        }
        let mut last = meter.id;
        while let Some(new) = sqlx::query_scalar::<_, i64>(
            "SELECT new_meter_id FROM meter_replacements WHERE residence_id = $1 AND old_meter_id = $2",
        )
        .bind(residence_id)
        .bind(last)
        .fetch_optional(self.conn())
        .await?
        {
            chain.push(self.meter(residence_id, new, Visibility::Everything).await?);
            last = new;
        }
        Ok(chain)
    }
}
