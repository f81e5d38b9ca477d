//! Push notifications (protocol §11): the registration of a device, the notification modes,
//! and the `roam` object a device receives through APNs, FCM or a webhook.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of [`PushPayload`] (its `v`).
pub const PUSH_PAYLOAD_VERSION: u32 = 1;

/// The gateway a device's token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushPlatform {
    /// Apple Push Notification service (token auth, HTTP/2).
    Apns,
    /// Firebase Cloud Messaging, HTTP v1 API.
    Fcm,
    /// The deployment's own push service, called with a signed `POST`.
    Webhook,
}

impl PushPlatform {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PushPlatform::Apns => "apns",
            PushPlatform::Fcm => "fcm",
            PushPlatform::Webhook => "webhook",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "apns" => Some(PushPlatform::Apns),
            "fcm" => Some(PushPlatform::Fcm),
            "webhook" => Some(PushPlatform::Webhook),
            _ => None,
        }
    }
}

/// Which messages of a room push to a user's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushMode {
    /// Every message from someone else.
    All,
    /// Messages that mention the user, and every message of a direct room (a private room of
    /// exactly two members).
    Mentions,
    /// Nothing.
    Mute,
    /// In `push.set_mode` with a room only: remove the room's override, so the account default
    /// applies. Never stored, never answered.
    Default,
}

impl PushMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PushMode::All => "all",
            PushMode::Mentions => "mentions",
            PushMode::Mute => "mute",
            PushMode::Default => "default",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(PushMode::All),
            "mentions" => Some(PushMode::Mentions),
            "mute" => Some(PushMode::Mute),
            "default" => Some(PushMode::Default),
            _ => None,
        }
    }
}

/// A registered device, as `push.register` and `GET /v1/push/devices` answer it. The token is
/// never echoed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDevice {
    /// The client's stable device id.
    pub device: String,
    pub platform: PushPlatform,
    /// The APNs topic (bundle id), or the FCM or webhook app id.
    pub app_id: String,
    /// BCP-47 language tag the device's notifications are localised for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// APNs development environment.
    #[serde(default)]
    pub sandbox: bool,
    pub registered_at: i64,
}

/// A user's notification modes: the account default and the rooms that override it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSettings {
    /// `all`, `mentions` or `mute` (`all` until the user sets it).
    pub default: PushMode,
    /// Room name → `all`, `mentions` or `mute`.
    #[serde(default)]
    pub rooms: BTreeMap<String, PushMode>,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            default: PushMode::All,
            rooms: BTreeMap::new(),
        }
    }
}

impl PushSettings {
    /// The mode that applies to `room`: its override, else the account default.
    pub fn mode_for(&self, room: &str) -> PushMode {
        self.rooms.get(room).copied().unwrap_or(self.default)
    }
}

/// What a push is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    /// A new message the user should hear about.
    Message,
    /// The user read the room up to `seq` on some device: remove its notifications up to there.
    Read,
}

impl PushKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::Message => "message",
            PushKind::Read => "read",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "message" => Some(PushKind::Message),
            "read" => Some(PushKind::Read),
            _ => None,
        }
    }
}

/// The message text of a push, sent only when the deployment enables previews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPreview {
    pub sender: String,
    pub room_title: String,
    pub body: String,
}

/// The `roam` object every push carries (APNs: beside `aps`; FCM: as the JSON string of the
/// data key `roam`; webhook: in the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPayload {
    /// [`PUSH_PAYLOAD_VERSION`].
    pub v: u32,
    pub kind: PushKind,
    pub room: String,
    /// `message`: the message's event seq. `read`: the read marker.
    pub seq: u64,
    /// `message`: the message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The badge: the user's unread count.
    pub unread: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PushPreview>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_wire_shape() {
        let p = PushPayload {
            v: PUSH_PAYLOAD_VERSION,
            kind: PushKind::Message,
            room: "general".into(),
            seq: 42,
            message: Some("m1".into()),
            unread: 3,
            preview: None,
        };
        let json = serde_json::to_value(&p).expect("serialise");
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "kind": "message", "room": "general", "seq": 42,
                "message": "m1", "unread": 3})
        );
        let back: PushPayload = serde_json::from_value(json).expect("parse");
        assert_eq!(back, p);
        let read: PushPayload = serde_json::from_str(
            r#"{"v":1,"kind":"read","room":"r","seq":9,"unread":0,"later":true}"#,
        )
        .expect("unknown fields are ignored");
        assert_eq!(read.kind, PushKind::Read);
        assert_eq!(read.message, None);
    }

    #[test]
    fn settings_and_modes() {
        let mut s = PushSettings::default();
        assert_eq!(s.mode_for("a"), PushMode::All);
        s.rooms.insert("a".into(), PushMode::Mute);
        assert_eq!(s.mode_for("a"), PushMode::Mute);
        assert_eq!(
            serde_json::to_value(&s).expect("serialise"),
            serde_json::json!({"default": "all", "rooms": {"a": "mute"}})
        );
        for m in [
            PushMode::All,
            PushMode::Mentions,
            PushMode::Mute,
            PushMode::Default,
        ] {
            assert_eq!(PushMode::parse(m.as_str()), Some(m));
        }
        for p in [PushPlatform::Apns, PushPlatform::Fcm, PushPlatform::Webhook] {
            assert_eq!(PushPlatform::parse(p.as_str()), Some(p));
        }
    }
}
