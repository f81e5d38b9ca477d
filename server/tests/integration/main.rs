//! Integration tests: the real server on 127.0.0.1:0, driven over real HTTP and WebSocket
//! connections. One module per feature; shared fixtures in `fixtures`.

mod admin;
mod attachments;
mod auth;
mod authz;
mod blobs;
mod budgets;
mod cluster;
mod delivery;
mod documents;
mod edge;
mod fixtures;
mod fuzz;
mod http_features;
mod hub_budget;
mod idempotency;
mod limits;
mod memory;
mod messages;
mod notifications;
mod pg_faults;
mod presence_typing;
mod privacy;
mod push;
mod queries;
mod read_markers;
mod recovery;
mod redaction;
mod roles;
mod rooms;
mod shutdown;
mod smoke;
mod store_outage;
mod tokens;
mod trust;
mod ws_protocol;
