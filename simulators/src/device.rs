//! Device handles. A handle owns one controller's state behind a lock, plus its
//! faults; clones share both, so every connection, server and test sees one device.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::access::{AccessResult, PresentError};
use crate::faults::Faults;
use crate::kl8::{Kl8, Kl8Config, Record};
use crate::mbg::{
    BusError, BusMeter, GroundTruth, MBusLoop, Mbg, MbgConfig, MeterValue, Scenario, ScenarioError,
    SimClock, SlotConfig, SlotReading, TruthRecord,
};
use crate::px2::{Entry, Px2, Px2Config};
use crate::uid::Uid;

/// What a server needs from a controller's state.
pub trait Machine: Send + 'static {
    fn handle(&mut self, request: &Request<'_>, now: Instant) -> Result<Response, ExceptionCode>;
    /// Power cycle: what survives a power cut survives.
    fn reboot(&mut self, now: Instant);
    /// Restart losing memory: PX-2 factory reset, KL-8 power cut (unsaved writes lost).
    fn reboot_with_memory_loss(&mut self, now: Instant);
    fn set_capacity_limit(&mut self, limit: Option<u16>);
}

impl Machine for Px2 {
    fn handle(&mut self, request: &Request<'_>, now: Instant) -> Result<Response, ExceptionCode> {
        Px2::handle(self, request, now)
    }
    fn reboot(&mut self, now: Instant) {
        self.power_up(now);
    }
    fn reboot_with_memory_loss(&mut self, now: Instant) {
        self.factory_reset(now);
    }
    fn set_capacity_limit(&mut self, limit: Option<u16>) {
        Px2::set_capacity_limit(self, limit);
    }
}

/// A KL-8 keeps nothing in RAM across a restart, so both kinds of reboot are a power cut.
impl Machine for Kl8 {
    fn handle(&mut self, request: &Request<'_>, now: Instant) -> Result<Response, ExceptionCode> {
        Kl8::handle(self, request, now)
    }
    fn reboot(&mut self, _now: Instant) {
        self.power_cut();
    }
    fn reboot_with_memory_loss(&mut self, _now: Instant) {
        self.power_cut();
    }
    fn set_capacity_limit(&mut self, limit: Option<u16>) {
        Kl8::set_capacity_limit(self, limit);
    }
}

/// A gateway's reboot keeps its meter list (flash) and loses its readings and a
/// running read-out (RAM); losing memory is a factory reset, which empties the list.
impl Machine for Mbg {
    fn handle(&mut self, request: &Request<'_>, now: Instant) -> Result<Response, ExceptionCode> {
        Mbg::handle(self, request, now)
    }
    fn reboot(&mut self, _now: Instant) {
        self.power_cycle();
    }
    fn reboot_with_memory_loss(&mut self, _now: Instant) {
        self.factory_reset();
    }
    fn set_capacity_limit(&mut self, limit: Option<u16>) {
        Mbg::set_capacity_limit(self, limit);
    }
}

#[derive(Debug)]
pub struct Device<M> {
    machine: Arc<Mutex<M>>,
    faults: Faults,
    unit_id: u8,
}

impl<M> Clone for Device<M> {
    fn clone(&self) -> Self {
        Device {
            machine: Arc::clone(&self.machine),
            faults: self.faults.clone(),
            unit_id: self.unit_id,
        }
    }
}

impl<M: Machine> Device<M> {
    fn from_machine(machine: M, unit_id: u8, faults: Faults) -> Self {
        Device {
            machine: Arc::new(Mutex::new(machine)),
            faults,
            unit_id,
        }
    }

    pub fn unit_id(&self) -> u8 {
        self.unit_id
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Runs `f` on the state, with the current time. Keep `f` short: it holds the lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        let mut machine = self
            .machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut machine, Instant::now())
    }

    /// Answers one request, ignoring faults (the server applies them).
    pub fn handle(&self, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        self.with(|m, now| m.handle(request, now))
    }

    pub fn reboot(&self) {
        self.with(|m, now| m.reboot(now));
    }

    pub fn reboot_with_memory_loss(&self) {
        self.with(|m, now| m.reboot_with_memory_loss(now));
    }

    /// Makes the table look full beyond `limit` entries; `None` lifts it.
    pub fn set_capacity_limit(&self, limit: Option<u16>) {
        self.with(|m, _| m.set_capacity_limit(limit));
    }
}

pub type Px2Device = Device<Px2>;
pub type Kl8Device = Device<Kl8>;
pub type MbgDevice = Device<Mbg>;

/// The facts of a PX-2 a test usually checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Px2Snapshot {
    /// Active entries with their slots.
    pub entries: Vec<(u16, Entry)>,
    pub used: u16,
    pub digest: u32,
    pub boot_counter: u16,
    pub events_written: u64,
    pub clock: u32,
    pub busy: bool,
}

impl Device<Px2> {
    pub fn new(config: Px2Config, faults: Faults) -> Self {
        let unit_id = config.unit_id;
        Device::from_machine(Px2::new(config, Instant::now()), unit_id, faults)
    }

    /// A badge presented at `door` (1-based): the decision, also written to the event log.
    pub fn present(&self, uid: &Uid, door: u8) -> Result<AccessResult, PresentError> {
        self.with(|px2, now| px2.present(uid, door, now))
    }

    pub fn snapshot(&self) -> Px2Snapshot {
        self.with(|px2, now| {
            px2.settle(now);
            Px2Snapshot {
                entries: px2.entries().map(|(slot, e)| (slot, *e)).collect(),
                used: px2.used(),
                digest: px2.digest(),
                boot_counter: px2.boot_counter(),
                events_written: px2.events_written(),
                clock: px2.clock(now),
                busy: px2.is_busy(),
            }
        })
    }
}

/// The facts of a KL-8 a test usually checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kl8Snapshot {
    /// Active records in RAM, with their indexes.
    pub records: Vec<(u16, Record)>,
    /// Active records in flash.
    pub saved: Vec<(u16, Record)>,
    pub change_counter: u16,
    pub saving: bool,
}

impl Device<Kl8> {
    pub fn new(config: Kl8Config, faults: Faults) -> Self {
        let unit_id = config.unit_id;
        Device::from_machine(Kl8::new(config), unit_id, faults)
    }

    /// A badge presented at `door` (1-8): the decision only, a KL-8 logs nothing.
    pub fn present(&self, uid: &Uid, door: u8) -> Result<AccessResult, PresentError> {
        self.with(|kl8, _| kl8.present(uid, door))
    }

    /// A remote or card known by its number.
    pub fn present_card(&self, card: u32, door: u8) -> Result<AccessResult, PresentError> {
        self.with(|kl8, _| kl8.present_card(card, door))
    }

    pub fn snapshot(&self) -> Kl8Snapshot {
        fn active(records: &[Record]) -> Vec<(u16, Record)> {
            records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_active())
                .map(|(i, r)| (i as u16, *r))
                .collect()
        }
        self.with(|kl8, now| {
            kl8.settle(now);
            Kl8Snapshot {
                records: active(kl8.records()),
                saved: active(kl8.saved_records()),
                change_counter: kl8.change_counter(),
                saving: kl8.is_saving(),
            }
        })
    }
}

/// The facts of an MBG-250 a test usually checks.
#[derive(Debug, Clone, PartialEq)]
pub struct MbgSnapshot {
    /// Slots written with anything but zeros, active or not.
    pub slots: Vec<(u16, SlotConfig)>,
    /// Active slots (register 3).
    pub configured: u16,
    /// End of the last read-out, gateway clock (registers 4-5), 0 if none.
    pub last_readout: u32,
    pub running: bool,
    /// Slots with something to show (a status or a reading).
    pub readings: Vec<(u16, SlotReading)>,
    /// The clock register (virtual time plus the client's offset).
    pub clock: u32,
    /// Virtual time, what the meters live on.
    pub virtual_time: i64,
}

impl Device<Mbg> {
    pub fn new(config: MbgConfig, faults: Faults) -> Self {
        let unit_id = config.unit_id;
        Device::from_machine(Mbg::new(config), unit_id, faults)
    }

    pub fn snapshot(&self) -> MbgSnapshot {
        self.with(|mbg, now| {
            mbg.settle(now);
            let numbered = (0u16..).zip(mbg.slots().iter().copied());
            MbgSnapshot {
                slots: numbered
                    .filter(|(_, s)| *s != SlotConfig::default())
                    .collect(),
                configured: mbg.configured(),
                last_readout: mbg.last_readout(),
                running: mbg.is_running(),
                readings: (0u16..)
                    .zip(mbg.readings().iter().copied())
                    .filter(|(_, r)| *r != SlotReading::default())
                    .collect(),
                clock: mbg.gateway_clock(now),
                virtual_time: mbg.virtual_time(now),
            }
        })
    }

    /// The virtual clock (shared with any gateway built with the same one).
    pub fn clock(&self) -> SimClock {
        self.with(|mbg, _| mbg.clock().clone())
    }

    /// Sets the virtual clock, for every gateway sharing it.
    pub fn set_time(&self, unix: i64) {
        self.clock().set_time(unix);
    }

    /// Moves the virtual clock on; the meters consume for the span.
    pub fn advance(&self, seconds: i64) {
        self.clock().advance(seconds);
    }

    /// Runs `f` on the M-Bus loop.
    pub fn with_bus<R>(&self, f: impl FnOnce(&mut MBusLoop) -> R) -> R {
        self.with(|mbg, _| f(mbg.bus_mut()))
    }

    pub fn add_meter(&self, meter: BusMeter) -> Result<(), BusError> {
        self.with_bus(|bus| bus.add(meter))
    }

    /// Adds meters until one is refused.
    pub fn add_meters(&self, meters: impl IntoIterator<Item = BusMeter>) -> Result<(), BusError> {
        self.with_bus(|bus| meters.into_iter().try_for_each(|m| bus.add(m)))
    }

    pub fn remove_meter(&self, id: u32) -> Option<BusMeter> {
        self.with_bus(|bus| bus.remove(id))
    }

    /// Swaps meter `old` for `new` now (virtual time); answers the old final index.
    pub fn swap_meter(&self, old: u32, new: BusMeter) -> Result<MeterValue, BusError> {
        self.with(|mbg, now| {
            let t = mbg.virtual_time(now);
            mbg.bus_mut().replace(old, new, t)
        })
    }

    pub fn set_answering(&self, id: u32, answering: bool) -> Result<(), BusError> {
        self.with_bus(|bus| bus.set_answering(id, answering))
    }

    /// The meter stops answering from `unix` (virtual time) on.
    pub fn silence_from(&self, id: u32, unix: i64) -> Result<(), BusError> {
        self.with_bus(|bus| bus.silence(id, unix, None))
    }

    /// Flags the meter reports (see [`crate::mbg::status`]).
    pub fn force_status(&self, id: u32, bits: u16) -> Result<(), BusError> {
        self.with_bus(|bus| bus.force_status(id, bits))
    }

    /// Fault: read-outs leave this slot untouched. False past the list.
    pub fn set_stale(&self, slot: u16, stale: bool) -> bool {
        self.with(|mbg, _| mbg.set_stale(slot, stale))
    }

    /// Writes a slot as if the client had programmed it. False past the list.
    pub fn program(&self, slot: u16, config: SlotConfig) -> bool {
        self.with(|mbg, _| mbg.program(slot, config))
    }

    /// Starts a read-out as writing 1 to register 7 does; false if one runs.
    pub fn trigger(&self) -> bool {
        self.with(|mbg, now| mbg.trigger(now))
    }

    /// A meter's index now (virtual time), answering or not.
    pub fn meter_value(&self, id: u32) -> Option<MeterValue> {
        self.with(|mbg, now| {
            let t = mbg.virtual_time(now);
            mbg.bus_mut().index_at(id, t)
        })
    }

    pub fn meter_value_at(&self, id: u32, unix: i64) -> Option<MeterValue> {
        self.with_bus(|bus| bus.index_at(id, unix))
    }

    /// Applies an anomaly scenario to this gateway's loop; the record names the gateway.
    pub fn apply(&self, scenario: &Scenario) -> Result<TruthRecord, ScenarioError> {
        self.with(|mbg, _| mbg.apply(scenario))
    }

    /// The scenarios applied to this gateway.
    pub fn ground_truth(&self) -> GroundTruth {
        let mut truth = GroundTruth::new();
        truth.extend(self.with(|mbg, _| mbg.truth().to_vec()));
        truth
    }
}

/// Any simulated device, for servers and the binary that handle them all.
#[derive(Debug, Clone)]
pub enum AnyDevice {
    Px2(Px2Device),
    Kl8(Kl8Device),
    Mbg(MbgDevice),
}

impl From<Px2Device> for AnyDevice {
    fn from(device: Px2Device) -> Self {
        AnyDevice::Px2(device)
    }
}

impl From<Kl8Device> for AnyDevice {
    fn from(device: Kl8Device) -> Self {
        AnyDevice::Kl8(device)
    }
}

impl From<MbgDevice> for AnyDevice {
    fn from(device: MbgDevice) -> Self {
        AnyDevice::Mbg(device)
    }
}

macro_rules! each {
    ($self:expr, $d:ident => $body:expr) => {
        match $self {
            AnyDevice::Px2($d) => $body,
            AnyDevice::Kl8($d) => $body,
            AnyDevice::Mbg($d) => $body,
        }
    };
}

impl AnyDevice {
    pub fn unit_id(&self) -> u8 {
        each!(self, d => d.unit_id())
    }

    pub fn faults(&self) -> &Faults {
        each!(self, d => d.faults())
    }

    pub fn handle(&self, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        each!(self, d => d.handle(request))
    }

    /// A badge at a door; a meter gateway has none.
    pub fn present(&self, uid: &Uid, door: u8) -> Result<AccessResult, PresentError> {
        match self {
            AnyDevice::Px2(d) => d.present(uid, door),
            AnyDevice::Kl8(d) => d.present(uid, door),
            AnyDevice::Mbg(_) => Err(PresentError::NoDoors),
        }
    }

    pub fn reboot(&self) {
        each!(self, d => d.reboot())
    }

    pub fn reboot_with_memory_loss(&self) {
        each!(self, d => d.reboot_with_memory_loss())
    }

    pub fn set_capacity_limit(&self, limit: Option<u16>) {
        each!(self, d => d.set_capacity_limit(limit))
    }
}
