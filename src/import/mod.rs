//! Imports from files that people keep: spreadsheets of keys (and later meter readings).

pub mod keys;
pub mod readings;
mod table;

pub use table::Table as CsvTable;
