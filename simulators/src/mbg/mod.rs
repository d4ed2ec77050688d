//! The MBG-250 M-Bus-to-Modbus meter gateway (`shared/devices/MBG-250-meter-gateway.md`),
//! with the meters behind it.
//!
//! - [`gateway`]: the register map, the meter list, the read-out, the readings;
//!   [`slot`]: the register layout of one slot.
//! - [`bus`]: the M-Bus loop, its meters, who answers and who has been replaced.
//! - [`meter`], `physics` and [`profile`]: a meter's identity and format, its index
//!   as a function of virtual time, and how a household consumes.
//! - [`clock`]: the virtual clock, shareable between gateways.
//! - [`population`](mod@population): a realistic building from a seed.
//! - [`scenario`], [`generate`](mod@generate) and [`truth`]: anomalies, drawn or
//!   chosen, and the ground-truth file that records them.
//! - [`codes`] and [`calendar`]: encodings and dates.
//! - [`config`]: the `kind = "mbg250"` part of the `gardien-sim` file.
//!
//! Virtual time: meters consume on the [`SimClock`] (Unix seconds), which by default
//! runs with real time from a chosen start. The gateway's clock register is that time
//! plus whatever offset the client set by writing registers 30-31; the meters do not
//! care about the offset.

pub mod bus;
pub mod calendar;
pub mod clock;
pub mod codes;
pub mod config;
pub mod gateway;
pub mod generate;
pub mod meter;
mod mix;
mod physics;
pub mod population;
pub mod profile;
pub mod scenario;
pub mod slot;
pub mod truth;

pub use bus::{BusError, BusReading, MBusLoop};
pub use clock::SimClock;
pub use codes::{medium, status, Unit};
pub use gateway::{Mbg, MbgConfig};
pub use generate::{generate, ScenarioPlan};
pub use meter::{BusMeter, MeterValue};
pub use population::population;
pub use profile::{Presence, Profile, Usage};
pub use scenario::{Scenario, ScenarioError, ScenarioKind};
pub use slot::{SlotConfig, SlotReading};
pub use truth::{GroundTruth, TruthRecord};
