//! Roam client core.

pub mod cache;
pub mod debounce;
pub mod lazy;
