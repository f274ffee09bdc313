//! Standalone status writer: one YAML file per object under a directory,
//! `<dir>/<kind>/<namespace or _cluster>/<name>.yaml`, written only when the
//! content changed. `lastTransitionTime` is kept while a condition's status
//! stays the same, as on a real API server.
//!
//! A route's file may also hold `notes:` next to `status` (never inside it,
//! so `status` stays what the API server would store): lines for people,
//! e.g. shadowed rules (docs/shadowed-rules.md). A file whose notes change
//! is rewritten; notes that go away are removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::inputs::{Kind, ObjKey};
use crate::status::{ObjectStatus, StatusSet};

pub struct FileStatusWriter {
    dir: PathBuf,
    /// What is on disk now, by object.
    written: BTreeMap<(Kind, ObjKey), Written>,
    writes: u64,
    /// Notes to write next to objects' status (see [`Self::set_notes`]).
    notes: BTreeMap<(Kind, ObjKey), Vec<String>>,
}

struct Written {
    /// The `status` written, as compact JSON (its condition times are kept
    /// for the next write); parsed again only when the object changes.
    status: Box<str>,
    typed: ObjectStatus,
    notes: Vec<String>,
}

/// A name as one path component, or `None` when it could be anything else.
/// Names are checked as the API server checks them when they are loaded
/// (DNS-1123); this is the second line of defence: only `[A-Za-z0-9._-]`,
/// not starting with a dot, at most 253 bytes — nothing that could name a
/// parent, a subdirectory or a hidden file.
fn component(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    ok.then_some(name)
}

/// `<dir>/<kind>/<namespace or _cluster>/<name>.yaml`, or `None` when the
/// namespace or name is not a safe path component.
fn path_for(dir: &Path, kind: Kind, key: &ObjKey) -> Option<PathBuf> {
    let ns = if key.namespace.is_empty() {
        "_cluster"
    } else {
        component(&key.namespace)?
    };
    let name = component(&key.name)?;
    Some(
        dir.join(kind.as_str().to_ascii_lowercase())
            .join(ns)
            .join(format!("{name}.yaml")),
    )
}

fn refused(kind: Kind, key: &ObjKey) {
    let shown = |s: &str| crate::provider::file::names::shown(s);
    tracing::error!(
        kind = kind.as_str(),
        namespace = %shown(&key.namespace),
        name = %shown(&key.name),
        "status not written: the name is not a safe file name"
    );
    crate::metrics::catalogue::STATUS_REFUSED.inc([kind.as_str()]);
}

use crate::status::{now_rfc3339, stamp_conditions, without_times};

impl FileStatusWriter {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStatusWriter {
            dir: dir.into(),
            written: BTreeMap::new(),
            writes: 0,
            notes: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of status files written so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The notes the next [`Self::write`] puts next to objects' status
    /// (objects absent from `notes` get none).
    pub fn set_notes(&mut self, notes: &BTreeMap<(Kind, ObjKey), Vec<String>>) {
        self.notes.clone_from(notes);
    }

    /// Writes what changed and removes files of objects that have no status any more.
    pub fn write(&mut self, set: &StatusSet) -> std::io::Result<usize> {
        let now = now_rfc3339();
        let mut changed = 0;
        for ((kind, key), st) in &set.objects {
            let id = (*kind, key.clone());
            let notes = self.notes.get(&id).map(Vec::as_slice).unwrap_or_default();
            // Unchanged objects cost one comparison: no serialisation, no I/O.
            if self
                .written
                .get(&id)
                .is_some_and(|w| &w.typed == st && w.notes == notes)
            {
                continue;
            }
            let Some(path) = path_for(&self.dir, *kind, key) else {
                refused(*kind, key);
                continue;
            };
            let mut status = serde_json::to_value(st).unwrap_or(Value::Null);
            let prev: Option<Value> = self
                .written
                .get(&id)
                .and_then(|w| serde_json::from_str(&w.status).ok());
            let prev = prev.as_ref();
            let same_notes = self.written.get(&id).is_some_and(|w| w.notes == notes);
            if same_notes && prev.map(without_times).as_ref() == Some(&status) {
                if let Some(w) = self.written.get_mut(&id) {
                    w.typed = st.clone();
                }
                continue;
            }
            stamp_conditions(&mut status, prev, &now);
            let mut meta = serde_json::Map::new();
            meta.insert("name".into(), key.name.clone().into());
            if !key.namespace.is_empty() {
                meta.insert("namespace".into(), key.namespace.clone().into());
            }
            let compact = status.to_string().into_boxed_str();
            let mut doc =
                serde_json::json!({"kind": kind.as_str(), "metadata": meta, "status": status});
            if !notes.is_empty() {
                doc["notes"] = notes.into();
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = path.with_extension("yaml.tmp");
            std::fs::write(&tmp, crate::pipeline::to_yaml(&doc))?;
            std::fs::rename(&tmp, &path)?;
            changed += 1;
            crate::metrics::catalogue::STATUS_WRITES.inc([kind.as_str()]);
            self.written.insert(
                id,
                Written {
                    status: compact,
                    typed: st.clone(),
                    notes: notes.to_vec(),
                },
            );
        }
        if self.written.len() > set.objects.len() {
            let gone: Vec<(Kind, ObjKey)> = self
                .written
                .keys()
                .filter(|k| !set.objects.contains_key(*k))
                .cloned()
                .collect();
            for k in gone {
                if self.written.remove(&k).is_some() {
                    if let Some(p) = path_for(&self.dir, k.0, &k.1) {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
        }
        self.writes += changed as u64;
        Ok(changed)
    }

    /// Writes the current load errors to `<dir>/errors.yaml` (removed when none).
    pub fn write_errors(&self, errors: &[crate::provider::file::LoadError]) -> std::io::Result<()> {
        let path = self.dir.join("errors.yaml");
        if errors.is_empty() {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let v = serde_json::json!({ "errors": errors });
        let tmp = self.dir.join(".errors.yaml.tmp");
        std::fs::write(&tmp, crate::pipeline::to_yaml(&v))?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Condition, ObjectStatus};

    #[test]
    fn writes_only_on_change_and_keeps_transition_times() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-status-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = FileStatusWriter::new(&dir);
        let key = ObjKey::new("apps", "r");
        let mut set = StatusSet::default();
        let st = |ok: bool| ObjectStatus::Conditions {
            conditions: vec![Condition::new("Accepted", ok, "Accepted", "m", 1)],
        };
        set.objects.insert((Kind::HTTPRoute, key.clone()), st(true));
        assert_eq!(w.write(&set).expect("write"), 1);
        let path = dir.join("httproute/apps/r.yaml");
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(text.contains("lastTransitionTime"), "{text}");
        assert!(text.contains("observedGeneration: 1"), "{text}");
        assert_eq!(
            w.write(&set).expect("write"),
            0,
            "unchanged status is not rewritten"
        );
        set.objects
            .insert((Kind::HTTPRoute, key.clone()), st(false));
        assert_eq!(w.write(&set).expect("write"), 1);
        set.objects.clear();
        w.write(&set).expect("write");
        assert!(!path.exists(), "status of a deleted object is removed");
        assert_eq!(now_rfc3339().len(), 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn notes_sit_next_to_the_status_and_go_when_cleared() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-status-notes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = FileStatusWriter::new(&dir);
        let id = (Kind::HTTPRoute, ObjKey::new("apps", "r"));
        let mut set = StatusSet::default();
        set.objects.insert(
            id.clone(),
            ObjectStatus::Conditions {
                conditions: vec![Condition::new("Accepted", true, "Accepted", "m", 1)],
            },
        );
        assert_eq!(w.write(&set).expect("write"), 1);
        let path = dir.join("httproute/apps/r.yaml");
        let before = std::fs::read_to_string(&path).expect("file");
        let mut notes = BTreeMap::new();
        notes.insert(id, vec!["rule 1 (match 0) can never match".to_string()]);
        w.set_notes(&notes);
        assert_eq!(
            w.write(&set).expect("write"),
            1,
            "a new note rewrites the file"
        );
        let doc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("file")).expect("yaml");
        assert_eq!(doc["notes"][0], "rule 1 (match 0) can never match");
        assert!(doc["status"].get("notes").is_none(), "never inside status");
        assert_eq!(w.write(&set).expect("write"), 0);
        w.set_notes(&BTreeMap::new());
        assert_eq!(w.write(&set).expect("write"), 1);
        assert_eq!(std::fs::read_to_string(&path).expect("file"), before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hostile_names_never_leave_the_directory() {
        let base =
            std::env::temp_dir().join(format!("switchyard-status-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("status");
        let mut w = FileStatusWriter::new(&dir);
        let long = "a".repeat(300);
        let hostile = [
            ObjKey::new("default", "../../x"),
            ObjKey::new("default", "a/b"),
            ObjKey::new("default", ".."),
            ObjKey::new("default", "."),
            ObjKey::new("default", ""),
            ObjKey::new("default", "a\0b"),
            ObjKey::new("default", long.as_str()),
            ObjKey::new("default", "日本"),
            ObjKey::new("default", ".hidden"),
            ObjKey::new("..", "x"),
            ObjKey::new("../..", "x"),
            ObjKey::new("a/b", "x"),
        ];
        let mut set = StatusSet::default();
        let st = ObjectStatus::Conditions {
            conditions: vec![Condition::new("Accepted", true, "Accepted", "m", 1)],
        };
        for k in &hostile {
            set.objects.insert((Kind::HTTPRoute, k.clone()), st.clone());
        }
        set.objects
            .insert((Kind::HTTPRoute, ObjKey::new("default", "ok")), st.clone());
        assert_eq!(
            w.write(&set).expect("write"),
            1,
            "only the safe name is written"
        );
        let mut found = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("dir").flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    found.push(e.path());
                }
            }
        }
        assert_eq!(found, vec![dir.join("httproute/default/ok.yaml")]);
        set.objects.clear();
        w.write(&set).expect("write");
        let _ = std::fs::remove_dir_all(&base);
    }
}
