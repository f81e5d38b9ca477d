//! The upgrade: the handshake's checks (`Sec-WebSocket-Key`, the token, the rate of
//! connects), the socket slots that keep the caps whatever the concurrency, and the `101`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use roam_proto::ErrorCode;

use crate::auth::bearer;
use crate::compress;
use crate::error::ApiError;
use crate::AppState;

use super::run;

/// True for a `Sec-WebSocket-Key` that is the base64 of 16 bytes (RFC 6455 §4.1, §4.2.1): 22
/// characters of the base64 alphabet and `==`.
pub(super) fn websocket_key_is_valid(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Why a socket slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefused {
    #[error("the server holds as many sockets as it may")]
    Total,
    #[error("the user holds as many sockets as one may")]
    PerUser,
}

#[derive(Debug, Default)]
pub(super) struct SlotCounts {
    total: usize,
    per_user: HashMap<Arc<str>, usize>,
}

/// The socket caps (`--max-sockets`, `--max-sockets-per-user`). A handshake takes a slot before
/// it answers 101 and the slot is given back when the socket ends (or the upgrade fails), so
/// concurrent handshakes cannot pass the caps between a check and the socket's registration.
#[derive(Debug)]
pub struct SocketSlots {
    max_total: usize,
    max_per_user: usize,
    counts: parking_lot::Mutex<SlotCounts>,
}

/// One taken socket slot; dropping it gives it back.
#[derive(Debug)]
pub struct SocketSlot {
    slots: Arc<SocketSlots>,
    user: Arc<str>,
}

impl SocketSlots {
    pub fn new(max_total: usize, max_per_user: usize) -> SocketSlots {
        SocketSlots {
            max_total,
            max_per_user,
            counts: parking_lot::Mutex::new(SlotCounts::default()),
        }
    }

    /// Takes a slot for `user`, or says which cap is full.
    pub fn take(self: &Arc<Self>, user: &str) -> Result<SocketSlot, SlotRefused> {
        let mut c = self.counts.lock();
        if c.total >= self.max_total {
            return Err(SlotRefused::Total);
        }
        let user: Arc<str> = match c.per_user.get_key_value(user) {
            Some((_, n)) if *n >= self.max_per_user => return Err(SlotRefused::PerUser),
            Some((u, _)) => Arc::clone(u),
            None => Arc::from(user),
        };
        c.total += 1;
        *c.per_user.entry(Arc::clone(&user)).or_insert(0) += 1;
        Ok(SocketSlot {
            slots: Arc::clone(self),
            user,
        })
    }

    /// Slots taken: in total, and by `user`.
    pub fn taken(&self, user: &str) -> (usize, usize) {
        let c = self.counts.lock();
        (c.total, c.per_user.get(user).copied().unwrap_or(0))
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut c = self.slots.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_user.remove(&self.user);
            }
        }
    }
}

/// Checks that `parts` asks for a WebSocket (RFC 6455 §4.2.1) and returns the value of its
/// `Sec-WebSocket-Accept`.
pub(super) fn websocket_accept(parts: &Parts) -> Result<HeaderValue, ApiError> {
    let has = |name: header::HeaderName, want: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    let bad = |m: &str| ApiError::new(ErrorCode::InvalidInput, m.to_owned());
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(bad(
            "this endpoint speaks WebSocket: send `Connection: upgrade` and `Upgrade: websocket`",
        ));
    }
    if parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(bad("`Sec-WebSocket-Version` must be 13"));
    }
    let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(bad("`Sec-WebSocket-Key` is missing"));
    };
    if !websocket_key_is_valid(key.as_bytes()) {
        return Err(bad(
            "`Sec-WebSocket-Key` must be the base64 of 16 bytes (24 characters)",
        ));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).map_err(|_| bad("`Sec-WebSocket-Key` is not valid"))
}

/// Upgrades after checking the token, the connect rate, the socket caps and that the server is
/// not draining.
pub async fn handler(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let accept = match websocket_accept(&parts) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::new(
            ErrorCode::InvalidInput,
            "this connection cannot be upgraded to a WebSocket",
        )
        .into_response();
    };
    if state.shutdown.is_cancelled() {
        return ApiError::new(ErrorCode::Unavailable, "the server is shutting down")
            .into_response();
    }
    let caller = match bearer(&parts, true).and_then(|t| state.keys.verify(&t)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state
        .service
        .suspensions
        .check(&*state.service.store, &caller.user, caller.iat)
        .await
    {
        return e.into_response();
    }
    let slot = match state.sockets.take(&caller.user) {
        Ok(slot) => slot,
        Err(SlotRefused::Total) => {
            state.service.metrics.sockets_refused("total");
            return ApiError::new(
                ErrorCode::Unavailable,
                "this server holds as many sockets as it may; retry later or elsewhere",
            )
            .into_response();
        }
        Err(SlotRefused::PerUser) => {
            state.service.metrics.sockets_refused("per_user");
            return ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} sockets per user; close one first",
                    state.config.max_sockets_per_user
                ),
            )
            .into_response();
        }
    };
    if let Err(e) = state.service.limits.connect(&caller.user) {
        state.service.metrics.limited("connect");
        return e.into_response();
    }
    let compress = parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == format!("compress={}", compress::DEFLATE))
    });
    let tracker = state.tasks.clone();
    tokio::spawn(tracker.track_future(async move {
        // Held until the socket ends (or the upgrade fails).
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => run(state, TokioIo::new(upgraded), caller, compress).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    }));
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_key_must_be_the_base64_of_16_bytes() {
        assert!(websocket_key_is_valid(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(websocket_key_is_valid(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25j",
            b"dGhlIHNhbXBsZSBub25jZQ.=",
            b"dGhlIHNhbXBsZSBub25jZQAA",
            b"dGhlIHNhbXBsZSBub25jZSBsb25nZXI=",
        ] {
            assert!(
                !websocket_key_is_valid(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(!websocket_key_is_valid(&[b'A'; 8192]));
    }

    #[test]
    fn socket_slots_hold_their_caps_under_concurrent_takers() {
        let slots = Arc::new(SocketSlots::new(10, 4));
        let barrier = Arc::new(std::sync::Barrier::new(32));
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let slots = Arc::clone(&slots);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    // Half of them as one user, the rest as 16 others.
                    let user = if i % 2 == 0 {
                        "alice".to_owned()
                    } else {
                        format!("u{i}")
                    };
                    slots.take(&user).ok()
                })
            })
            .collect();
        let held: Vec<SocketSlot> = threads
            .into_iter()
            .filter_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(held.len(), 10, "exactly the total cap");
        assert!(slots.taken("alice").1 <= 4, "the per-user cap");
        assert_eq!(
            slots.take("bob").map(|_| ()),
            Err(SlotRefused::Total),
            "full"
        );
        drop(held);
        assert_eq!(slots.taken("alice"), (0, 0), "every slot given back");
        let mine: Vec<_> = (0..4).filter_map(|_| slots.take("alice").ok()).collect();
        assert_eq!(mine.len(), 4);
        assert_eq!(slots.take("alice").map(|_| ()), Err(SlotRefused::PerUser));
    }
}
