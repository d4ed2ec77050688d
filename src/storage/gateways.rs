//! Meter gateways: the boxes on the M-Bus loop that read the meters they are
//! programmed with and answer over Modbus.

use gardien_drivers::DeviceRole;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::Actor;
use super::controllers::check_device_link;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::{text, Transport};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Gateway {
    pub id: i64,
    pub residence_id: i64,
    pub name: String,
    pub model: String,
    pub transport: Transport,
    pub address: String,
    pub modbus_unit: Option<i64>,
    pub building_id: Option<i64>,
    pub notes: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayInput {
    /// 1 to 100 characters, unique in the residence ("Passerelle bâtiment A").
    pub name: String,
    /// Device model, e.g. "MBG-250". The firmware line is read from the device.
    pub model: String,
    pub transport: Transport,
    /// `host:port` for Modbus TCP, the serial device (`/dev/ttyUSB0`, optionally
    /// `@38400`) for Modbus RTU.
    pub address: String,
    /// Modbus unit id, 1 to 247.
    pub modbus_unit: Option<i64>,
    pub building_id: Option<i64>,
    #[serde(default)]
    pub notes: String,
}

impl GatewayInput {
    pub fn validated(self) -> Result<Self> {
        let address = check_device_link(self.transport, &self.address, self.modbus_unit)?;
        Ok(GatewayInput {
            name: text::bounded("name", &self.name, 1, 100)?,
            model: text::bounded("model", &self.model, 1, 64)?,
            address,
            notes: text::bounded("notes", &self.notes, 0, 2000)?,
            ..self
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GatewayFilter {
    pub building_id: Option<i64>,
    /// Part of the name or model.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Tx {
    /// Refuses a model no gateway profile describes, a transport it does not speak,
    /// and a building of another residence.
    async fn check_gateway(&mut self, residence_id: i64, input: &GatewayInput) -> Result<()> {
        let profiles = self.device_profiles();
        let profile = profiles
            .for_model(DeviceRole::MeterGateway, &input.model, None)
            .ok_or_else(|| {
                Error::invalid(
                    "model",
                    format!(
                        "modèle « {} » inconnu ; passerelles prises en charge : {}",
                        input.model,
                        profiles.models(DeviceRole::MeterGateway).join(", ")
                    ),
                )
            })?;
        match input.transport {
            Transport::Mqtt => {
                return Err(Error::invalid(
                    "transport",
                    format!(
                        "un {} se lit en Modbus : modbus_tcp ou modbus_rtu",
                        profile.model
                    ),
                ))
            }
            Transport::ModbusRtu => {
                let serial = profile
                    .modbus_settings()
                    .map_err(|err| Error::invalid("model", err))?
                    .serial;
                gardien_drivers::Endpoint::rtu(&input.address, serial)
                    .map_err(|err| Error::invalid("address", err))?;
            }
            Transport::ModbusTcp => {}
        }
        if let Some(building) = input.building_id {
            self.ensure_in_residence(Table::Buildings, residence_id, building, "building_id")
                .await?;
        }
        Ok(())
    }

    pub async fn insert_gateway(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &GatewayInput,
    ) -> Result<Gateway> {
        self.check_gateway(residence_id, input).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meter_gateways (residence_id, name, model, transport, address, modbus_unit, building_id, notes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(residence_id)
        .bind(&input.name)
        .bind(&input.model)
        .bind(input.transport)
        .bind(&input.address)
        .bind(input.modbus_unit)
        .bind(input.building_id)
        .bind(&input.notes)
        .fetch_one(self.conn())
        .await
        .map_err(super::classify)?;
        self.set_match_keys(Table::Gateways, id, &[&input.name, &input.model], None)
            .await?;
        self.audit_upsert(actor, Table::Gateways, residence_id, id, None)
            .await
    }

    pub async fn gateway(&mut self, residence_id: i64, id: i64) -> Result<Gateway> {
        self.row(Table::Gateways, residence_id, id).await
    }

    pub async fn gateways(
        &mut self,
        residence_id: i64,
        filter: &GatewayFilter,
    ) -> Result<Page<Gateway>> {
        let (building, q) = (filter.building_id, filter.q.clone());
        self.fetch_page(
            "SELECT id, residence_id, name, model, transport, address, modbus_unit, building_id, notes",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM meter_gateways WHERE residence_id = ")
                    .push_bind(residence_id);
                if let Some(building) = building {
                    sql.push(" AND building_id = ").push_bind(building);
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

    pub async fn update_gateway(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &GatewayInput,
    ) -> Result<Gateway> {
        let before = self.gateway(residence_id, id).await?;
        self.check_gateway(residence_id, input).await?;
        sqlx::query(
            "UPDATE meter_gateways SET name = $1, model = $2, transport = $3, address = $4, modbus_unit = $5,
                    building_id = $6, notes = $7
             WHERE residence_id = $8 AND id = $9",
        )
        .bind(&input.name)
        .bind(&input.model)
        .bind(input.transport)
        .bind(&input.address)
        .bind(input.modbus_unit)
        .bind(input.building_id)
        .bind(&input.notes)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await
        .map_err(super::classify)?;
        self.set_match_keys(Table::Gateways, id, &[&input.name, &input.model], None)
            .await?;
        let gateway = self
            .audit_upsert(actor, Table::Gateways, residence_id, id, Some(&before))
            .await?;
        // Another device may sit at the new address: what was known of the old one
        // no longer holds, and the list is written again.
        if (before.address, before.modbus_unit) != (gateway.address.clone(), gateway.modbus_unit) {
            self.forget_gateway_device(id).await?;
            self.refresh_gateway_targets(residence_id, id).await?;
        }
        Ok(gateway)
    }

    /// Deletes a gateway no meter is assigned to any more.
    pub async fn delete_gateway(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
    ) -> Result<()> {
        self.gateway(residence_id, id).await?;
        let meters: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM meters WHERE gateway_id = $1 AND removed_on IS NULL",
        )
        .bind(id)
        .fetch_one(self.conn())
        .await?;
        if meters > 0 {
            return Err(Error::conflict(
                None,
                format!("{meters} compteur(s) sont encore lus par cette passerelle : rattachez-les d'abord à une autre passerelle ou à aucune"),
            ));
        }
        self.forget_gateway_device(id).await?;
        sqlx::query("DELETE FROM meter_sync WHERE gateway_id = $1")
            .bind(id)
            .execute(self.conn())
            .await?;
        sqlx::query("UPDATE meters SET gateway_id = NULL WHERE gateway_id = $1")
            .bind(id)
            .execute(self.conn())
            .await?;
        self.delete_audited::<Gateway>(actor, Table::Gateways, residence_id, id)
            .await
    }
}
