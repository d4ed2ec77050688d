//! Imports from files that people keep: spreadsheets of keys (and later meter readings).

pub mod keys;
mod table;

pub use table::Table as CsvTable;
