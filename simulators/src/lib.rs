//! Simulated devices for tests and the demo.
