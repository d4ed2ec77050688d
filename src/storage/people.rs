//! People: owners, tenants, landlords, the caretaker.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::Actor;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::text;
use crate::error::Result;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Person {
    pub id: i64,
    pub residence_id: i64,
    pub full_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub is_caretaker: bool,
    pub notes: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonInput {
    /// 1 to 200 characters ("Mme Claire Dupont").
    pub full_name: String,
    pub email: Option<String>,
    /// Up to 40 characters.
    pub phone: Option<String>,
    #[serde(default)]
    pub is_caretaker: bool,
    /// Up to 2000 characters.
    #[serde(default)]
    pub notes: String,
}

impl PersonInput {
    pub fn validated(self) -> Result<Self> {
        let email = match text::optional("email", self.email.as_deref(), 254)? {
            Some(email) => Some(text::email("email", &email)?),
            None => None,
        };
        Ok(PersonInput {
            full_name: text::bounded("full_name", &self.full_name, 1, 200)?,
            email,
            phone: text::optional("phone", self.phone.as_deref(), 40)?,
            is_caretaker: self.is_caretaker,
            notes: text::bounded("notes", &self.notes, 0, 2000)?,
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PersonFilter {
    /// Part of the name or e-mail.
    pub q: Option<String>,
    pub is_caretaker: Option<bool>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Tx {
    pub async fn insert_person(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &PersonInput,
    ) -> Result<Person> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO people (residence_id, full_name, email, phone, is_caretaker, notes)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(residence_id)
        .bind(&input.full_name)
        .bind(&input.email)
        .bind(&input.phone)
        .bind(input.is_caretaker)
        .bind(&input.notes)
        .fetch_one(self.conn())
        .await?;
        self.set_match_keys(
            Table::People,
            id,
            &[&input.full_name, input.email.as_deref().unwrap_or_default()],
            Some(&input.full_name),
        )
        .await?;
        self.audit_upsert(actor, Table::People, residence_id, id, None)
            .await
    }

    pub async fn person(&mut self, residence_id: i64, id: i64) -> Result<Person> {
        self.row(Table::People, residence_id, id).await
    }

    /// The person whose name or e-mail is exactly `name_or_email`, ignoring case.
    pub async fn person_named(
        &mut self,
        residence_id: i64,
        name_or_email: &str,
    ) -> Result<Option<Person>> {
        Ok(sqlx::query_as(
            "SELECT * FROM people WHERE residence_id = $1 AND (name_key = $2 OR email = $3)
             ORDER BY id LIMIT 1",
        )
        .bind(residence_id)
        .bind(text::fold(name_or_email))
        .bind(name_or_email.trim().to_lowercase())
        .fetch_optional(self.conn())
        .await?)
    }

    pub async fn people(
        &mut self,
        residence_id: i64,
        filter: &PersonFilter,
    ) -> Result<Page<Person>> {
        let (q, caretaker) = (filter.q.clone(), filter.is_caretaker);
        self.fetch_page(
            "SELECT *",
            move |sql: &mut QueryBuilder<'static, Db>| {
                sql.push("FROM people WHERE residence_id = ")
                    .push_bind(residence_id);
                if let Some(q) = &q {
                    sql.push(" AND search_key LIKE ").push_bind(super::like(q));
                }
                if let Some(caretaker) = caretaker {
                    sql.push(" AND is_caretaker = ").push_bind(caretaker);
                }
            },
            "full_name, id",
            PageRequest {
                limit: filter.limit,
                offset: filter.offset,
            },
        )
        .await
    }

    pub async fn update_person(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &PersonInput,
    ) -> Result<Person> {
        let before = self.person(residence_id, id).await?;
        sqlx::query(
            "UPDATE people SET full_name = $1, email = $2, phone = $3, is_caretaker = $4, notes = $5
             WHERE residence_id = $6 AND id = $7",
        )
        .bind(&input.full_name)
        .bind(&input.email)
        .bind(&input.phone)
        .bind(input.is_caretaker)
        .bind(&input.notes)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        self.set_match_keys(
            Table::People,
            id,
            &[&input.full_name, input.email.as_deref().unwrap_or_default()],
            Some(&input.full_name),
        )
        .await?;
        self.audit_upsert(actor, Table::People, residence_id, id, Some(&before))
            .await
    }

    pub async fn delete_person(&mut self, actor: &Actor, residence_id: i64, id: i64) -> Result<()> {
        self.delete_audited::<Person>(actor, Table::People, residence_id, id)
            .await
    }
}
