//! The bodies each gateway sends (protocol §11.3), within each platform's size limit.

use roam_proto::{PushKind, PushPayload};
use serde_json::{json, Value};

/// APNs refuses a payload over 4 KiB (`PayloadTooLarge`).
pub const APNS_MAX_BYTES: usize = 4096;
/// FCM refuses a message whose data is over 4 KiB.
pub const FCM_MAX_DATA_BYTES: usize = 4096;
/// The generic alert title, localised on the device by `ROAM_NEW_MESSAGE`.
pub const GENERIC_TITLE: &str = "New message";
pub const TITLE_LOC_KEY: &str = "ROAM_NEW_MESSAGE";
/// `apns-collapse-id` is at most 64 bytes.
pub const MAX_COLLAPSE_ID: usize = 64;

/// The collapse id (APNs) and thread id of a room: its name (room names are at most 64 ASCII
/// bytes, so this never cuts; kept as a guard).
pub fn collapse_id(room: &str) -> &str {
    let mut end = room.len().min(MAX_COLLAPSE_ID);
    while !room.is_char_boundary(end) {
        end -= 1;
    }
    &room[..end]
}

/// The APNs body.
pub fn apns(p: &PushPayload) -> Value {
    match p.kind {
        PushKind::Message => {
            let mut alert = json!({"title": GENERIC_TITLE, "title-loc-key": TITLE_LOC_KEY});
            if let Some(pv) = &p.preview {
                alert["subtitle"] = json!(pv.room_title);
                alert["body"] = json!(format!("{}: {}", pv.sender, pv.body));
            }
            json!({
                "aps": {
                    "alert": alert,
                    "mutable-content": 1,
                    "thread-id": p.room,
                    "badge": p.unread,
                    "sound": "default",
                },
                "roam": p,
            })
        }
        PushKind::Read => json!({
            "aps": {"content-available": 1, "badge": p.unread},
            "roam": p,
        }),
    }
}

/// The FCM HTTP v1 message (data only: FCM data values are strings).
pub fn fcm(token: &str, p: &PushPayload) -> Value {
    let priority = match p.kind {
        PushKind::Message => "HIGH",
        PushKind::Read => "NORMAL",
    };
    json!({
        "message": {
            "token": token,
            "data": {"roam": serde_json::to_string(p).unwrap_or_default()},
            "android": {"priority": priority, "collapse_key": collapse_id(&p.room)},
        }
    })
}

/// The FCM data size: keys and values of `data`.
pub fn fcm_data_bytes(p: &PushPayload) -> usize {
    "roam".len() + serde_json::to_string(p).map_or(usize::MAX, |s| s.len())
}

/// Cuts the preview's body to the longest prefix (in characters, ending with `…`) with which
/// `size(p)` fits `max`, dropping the preview if even an empty body does not fit: text never
/// makes a push fail. Returns false if even without a preview it does not fit.
pub fn fit(p: &mut PushPayload, max: usize, size: impl Fn(&PushPayload) -> usize) -> bool {
    if size(p) <= max {
        return true;
    }
    if let Some(pv) = p.preview.take() {
        let chars: Vec<char> = pv.body.chars().collect();
        let with = |n: usize| {
            let mut body: String = chars[..n].iter().collect();
            if n > 0 {
                body.push('…');
            }
            PushPayload {
                preview: Some(roam_proto::PushPreview { body, ..pv.clone() }),
                ..p.clone()
            }
        };
        // The longest prefix that fits: binary search over its length in characters.
        let (mut lo, mut hi) = (0usize, chars.len());
        if size(&with(0)) <= max {
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if size(&with(mid)) <= max {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            *p = with(lo);
            return true;
        }
    }
    size(p) <= max
}

/// The size of the APNs body of `p`.
pub fn apns_bytes(p: &PushPayload) -> usize {
    serde_json::to_vec(&apns(p)).map_or(usize::MAX, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_proto::{PushPreview, PUSH_PAYLOAD_VERSION};

    fn message(body: &str) -> PushPayload {
        PushPayload {
            v: PUSH_PAYLOAD_VERSION,
            kind: PushKind::Message,
            room: "team".into(),
            seq: 7,
            message: Some("m7".into()),
            unread: 2,
            preview: Some(PushPreview {
                sender: "alice".into(),
                room_title: "Team".into(),
                body: body.into(),
            }),
        }
    }

    #[test]
    fn apns_shapes() {
        let mut p = message("hi");
        p.preview = None;
        let v = apns(&p);
        assert_eq!(v["aps"]["mutable-content"], 1);
        assert_eq!(v["aps"]["thread-id"], "team");
        assert_eq!(v["aps"]["badge"], 2);
        assert_eq!(v["aps"]["alert"]["title-loc-key"], TITLE_LOC_KEY);
        assert!(
            v["aps"]["alert"].get("body").is_none(),
            "no text without previews"
        );
        assert_eq!(v["roam"]["seq"], 7);
        p.kind = PushKind::Read;
        let v = apns(&p);
        assert_eq!(v["aps"]["content-available"], 1);
        assert!(v["aps"].get("alert").is_none());
    }

    #[test]
    fn fcm_is_data_only_with_string_values() {
        let p = message("hi");
        let v = fcm("tok", &p);
        assert!(v["message"].get("notification").is_none());
        let roam = v["message"]["data"]["roam"].as_str().expect("a string");
        let back: PushPayload = serde_json::from_str(roam).expect("the roam object");
        assert_eq!(back, p);
        assert_eq!(v["message"]["android"]["priority"], "HIGH");
        assert_eq!(v["message"]["android"]["collapse_key"], "team");
    }

    #[test]
    fn long_previews_are_cut_to_fit() {
        let mut p = message(&"é".repeat(10_000));
        assert!(apns_bytes(&p) > APNS_MAX_BYTES);
        assert!(fit(&mut p, APNS_MAX_BYTES, apns_bytes));
        assert!(apns_bytes(&p) <= APNS_MAX_BYTES);
        let body = p.preview.as_ref().expect("kept").body.clone();
        assert!(body.ends_with('…'));
        // The longest that fits (the text is in the alert and in `roam`): one more character
        // would not.
        let mut longer = p.clone();
        if let Some(pv) = longer.preview.as_mut() {
            pv.body = format!("{}é…", body.trim_end_matches('…'));
        }
        assert!(apns_bytes(&longer) > APNS_MAX_BYTES);
        let mut q = message(&"\u{1}".repeat(5_000));
        assert!(fit(&mut q, FCM_MAX_DATA_BYTES, fcm_data_bytes));
        assert!(fcm_data_bytes(&q) <= FCM_MAX_DATA_BYTES);
    }
}
