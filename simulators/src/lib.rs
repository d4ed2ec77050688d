//! Simulated devices for gardien's tests and demo.
//!
//! Two lock controllers and a meter gateway are modelled from their interface manuals
//! (`shared/devices/PX-2-lock-controller.md`, `KL-8-lock-controller.md` and
//! `MBG-250-meter-gateway.md`): the PX-2, programmed through a command mailbox, with a
//! digest and an access event log; the KL-8, whose card records are written directly
//! and survive a power cut only once saved to flash; and the MBG-250, which reads the
//! M-Bus meters a client lists in it (both firmware lines), with meters that consume
//! like households on a virtual clock, faults, and anomaly scenarios recorded in a
//! ground-truth file. The simulators follow the manuals, not gardien's drivers, so a
//! driver that passes against them should pass against a real device.
//!
//! Layers, bottom up:
//! - [`px2`], [`kl8`] and [`mbg`]: each device as pure state with its register map;
//!   time is an argument, so they are unit-tested without waiting. [`mbg`] also holds
//!   the M-Bus loop, the consumption model, the scenarios and the ground truth.
//! - [`device`]: cloneable handles ([`Px2Device`], [`Kl8Device`], [`MbgDevice`])
//!   sharing one state behind a lock, with its [`Faults`]; also where a badge is
//!   presented, or a gateway's meters are reached.
//! - [`faults`]: latency, lost requests and answers, closed connections, injected
//!   exceptions, offline periods, drawn from a seedable RNG.
//! - [`server`]: tokio-modbus services on TCP and on an RTU serial line, where several
//!   devices can share the bus.
//! - [`pty`]: a pair of linked pseudo-terminals, to run RTU without hardware.
//! - [`config`] and [`control`]: the `gardien-sim` binary's TOML file and stdin
//!   commands.
//!
//! # How the manuals are read
//!
//! Where a manual leaves room, the simulators take the strict reading, so a driver
//! that relies on unwritten behaviour fails here rather than in the field:
//! - A request covering any unmapped address, including gaps such as PX-2 holding
//!   registers 7-9, fails whole with 02. Unlisted function codes get 01.
//! - PX-2 writes: only the whole mailbox (10-19) or the whole clock (30-31) with one
//!   FC16; any other write is 03. While a command runs, a write touching 10-19 gets 06.
//! - PX-2 mailbox: a block whose sequence is 0 or repeats the previous command's is
//!   stored but runs nothing, so retrying a write whose answer was lost is harmless.
//!   ADD, DELETE_UID and SET_DOORS need uid_len 1-10 with zero padding, and
//!   `reserved` must be 0 (else BAD_REQUEST); OPEN_DOOR ignores the UID fields.
//! - PX-2 power-up: boot counter +1, the event log and the mailbox and result
//!   registers restart (result reads 0, 0, 0xFFFF), a running command is lost. A
//!   factory reset also empties the table and sets the boot counter to 0. A new
//!   simulator has just powered up once: boot counter 1.
//! - KL-8 writes: FC16 of exactly one record (4 registers from its start, `state` 0
//!   or 1), or FC06 of 0 to a `state` register, which leaves card and mask in place;
//!   anything else is 03. The save copies the table as it is when 1 is written;
//!   writing 1 again restarts it.
//! - MBG-250 map: holding 0-7, 30-31 and 100 + 8·i; input 1000 + 16·i (i < 250).
//!   Holding 8-29 and 32-99 are holes (02).
//! - MBG-250 writes: a slot only with one FC16 of exactly its 8 registers from its
//!   start, with `active` 0 or 1, a BCD id and reserved registers 0 (manufacturer,
//!   version and medium are stored as written); the trigger with FC06 or a one-register
//!   FC16 of the value 1; the clock with one FC16 of both registers. Anything else
//!   touching 0-7, 30-31 or a slot is 03. Register 7 reads 0.
//! - MBG-250 read-out: the active slots are read in order, one every `ms_per_meter`
//!   (20 ms), each slot's result visible once its turn is over; register 6 reads 1
//!   until the last, and "last read-out" is the gateway clock then. A trigger during a
//!   read-out is acknowledged and ignored; a slot write then gets 06 (the list is being
//!   walked). Meters are selected on the loop by id alone.
//! - MBG-250 readings: a meter that does not answer adds bit 0 to the slot's previous
//!   status and leaves index, exponent, unit, time and id echo as they were; a slot
//!   never read shows zeros. The time is the gateway clock (virtual time plus the
//!   offset the client wrote); meters consume on virtual time. Firmware 1.x: the index
//!   as a float32 in the meter's unit, low word first, registers 3-5 zero; 2.x: i64
//!   raw index high word first, the exponent being the meter's resolution.
//! - MBG-250 power-up: the meter list (flash) and the clock (battery) survive; the
//!   readings and "last read-out" (RAM) restart at 0 and a running read-out is lost.
//!   A factory reset also empties the list and forgets the clock setting.
//! - esp-rfid ([`esprfid`], MQTT, `shared/devices/esp-rfid-mqtt.md`): a command whose
//!   `doorip` is not the device's, or that is not JSON, gets no answer at all. Acks
//!   name no user and come even when nothing was stored (full flash, bad uid; a bad
//!   field also sends an `ERRO` event). Missing numbers read 0, as ArduinoJson reads
//!   them, so a user without `validuntil` is Expired; only acctype 1 checks validity.
//!   `getuserlist` sends the stored `adduser` text by default (the firmware), the
//!   README's `userfile` shape on request, and no end marker. Badges are looked up by
//!   the uid as the reader writes it (padded or without leading zeros). Boot is
//!   published after a power-up only, not after a mere reconnection; publishing while
//!   disconnected loses the message.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use gardien_simulators::{serve_tcp, Faults, Px2Config, Px2Device, Uid};
//! let px2 = Px2Device::new(Px2Config::default(), Faults::seeded(1));
//! let server = serve_tcp(px2.clone(), "127.0.0.1:0").await?;
//! println!("PX-2 on {}", server.local_addr());
//! let uid = Uid::from_hex("04A22B91").unwrap();
//! px2.present(&uid, 1).unwrap();
//! # Ok(()) }
//! ```

pub mod access;
pub mod broker;
pub mod config;
pub mod control;
pub mod device;
pub mod esprfid;
pub mod faults;
pub mod kl8;
pub mod mbg;
pub mod pty;
pub mod px2;
mod regs;
pub mod server;
pub mod uid;
pub mod wmbus;

pub use access::{AccessResult, PresentError};
pub use device::{
    AnyDevice, Device, Kl8Device, Kl8Snapshot, MbgDevice, MbgSnapshot, Px2Device, Px2Snapshot,
};
pub use esprfid::{
    EspRfidAccess, EspRfidConfig, EspRfidDevice, EspRfidFaults, EspRfidSnapshot, EspRfidUser,
    MqttBroker, UidFormat, UserlistShape,
};
pub use faults::{FaultSettings, Faults};
pub use kl8::{Kl8Config, Record};
pub use mbg::{
    BusMeter, GroundTruth, MBusLoop, MbgConfig, MeterValue, Scenario, ScenarioKind, SimClock,
    SlotConfig, SlotReading, TruthRecord, Unit,
};
pub use pty::PtyLink;
pub use px2::{Entry, Px2Config};
pub use server::{serve_rtu, serve_tcp, serve_tcp_units, Server, TcpServer};
pub use uid::Uid;
pub use wmbus::{WmbusConfig, WmbusFaults, WmbusPublisher};
