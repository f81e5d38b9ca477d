//! End-to-end tests: the real server on loopback and real roam-core clients, with temporary
//! directories. One module per scenario.

mod account;
mod attachments;
mod backoff;
mod collab;
mod encrypted;
mod live;
mod offline;
mod order;
mod outage;
mod permanent;
mod process_death;
mod push;
mod reset;
mod room_list;
mod storage;
mod timeline;
