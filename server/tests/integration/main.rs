//! Integration tests: the real server on 127.0.0.1:0, driven over real HTTP and WebSocket
//! connections. One module per feature; shared fixtures in `fixtures`.

mod fixtures;
mod smoke;
