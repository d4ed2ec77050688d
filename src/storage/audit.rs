//! The append-only audit log: every change made through the storage layer writes one
//! entry in the same transaction. A key's history is the log filtered on that key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::QueryBuilder;

use super::{Page, PageRequest, Tx};
use crate::error::Result;

/// Who makes a change: a user, or the service itself (`user_id` none).
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<i64>,
    pub name: String,
}

impl Actor {
    pub fn system(name: &str) -> Actor {
        Actor {
            user_id: None,
            name: name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub residence_id: Option<i64>,
    pub at: DateTime<Utc>,
    pub actor_user_id: Option<i64>,
    /// E-mail of the user, or the name of the automatic process.
    pub actor: String,
    /// `create`, `update`, `delete`, or a key action such as `declare_lost`.
    pub action: String,
    /// `key`, `unit`, `lock`…
    pub entity: String,
    pub entity_id: i64,
    pub reason: String,
    /// Changed fields: `{"status": {"from": "active", "to": "lost"}}`.
    #[schema(value_type = Object)]
    pub changes: Json<Value>,
}

/// What one audit entry records; [`Tx::audit`] adds who and when.
pub struct Change<'a> {
    pub residence_id: Option<i64>,
    pub action: &'a str,
    pub entity: &'a str,
    pub entity_id: i64,
    pub reason: &'a str,
    pub changes: Value,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    pub entity: Option<String>,
    pub entity_id: Option<i64>,
    pub actor_user_id: Option<i64>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// The fields that differ between two serialisable states, as `{field: {from, to}}`.
/// `None` stands for "did not exist" (creation, deletion).
pub fn diff<T: Serialize>(before: Option<&T>, after: Option<&T>) -> Value {
    let fields = |state: Option<&T>| match state.map(serde_json::to_value) {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    };
    let (before, after) = (fields(before), fields(after));
    let mut changed = Map::new();
    for name in before.keys().chain(after.keys()) {
        if matches!(
            name.as_str(),
            "id" | "residence_id" | "created_at" | "updated_at"
        ) || changed.contains_key(name)
        {
            continue;
        }
        let (from, to) = (
            before.get(name).unwrap_or(&Value::Null),
            after.get(name).unwrap_or(&Value::Null),
        );
        if from != to {
            changed.insert(name.clone(), serde_json::json!({ "from": from, "to": to }));
        }
    }
    Value::Object(changed)
}

impl Tx {
    pub async fn audit(&mut self, actor: &Actor, change: Change<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (residence_id, at, actor_user_id, actor, action, entity, entity_id, reason, changes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(change.residence_id)
        .bind(Utc::now())
        .bind(actor.user_id)
        .bind(&actor.name)
        .bind(change.action)
        .bind(change.entity)
        .bind(change.entity_id)
        .bind(change.reason)
        .bind(Json(change.changes))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// The residence's audit log, newest first.
    pub async fn audit_log(
        &mut self,
        residence_id: i64,
        filter: &AuditFilter,
    ) -> Result<Page<AuditEntry>> {
        let entity = filter.entity.clone();
        let action = filter.action.clone();
        let (entity_id, actor_user_id, since) =
            (filter.entity_id, filter.actor_user_id, filter.since);
        self.fetch_page(
            "SELECT *",
            move |q: &mut QueryBuilder<'static, super::Db>| {
                q.push("FROM audit_log WHERE residence_id = ")
                    .push_bind(residence_id);
                if let Some(entity) = entity.clone() {
                    q.push(" AND entity = ").push_bind(entity);
                }
                if let Some(id) = entity_id {
                    q.push(" AND entity_id = ").push_bind(id);
                }
                if let Some(user) = actor_user_id {
                    q.push(" AND actor_user_id = ").push_bind(user);
                }
                if let Some(action) = action.clone() {
                    q.push(" AND action = ").push_bind(action);
                }
                if let Some(since) = since {
                    q.push(" AND at >= ").push_bind(since);
                }
            },
            "id DESC",
            PageRequest {
                limit: filter.limit,
                offset: filter.offset,
            },
        )
        .await
    }
}
