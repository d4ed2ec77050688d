//! Device protocols. Knows no SQL and no HTTP.
