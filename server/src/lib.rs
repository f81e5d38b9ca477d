//! Roam server.

pub mod store;
