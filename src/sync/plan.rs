//! What to change on a controller: the difference between the outbox targets and the
//! table the controller holds. Pure, so it is tested without devices.

use std::collections::HashMap;

use crate::domain::Policy;
use crate::storage::sync::{Finding, KeySync};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
    SetDoors,
}

/// One table change. `key` is the outbox row it serves (key id, target doors); none
/// for the removal of an entry the database does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub op: Op,
    pub credential: String,
    pub doors: i64,
    pub key: Option<(i64, i64)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Rows not yet confirmed that are already true on the controller: (key id, doors).
    pub already_true: Vec<(i64, i64)>,
    /// Drift worth reporting: entries nobody knows, and known entries that changed
    /// behind the service's back (repaired all the same).
    pub findings: Vec<Finding>,
}

/// Every outbox row is made true (a confirmed entry the controller lost is restored);
/// entries no row knows are removed under `enforce` and reported under `audit`.
pub fn plan(
    rows: &[KeySync],
    observed: &HashMap<String, i64>,
    duplicates: &[String],
    policy: Policy,
) -> Plan {
    let mut plan = Plan::default();
    let mut known = std::collections::HashSet::new();
    for row in rows {
        known.insert(row.credential.as_str());
        let held = observed.get(&row.credential).copied();
        let duplicated = duplicates.contains(&row.credential);
        let key = Some((row.key_id, row.doors));
        let change = |op, doors| Change {
            op,
            credential: row.credential.clone(),
            doors,
            key,
        };
        let confirmed = row.state == crate::domain::SyncState::Confirmed;
        match (row.doors, held) {
            (0, None) if !confirmed => plan.already_true.push((row.key_id, 0)),
            (0, None) => {}
            (0, Some(_)) => plan.changes.push(change(Op::Remove, 0)),
            (want, None) => {
                if confirmed {
                    plan.findings
                        .push(finding(&row.credential, "missing", Some(want), None));
                }
                plan.changes.push(change(Op::Add, want));
            }
            (want, Some(have)) if duplicated => {
                plan.findings.push(finding(
                    &row.credential,
                    "duplicate",
                    Some(want),
                    Some(have),
                ));
                plan.changes.push(change(Op::Remove, 0));
                plan.changes.push(change(Op::Add, want));
            }
            // Already true: confirm it if it was waiting; a confirmed row keeps the
            // time it was first confirmed.
            (want, Some(have)) if want == have => {
                if !confirmed {
                    plan.already_true.push((row.key_id, want));
                }
            }
            (want, Some(have)) => {
                if confirmed {
                    plan.findings.push(finding(
                        &row.credential,
                        "wrong_doors",
                        Some(want),
                        Some(have),
                    ));
                }
                plan.changes.push(change(Op::SetDoors, want));
            }
        }
    }
    let mut ghosts: Vec<(&String, &i64)> = observed
        .iter()
        .filter(|(credential, _)| !known.contains(credential.as_str()))
        .collect();
    ghosts.sort();
    for (credential, doors) in ghosts {
        plan.findings
            .push(finding(credential, "ghost", None, Some(*doors)));
        if policy == Policy::Enforce {
            plan.changes.push(Change {
                op: Op::Remove,
                credential: credential.clone(),
                doors: 0,
                key: None,
            });
        }
    }
    // Removals first: a full table makes room before it takes new keys. The sort is
    // stable, so a duplicate's remove-then-add keeps its order.
    plan.changes.sort_by_key(|change| change.op != Op::Remove);
    plan
}

fn finding(
    credential: &str,
    kind: &'static str,
    expected: Option<i64>,
    actual: Option<i64>,
) -> Finding {
    Finding {
        credential: credential.to_owned(),
        kind,
        expected_doors: expected,
        actual_doors: actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SyncState;

    fn row(key: i64, credential: &str, doors: i64, state: SyncState) -> KeySync {
        KeySync {
            controller_id: 1,
            key_id: key,
            residence_id: 1,
            credential: credential.into(),
            doors,
            state,
            changed_at: chrono::Utc::now(),
            confirmed_at: None,
            attempts: 0,
            error: None,
        }
    }

    #[test]
    fn lost_badge_is_one_removal_and_nothing_else() {
        let rows = [
            row(1, "uid:01", 0, SyncState::Pending),
            row(2, "uid:02", 3, SyncState::Confirmed),
        ];
        let observed = HashMap::from([("uid:01".to_string(), 3), ("uid:02".to_string(), 3)]);
        let plan = plan(&rows, &observed, &[], Policy::Audit);
        assert_eq!(
            plan.changes,
            vec![Change {
                op: Op::Remove,
                credential: "uid:01".into(),
                doors: 0,
                key: Some((1, 0))
            }]
        );
        assert!(
            plan.already_true.is_empty(),
            "a confirmed row already true needs no write"
        );
        let waiting = [row(3, "uid:02", 3, SyncState::Pending)];
        assert_eq!(
            super::plan(&waiting, &observed, &[], Policy::Audit).already_true,
            vec![(3, 3)]
        );
        assert!(plan.findings.is_empty());
    }

    #[test]
    fn ghosts_are_reported_under_audit_and_removed_under_enforce() {
        let observed = HashMap::from([("uid:09".to_string(), 1)]);
        let audit = plan(&[], &observed, &[], Policy::Audit);
        assert!(audit.changes.is_empty());
        assert_eq!(audit.findings[0].kind, "ghost");
        let enforce = plan(&[], &observed, &[], Policy::Enforce);
        assert_eq!(enforce.changes[0].op, Op::Remove);
    }

    #[test]
    fn a_controller_that_lost_its_memory_gets_its_confirmed_entries_back() {
        let rows = [
            row(2, "card:7", 1, SyncState::Confirmed),
            row(3, "card:8", 2, SyncState::Confirmed),
        ];
        let observed = HashMap::from([("card:8".to_string(), 1)]);
        let plan = plan(&rows, &observed, &[], Policy::Audit);
        let ops: Vec<Op> = plan.changes.iter().map(|c| c.op).collect();
        assert_eq!(ops, vec![Op::Add, Op::SetDoors]);
        let kinds: Vec<&str> = plan.findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec!["missing", "wrong_doors"]);
    }
}
