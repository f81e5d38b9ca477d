//! Conversions between yrs values and events and the core's records (JSON text, deltas).

use std::sync::Arc;

use serde_json::Value;
use yrs::types::array::ArrayEvent;
use yrs::types::map::MapEvent;
use yrs::types::text::TextEvent;
use yrs::types::{Attrs, Change, Delta, EntryChange, ToJson};
use yrs::{Any, Out, ReadTxn, TransactionMut};

use crate::error::{Error, Result};
use crate::model::{ListDelta, MapKeyChange, TextDelta};

/// What stands in a text delta for an embedded value (Yjs's object replacement character): one
/// UTF-16 unit, like the embed itself.
const EMBED: &str = "\u{FFFC}";

/// A JSON value as yrs stores it.
pub(super) fn any_of(value: Value) -> Result<Any> {
    serde_json::from_value(value).map_err(|e| Error::invalid(format!("not a storable value: {e}")))
}

/// Formatting attributes from a JSON object.
pub(super) fn attrs_of(value: Value) -> Result<Attrs> {
    let Value::Object(map) = value else {
        return Err(Error::invalid("attributes must be a JSON object"));
    };
    map.into_iter()
        .map(|(k, v)| Ok((Arc::<str>::from(k), any_of(v)?)))
        .collect()
}

/// JSON text of a stored value (a nested shared type, which only another Yjs client can put
/// there, as its JSON content).
pub(super) fn json_of<T: ReadTxn>(txn: &T, out: &Out) -> String {
    let any = match out {
        Out::Any(any) => any.clone(),
        other => other.to_json(txn),
    };
    any_json(&any)
}

/// JSON text with object keys sorted (yrs keeps them in a hash map), so equal values read
/// equal.
fn any_json(any: &Any) -> String {
    serde_json::to_value(any)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "null".to_owned())
}

/// JSON text of formatting attributes, keys sorted.
pub(super) fn attrs_json(attrs: &Attrs) -> String {
    let map: std::collections::BTreeMap<&str, &Any> =
        attrs.iter().map(|(k, v)| (k.as_ref(), v)).collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned())
}

/// The text of an inserted piece (an embed counts as one placeholder character).
fn inserted_text<T: ReadTxn>(txn: &T, out: &Out) -> String {
    match out {
        Out::Any(Any::String(s)) => s.to_string(),
        Out::YText(t) => {
            use yrs::GetString;
            t.get_string(txn)
        }
        _ => EMBED.to_owned(),
    }
}

pub(super) fn text_delta(txn: &TransactionMut, event: &TextEvent) -> Vec<TextDelta> {
    event
        .delta(txn)
        .iter()
        .map(|d| match d {
            Delta::Inserted(out, attrs) => TextDelta::Insert {
                text: inserted_text(txn, out),
                attributes: attrs.as_deref().map(attrs_json),
            },
            Delta::Deleted(len) => TextDelta::Delete { len: *len },
            Delta::Retain(len, attrs) => TextDelta::Retain {
                len: *len,
                attributes: attrs.as_deref().map(attrs_json),
            },
        })
        .collect()
}

/// The content of a text as inserts (one per run of equal formatting).
pub(super) fn text_content<T: ReadTxn>(txn: &T, text: &yrs::TextRef) -> Vec<TextDelta> {
    use yrs::Text;
    text.diff(txn, yrs::types::text::YChange::identity)
        .into_iter()
        .map(|d| TextDelta::Insert {
            text: inserted_text(txn, &d.insert),
            attributes: d.attributes.as_deref().map(attrs_json),
        })
        .collect()
}

pub(super) fn list_delta(txn: &TransactionMut, event: &ArrayEvent) -> Vec<ListDelta> {
    event
        .delta(txn)
        .iter()
        .map(|c| match c {
            Change::Added(values) => ListDelta::Insert {
                values: values.iter().map(|v| json_of(txn, v)).collect(),
            },
            Change::Removed(len) => ListDelta::Delete { len: *len },
            Change::Retain(len) => ListDelta::Retain { len: *len },
        })
        .collect()
}

pub(super) fn map_keys(txn: &TransactionMut, event: &MapEvent) -> Vec<MapKeyChange> {
    let mut keys: Vec<MapKeyChange> = event
        .keys(txn)
        .iter()
        .map(|(k, c)| MapKeyChange {
            key: k.to_string(),
            value: match c {
                EntryChange::Inserted(v) | EntryChange::Updated(_, v) => Some(json_of(txn, v)),
                EntryChange::Removed(_) => None,
            },
        })
        .collect();
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_as_json() {
        let any = any_of(serde_json::json!({"a": [1, "x", true, null]})).expect("storable");
        let back: Value = serde_json::from_str(&any_json(&any)).expect("json");
        assert_eq!(back, serde_json::json!({"a": [1, "x", true, null]}));
        assert!(attrs_of(serde_json::json!([1])).is_err());
        let attrs = attrs_of(serde_json::json!({"bold": true, "a": 1})).expect("attrs");
        assert_eq!(attrs_json(&attrs), r#"{"a":1,"bold":true}"#);
    }
}
