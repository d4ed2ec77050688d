//! Meters over the network: programming each gateway's meter list from the database
//! ([`program`]), judging what a gateway says about a meter ([`checks`]), collecting
//! every gateway's readings ([`collect`]) and doing it every night ([`schedule`]).
//!
//! Drivers (`gardien-drivers`) speak Modbus; storage keeps the outbox, readings,
//! alarms and runs; this module decides what to do with both.

pub mod checks;
pub mod collect;
pub mod program;
pub mod schedule;
pub mod usage;
pub mod wmbus;
