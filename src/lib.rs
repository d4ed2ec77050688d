//! gardien: the keys, locks and meters of residential co-ownerships.
//!
//! `main.rs` only parses the command line; everything lives here so that tests and
//! other binaries reuse it. See ARCHITECTURE.md for the map.

pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod import;
pub mod metering;
pub mod mqtt;
pub mod storage;
pub mod sync;

pub use error::{Error, Result};
