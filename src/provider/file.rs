//! Standalone provider: multi-document Kubernetes YAML from a directory.
//!
//! Each file is parsed on its own. A file that fails (bad YAML, a document
//! that does not decode) keeps contributing its last good contents, and the
//! error names the file, the line and the object/field — nothing that was
//! working stops working because of a typo.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::inputs::{Changes, InputError, Inputs, Kind, ObjKey};

/// One problem found while loading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadError {
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
    /// Whether an earlier good version of the file is still in use.
    pub using_last_good: bool,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message)?,
            None => write!(f, "{}: {}", self.file, self.message)?,
        }
        if self.using_last_good {
            write!(f, " (keeping the last good version of this file)")?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct FileState {
    stamp: (SystemTime, u64),
    content_hash: String,
    /// Whether a version of the file loaded cleanly (its objects are served).
    good: bool,
    error: Option<LoadError>,
    /// Objects this file contributes to the snapshot now.
    objects: Vec<(Kind, ObjKey)>,
    /// Content hash of each of `objects` (an unchanged object of a changed
    /// file is not reported as changed).
    hashes: Vec<u64>,
}

/// Loads a directory incrementally: only changed files are re-parsed, and the
/// snapshot is updated in place (their old objects out, new ones in).
pub struct DirLoader {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    inputs: Inputs,
    /// Which file defines each object (the last one loaded wins).
    owners: HashMap<(Kind, ObjKey), PathBuf>,
}

/// What one `refresh` found.
#[derive(Debug, Default)]
pub struct Refresh {
    /// Objects added, changed or removed.
    pub changes: Changes,
    /// Every current problem (including files still failing from before).
    pub errors: Vec<LoadError>,
}

/// Parses one file into JSON documents, checking that each decodes.
pub fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, (Option<usize>, String)> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let start_line = None::<usize>;
        let v = serde_yaml::Value::deserialize(doc)
            .map_err(|e| (e.location().map(|l| l.line()).or(start_line), e.to_string()))?;
        if v.is_null() {
            continue;
        }
        let json: serde_json::Value =
            serde_json::to_value(&v).map_err(|e| (None, e.to_string()))?;
        match json {
            serde_json::Value::Object(ref m)
                if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                if let Some(items) = m.get("items").and_then(|i| i.as_array()) {
                    docs.extend(items.iter().cloned());
                }
            }
            other => docs.push(other),
        }
    }
    Ok(docs)
}

/// Line where the n-th document (0-based) starts, for error messages.
fn document_line(text: &str, n: usize) -> Option<usize> {
    let mut idx = 0;
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            if seen_content {
                idx += 1;
                seen_content = false;
            }
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !seen_content {
            seen_content = true;
            if idx == n {
                return Some(i + 1);
            }
        }
    }
    None
}

impl DirLoader {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirLoader {
            dir: dir.into(),
            files: BTreeMap::new(),
            inputs: Inputs::default(),
            owners: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot as of the last `refresh`.
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// For provider-level additions (e.g. assigned addresses).
    pub fn inputs_mut(&mut self) -> &mut Inputs {
        &mut self.inputs
    }

    /// Rescans the directory and builds a fresh snapshot (a copy).
    pub fn load(&mut self, controller_name: &str) -> (Inputs, Vec<LoadError>) {
        let r = self.refresh(controller_name);
        (self.inputs.clone(), r.errors)
    }

    /// Rescans the directory, re-parses changed files only, and updates the
    /// snapshot in place.
    pub fn refresh(&mut self, controller_name: &str) -> Refresh {
        let mut out = Refresh::default();
        if self.inputs.controller_name != controller_name {
            self.inputs = Inputs::new(controller_name);
            self.owners.clear();
            self.files.clear();
            out.changes.record_all();
        }
        let mut paths = Vec::new();
        collect_yaml(&self.dir, &mut paths);
        let present: BTreeSet<PathBuf> = paths.iter().cloned().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(f) = self.files.remove(&p) {
                self.retract(&p, &f.objects, &mut out.changes);
            }
        }
        for path in &present {
            self.load_file(path, controller_name, &mut out);
        }
        out.errors = self.errors();
        out
    }

    /// Like [`DirLoader::refresh`], but only looks at `paths` (from file
    /// events): a rescan of thousands of files per edit is what it saves.
    /// Paths outside the directory, hidden files and non-YAML files are
    /// ignored; a path that is gone retracts its objects.
    pub fn refresh_paths(&mut self, controller_name: &str, paths: &BTreeSet<PathBuf>) -> Refresh {
        if self.inputs.controller_name != controller_name {
            return self.refresh(controller_name);
        }
        let mut out = Refresh::default();
        for path in paths {
            if !is_config_file(&self.dir, path) {
                continue;
            }
            if path.is_file() {
                self.load_file(path, controller_name, &mut out);
            } else if let Some(f) = self.files.remove(path) {
                self.retract(path, &f.objects, &mut out.changes);
            }
        }
        out.errors = self.errors();
        out
    }

    fn errors(&self) -> Vec<LoadError> {
        self.files
            .values()
            .filter_map(|f| f.error.clone())
            .collect()
    }

    /// (Re)loads one file if it changed since it was last read.
    fn load_file(&mut self, path: &PathBuf, controller_name: &str, out: &mut Refresh) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if self.files.get(path).is_some_and(|f| f.stamp == stamp) {
            return;
        }
        let prev = self.files.remove(path);
        let prev_objects = prev.as_ref().map(|f| f.objects.clone()).unwrap_or_default();
        let prev_hashes = prev.as_ref().map(|f| f.hashes.clone()).unwrap_or_default();
        let prev_good = prev.as_ref().is_some_and(|f| f.good);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.files.insert(
                    path.clone(),
                    FileState {
                        stamp,
                        content_hash: String::new(),
                        error: Some(LoadError {
                            file: path.display().to_string(),
                            line: None,
                            message: format!("cannot read: {e}"),
                            using_last_good: prev_good,
                        }),
                        good: prev_good,
                        objects: prev_objects.clone(),
                        hashes: prev_hashes.clone(),
                    },
                );
                return;
            }
        };
        let hash = crate::xds::content_version(text.as_bytes());
        if let Some(mut f) = prev.clone().filter(|f| f.content_hash == hash) {
            f.stamp = stamp;
            self.files.insert(path.clone(), f);
            return;
        }
        let result = parse_documents(&text).and_then(|docs| {
            // Every document must decode on its own before the file counts as good.
            let mut probe = Inputs::new(controller_name);
            for (i, d) in docs.iter().enumerate() {
                probe
                    .insert_value(d.clone())
                    .map_err(|e: InputError| (document_line(&text, i), e.to_string()))?;
            }
            Ok(docs)
        });
        match result {
            Ok(docs) => {
                let mut old: HashMap<(Kind, ObjKey), u64> = prev_objects
                    .iter()
                    .cloned()
                    .zip(prev_hashes.iter().copied())
                    .collect();
                self.retract(path, &prev_objects, &mut Changes::default());
                let mut objects = Vec::with_capacity(docs.len());
                let mut hashes = Vec::with_capacity(docs.len());
                for d in docs {
                    let h = doc_hash(&d);
                    // Decoded fine in the probe above.
                    if let Ok((kind, key)) = self.inputs.insert_value(d) {
                        let unknown = self.inputs.unknown(kind, &key);
                        if !unknown.is_empty() {
                            tracing::warn!(kind = kind.as_str(), object = %key, fields = ?unknown,
                                           "unknown fields (reported in status where they matter)");
                        }
                        if old.remove(&(kind, key.clone())) != Some(h) {
                            out.changes.record(kind, &key);
                        }
                        self.owners.insert((kind, key.clone()), path.clone());
                        objects.push((kind, key));
                        hashes.push(h);
                    }
                }
                // Objects the file no longer has.
                for (kind, key) in old.keys() {
                    out.changes.record(*kind, key);
                }
                self.files.insert(
                    path.clone(),
                    FileState {
                        stamp,
                        content_hash: hash,
                        good: true,
                        error: None,
                        objects,
                        hashes,
                    },
                );
            }
            Err((line, message)) => {
                self.files.insert(
                    path.clone(),
                    FileState {
                        stamp,
                        content_hash: hash,
                        error: Some(LoadError {
                            file: path.display().to_string(),
                            line,
                            message,
                            using_last_good: prev_good,
                        }),
                        good: prev_good,
                        objects: prev_objects.clone(),
                        hashes: prev_hashes.clone(),
                    },
                );
            }
        }
    }

    /// Removes the objects `file` contributed (unless another file now owns them).
    fn retract(&mut self, file: &Path, objects: &[(Kind, ObjKey)], changes: &mut Changes) {
        for (kind, key) in objects {
            let id = (*kind, key.clone());
            if self.owners.get(&id).map(|p| p.as_path()) == Some(file) {
                self.owners.remove(&id);
                self.inputs.remove(*kind, key);
                changes.record(*kind, key);
            }
        }
    }
}

/// Content hash of a manifest.
fn doc_hash(d: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    d.to_string().hash(&mut h);
    h.finish()
}

/// Whether `path` is a file the loader reads: a `.yaml`/`.yml` file under
/// `dir`, with no hidden component.
fn is_config_file(dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    let hidden = rel
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    !hidden && yaml
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect_yaml(&p, out);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "switchyard-file-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: n\nspec:\n  ports:\n  - port: 80\n";

    #[test]
    fn malformed_file_names_file_and_line_and_keeps_last_good() {
        let d = tmpdir("malformed");
        let f = d.join("svc.yaml");
        std::fs::write(&f, SVC).expect("write");
        let mut loader = DirLoader::new(&d);
        let (inputs, errors) = loader.load("c");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(inputs.services.len(), 1);

        // Break the YAML on line 3.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: [oops\n").expect("write");
        let (inputs, errors) = loader.load("c");
        assert_eq!(inputs.services.len(), 1, "last good version still served");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].file.ends_with("svc.yaml"));
        assert!(errors[0].line.is_some(), "{:?}", errors[0]);
        assert!(errors[0].using_last_good);
        assert!(errors[0].to_string().contains("svc.yaml:"), "{}", errors[0]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_field_names_object_field_and_document_line() {
        let d = tmpdir("badfield");
        let text = format!("{SVC}---\n# second\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  gatewayClassName: [1]\n  listeners: []\n");
        std::fs::write(d.join("x.yaml"), text).expect("write");
        let (inputs, errors) = DirLoader::new(&d).load("c");
        assert_eq!(
            inputs.services.len(),
            0,
            "a file with a bad document is not half-applied"
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(11));
        assert!(
            errors[0].message.contains("Gateway default/g"),
            "{}",
            errors[0].message
        );
        assert!(
            errors[0].message.contains("spec.gatewayClassName"),
            "{}",
            errors[0].message
        );
        assert!(!errors[0].using_last_good);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refresh_paths_loads_and_retracts_only_the_named_files() {
        let d = tmpdir("paths");
        std::fs::write(d.join("a.yaml"), SVC).expect("write");
        let mut loader = DirLoader::new(&d);
        let r = loader.refresh("c");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(loader.inputs().services.len(), 1);

        let b = d.join("b.yaml");
        std::fs::write(&b, SVC.replace("name: a", "name: b")).expect("write");
        // A file not named is not looked at.
        let r = loader.refresh_paths("c", &BTreeSet::new());
        assert!(r.changes.is_empty());
        assert_eq!(loader.inputs().services.len(), 1);
        let r = loader.refresh_paths("c", &BTreeSet::from([b.clone(), d.join(".b.yaml.tmp")]));
        assert_eq!(loader.inputs().services.len(), 2);
        assert!(r
            .changes
            .objects
            .contains(&(Kind::Service, ObjKey::new("n", "b"))));
        assert_eq!(r.changes.objects.len(), 1);

        // A file of two objects with one edited reports only that one.
        let two = format!(
            "{}---\n{}",
            SVC.replace("name: a", "name: c"),
            SVC.replace("name: a", "name: e")
        );
        std::fs::write(d.join("two.yaml"), &two).expect("write");
        loader.refresh_paths("c", &BTreeSet::from([d.join("two.yaml")]));
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(
            d.join("two.yaml"),
            two.replace("port: 80\n---", "port: 81\n---"),
        )
        .expect("write");
        let r = loader.refresh_paths("c", &BTreeSet::from([d.join("two.yaml")]));
        assert_eq!(
            r.changes.objects,
            BTreeSet::from([(Kind::Service, ObjKey::new("n", "c"))])
        );

        std::fs::remove_file(d.join("a.yaml")).expect("rm");
        let r = loader.refresh_paths("c", &BTreeSet::from([d.join("a.yaml")]));
        assert_eq!(loader.inputs().services.len(), 3, "b, c and e remain");
        assert!(r
            .changes
            .objects
            .contains(&(Kind::Service, ObjKey::new("n", "a"))));
        let _ = std::fs::remove_dir_all(&d);
    }
}
