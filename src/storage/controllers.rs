//! Lock controllers: the boxes that keep a table of allowed keys and drive door relays.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::Actor;
use super::{Db, Page, PageRequest, Table, Tx};
use gardien_drivers::profile::DeviceRole;

use crate::domain::{text, Policy, Transport};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Controller {
    pub id: i64,
    pub residence_id: i64,
    pub name: String,
    pub model: String,
    pub transport: Transport,
    pub address: String,
    pub modbus_unit: Option<i64>,
    pub notes: String,
    /// The device profile (firmware-config/) the model resolved to.
    pub profile_id: String,
    pub policy: Policy,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControllerInput {
    /// 1 to 100 characters, unique in the residence ("Centrale hall A").
    pub name: String,
    /// Device model, e.g. "PX-2", "KL-8".
    pub model: String,
    pub transport: Transport,
    /// `host:port` for Modbus TCP, the serial device (`/dev/ttyUSB0`) for Modbus RTU,
    /// the base topic for MQTT.
    pub address: String,
    /// Modbus unit id, 1 to 247; required for Modbus, absent for MQTT.
    pub modbus_unit: Option<i64>,
    #[serde(default)]
    pub notes: String,
    /// Entries the controller holds that the database does not know: `audit`
    /// (report them, the default) or `enforce` (remove them).
    #[serde(default)]
    pub policy: Policy,
}

impl ControllerInput {
    pub fn validated(self) -> Result<Self> {
        let address = check_device_link(self.transport, &self.address, self.modbus_unit)?;
        Ok(ControllerInput {
            name: text::bounded("name", &self.name, 1, 100)?,
            model: text::bounded("model", &self.model, 1, 64)?,
            address,
            notes: text::bounded("notes", &self.notes, 0, 2000)?,
            ..self
        })
    }
}

/// Checks how a device is reached: the address for its transport and the Modbus unit
/// id. Answers the address, trimmed.
pub(crate) fn check_device_link(
    transport: Transport,
    address: &str,
    modbus_unit: Option<i64>,
) -> Result<String> {
    let address = text::bounded("address", address, 1, 200)?;
    match transport {
        Transport::ModbusTcp => check_host_port(&address)?,
        Transport::ModbusRtu if address.contains(char::is_whitespace) => {
            return Err(Error::invalid(
                "address",
                "chemin de port série sans espace attendu (ex. /dev/ttyUSB0)",
            ))
        }
        Transport::Mqtt if address.contains(['+', '#']) => {
            return Err(Error::invalid(
                "address",
                "un sujet MQTT sans « + » ni « # » est attendu (ex. residence/portes)",
            ))
        }
        _ => {}
    }
    match (transport, modbus_unit) {
        (Transport::Mqtt, Some(_)) => {
            return Err(Error::invalid(
                "modbus_unit",
                "sans objet pour un appareil MQTT : omettez ce champ",
            ))
        }
        (Transport::ModbusTcp | Transport::ModbusRtu, None) => {
            return Err(Error::invalid(
                "modbus_unit",
                "requis pour Modbus : numéro d'esclave de 1 à 247",
            ))
        }
        (_, Some(unit)) if !(1..=247).contains(&unit) => {
            return Err(Error::invalid(
                "modbus_unit",
                format!("{unit} hors limites : numéro d'esclave de 1 à 247"),
            ))
        }
        _ => {}
    }
    Ok(address)
}

fn check_host_port(address: &str) -> Result<()> {
    let valid = match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0),
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "address",
            format!("« {address} » : hôte:port attendu (ex. 192.0.2.10:502)"),
        ))
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ControllerFilter {
    pub transport: Option<Transport>,
    /// Part of the name or model.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Tx {
    /// Resolves the model to a device profile and stores it with the policy; refuses a
    /// model no profile describes or a transport the device does not speak.
    async fn set_controller_profile(&mut self, id: i64, input: &ControllerInput) -> Result<()> {
        let profiles = self.device_profiles();
        let profile = profiles
            .for_model(DeviceRole::LockController, &input.model, None)
            .ok_or_else(|| {
                Error::invalid(
                    "model",
                    format!(
                        "modèle « {} » inconnu ; modèles pris en charge : {}",
                        input.model,
                        profiles.models(DeviceRole::LockController).join(", ")
                    ),
                )
            })?;
        match (input.transport, profile.modbus.as_ref()) {
            (Transport::Mqtt, None) => {
                gardien_drivers::esprfid::EspRfidAddress::parse(&input.address).map_err(|_| {
                    Error::invalid(
                        "address",
                        format!(
                            "adresse « {} » invalide pour un {} : SUJET@IP, par exemple esprfid@192.168.1.31 (le sujet MQTT de la centrale, sans + ni #, et son adresse IP)",
                            input.address, profile.model
                        ),
                    )
                })?;
            }
            (Transport::Mqtt, Some(_)) => {
                return Err(Error::invalid(
                    "transport",
                    format!(
                        "un {} se programme en Modbus : modbus_tcp ou modbus_rtu",
                        profile.model
                    ),
                ))
            }
            (_, None) => {
                return Err(Error::invalid(
                    "transport",
                    format!("un {} se programme en MQTT : mqtt", profile.model),
                ))
            }
            (Transport::ModbusRtu, Some(modbus)) => {
                gardien_drivers::Endpoint::rtu(&input.address, modbus.serial)
                    .map_err(|err| Error::invalid("address", err))?;
            }
            (Transport::ModbusTcp, Some(_)) => {}
        }
        let profile_id = profile.id.clone();
        sqlx::query("UPDATE controllers SET profile_id = $1, policy = $2 WHERE id = $3")
            .bind(profile_id)
            .bind(input.policy)
            .bind(id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    pub async fn insert_controller(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &ControllerInput,
    ) -> Result<Controller> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO controllers (residence_id, name, model, transport, address, modbus_unit, notes)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(residence_id)
        .bind(&input.name)
        .bind(&input.model)
        .bind(input.transport)
        .bind(&input.address)
        .bind(input.modbus_unit)
        .bind(&input.notes)
        .fetch_one(self.conn())
        .await?;
        self.set_match_keys(Table::Controllers, id, &[&input.name, &input.model], None)
            .await?;
        self.set_controller_profile(id, input).await?;
        let controller = self
            .audit_upsert(actor, Table::Controllers, residence_id, id, None)
            .await?;
        self.refresh_access(residence_id, None).await?;
        Ok(controller)
    }

    pub async fn controller(&mut self, residence_id: i64, id: i64) -> Result<Controller> {
        self.row(Table::Controllers, residence_id, id).await
    }

    pub async fn controllers(
        &mut self,
        residence_id: i64,
        filter: &ControllerFilter,
    ) -> Result<Page<Controller>> {
        let (transport, q) = (filter.transport, filter.q.clone());
        self.fetch_page(
            "SELECT *",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM controllers WHERE residence_id = ")
                    .push_bind(residence_id);
                if let Some(transport) = transport {
                    sql.push(" AND transport = ").push_bind(transport);
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

    pub async fn update_controller(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &ControllerInput,
    ) -> Result<Controller> {
        let before = self.controller(residence_id, id).await?;
        sqlx::query(
            "UPDATE controllers SET name = $1, model = $2, transport = $3, address = $4, modbus_unit = $5, notes = $6
             WHERE residence_id = $7 AND id = $8",
        )
        .bind(&input.name)
        .bind(&input.model)
        .bind(input.transport)
        .bind(&input.address)
        .bind(input.modbus_unit)
        .bind(&input.notes)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        self.set_match_keys(Table::Controllers, id, &[&input.name, &input.model], None)
            .await?;
        self.set_controller_profile(id, input).await?;
        let controller = self
            .audit_upsert(actor, Table::Controllers, residence_id, id, Some(&before))
            .await?;
        self.refresh_access(residence_id, None).await?;
        Ok(controller)
    }

    pub async fn delete_controller(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
    ) -> Result<()> {
        self.controller(residence_id, id).await?;
        // What the service knew of the device goes with it; its events and alerts stay
        // (and then refuse the deletion: history is not erased).
        for table in [
            "key_sync",
            "controller_status",
            "controller_entries",
            "drift",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE controller_id = $1"))
                .bind(id)
                .execute(self.conn())
                .await?;
        }
        self.delete_audited::<Controller>(actor, Table::Controllers, residence_id, id)
            .await
    }
}
