//! Status patches the API server accepted whose result the watch has not
//! delivered yet.
//!
//! A status pass compares what it wants with the object as last watched. A
//! pass that runs before the watch brings back the object it just patched
//! would see the old status and send the same patch again. This remembers,
//! per object, the `resourceVersion` a patch was computed from and the status
//! sent: while the watched object is still at that version, the same status
//! is not sent again. Once the object moved on (the watch delivered our write,
//! or someone else's), the entry is dropped and the object itself decides.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::inputs::{Kind, ObjKey};

#[derive(Debug, Default)]
pub struct SentPatches {
    sent: Mutex<BTreeMap<(Kind, ObjKey), (Value, Value)>>,
}

impl SentPatches {
    /// `status` was accepted for the object at version `rv`.
    pub fn record(&self, kind: Kind, key: &ObjKey, rv: Value, status: Value) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.insert((kind, key.clone()), (rv, status));
        }
    }

    /// Whether `status` was already accepted for this object at version `rv`.
    pub fn already(&self, kind: Kind, key: &ObjKey, rv: &Value, status: &Value) -> bool {
        let Ok(mut sent) = self.sent.lock() else {
            return false;
        };
        let id = (kind, key.clone());
        match sent.get(&id) {
            Some((at, what)) if at == rv => what == status,
            Some(_) => {
                sent.remove(&id);
                false
            }
            None => false,
        }
    }

    /// Nothing to write for the object any more.
    pub fn forget(&self, kind: Kind, key: &ObjKey) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.remove(&(kind, key.clone()));
        }
    }

    /// Keeps the entries of objects `keep` still holds.
    pub fn retain(&self, keep: impl Fn(&(Kind, ObjKey)) -> bool) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.retain(|k, _| keep(k));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sent.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjKey {
        ObjKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_same_status_at_the_same_version_is_not_sent_twice() {
        let s = SentPatches::default();
        let st = json!({"parents": [{"conditions": [{"type": "Accepted", "status": "True"}]}]});
        assert!(!s.already(Kind::HTTPRoute, &key("a"), &json!("10"), &st));
        s.record(Kind::HTTPRoute, &key("a"), json!("10"), st.clone());
        assert!(s.already(Kind::HTTPRoute, &key("a"), &json!("10"), &st));
        // Another object, or another kind with the same name, is not affected.
        assert!(!s.already(Kind::HTTPRoute, &key("b"), &json!("10"), &st));
        assert!(!s.already(Kind::Gateway, &key("a"), &json!("10"), &st));
    }

    #[test]
    fn a_different_status_at_the_same_version_is_sent() {
        let s = SentPatches::default();
        s.record(Kind::HTTPRoute, &key("a"), json!("10"), json!({"x": 1}));
        assert!(!s.already(Kind::HTTPRoute, &key("a"), &json!("10"), &json!({"x": 2})));
        // The entry stays: the object has not moved on yet.
        assert!(s.already(Kind::HTTPRoute, &key("a"), &json!("10"), &json!({"x": 1})));
    }

    #[test]
    fn once_the_object_moved_on_the_entry_is_dropped() {
        let s = SentPatches::default();
        s.record(Kind::HTTPRoute, &key("a"), json!("10"), json!({"x": 1}));
        // The watch delivered version 11 (our write or another's): the object decides.
        assert!(!s.already(Kind::HTTPRoute, &key("a"), &json!("11"), &json!({"x": 1})));
        assert_eq!(s.len(), 0);
        s.record(Kind::HTTPRoute, &key("a"), json!("11"), json!({"x": 1}));
        s.forget(Kind::HTTPRoute, &key("a"));
        assert!(!s.already(Kind::HTTPRoute, &key("a"), &json!("11"), &json!({"x": 1})));
        s.record(Kind::HTTPRoute, &key("b"), json!("3"), json!({}));
        s.retain(|k| k.1.name != "b");
        assert_eq!(s.len(), 0);
    }
}
