//! The storage layer: the only module that holds SQL.
//!
//! Callers open a [`Tx`] (read or write), call the methods that the submodules add to
//! it, and commit. Every method takes the residence id and filters on it, so a row of
//! another residence is "not found", never returned. SQL sticks to what SQLite and
//! PostgreSQL both accept (`$n` placeholders, no SQLite-only functions) so that a
//! PostgreSQL backend can come in here without touching the rest.

pub mod audit;
pub mod auth;
pub mod buildings;
pub mod controllers;
pub mod esp_rfid;
pub mod gateways;
pub mod keys;
pub mod locks;
pub mod meter_sync;
pub mod meters;
pub mod occupancies;
pub mod page;
pub mod people;
pub mod profiles;
pub mod providers;
pub mod readings;
pub mod residences;
pub mod sync;
pub mod units;
pub mod wmbus;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use gardien_drivers::Registry;
use tokio::sync::Notify;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use crate::error::{Error, Result};

pub use page::{Page, PageRequest};

pub(crate) type Db = Sqlite;

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// Device profiles, to turn keys into what each controller stores.
    profiles: Arc<Registry>,
    /// Woken when a commit leaves work for the lock controllers.
    sync_wakeup: Arc<Notify>,
}

/// An open transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    inner: sqlx::Transaction<'static, Db>,
    profiles: Arc<Registry>,
    sync_wakeup: Arc<Notify>,
    /// Set when this transaction wrote pending work for controllers.
    pub(crate) wrote_sync_work: bool,
}

impl Store {
    /// Opens (creating it if needed) the database at `url` and applies the migrations.
    /// `url` is a sqlx SQLite URL (`sqlite://gardien.db`, `sqlite::memory:`) or a path.
    pub async fn open(url: &str) -> Result<Store> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|err| Error::Internal(format!("bad database url {url}: {err}")))?
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // One in-memory database is one connection: more would each see their own.
        let max_connections = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        let profiles = Registry::builtin()
            .map_err(|err| Error::Internal(format!("device profiles: {err}")))?;
        let store = Store {
            pool,
            profiles: Arc::new(profiles),
            sync_wakeup: Arc::new(Notify::new()),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// A transaction for reading.
    pub async fn read(&self) -> Result<Tx> {
        self.begin("BEGIN").await
    }

    /// A transaction that will write. It takes the write lock at once, so it never
    /// fails half-way because another writer got in after it read.
    pub async fn write(&self) -> Result<Tx> {
        self.begin("BEGIN IMMEDIATE").await
    }

    async fn begin(&self, statement: &'static str) -> Result<Tx> {
        let inner = self.pool.begin_with(statement).await?;
        Ok(Tx {
            inner,
            profiles: self.profiles.clone(),
            sync_wakeup: self.sync_wakeup.clone(),
            wrote_sync_work: false,
        })
    }

    /// The device profiles known to this build.
    pub fn profiles(&self) -> &Registry {
        &self.profiles
    }

    /// Wakes the sync engine, e.g. after a visit that may have left work behind.
    pub fn wake_sync(&self) {
        self.sync_wakeup.notify_one();
    }

    /// Completes when a commit has left work for the lock controllers.
    pub async fn sync_work_written(&self) {
        self.sync_wakeup.notified().await;
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        self.inner.commit().await?;
        if self.wrote_sync_work {
            self.sync_wakeup.notify_one();
        }
        Ok(())
    }

    pub(crate) fn device_profiles(&self) -> &Registry {
        &self.profiles
    }

    pub(crate) fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.inner
    }

    /// Checks that row `id` of `table` belongs to residence `residence_id`, so that a
    /// reference to it can be stored; names `field` otherwise.
    pub(crate) async fn ensure_in_residence(
        &mut self,
        table: Table,
        residence_id: i64,
        id: i64,
        field: &str,
    ) -> Result<()> {
        let sql = format!(
            "SELECT 1 FROM {} WHERE residence_id = $1 AND id = $2",
            table.name()
        );
        let found: Option<i32> = sqlx::query_scalar(&sql)
            .bind(residence_id)
            .bind(id)
            .fetch_optional(self.conn())
            .await?;
        match found {
            Some(_) => Ok(()),
            None => Err(Error::invalid(
                field,
                format!("{} n°{id} inconnu(e) dans cette résidence", table.french()),
            )),
        }
    }

    /// Deletes row `id` of `table` in the residence. A row still referenced elsewhere
    /// is refused with a conflict, not half-deleted.
    pub(crate) async fn delete_row(
        &mut self,
        table: Table,
        residence_id: i64,
        id: i64,
    ) -> Result<()> {
        let sql = format!(
            "DELETE FROM {} WHERE residence_id = $1 AND id = $2",
            table.name()
        );
        let deleted = sqlx::query(&sql)
            .bind(residence_id)
            .bind(id)
            .execute(self.conn())
            .await
            .map_err(|err| match classify(err) {
                Error::Conflict { .. } => Error::conflict(
                    None,
                    format!("{} n°{id} est encore utilisé(e) ailleurs : retirez d'abord ce qui s'y rapporte", table.french()),
                ),
                other => other,
            })?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: table.french(),
            });
        }
        Ok(())
    }
}

/// The tables that rows of the API live in, with their French names for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
    Buildings,
    Units,
    People,
    Providers,
    Occupancies,
    Keys,
    Locks,
    Controllers,
    Profiles,
    Gateways,
    Meters,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Buildings => "buildings",
            Table::Units => "units",
            Table::People => "people",
            Table::Providers => "providers",
            Table::Occupancies => "occupancies",
            Table::Keys => "access_keys",
            Table::Locks => "locks",
            Table::Controllers => "controllers",
            Table::Profiles => "access_profiles",
            Table::Gateways => "meter_gateways",
            Table::Meters => "meters",
        }
    }

    /// The entity name used in the audit log.
    pub(crate) fn entity(self) -> &'static str {
        match self {
            Table::Buildings => "building",
            Table::Units => "unit",
            Table::People => "person",
            Table::Providers => "provider",
            Table::Occupancies => "occupancy",
            Table::Keys => "key",
            Table::Locks => "lock",
            Table::Controllers => "controller",
            Table::Profiles => "profile",
            Table::Gateways => "gateway",
            Table::Meters => "meter",
        }
    }

    pub(crate) fn french(self) -> &'static str {
        match self {
            Table::Buildings => "bâtiment",
            Table::Units => "lot",
            Table::People => "personne",
            Table::Providers => "prestataire",
            Table::Occupancies => "occupation",
            Table::Keys => "clé",
            Table::Locks => "porte",
            Table::Controllers => "contrôleur",
            Table::Profiles => "profil d'accès",
            Table::Gateways => "passerelle",
            Table::Meters => "compteur",
        }
    }
}

/// Turns a database error into the library's error: constraint violations become
/// conflicts naming the column, the rest is internal.
pub(crate) fn classify(err: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &err {
        let message = db.message();
        if db.is_unique_violation() {
            // SQLite: "UNIQUE constraint failed: units.residence_id, units.lot_number".
            let field = message
                .rsplit([',', ' '])
                .next()
                .and_then(|column| column.rsplit('.').next())
                .unwrap_or("id")
                .to_owned();
            return Error::Conflict {
                message: format!("« {field} » : cette valeur existe déjà dans la résidence"),
                field: Some(field),
            };
        }
        if db.is_foreign_key_violation() {
            return Error::conflict(None, "référence à un élément inexistant ou encore utilisé");
        }
        if db.is_check_violation() {
            return Error::conflict(None, "valeur refusée par une règle de cohérence");
        }
    }
    Error::Internal(err.to_string())
}

impl Tx {
    /// Runs a listing twice, once to count and once for the page. `from_where` pushes
    /// the `FROM … WHERE …` part, with its binds, onto each query.
    pub(crate) async fn fetch_page<T>(
        &mut self,
        select: &str,
        from_where: impl Fn(&mut sqlx::QueryBuilder<'static, Db>),
        order_by: &str,
        page: PageRequest,
    ) -> Result<Page<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let (limit, offset) = page.checked()?;
        let mut count = sqlx::QueryBuilder::new("SELECT COUNT(*) ");
        from_where(&mut count);
        let total: i64 = count.build_query_scalar().fetch_one(self.conn()).await?;

        let mut rows = sqlx::QueryBuilder::new(select);
        rows.push(" ");
        from_where(&mut rows);
        rows.push(" ORDER BY ").push(order_by);
        rows.push(" LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let items = rows.build_query_as::<T>().fetch_all(self.conn()).await?;
        Ok(Page {
            items,
            total,
            limit,
            offset,
        })
    }
}

impl Tx {
    /// Row `id` of `table` in the residence, or not found.
    pub(crate) async fn row<T>(&mut self, table: Table, residence_id: i64, id: i64) -> Result<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let sql = format!(
            "SELECT * FROM {} WHERE residence_id = $1 AND id = $2",
            table.name()
        );
        sqlx::query_as(&sql)
            .bind(residence_id)
            .bind(id)
            .fetch_optional(self.conn())
            .await?
            .ok_or(Error::NotFound {
                what: table.french(),
            })
    }

    /// Writes the audit entry of a change to a row of `table`.
    pub(crate) async fn audit_row(
        &mut self,
        actor: &audit::Actor,
        table: Table,
        (residence_id, id): (i64, i64),
        action: &str,
        changes: serde_json::Value,
    ) -> Result<()> {
        let change = audit::Change {
            residence_id: Some(residence_id),
            action,
            entity: table.entity(),
            entity_id: id,
            reason: "",
            changes,
        };
        self.audit(actor, change).await
    }

    /// Deletes a row and records it in the audit log with what it held.
    pub(crate) async fn delete_audited<T>(
        &mut self,
        actor: &audit::Actor,
        table: Table,
        residence_id: i64,
        id: i64,
    ) -> Result<()>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + serde::Serialize + Send + Unpin,
    {
        let before: T = self.row(table, residence_id, id).await?;
        self.delete_row(table, residence_id, id).await?;
        self.audit_row(
            actor,
            table,
            (residence_id, id),
            "delete",
            audit::diff(Some(&before), None),
        )
        .await
    }

    /// Records a created or updated row: reads it back and logs the difference.
    pub(crate) async fn audit_upsert<T>(
        &mut self,
        actor: &audit::Actor,
        table: Table,
        residence_id: i64,
        id: i64,
        before: Option<&T>,
    ) -> Result<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + serde::Serialize + Send + Unpin,
    {
        let after: T = self.row(table, residence_id, id).await?;
        let action = if before.is_some() { "update" } else { "create" };
        self.audit_row(
            actor,
            table,
            (residence_id, id),
            action,
            audit::diff(before, Some(&after)),
        )
        .await?;
        Ok(after)
    }
}

/// A `LIKE` pattern matching folded `text` anywhere in a `search_key` column. `%` and
/// `_` are dropped from the search text rather than taken as wildcards.
pub(crate) fn like(text: &str) -> String {
    let cleaned: String = text.chars().filter(|c| !matches!(c, '%' | '_')).collect();
    format!("%{}%", crate::domain::text::fold(&cleaned))
}

impl Tx {
    /// Marks a point to come back to if one step of a batch fails (portable SQL).
    pub async fn savepoint(&mut self) -> Result<()> {
        sqlx::query("SAVEPOINT step").execute(self.conn()).await?;
        Ok(())
    }

    /// Undoes what was done since [`Tx::savepoint`]; the transaction goes on.
    pub async fn rollback_to_savepoint(&mut self) -> Result<()> {
        sqlx::query("ROLLBACK TO SAVEPOINT step")
            .execute(self.conn())
            .await?;
        sqlx::query("RELEASE SAVEPOINT step")
            .execute(self.conn())
            .await?;
        Ok(())
    }

    pub async fn release_savepoint(&mut self) -> Result<()> {
        sqlx::query("RELEASE SAVEPOINT step")
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

impl Tx {
    /// Stores the folded matching keys of a row: `search_key` from `search` fields and,
    /// for tables looked up by name, `name_key` from `name`. SQL cannot fold accents.
    pub(crate) async fn set_match_keys(
        &mut self,
        table: Table,
        id: i64,
        search: &[&str],
        name: Option<&str>,
    ) -> Result<()> {
        let search = crate::domain::text::search_key(search);
        let sql = match name {
            Some(_) => format!(
                "UPDATE {} SET search_key = $1, name_key = $2 WHERE id = $3",
                table.name()
            ),
            None => format!("UPDATE {} SET search_key = $1 WHERE id = $2", table.name()),
        };
        let mut query = sqlx::query(&sql).bind(search);
        if let Some(name) = name {
            query = query.bind(crate::domain::text::fold(name));
        }
        query.bind(id).execute(self.conn()).await?;
        Ok(())
    }
}
