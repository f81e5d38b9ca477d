//! Integration tests of roam-core against a fake protocol server on loopback.
//!
//! One binary, one module per feature; shared fixtures in `fixture.rs`. Every wait is bounded.

mod fixture;

mod collab;
mod limits;
mod listeners;
mod metrics;
mod offline;
mod outbox;
mod realtime;
mod reconnect;
mod rest_cache;
