//! A key's status and the lifecycle actions that move it.

use super::text_enum;
use crate::error::Error;
use serde::{Deserialize, Serialize};

text_enum!(
    /// Only `active` keys are in the locks' expected sets.
    KeyStatus {
        Active => "active",
        Lost => "lost",
        Stolen => "stolen",
        Broken => "broken",
        Returned => "returned",
        Deactivated => "deactivated",
    }
);

impl KeyStatus {
    /// How the status reads in a sentence for the council.
    pub fn french(self) -> &'static str {
        match self {
            KeyStatus::Active => "actif",
            KeyStatus::Lost => "perdu",
            KeyStatus::Stolen => "volé",
            KeyStatus::Broken => "hors service",
            KeyStatus::Returned => "restitué",
            KeyStatus::Deactivated => "désactivé",
        }
    }
}

text_enum!(
    /// What can happen to a key after it was recorded.
    KeyAction {
        HandOver => "hand_over",
        DeclareLost => "declare_lost",
        DeclareStolen => "declare_stolen",
        DeclareBroken => "declare_broken",
        Return => "return",
        Deactivate => "deactivate",
        Reactivate => "reactivate",
    }
);

impl KeyAction {
    /// The status a key takes when `self` happens to a key in status `from`.
    ///
    /// Stolen and broken are final: a stolen badge may have been copied, a broken one
    /// is in a drawer. A lost key that turns up can be reactivated.
    pub fn apply(self, from: KeyStatus) -> Result<KeyStatus, Error> {
        use KeyStatus::*;
        let allowed: &[KeyStatus] = match self {
            KeyAction::HandOver => &[Active, Returned, Deactivated],
            KeyAction::DeclareLost => &[Active, Returned, Deactivated],
            KeyAction::DeclareStolen | KeyAction::DeclareBroken => {
                &[Active, Returned, Deactivated, Lost]
            }
            KeyAction::Return => &[Active, Deactivated, Lost],
            KeyAction::Deactivate => &[Active],
            KeyAction::Reactivate => &[Deactivated, Lost, Returned],
        };
        if !allowed.contains(&from) {
            let accepted: Vec<&str> = allowed.iter().map(|s| s.french()).collect();
            return Err(Error::conflict(
                Some("status"),
                format!(
                    "action « {} » impossible sur une clé au statut « {} » (possible au statut : {})",
                    self.as_str(),
                    from.french(),
                    accepted.join(", ")
                ),
            ));
        }
        Ok(match self {
            KeyAction::HandOver | KeyAction::Reactivate => Active,
            KeyAction::DeclareLost => Lost,
            KeyAction::DeclareStolen => Stolen,
            KeyAction::DeclareBroken => Broken,
            KeyAction::Return => Returned,
            KeyAction::Deactivate => Deactivated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stolen_and_broken_are_final() {
        for action in [
            KeyAction::HandOver,
            KeyAction::Reactivate,
            KeyAction::Return,
            KeyAction::DeclareLost,
        ] {
            assert!(action.apply(KeyStatus::Stolen).is_err());
            assert!(action.apply(KeyStatus::Broken).is_err());
        }
    }

    #[test]
    fn a_lost_key_found_again_is_active() {
        let lost = KeyAction::DeclareLost.apply(KeyStatus::Active).unwrap();
        assert_eq!(
            KeyAction::Reactivate.apply(lost).unwrap(),
            KeyStatus::Active
        );
    }
}
