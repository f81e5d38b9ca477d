//! `roam-ffi`: the UniFFI layer that turns Roam into a Swift and Kotlin API.
//!
//! Everything here is a thin wrapper: the work is done by `roam-core` and `roam-proto`, and this
//! crate only translates types, errors, async functions and listeners across the FFI with
//! uniffi's proc-macros: [`RoamClient`] forwards every call to the core's `Client`. The
//! generated sources live in `ios/Sources/Roam/Roam.swift` and
//! `android/src/main/kotlin/dev/roam/roam_ffi.kt`; `scripts/gen-bindings.sh` regenerates them.
//!
//! One file per concern: `client.rs` (the exported client), `types.rs` (records and enums, each
//! converted from the core's type in one place), `error.rs` ([`RoamError`] and the one mapping
//! from the core's error), `listeners.rs` (listener traits and [`SubscriptionHandle`]),
//! `auth.rs` ([`TokenProvider`]), `timeline.rs` ([`RoamTimeline`]), `room_list.rs`
//! ([`RoamRoomList`]), `push.rs` ([`PushHandler`] and the push calls of the client), `collab.rs`
//! ([`RoamCollabDoc`], collaborative documents), `runtime.rs` (the tokio runtime), `logging.rs` (`tracing` to the app's logger).
//!
//! Conventions for listeners and async calls across the FFI:
//! - async Rust functions become Swift `async` and Kotlin `suspend` functions; they run on the
//!   library's tokio runtime, so the core's tokio I/O works under them, and cancelling the
//!   Swift `Task` or Kotlin coroutine that awaits one leaves the client working;
//! - callback traits are `XxxListener` with `on_xxx` methods, registered by `subscribe_xxx`,
//!   which returns a [`SubscriptionHandle`] that stops them when closed or released;
//! - every fallible call returns [`RoamError`], a Swift `Error` and a Kotlin `RoamException`.
//!
//! ```
//! assert_eq!(roam_ffi::protocol_version(), roam_proto::PROTOCOL_VERSION);
//! assert!(roam_ffi::validate_room_name("general".into()).is_ok());
//! assert!(roam_ffi::validate_room_name("no spaces".into()).is_err());
//! ```

mod auth;
mod client;
mod collab;
mod error;
mod listeners;
mod logging;
mod push;
mod room_list;
mod runtime;
mod timeline;
mod types;

use std::time::{Duration, Instant};

pub use auth::{TokenProvider, TokenReply};
pub use client::RoamClient;
pub use collab::{
    AwarenessListener, CollabChange, CollabError, CollabListener, CollabPeer, CollabValueChange,
    ListDelta, MapKeyChange, RoamCollabDoc, TextDelta, TextSelection,
};
pub use error::RoamError;
pub use listeners::{
    ConnectionListener, DocumentListener, NotificationListener, PresenceListener, RoomListListener,
    RoomListener, SubscriptionHandle, SyncStatusListener, TimelineListener, TypingListener,
    UploadListener,
};
pub use logging::{set_log_listener, LogLevel, LogListener};
pub use push::{PushContent, PushContentKind, PushHandler, PushMode, PushPlatform, PushSettings};
pub use room_list::RoamRoomList;
pub use timeline::RoamTimeline;
pub use types::{
    Attachment, AttachmentDetails, ClientOptions, ConnectionState, Document, DocumentUpdate,
    DocumentVersion, Member, MemberStatus, Message, MetricsSnapshot, OutboxEntry, Presence,
    PresenceStatus, RoamNotification, Role, Room, RoomKind, RoomListDiff, RoomSummary, RoomUpdate,
    SendState, SyncPhase, SyncStatus, TimelineDiff, UploadProgress, UploadState,
};

uniffi::setup_scaffolding!();

/// How long [`ping_server`] waits for the TCP connection before giving up.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The version of the Roam wire protocol this library speaks (the `v` of every frame).
#[uniffi::export]
pub fn protocol_version() -> u32 {
    roam_proto::PROTOCOL_VERSION
}

/// Checks a room name against the protocol's rules (1 to 64 ASCII letters, digits, `-`, `_` or
/// `.`, starting with a letter or digit), so an app can tell the user before sending anything.
#[uniffi::export]
pub fn validate_room_name(name: String) -> Result<(), RoamError> {
    roam_proto::validate::room_name(&name).map_err(|err| {
        tracing::debug!(target: "roam_ffi", reason = %err, "room name refused");
        RoamError::from(err)
    })
}

/// Opens a TCP connection to the host and port of a server URL (`ws`, `wss`, `http` or `https`)
/// and returns how long that took, in milliseconds; the connection is closed at once.
///
/// Apps call it to tell "the server is unreachable" from "the server refused" before asking the
/// user to check their network. Fails with [`RoamError::InvalidInput`] for a bad URL and with
/// [`RoamError::Network`] when the connection is refused, fails or takes more than 5 s.
#[uniffi::export(async_runtime = "tokio")]
pub async fn ping_server(url: String) -> Result<u64, RoamError> {
    let (host, port) = host_and_port(&url)?;
    let started = Instant::now();
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    let stream = match tokio::time::timeout(PING_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::info!(target: "roam_ffi", %url, error = %err, "server unreachable");
            return Err(RoamError::Network {
                reason: format!("cannot connect to {host}:{port}: {err}"),
            });
        }
        Err(_) => {
            tracing::info!(target: "roam_ffi", %url, "server did not answer in time");
            return Err(RoamError::Network {
                reason: format!("no answer from {host}:{port} within {PING_TIMEOUT:?}"),
            });
        }
    };
    drop(stream);
    let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(target: "roam_ffi", %url, millis, "server reachable");
    Ok(millis)
}

/// The host and port a server URL points at, with the scheme's default port.
fn host_and_port(url: &str) -> Result<(String, u16), RoamError> {
    let invalid = |reason: String| RoamError::InvalidInput { reason };
    let uri: http::Uri = url
        .parse()
        .map_err(|err| invalid(format!("invalid server URL {url:?}: {err}")))?;
    let default_port = match uri.scheme_str() {
        Some("ws" | "http") => 80,
        Some("wss" | "https") => 443,
        Some(other) => {
            return Err(invalid(format!(
                "unsupported URL scheme {other:?}: use ws, wss, http or https"
            )))
        }
        None => return Err(invalid(format!("server URL {url:?} has no scheme"))),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid(format!("server URL {url:?} has no host")))?;
    // IPv6 literals come back bracketed ("[::1]"); the resolver wants them bare.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_defaults_by_scheme() {
        assert_eq!(
            host_and_port("wss://roam.example/ws").ok(),
            Some(("roam.example".to_owned(), 443))
        );
        assert_eq!(
            host_and_port("ws://127.0.0.1:8080/ws").ok(),
            Some(("127.0.0.1".to_owned(), 8080))
        );
        assert_eq!(
            host_and_port("http://[::1]:9/").ok(),
            Some(("::1".to_owned(), 9))
        );
        assert!(matches!(
            host_and_port("ftp://x"),
            Err(RoamError::InvalidInput { .. })
        ));
        assert!(matches!(
            host_and_port("no scheme"),
            Err(RoamError::InvalidInput { .. })
        ));
    }

    #[test]
    fn room_names() {
        assert!(validate_room_name("general".into()).is_ok());
        assert!(matches!(
            validate_room_name(String::new()),
            Err(RoamError::InvalidInput { .. })
        ));
    }

    #[tokio::test]
    async fn ping_reaches_a_listener_and_reports_a_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ok = ping_server(format!("ws://127.0.0.1:{port}/ws")).await;
        assert!(ok.is_ok(), "{ok:?}");
        drop(listener);
        let refused = ping_server(format!("ws://127.0.0.1:{port}/ws")).await;
        assert!(
            matches!(refused, Err(RoamError::Network { .. })),
            "{refused:?}"
        );
    }
}
