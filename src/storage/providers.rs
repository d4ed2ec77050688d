//! Providers: companies that hold keys (cleaning, lift maintenance, meter reading).

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::Actor;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::text;
use crate::error::Result;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Provider {
    pub id: i64,
    pub residence_id: i64,
    pub name: String,
    pub trade: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub notes: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    /// Company name, 1 to 200 characters, unique in the residence.
    pub name: String,
    /// What they do ("ascenseur", "nettoyage"), up to 100 characters.
    #[serde(default)]
    pub trade: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    #[serde(default)]
    pub notes: String,
}

impl ProviderInput {
    pub fn validated(self) -> Result<Self> {
        let email = match text::optional("email", self.email.as_deref(), 254)? {
            Some(email) => Some(text::email("email", &email)?),
            None => None,
        };
        Ok(ProviderInput {
            name: text::bounded("name", &self.name, 1, 200)?,
            trade: text::bounded("trade", &self.trade, 0, 100)?,
            email,
            phone: text::optional("phone", self.phone.as_deref(), 40)?,
            notes: text::bounded("notes", &self.notes, 0, 2000)?,
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProviderFilter {
    /// Part of the name or trade.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Tx {
    pub async fn insert_provider(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &ProviderInput,
    ) -> Result<Provider> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO providers (residence_id, name, trade, email, phone, notes)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(residence_id)
        .bind(&input.name)
        .bind(&input.trade)
        .bind(&input.email)
        .bind(&input.phone)
        .bind(&input.notes)
        .fetch_one(self.conn())
        .await?;
        self.set_match_keys(
            Table::Providers,
            id,
            &[&input.name, &input.trade],
            Some(&input.name),
        )
        .await?;
        self.audit_upsert(actor, Table::Providers, residence_id, id, None)
            .await
    }

    pub async fn provider(&mut self, residence_id: i64, id: i64) -> Result<Provider> {
        self.row(Table::Providers, residence_id, id).await
    }

    pub async fn provider_named(
        &mut self,
        residence_id: i64,
        name: &str,
    ) -> Result<Option<Provider>> {
        Ok(
            sqlx::query_as("SELECT * FROM providers WHERE residence_id = $1 AND name_key = $2")
                .bind(residence_id)
                .bind(text::fold(name))
                .fetch_optional(self.conn())
                .await?,
        )
    }

    pub async fn providers(
        &mut self,
        residence_id: i64,
        filter: &ProviderFilter,
    ) -> Result<Page<Provider>> {
        let q = filter.q.clone();
        self.fetch_page(
            "SELECT *",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM providers WHERE residence_id = ")
                    .push_bind(residence_id);
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

    pub async fn update_provider(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &ProviderInput,
    ) -> Result<Provider> {
        let before = self.provider(residence_id, id).await?;
        sqlx::query(
            "UPDATE providers SET name = $1, trade = $2, email = $3, phone = $4, notes = $5
             WHERE residence_id = $6 AND id = $7",
        )
        .bind(&input.name)
        .bind(&input.trade)
        .bind(&input.email)
        .bind(&input.phone)
        .bind(&input.notes)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        self.set_match_keys(
            Table::Providers,
            id,
            &[&input.name, &input.trade],
            Some(&input.name),
        )
        .await?;
        self.audit_upsert(actor, Table::Providers, residence_id, id, Some(&before))
            .await
    }

    pub async fn delete_provider(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
    ) -> Result<()> {
        self.delete_audited::<Provider>(actor, Table::Providers, residence_id, id)
            .await
    }
}
