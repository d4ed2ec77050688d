//! Roles a user holds in a residence, and what each may see.

use super::text_enum;
use serde::{Deserialize, Serialize};

text_enum!(
    /// A user's role in one residence. Platform administrators stand above these.
    Role {
        Council => "council",
        Syndic => "syndic",
        Resident => "resident",
        Provider => "provider",
    }
);

impl Role {
    /// Council and syndic manage everything of their residence.
    pub fn manages(self) -> bool {
        matches!(self, Role::Council | Role::Syndic)
    }
}

/// The part of a residence a user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Council, syndic, platform admin.
    Everything,
    /// A resident: the units they occupy, the keys they hold or that belong to those units.
    Person(i64),
    /// A provider's staff: the keys held by their company.
    Provider(i64),
}
