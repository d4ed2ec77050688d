//! Access keys (badges, remotes), their lifecycle, and the sets of keys each lock must
//! accept.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::audit::{diff, Actor, Change};
use super::locks::Lock;
use super::{Db, Page, PageRequest, Table, Tx};
use crate::domain::key_id::{canonical_identifier, KeyKind};
use crate::domain::key_status::{KeyAction, KeyStatus};
use crate::domain::roles::Visibility;
use crate::domain::text;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Key {
    pub id: i64,
    pub residence_id: i64,
    pub kind: KeyKind,
    /// Canonical identifier: badge UID in upper-case hex, remote serial in decimal.
    pub identifier: String,
    /// What is printed or written on the key.
    pub label: String,
    pub status: KeyStatus,
    pub holder_person_id: Option<i64>,
    pub holder_provider_id: Option<i64>,
    /// Name of the holder, person or provider.
    #[sqlx(default)]
    pub holder_name: Option<String>,
    pub unit_id: Option<i64>,
    pub handed_out_on: Option<NaiveDate>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub notes: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Access profiles given to the key, by id.
    #[sqlx(skip)]
    pub profile_ids: Vec<i64>,
}

/// A new key.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    pub kind: KeyKind,
    /// Badge UID (hex, 4/7/10 bytes, separators allowed, or the 10-digit decimal of a
    /// 4-byte UID) or remote serial (decimal).
    pub identifier: String,
    #[serde(default)]
    pub label: String,
    /// Defaults to `active`.
    pub status: Option<KeyStatus>,
    pub holder_person_id: Option<i64>,
    pub holder_provider_id: Option<i64>,
    pub unit_id: Option<i64>,
    pub handed_out_on: Option<NaiveDate>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub profile_ids: Vec<i64>,
}

impl KeyInput {
    pub fn validated(self) -> Result<Self> {
        check_holder(self.holder_person_id, self.holder_provider_id)?;
        let (valid_from, valid_until) = validity(self.valid_from, self.valid_until)?;
        Ok(KeyInput {
            identifier: canonical_identifier(self.kind, &self.identifier)?,
            label: text::bounded("label", &self.label, 0, 100)?,
            handed_out_on: self
                .handed_out_on
                .map(|d| text::plausible_date("handed_out_on", d))
                .transpose()?,
            valid_from,
            valid_until,
            notes: text::bounded("notes", &self.notes, 0, 2000)?,
            profile_ids: text::id_list("profile_ids", self.profile_ids)?,
            ..self
        })
    }
}

/// The editable attributes of a key. Identity, status and holder change through
/// lifecycle actions only, so that the history tells why.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    #[serde(default)]
    pub label: String,
    pub unit_id: Option<i64>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub profile_ids: Vec<i64>,
}

impl KeyUpdate {
    pub fn validated(self) -> Result<Self> {
        let (valid_from, valid_until) = validity(self.valid_from, self.valid_until)?;
        Ok(KeyUpdate {
            label: text::bounded("label", &self.label, 0, 100)?,
            unit_id: self.unit_id,
            valid_from,
            valid_until,
            notes: text::bounded("notes", &self.notes, 0, 2000)?,
            profile_ids: text::id_list("profile_ids", self.profile_ids)?,
        })
    }
}

/// A lifecycle action with its reason; `hand_over` carries the new hand-out.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionInput {
    /// Why, in words, for the history (up to 500 characters).
    #[serde(default)]
    pub reason: String,
}

/// Hands a key to a holder. Describes the new hand-out in full: an omitted unit or
/// validity is cleared, an omitted date is today.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandOverInput {
    pub holder_person_id: Option<i64>,
    pub holder_provider_id: Option<i64>,
    pub unit_id: Option<i64>,
    pub handed_out_on: Option<NaiveDate>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: String,
}

impl HandOverInput {
    pub fn validated(self) -> Result<Self> {
        check_holder(self.holder_person_id, self.holder_provider_id)?;
        if self.holder_person_id.is_none() && self.holder_provider_id.is_none() {
            return Err(Error::invalid(
                "holder_person_id",
                "indiquez à qui la clé est remise : holder_person_id ou holder_provider_id",
            ));
        }
        let (valid_from, valid_until) = validity(self.valid_from, self.valid_until)?;
        Ok(HandOverInput {
            handed_out_on: self
                .handed_out_on
                .map(|d| text::plausible_date("handed_out_on", d))
                .transpose()?,
            valid_from,
            valid_until,
            reason: text::bounded("reason", &self.reason, 0, 500)?,
            ..self
        })
    }
}

fn check_holder(person: Option<i64>, provider: Option<i64>) -> Result<()> {
    if person.is_some() && provider.is_some() {
        return Err(Error::invalid(
            "holder_provider_id",
            "une clé a un seul détenteur : une personne ou un prestataire, pas les deux",
        ));
    }
    Ok(())
}

type Validity = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn validity(from: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Result<Validity> {
    let from = from
        .map(|t| text::plausible_time("valid_from", t))
        .transpose()?;
    let until = until
        .map(|t| text::plausible_time("valid_until", t))
        .transpose()?;
    text::period("valid_until", from, until)?;
    Ok((from, until))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyFilter {
    pub kind: Option<KeyKind>,
    pub status: Option<KeyStatus>,
    pub holder_person_id: Option<i64>,
    pub holder_provider_id: Option<i64>,
    pub unit_id: Option<i64>,
    pub profile_id: Option<i64>,
    /// Part of the identifier or label.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

const SELECT_KEYS: &str = "SELECT k.*, COALESCE(p.full_name, pr.name) AS holder_name";
const FROM_KEYS: &str = "FROM access_keys k
     LEFT JOIN people p ON p.id = k.holder_person_id
     LEFT JOIN providers pr ON pr.id = k.holder_provider_id
     WHERE k.residence_id = ";

/// SQL condition on the keys a user may see.
fn push_key_visibility(sql: &mut QueryBuilder<'static, Db>, visibility: Visibility) {
    match visibility {
        Visibility::Everything => {}
        Visibility::Person(person) => {
            sql.push(" AND (k.holder_person_id = ")
                .push_bind(person)
                .push(" OR (k.unit_id IS NOT NULL");
            super::units::push_unit_visibility(sql, "k.unit_id", visibility);
            sql.push("))");
        }
        Visibility::Provider(provider) => {
            sql.push(" AND k.holder_provider_id = ").push_bind(provider);
        }
    }
}

/// SQL condition: the key is active and within its validity period at `at`.
pub(crate) fn push_key_in_force(sql: &mut QueryBuilder<'static, Db>, at: DateTime<Utc>) {
    sql.push(" AND k.status = ").push_bind(KeyStatus::Active);
    sql.push(" AND (k.valid_from IS NULL OR k.valid_from <= ")
        .push_bind(at)
        .push(")");
    sql.push(" AND (k.valid_until IS NULL OR k.valid_until > ")
        .push_bind(at)
        .push(")");
}

impl Key {
    /// Whether the key opens its locks at `at`: active and within its validity.
    pub fn in_force(&self, at: DateTime<Utc>) -> bool {
        self.status == KeyStatus::Active
            && self.valid_from.is_none_or(|from| from <= at)
            && self.valid_until.is_none_or(|until| until > at)
    }
}

impl Tx {
    async fn check_key_refs(
        &mut self,
        residence_id: i64,
        person: Option<i64>,
        provider: Option<i64>,
        unit: Option<i64>,
        profiles: &[i64],
    ) -> Result<()> {
        if let Some(person) = person {
            self.ensure_in_residence(Table::People, residence_id, person, "holder_person_id")
                .await?;
        }
        if let Some(provider) = provider {
            self.ensure_in_residence(
                Table::Providers,
                residence_id,
                provider,
                "holder_provider_id",
            )
            .await?;
        }
        if let Some(unit) = unit {
            self.ensure_in_residence(Table::Units, residence_id, unit, "unit_id")
                .await?;
        }
        for (index, profile) in profiles.iter().enumerate() {
            self.ensure_in_residence(
                Table::Profiles,
                residence_id,
                *profile,
                &format!("profile_ids[{index}]"),
            )
            .await?;
        }
        Ok(())
    }

    /// The key of that kind and canonical identifier in the residence, if recorded.
    pub async fn key_by_identifier(
        &mut self,
        residence_id: i64,
        kind: KeyKind,
        identifier: &str,
    ) -> Result<Option<Key>> {
        let mut sql = QueryBuilder::new(SELECT_KEYS);
        sql.push(" ").push(FROM_KEYS).push_bind(residence_id);
        sql.push(" AND k.kind = ")
            .push_bind(kind)
            .push(" AND k.identifier = ")
            .push_bind(identifier.to_owned());
        match sql
            .build_query_as::<Key>()
            .fetch_optional(self.conn())
            .await?
        {
            Some(key) => Ok(Some(self.with_profile_ids(key).await?)),
            None => Ok(None),
        }
    }

    pub async fn insert_key(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        input: &KeyInput,
    ) -> Result<Key> {
        if let Some(existing) = self
            .key_by_identifier(residence_id, input.kind, &input.identifier)
            .await?
        {
            return Err(Error::conflict(
                Some("identifier"),
                format!(
                    "la clé {} existe déjà dans cette résidence (clé n°{})",
                    input.identifier, existing.id
                ),
            ));
        }
        self.check_key_refs(
            residence_id,
            input.holder_person_id,
            input.holder_provider_id,
            input.unit_id,
            &input.profile_ids,
        )
        .await?;
        let now = Utc::now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_keys (residence_id, kind, identifier, label, status, holder_person_id,
                 holder_provider_id, unit_id, handed_out_on, valid_from, valid_until, notes, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) RETURNING id",
        )
        .bind(residence_id)
        .bind(input.kind)
        .bind(&input.identifier)
        .bind(&input.label)
        .bind(input.status.unwrap_or(KeyStatus::Active))
        .bind(input.holder_person_id)
        .bind(input.holder_provider_id)
        .bind(input.unit_id)
        .bind(input.handed_out_on)
        .bind(input.valid_from)
        .bind(input.valid_until)
        .bind(&input.notes)
        .bind(now)
        .fetch_one(self.conn())
        .await?;
        self.set_key_profiles(residence_id, id, &input.profile_ids)
            .await?;
        self.set_match_keys(Table::Keys, id, &[&input.identifier, &input.label], None)
            .await?;
        let key = self.key(residence_id, id, Visibility::Everything).await?;
        self.audit_key(actor, &key, "create", "", None).await?;
        self.refresh_access(residence_id, Some(&[id])).await?;
        Ok(key)
    }

    async fn set_key_profiles(
        &mut self,
        residence_id: i64,
        key_id: i64,
        profile_ids: &[i64],
    ) -> Result<()> {
        sqlx::query("DELETE FROM key_profiles WHERE key_id = $1")
            .bind(key_id)
            .execute(self.conn())
            .await?;
        for profile in profile_ids
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
        {
            sqlx::query(
                "INSERT INTO key_profiles (residence_id, key_id, profile_id) VALUES ($1, $2, $3)",
            )
            .bind(residence_id)
            .bind(key_id)
            .bind(profile)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    /// Takes `profile_id` away from every key that has it, recording the change in each
    /// key's history, before the profile itself is deleted.
    pub(crate) async fn remove_profile_from_keys(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        profile_id: i64,
    ) -> Result<()> {
        let key_ids: Vec<i64> = sqlx::query_scalar(
            "SELECT key_id FROM key_profiles WHERE profile_id = $1 ORDER BY key_id",
        )
        .bind(profile_id)
        .fetch_all(self.conn())
        .await?;
        for key_id in key_ids {
            let before = self
                .key(residence_id, key_id, Visibility::Everything)
                .await?;
            sqlx::query("DELETE FROM key_profiles WHERE key_id = $1 AND profile_id = $2")
                .bind(key_id)
                .bind(profile_id)
                .execute(self.conn())
                .await?;
            sqlx::query("UPDATE access_keys SET updated_at = $1 WHERE id = $2")
                .bind(Utc::now())
                .bind(key_id)
                .execute(self.conn())
                .await?;
            let after = self
                .key(residence_id, key_id, Visibility::Everything)
                .await?;
            self.audit_key(
                actor,
                &after,
                "update",
                "profil d'accès supprimé",
                Some(&before),
            )
            .await?;
        }
        Ok(())
    }

    async fn with_profile_ids(&mut self, mut key: Key) -> Result<Key> {
        key.profile_ids = sqlx::query_scalar(
            "SELECT profile_id FROM key_profiles WHERE key_id = $1 ORDER BY profile_id",
        )
        .bind(key.id)
        .fetch_all(self.conn())
        .await?;
        Ok(key)
    }

    async fn audit_key(
        &mut self,
        actor: &Actor,
        key: &Key,
        action: &str,
        reason: &str,
        before: Option<&Key>,
    ) -> Result<()> {
        let change = Change {
            residence_id: Some(key.residence_id),
            action,
            entity: Table::Keys.entity(),
            entity_id: key.id,
            reason,
            changes: diff(before, Some(key)),
        };
        self.audit(actor, change).await
    }

    /// Key `id`, if it exists in the residence and the user may see it.
    pub async fn key(&mut self, residence_id: i64, id: i64, visibility: Visibility) -> Result<Key> {
        let mut sql = QueryBuilder::new(SELECT_KEYS);
        sql.push(" ")
            .push(FROM_KEYS)
            .push_bind(residence_id)
            .push(" AND k.id = ")
            .push_bind(id);
        push_key_visibility(&mut sql, visibility);
        let key = sql
            .build_query_as::<Key>()
            .fetch_optional(self.conn())
            .await?
            .ok_or(Error::NotFound {
                what: Table::Keys.french(),
            })?;
        self.with_profile_ids(key).await
    }

    pub async fn keys(
        &mut self,
        residence_id: i64,
        filter: &KeyFilter,
        visibility: Visibility,
    ) -> Result<Page<Key>> {
        let (kind, status, person, provider, unit, profile) = (
            filter.kind,
            filter.status,
            filter.holder_person_id,
            filter.holder_provider_id,
            filter.unit_id,
            filter.profile_id,
        );
        let q = filter.q.clone();
        let mut page: Page<Key> = self
            .fetch_page(
                SELECT_KEYS,
                move |sql: &mut QueryBuilder<'static, Db>| {
                    sql.push(FROM_KEYS).push_bind(residence_id);
                    push_key_visibility(sql, visibility);
                    if let Some(kind) = kind {
                        sql.push(" AND k.kind = ").push_bind(kind);
                    }
                    if let Some(status) = status {
                        sql.push(" AND k.status = ").push_bind(status);
                    }
                    if let Some(person) = person {
                        sql.push(" AND k.holder_person_id = ").push_bind(person);
                    }
                    if let Some(provider) = provider {
                        sql.push(" AND k.holder_provider_id = ").push_bind(provider);
                    }
                    if let Some(unit) = unit {
                        sql.push(" AND k.unit_id = ").push_bind(unit);
                    }
                    if let Some(profile) = profile {
                        sql.push(
                            " AND k.id IN (SELECT key_id FROM key_profiles WHERE profile_id = ",
                        )
                        .push_bind(profile)
                        .push(")");
                    }
                    if let Some(q) = &q {
                        sql.push(" AND k.search_key LIKE ")
                            .push_bind(super::like(q));
                    }
                },
                "k.id",
                PageRequest {
                    limit: filter.limit,
                    offset: filter.offset,
                },
            )
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for key in std::mem::take(&mut page.items) {
            items.push(self.with_profile_ids(key).await?);
        }
        page.items = items;
        Ok(page)
    }

    pub async fn update_key(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &KeyUpdate,
    ) -> Result<Key> {
        let before = self.key(residence_id, id, Visibility::Everything).await?;
        self.check_key_refs(residence_id, None, None, input.unit_id, &input.profile_ids)
            .await?;
        sqlx::query(
            "UPDATE access_keys SET label = $1, unit_id = $2, valid_from = $3, valid_until = $4, notes = $5, updated_at = $6
             WHERE residence_id = $7 AND id = $8",
        )
        .bind(&input.label)
        .bind(input.unit_id)
        .bind(input.valid_from)
        .bind(input.valid_until)
        .bind(&input.notes)
        .bind(Utc::now())
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        self.set_key_profiles(residence_id, id, &input.profile_ids)
            .await?;
        self.set_match_keys(Table::Keys, id, &[&before.identifier, &input.label], None)
            .await?;
        let after = self.key(residence_id, id, Visibility::Everything).await?;
        self.audit_key(actor, &after, "update", "", Some(&before))
            .await?;
        self.refresh_access(residence_id, Some(&[after.id])).await?;
        if (before.valid_from, before.valid_until) != (after.valid_from, after.valid_until) {
            self.rewrite_dated_entries(after.id).await?;
        }
        Ok(after)
    }

    /// Applies a lifecycle action other than hand-over (declare lost, return…).
    /// A returned key leaves its holder and its unit: it is back in the council's stock.
    pub async fn key_action(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        action: KeyAction,
        reason: &str,
        visibility: Visibility,
    ) -> Result<Key> {
        let reason = text::bounded("reason", reason, 0, 500)?;
        let before = self.key(residence_id, id, visibility).await?;
        let status = action.apply(before.status)?;
        let back_in_stock = action == KeyAction::Return;
        sqlx::query(
            "UPDATE access_keys SET status = $1, updated_at = $2,
                 holder_person_id = CASE WHEN $3 THEN NULL ELSE holder_person_id END,
                 holder_provider_id = CASE WHEN $3 THEN NULL ELSE holder_provider_id END,
                 unit_id = CASE WHEN $3 THEN NULL ELSE unit_id END,
                 handed_out_on = CASE WHEN $3 THEN NULL ELSE handed_out_on END
             WHERE residence_id = $4 AND id = $5",
        )
        .bind(status)
        .bind(Utc::now())
        .bind(back_in_stock)
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        let after = self.key(residence_id, id, Visibility::Everything).await?;
        self.audit_key(actor, &after, action.as_str(), &reason, Some(&before))
            .await?;
        self.refresh_access(residence_id, Some(&[after.id])).await?;
        Ok(after)
    }

    pub async fn hand_over_key(
        &mut self,
        actor: &Actor,
        residence_id: i64,
        id: i64,
        input: &HandOverInput,
    ) -> Result<Key> {
        let before = self.key(residence_id, id, Visibility::Everything).await?;
        let status = KeyAction::HandOver.apply(before.status)?;
        self.check_key_refs(
            residence_id,
            input.holder_person_id,
            input.holder_provider_id,
            input.unit_id,
            &[],
        )
        .await?;
        sqlx::query(
            "UPDATE access_keys SET status = $1, holder_person_id = $2, holder_provider_id = $3, unit_id = $4,
                 handed_out_on = $5, valid_from = $6, valid_until = $7, updated_at = $8
             WHERE residence_id = $9 AND id = $10",
        )
        .bind(status)
        .bind(input.holder_person_id)
        .bind(input.holder_provider_id)
        .bind(input.unit_id)
        .bind(input.handed_out_on.unwrap_or_else(text::local_today))
        .bind(input.valid_from)
        .bind(input.valid_until)
        .bind(Utc::now())
        .bind(residence_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        let after = self.key(residence_id, id, Visibility::Everything).await?;
        self.audit_key(
            actor,
            &after,
            KeyAction::HandOver.as_str(),
            &input.reason,
            Some(&before),
        )
        .await?;
        self.refresh_access(residence_id, Some(&[id])).await?;
        Ok(after)
    }

    /// The keys lock `lock_id` must accept at `at`: active, within their validity, and
    /// given a profile that includes the lock.
    pub async fn lock_expected_keys(
        &mut self,
        residence_id: i64,
        lock_id: i64,
        at: DateTime<Utc>,
    ) -> Result<Vec<Key>> {
        self.ensure_in_residence(Table::Locks, residence_id, lock_id, "lock_id")
            .await?;
        let mut sql = QueryBuilder::new(SELECT_KEYS);
        sql.push(" ").push(FROM_KEYS).push_bind(residence_id);
        sql.push(" AND k.id IN (SELECT kp.key_id FROM key_profiles kp JOIN profile_locks pl ON pl.profile_id = kp.profile_id WHERE pl.lock_id = ");
        sql.push_bind(lock_id).push(")");
        push_key_in_force(&mut sql, at);
        sql.push(" ORDER BY k.id");
        let keys: Vec<Key> = sql.build_query_as().fetch_all(self.conn()).await?;
        let mut result = Vec::with_capacity(keys.len());
        for key in keys {
            result.push(self.with_profile_ids(key).await?);
        }
        Ok(result)
    }

    /// The locks a key's profiles reach, whether or not the key is in force now.
    pub async fn key_locks(&mut self, residence_id: i64, key_id: i64) -> Result<Vec<Lock>> {
        Ok(sqlx::query_as(
            "SELECT * FROM locks WHERE residence_id = $1 AND id IN (
                 SELECT pl.lock_id FROM profile_locks pl JOIN key_profiles kp ON kp.profile_id = pl.profile_id
                 WHERE kp.key_id = $2)
             ORDER BY name, id",
        )
        .bind(residence_id)
        .bind(key_id)
        .fetch_all(self.conn())
        .await?)
    }
}
