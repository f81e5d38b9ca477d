//! Push notifications across the FFI: the registration calls of [`RoamClient`], and
//! [`PushHandler`] for a notification service extension (iOS) or a `FirebaseMessagingService`
//! (Android), which opens the account's store next to the running app (see `roam_core::push`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{TokenProvider, Tokens};
use crate::client::RoamClient;
use crate::error::RoamError;
use crate::runtime::{run, runtime};
use crate::types::ClientOptions;

/// The push gateway a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PushPlatform {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging.
    Fcm,
    /// The deployment's own push service.
    Webhook,
}

impl From<PushPlatform> for roam_core::PushPlatform {
    fn from(p: PushPlatform) -> Self {
        match p {
            PushPlatform::Apns => roam_core::PushPlatform::Apns,
            PushPlatform::Fcm => roam_core::PushPlatform::Fcm,
            PushPlatform::Webhook => roam_core::PushPlatform::Webhook,
        }
    }
}

/// Which messages push: every message from someone else, mentions (and direct rooms), none;
/// `Default` (for a room only) removes the room's override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PushMode {
    All,
    Mentions,
    Mute,
    Default,
}

impl From<PushMode> for roam_core::PushMode {
    fn from(m: PushMode) -> Self {
        match m {
            PushMode::All => roam_core::PushMode::All,
            PushMode::Mentions => roam_core::PushMode::Mentions,
            PushMode::Mute => roam_core::PushMode::Mute,
            PushMode::Default => roam_core::PushMode::Default,
        }
    }
}

impl From<roam_core::PushMode> for PushMode {
    fn from(m: roam_core::PushMode) -> Self {
        match m {
            roam_core::PushMode::All => PushMode::All,
            roam_core::PushMode::Mentions => PushMode::Mentions,
            roam_core::PushMode::Mute => PushMode::Mute,
            roam_core::PushMode::Default => PushMode::Default,
        }
    }
}

/// The notification modes: the account default and the rooms that override it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PushSettings {
    pub default_mode: PushMode,
    pub rooms: HashMap<String, PushMode>,
}

impl From<roam_core::PushSettings> for PushSettings {
    fn from(s: roam_core::PushSettings) -> Self {
        PushSettings {
            default_mode: s.default.into(),
            rooms: s.rooms.into_iter().map(|(k, v)| (k, v.into())).collect(),
        }
    }
}

/// What a notification should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PushContentKind {
    /// Show this content.
    Show,
    /// Remove the room's notifications up to `seq`, and set the badge.
    Clear,
}

/// What to show for a push (see `PushHandler.handle_push`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PushContent {
    pub kind: PushContentKind,
    /// The room: use it as the thread / group of the notification.
    pub room: String,
    pub room_title: String,
    /// `nil`/`null` for generic content (the message could not be had within the deadline).
    pub sender: Option<String>,
    /// The text, or a word for a file without a caption; `nil`/`null` for generic content.
    pub body: Option<String>,
    /// The message's seq (`Show`), or the read marker (`Clear`).
    pub seq: u64,
    pub message_id: Option<String>,
    pub badge: u64,
}

impl From<roam_core::PushContent> for PushContent {
    fn from(c: roam_core::PushContent) -> Self {
        PushContent {
            kind: match c.kind {
                roam_core::PushContentKind::Show => PushContentKind::Show,
                roam_core::PushContentKind::Clear => PushContentKind::Clear,
            },
            room: c.room,
            room_title: c.room_title,
            sender: c.sender,
            body: c.body,
            seq: c.seq,
            message_id: c.message,
            badge: c.badge,
        }
    }
}

/// Answers pushes in a notification service extension or a `FirebaseMessagingService`, next to
/// the running app: opens the account's existing store read-only (never `AlreadyOpen`) with the
/// app's `ClientOptions` and a token provider.
#[derive(Debug, uniffi::Object)]
pub struct PushHandler {
    inner: Arc<roam_core::PushHandler>,
}

#[uniffi::export]
impl PushHandler {
    /// Opens the handler. Fails with `NotFound` when the app never opened this account here, and
    /// with `StoreVersion` when the store's schema is not this library's (update or open the
    /// app).
    #[uniffi::constructor]
    pub fn new(
        options: ClientOptions,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<Arc<Self>, RoamError> {
        let _guard = runtime()?.enter();
        let inner = roam_core::PushHandler::open(&options.to_core()?, Arc::new(Tokens(tokens)))?;
        Ok(Arc::new(PushHandler {
            inner: Arc::new(inner),
        }))
    }

    /// What to show for a push: `payload_json` is the APNs `userInfo` or the FCM data map as
    /// JSON. Answers within `deadline_ms` (generic content when the message could not be fetched
    /// in time); fails only on a payload it cannot read (`InvalidInput`) or an unreadable store.
    pub async fn handle_push(
        &self,
        payload_json: String,
        deadline_ms: u64,
    ) -> Result<PushContent, RoamError> {
        let inner = Arc::clone(&self.inner);
        run(async move {
            inner
                .handle_push(&payload_json, Duration::from_millis(deadline_ms))
                .await
        })
        .await
        .map(Into::into)
    }
}

#[uniffi::export]
impl RoamClient {
    /// This device's push id: made once per account store and kept.
    pub fn push_device_id(&self) -> Result<String, RoamError> {
        self.call(|c| c.push_device_id())
    }

    /// Registers this device's push token (through the outbox: sent when the link is up).
    /// `app_id`: the bundle id (APNs topic) or the FCM app id; `sandbox`: APNs development.
    /// Returns the outbox entry id.
    pub fn register_push(
        &self,
        platform: PushPlatform,
        token: String,
        app_id: String,
        sandbox: bool,
        locale: Option<String>,
    ) -> Result<String, RoamError> {
        self.call(|c| c.register_push(platform.into(), token, app_id, sandbox, locale))
    }

    /// Removes this device's push registration (before signing out). Returns the outbox entry
    /// id.
    pub fn unregister_push(&self) -> Result<String, RoamError> {
        self.call(|c| c.unregister_push())
    }

    /// Sets a room's notification mode, or the account default when `room` is nil/null.
    /// Returns the outbox entry id.
    pub fn set_push_mode(&self, room: Option<String>, mode: PushMode) -> Result<String, RoamError> {
        self.call(|c| c.set_push_mode(room, mode.into()))
    }

    /// The notification modes as known here, pending changes included.
    pub fn push_settings(&self) -> Result<PushSettings, RoamError> {
        self.call(|c| c.push_settings()).map(Into::into)
    }

    /// Fetches the notification modes from the server, then answers like `push_settings`.
    pub async fn refresh_push_settings(&self) -> Result<PushSettings, RoamError> {
        let core = self.core()?;
        run(async move { core.refresh_push_settings().await })
            .await
            .map(Into::into)
    }
}
