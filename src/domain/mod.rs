//! The vocabulary of a co-ownership: plain types and rules, no SQL and no HTTP.

pub mod consumption;
pub mod key_id;
pub mod key_status;
pub mod meter;
pub mod roles;
pub mod text;

use serde::{Deserialize, Serialize};

/// Declares a closed set of values stored as snake_case text and shown as such in JSON.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        #[sqlx(rename_all = "snake_case")]
        pub enum $name { $($(#[$variant_meta])* $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// What a unit (lot) is.
    UnitKind { Flat => "flat", Parking => "parking", Cellar => "cellar", Shop => "shop" }
);

text_enum!(
    /// How a person occupies a unit.
    OccupancyRole { Owner => "owner", Landlord => "landlord", Tenant => "tenant", Occupant => "occupant" }
);

text_enum!(
    LockKind { Door => "door", Gate => "gate" }
);

text_enum!(
    /// How the service reaches a lock controller.
    Transport { ModbusTcp => "modbus_tcp", ModbusRtu => "modbus_rtu", Mqtt => "mqtt" }
);

text_enum!(
    /// Where a change a controller must make stands.
    SyncState { Pending => "pending", Confirmed => "confirmed", Failed => "failed" }
);

text_enum!(
    /// What to do with entries a controller holds that the database does not know:
    /// report them (`audit`, the default for a new controller) or remove them (`enforce`).
    #[derive(Default)]
    Policy {
        #[default]
        Audit => "audit",
        Enforce => "enforce",
    }
);
