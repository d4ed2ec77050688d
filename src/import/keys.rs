//! Imports a council's badge inventory from a spreadsheet (CSV).
//!
//! Columns, by name (case, accents and spaces do not matter; French or English):
//! `identifiant`/`identifier`/`uid` (required), `type`/`kind`, `libelle`/`label`,
//! `statut`/`status`, `detenteur`/`holder`, `lot`/`unit`, `profils`/`profiles`
//! (names separated by `|`), `date_remise`/`handed_out_on`, `debut_validite`/
//! `valid_from`, `fin_validite`/`valid_until`, `notes`.
//!
//! Every line is checked; bad lines are reported with their number and reason and the
//! rest goes in, in one transaction. A key already recorded is left as it is, so the
//! same file can be imported again without creating anything twice. A holder that is
//! neither a known person (name or e-mail) nor a known provider is created as a person.

use std::collections::HashMap;

use serde::Serialize;

use super::table::{parse_date, parse_instant, Row, Table, DATE_FORMS};
use crate::domain::key_id::{canonical_identifier, KeyKind};
use crate::domain::key_status::KeyStatus;
use crate::error::{Error, Result};
use crate::storage::audit::Actor;
use crate::storage::keys::KeyInput;
use crate::storage::people::PersonInput;
use crate::storage::{Store, Tx};

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Data lines read (header and blank lines excluded).
    pub lines: usize,
    pub imported: usize,
    /// Keys already recorded in the residence, left unchanged.
    pub already_present: usize,
    /// Holders created as new people.
    pub people_created: usize,
    pub rejected: Vec<RejectedLine>,
    /// True when nothing was written (dry run).
    pub dry_run: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RejectedLine {
    pub line: u64,
    pub reason: String,
}

struct Columns {
    kind: Option<usize>,
    identifier: usize,
    label: Option<usize>,
    status: Option<usize>,
    holder: Option<usize>,
    unit: Option<usize>,
    profiles: Option<usize>,
    handed_out_on: Option<usize>,
    valid_from: Option<usize>,
    valid_until: Option<usize>,
    notes: Option<usize>,
}

impl Columns {
    fn find(table: &Table) -> Result<Columns> {
        let identifier = table
            .column(&["identifiant", "identifier", "uid", "numero", "numero de serie", "serial"])
            .ok_or_else(|| {
                Error::invalid("en-tête", "colonne « identifiant » introuvable (noms acceptés : identifiant, identifier, uid, numero, serial)")
            })?;
        Ok(Columns {
            kind: table.column(&["type", "kind"]),
            identifier,
            label: table.column(&["libelle", "label", "etiquette"]),
            status: table.column(&["statut", "status", "etat"]),
            holder: table.column(&["detenteur", "holder", "titulaire", "nom"]),
            unit: table.column(&["lot", "unit", "numero de lot"]),
            profiles: table.column(&["profils", "profiles", "profil", "acces"]),
            handed_out_on: table.column(&["date remise", "remis le", "handed out on", "date"]),
            valid_from: table.column(&["debut validite", "valid from", "valide du"]),
            valid_until: table.column(&["fin validite", "valid until", "valide jusqu au"]),
            notes: table.column(&["notes", "remarques", "commentaire"]),
        })
    }
}

/// Reads the CSV `data` and imports its keys into the residence. `progress` is called
/// after each line with the number of lines done.
pub async fn import_keys(
    store: &Store,
    actor: &Actor,
    residence_id: i64,
    data: &[u8],
    dry_run: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImportReport> {
    let table = Table::parse(data).map_err(|reason| Error::invalid("fichier", reason))?;
    let columns = Columns::find(&table)?;
    let mut report = ImportReport {
        lines: table.rows.len(),
        dry_run,
        ..ImportReport::default()
    };
    let mut tx = store.write().await?;
    tx.residence(residence_id).await?;
    // Line of first appearance of each key in the file, to report repeats.
    let mut seen: HashMap<(KeyKind, String), u64> = HashMap::new();
    for (done, row) in table.rows.iter().enumerate() {
        tx.savepoint().await?;
        match import_line(&mut tx, actor, residence_id, &columns, row, &mut seen).await {
            Ok(outcome) => {
                tx.release_savepoint().await?;
                match outcome {
                    Outcome::Imported { created_holder } => {
                        report.imported += 1;
                        report.people_created += usize::from(created_holder);
                    }
                    Outcome::AlreadyPresent => report.already_present += 1,
                }
            }
            Err(Error::Internal(detail)) => return Err(Error::Internal(detail)),
            Err(err) => {
                tx.rollback_to_savepoint().await?;
                report.rejected.push(RejectedLine {
                    line: row.line,
                    reason: reason_of(err),
                });
            }
        }
        progress(done as u64 + 1);
    }
    if !dry_run {
        tx.commit().await?;
    }
    Ok(report)
}

enum Outcome {
    Imported { created_holder: bool },
    AlreadyPresent,
}

fn reason_of(err: Error) -> String {
    match err {
        Error::Invalid { field, message } => format!("{field} : {message}"),
        other => other.to_string(),
    }
}

async fn import_line(
    tx: &mut Tx,
    actor: &Actor,
    residence_id: i64,
    columns: &Columns,
    row: &Row,
    seen: &mut HashMap<(KeyKind, String), u64>,
) -> Result<Outcome> {
    if let Some(error) = &row.error {
        return Err(Error::invalid("ligne", error));
    }
    let kind = parse_kind(row.get(columns.kind))?;
    let identifier = canonical_identifier(kind, row.get(Some(columns.identifier)))
        .map_err(|err| err.with_field("identifiant"))?;
    if let Some(first) = seen.insert((kind, identifier.clone()), row.line) {
        seen.insert((kind, identifier.clone()), first);
        return Err(Error::invalid(
            "identifiant",
            format!("{identifier} figure déjà à la ligne {first}"),
        ));
    }
    if tx
        .key_by_identifier(residence_id, kind, &identifier)
        .await?
        .is_some()
    {
        return Ok(Outcome::AlreadyPresent);
    }
    let status = parse_status(row.get(columns.status))?;
    let unit_id = match row.get(columns.unit) {
        "" => None,
        lot => Some(
            tx.unit_by_lot(residence_id, lot)
                .await?
                .ok_or_else(|| {
                    Error::invalid("lot", format!("lot « {lot} » inconnu dans cette résidence"))
                })?
                .id,
        ),
    };
    let mut profile_ids = Vec::new();
    for name in row
        .get(columns.profiles)
        .split(['|', '+'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let profile = tx.profile_named(residence_id, name).await?.ok_or_else(|| {
            Error::invalid(
                "profils",
                format!("profil d'accès « {name} » inconnu dans cette résidence"),
            )
        })?;
        profile_ids.push(profile.id);
    }
    let (holder_person_id, holder_provider_id, created_holder) = match row.get(columns.holder) {
        "" => (None, None, false),
        name => {
            if let Some(person) = tx.person_named(residence_id, name).await? {
                (Some(person.id), None, false)
            } else if let Some(provider) = tx.provider_named(residence_id, name).await? {
                (None, Some(provider.id), false)
            } else {
                let input = PersonInput {
                    full_name: name.to_owned(),
                    email: None,
                    phone: None,
                    is_caretaker: false,
                    notes: format!("créé par l'import des clés (ligne {})", row.line),
                }
                .validated()
                .map_err(|err| err.with_field("détenteur"))?;
                (
                    Some(tx.insert_person(actor, residence_id, &input).await?.id),
                    None,
                    true,
                )
            }
        }
    };
    let date = |column: Option<usize>, field: &str| -> Result<_> {
        match row.get(column) {
            "" => Ok(None),
            text => parse_date(text).map(Some).ok_or_else(|| {
                Error::invalid(
                    field,
                    format!("date « {text} » illisible ; formats acceptés : {DATE_FORMS}"),
                )
            }),
        }
    };
    let instant = |column: Option<usize>, field: &str| -> Result<_> {
        match row.get(column) {
            "" => Ok(None),
            text => parse_instant(text).map(Some).ok_or_else(|| {
                Error::invalid(
                    field,
                    format!("date « {text} » illisible ; formats acceptés : {DATE_FORMS}"),
                )
            }),
        }
    };
    let input = KeyInput {
        kind,
        identifier,
        label: row.get(columns.label).to_owned(),
        status: Some(status),
        holder_person_id,
        holder_provider_id,
        unit_id,
        handed_out_on: date(columns.handed_out_on, "date_remise")?,
        valid_from: instant(columns.valid_from, "debut_validite")?,
        valid_until: instant(columns.valid_until, "fin_validite")?,
        notes: row.get(columns.notes).to_owned(),
        profile_ids,
    }
    .validated()?;
    tx.insert_key(actor, residence_id, &input).await?;
    Ok(Outcome::Imported { created_holder })
}

fn parse_kind(text: &str) -> Result<KeyKind> {
    let folded = text.trim().to_lowercase();
    let kind = match folded.as_str() {
        "" | "badge" | "vigik" | "badge vigik" => Some(KeyKind::VigikBadge),
        "telecommande" | "télécommande" | "bip" | "emetteur" | "émetteur" => {
            Some(KeyKind::Remote)
        }
        "autre" | "cle" | "clé" => Some(KeyKind::Other),
        _ => KeyKind::parse(&folded),
    };
    kind.ok_or_else(|| {
        Error::invalid("type", format!("type « {text} » inconnu ; valeurs acceptées : badge, télécommande, autre (ou vigik_badge, remote, other)"))
    })
}

fn parse_status(text: &str) -> Result<KeyStatus> {
    let folded = text.trim().to_lowercase();
    let status = match folded.as_str() {
        "" | "actif" | "active" => KeyStatus::Active,
        "perdu" | "lost" => KeyStatus::Lost,
        "volé" | "vole" | "stolen" => KeyStatus::Stolen,
        "hors service" | "cassé" | "casse" | "broken" => KeyStatus::Broken,
        "restitué" | "restitue" | "rendu" | "returned" => KeyStatus::Returned,
        "désactivé" | "desactive" | "deactivated" => KeyStatus::Deactivated,
        _ => {
            return Err(Error::invalid(
                "statut",
                format!("statut « {text} » inconnu ; valeurs acceptées : actif, perdu, volé, hors service, restitué, désactivé"),
            ))
        }
    };
    Ok(status)
}
