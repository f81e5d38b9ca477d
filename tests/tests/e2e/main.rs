//! End-to-end tests: the real server on loopback and real roam-core clients, with temporary
//! directories. One module per scenario.

mod offline;
mod process_death;
