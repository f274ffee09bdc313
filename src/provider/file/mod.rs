//! Standalone provider: multi-document Kubernetes YAML from a directory.
//!
//! Each file is parsed on its own. A file that fails (bad YAML, a document
//! that does not decode, a name the API server would refuse, a limit
//! exceeded) keeps contributing its last good contents — also across a
//! restart, from the copy saved by [`LastGoodStore`] — and the error names
//! the file, the line and the object/field: nothing that was working stops
//! working because of a typo.
//!
//! Reading is bounded ([`Limits`]): file and document sizes, nesting depth
//! (checked before the YAML parser sees the text), file count, directory
//! depth, a parse deadline, and symlink loops read once. Objects that vanish
//! from a file (emptied, truncated, removed) are kept for
//! [`Limits::settle`] in case the file is being rewritten in place. An object
//! defined by several files is reported on each; the first file by path is
//! served, and the object stays while any of them defines it.

mod defs;
mod limits;
pub mod names;
mod parse;
mod persist;
mod walk;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

pub use limits::{check_text, Limits};
pub use parse::{parse_documents, parse_documents_with, parse_file, ParseError, ParsedObject};
pub use persist::LastGoodStore;

use crate::inputs::{Changes, Inputs, Kind, ObjKey};
use parse::BoundedParser;

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

type Id = (Kind, ObjKey);

#[derive(Clone)]
struct FileState {
    stamp: (SystemTime, u64),
    content_hash: String,
    /// Whether the objects served come from a version that loaded cleanly.
    good: bool,
    error: Option<LoadError>,
    /// Objects this file defines now (content hash of each), lingering ones included.
    objects: BTreeMap<Id, u64>,
    /// Objects that vanished from the file, kept until `linger_until`.
    lingering: BTreeSet<Id>,
    linger_until: Option<Instant>,
    /// Text of the version whose objects are served.
    text: Option<Arc<str>>,
    /// The file is gone (its objects linger until `linger_until`).
    gone: bool,
}

/// Loads a directory incrementally: only changed files are re-parsed, and the
/// snapshot is updated in place (their old objects out, new ones in).
pub struct DirLoader {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    inputs: Inputs,
    /// Which files define each object, with the content hash of each
    /// definition; the first by path is the one in `inputs`.
    defs: HashMap<Id, defs::Definitions>,
    /// Objects defined by more than one file.
    dups: BTreeSet<Id>,
    parser: BoundedParser,
    store: Option<LastGoodStore>,
    /// Directories the last scan read.
    dirs: HashSet<PathBuf>,
    walk_errors: Vec<LoadError>,
    /// Last good copies to write (`None`: remove).
    persist_queue: BTreeMap<PathBuf, Option<Arc<str>>>,
    /// A complete scan happened: copies of files that are gone can go.
    retain_due: bool,
    /// Files parsed again during one refresh (a duplicate's other definition).
    reparsed: HashMap<PathBuf, Vec<ParsedObject>>,
}

/// What one `refresh` found.
#[derive(Debug, Default)]
pub struct Refresh {
    /// Objects added, changed or removed.
    pub changes: Changes,
    /// Every current problem (including files still failing from before).
    pub errors: Vec<LoadError>,
    /// When objects kept for a vanished file are due to be checked again
    /// (call [`DirLoader::refresh_paths`] then, with no paths).
    pub recheck_at: Option<Instant>,
}

impl DirLoader {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirLoader {
            dir: dir.into(),
            files: BTreeMap::new(),
            inputs: Inputs::default(),
            defs: HashMap::new(),
            dups: BTreeSet::new(),
            parser: BoundedParser::new(Limits::default()),
            store: None,
            dirs: HashSet::new(),
            walk_errors: Vec::new(),
            persist_queue: BTreeMap::new(),
            retain_due: false,
            reparsed: HashMap::new(),
        }
    }

    /// Uses `limits` instead of [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.parser = BoundedParser::new(limits);
        self
    }

    /// Saves the last good version of every file in `store` (see
    /// [`DirLoader::persist`]) and, for a file that fails on first sight,
    /// serves the saved version.
    pub fn with_last_good(mut self, store: LastGoodStore) -> Self {
        self.store = Some(store);
        self
    }

    pub fn limits(&self) -> &Limits {
        self.parser.limits()
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

    fn reset_if_controller_changed(&mut self, controller_name: &str, out: &mut Refresh) -> bool {
        if self.inputs.controller_name == controller_name {
            return false;
        }
        self.inputs = Inputs::new(controller_name);
        self.files.clear();
        self.defs.clear();
        self.dups.clear();
        out.changes.record_all();
        true
    }

    /// Rescans the directory, re-parses changed files only, and updates the
    /// snapshot in place.
    pub fn refresh(&mut self, controller_name: &str) -> Refresh {
        let mut out = Refresh::default();
        self.reset_if_controller_changed(controller_name, &mut out);
        let w = walk::walk(&self.dir, self.parser.limits());
        self.dirs = w.dirs;
        self.walk_errors = w
            .errors
            .into_iter()
            .map(|(p, message)| LoadError {
                file: p.display().to_string(),
                line: None,
                message,
                using_last_good: false,
            })
            .collect();
        let present: BTreeSet<PathBuf> = w.files.into_iter().collect();
        // Files not seen are gone; a scan stopped by a limit proves nothing,
        // so then only those with vanished objects due are looked at.
        let now = Instant::now();
        let unseen: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(p, f)| {
                !present.contains(*p) && (w.complete || f.linger_until.is_some_and(|t| now >= t))
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in unseen {
            if w.complete {
                self.file_gone(&p, &mut out);
            } else {
                self.load_file(&p, &mut out);
            }
        }
        self.retain_due |= w.complete;
        for path in &present {
            self.load_file(path, &mut out);
        }
        self.finish(out)
    }

    /// Like [`DirLoader::refresh`], but only looks at `paths` (from file
    /// events) and at files whose vanished objects are due to be checked:
    /// a rescan of thousands of files per edit is what it saves. Paths
    /// outside the directory, hidden files and non-YAML files are ignored;
    /// a path that is gone retracts its objects (after [`Limits::settle`]).
    /// A new file in a directory the last scan did not read means a rescan.
    pub fn refresh_paths(&mut self, controller_name: &str, paths: &BTreeSet<PathBuf>) -> Refresh {
        if self.inputs.controller_name != controller_name {
            return self.refresh(controller_name);
        }
        let now = Instant::now();
        let mut todo: BTreeSet<PathBuf> = paths
            .iter()
            .filter(|p| is_config_file(&self.dir, p))
            .cloned()
            .collect();
        todo.extend(
            self.files
                .iter()
                .filter(|(_, f)| f.linger_until.is_some_and(|t| now >= t))
                .map(|(p, _)| p.clone()),
        );
        let max_files = self.parser.limits().max_files;
        let mut new_files = 0;
        for p in &todo {
            if self.files.contains_key(p) {
                continue;
            }
            new_files += 1;
            let known_dir = p.parent().is_some_and(|d| self.dirs.contains(d));
            if !known_dir || self.files.len() + new_files > max_files {
                return self.refresh(controller_name);
            }
        }
        let mut out = Refresh::default();
        for path in &todo {
            self.load_file(path, &mut out);
        }
        self.finish(out)
    }

    fn finish(&mut self, mut out: Refresh) -> Refresh {
        self.reparsed.clear();
        out.errors = self.errors();
        out.recheck_at = self.files.values().filter_map(|f| f.linger_until).min();
        out
    }

    /// Writes the last good copies queued by the refreshes so far (call it
    /// after the new configuration is pushed: it is off the critical path).
    pub fn persist(&mut self) {
        let queue = std::mem::take(&mut self.persist_queue);
        let Some(store) = &self.store else {
            return;
        };
        for (path, text) in queue {
            let Ok(rel) = path.strip_prefix(&self.dir) else {
                continue;
            };
            match text {
                Some(t) => {
                    if let Err(e) = store.store(rel, &t) {
                        tracing::warn!(file = %path.display(), dir = %store.dir().display(),
                                       "saving the last good version: {e}");
                    }
                }
                None => store.remove(rel),
            }
        }
        if std::mem::take(&mut self.retain_due) {
            let keep: HashSet<PathBuf> = self
                .files
                .keys()
                .filter_map(|p| p.strip_prefix(&self.dir).ok().map(Path::to_path_buf))
                .collect();
            store.retain(&keep);
        }
    }

    fn errors(&self) -> Vec<LoadError> {
        let mut v = self.walk_errors.clone();
        v.extend(self.files.values().filter_map(|f| f.error.clone()));
        for id in &self.dups {
            let Some(defs) = self.defs.get(id) else {
                continue;
            };
            let files: Vec<String> = defs.paths().map(|p| p.display().to_string()).collect();
            let message = format!(
                "{} {} is defined in {} files: {}; the first by path ({}) is served, and the \
                 object stays while any of them defines it",
                id.0.as_str(),
                id.1,
                files.len(),
                files.join(", "),
                files[0]
            );
            for f in &files {
                v.push(LoadError {
                    file: f.clone(),
                    line: None,
                    message: message.clone(),
                    using_last_good: false,
                });
            }
        }
        v
    }

    /// (Re)loads one file if it changed since it was last read, or if
    /// objects that vanished from it are due to be removed.
    fn load_file(&mut self, path: &Path, out: &mut Refresh) {
        let meta = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => m,
            _ => return self.file_gone(path, out),
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let now = Instant::now();
        let prev = self.files.get(path);
        let due = prev.and_then(|f| f.linger_until).is_some_and(|t| now >= t);
        let unchanged = |f: &FileState| !due && !f.gone;
        if prev.is_some_and(|f| f.stamp == stamp && unchanged(f)) {
            return;
        }
        let max = self.parser.limits().max_file_bytes;
        if meta.len() > max {
            let msg = format!("file is {} bytes; the limit is {max}", meta.len());
            return self.fail(path, stamp, String::new(), None, msg, out);
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return self.fail(
                    path,
                    stamp,
                    String::new(),
                    None,
                    format!("cannot read: {e}"),
                    out,
                )
            }
        };
        let hash = crate::xds::content_version(text.as_bytes());
        if let Some(f) = self.files.get_mut(path) {
            if f.content_hash == hash && unchanged(f) {
                f.stamp = stamp;
                return;
            }
        }
        let text: Arc<str> = text.into();
        match self.parser.parse(text.clone()) {
            Ok(objects) => self.set_objects(path, stamp, hash, text, objects, None, out),
            Err((line, message)) => self.fail(path, stamp, hash, line, message, out),
        }
    }

    /// A version of the file that cannot be used: its last good objects stay
    /// (on first sight, those of the copy an earlier run saved).
    fn fail(
        &mut self,
        path: &Path,
        stamp: (SystemTime, u64),
        hash: String,
        line: Option<usize>,
        message: String,
        out: &mut Refresh,
    ) {
        let file = path.display().to_string();
        if let Some(f) = self.files.get_mut(path) {
            f.stamp = stamp;
            f.content_hash = hash;
            f.gone = false;
            // Everything served stays, also what was about to be removed.
            f.lingering.clear();
            f.linger_until = None;
            f.error = Some(LoadError {
                file,
                line,
                message,
                using_last_good: f.good,
            });
            return;
        }
        let rel = path.strip_prefix(&self.dir).ok();
        let max = self.parser.limits().max_file_bytes;
        let saved = self
            .store
            .as_ref()
            .zip(rel)
            .and_then(|(s, rel)| Some((s.load(rel, max)?, s.path_for(rel))));
        if let Some((saved, saved_at)) = saved {
            let saved: Arc<str> = saved.into();
            if let Ok(objects) = self.parser.parse(saved.clone()) {
                let err = LoadError {
                    file,
                    line,
                    message: format!(
                        "{message} (serving the last good version saved in {})",
                        saved_at.display()
                    ),
                    using_last_good: true,
                };
                return self.set_objects(path, stamp, hash, saved, objects, Some(err), out);
            }
        }
        self.files.insert(
            path.to_path_buf(),
            FileState {
                stamp,
                content_hash: hash,
                good: false,
                error: Some(LoadError {
                    file,
                    line,
                    message,
                    using_last_good: false,
                }),
                objects: BTreeMap::new(),
                lingering: BTreeSet::new(),
                linger_until: None,
                text: None,
                gone: false,
            },
        );
    }

    /// Makes `objects` what `path` defines. Objects the file no longer has
    /// are kept until [`Limits::settle`] has passed since they vanished.
    #[allow(clippy::too_many_arguments)]
    fn set_objects(
        &mut self,
        path: &Path,
        stamp: (SystemTime, u64),
        hash: String,
        text: Arc<str>,
        parsed: Vec<ParsedObject>,
        error: Option<LoadError>,
        out: &mut Refresh,
    ) {
        let now = Instant::now();
        let settle = self.parser.limits().settle;
        let prev = self.files.remove(path);
        let (old, linger_until) = prev
            .map(|f| (f.objects, f.linger_until))
            .unwrap_or_default();
        let mut objects = BTreeMap::new();
        let shared: Arc<Path> = Arc::from(path);
        for o in parsed {
            objects.insert((o.kind, o.key.clone()), o.hash);
            self.define(&shared, o, &mut out.changes);
        }
        let lost: Vec<(Id, u64)> = old
            .into_iter()
            .filter(|(id, _)| !objects.contains_key(id))
            .collect();
        let mut lingering = BTreeSet::new();
        let mut until = None;
        if !lost.is_empty() {
            let deadline = linger_until.unwrap_or(now + settle);
            if now >= deadline {
                for (id, _) in &lost {
                    self.undefine(path, id, &mut out.changes);
                }
            } else {
                for (id, h) in lost {
                    lingering.insert(id.clone());
                    objects.insert(id, h);
                }
                until = Some(deadline);
            }
        }
        if error.is_none() {
            self.persist_queue
                .insert(path.to_path_buf(), Some(text.clone()));
        }
        self.files.insert(
            path.to_path_buf(),
            FileState {
                stamp,
                content_hash: hash,
                good: true,
                error,
                objects,
                lingering,
                linger_until: until,
                text: Some(text),
                gone: false,
            },
        );
    }

    /// The file is gone: its objects go after [`Limits::settle`].
    fn file_gone(&mut self, path: &Path, out: &mut Refresh) {
        let now = Instant::now();
        let settle = self.parser.limits().settle;
        let Some(f) = self.files.get_mut(path) else {
            return;
        };
        if !f.gone {
            f.gone = true;
            f.lingering = f.objects.keys().cloned().collect();
            f.linger_until = Some(f.linger_until.unwrap_or(now + settle));
        }
        if !f.objects.is_empty() && f.linger_until.is_some_and(|t| now < t) {
            return;
        }
        if let Some(f) = self.files.remove(path) {
            for id in f.objects.keys() {
                self.undefine(path, id, &mut out.changes);
            }
        }
        self.persist_queue.insert(path.to_path_buf(), None);
    }

    /// `path` defines `o`; it is served if `path` is the first of its files.
    fn define(&mut self, path: &Arc<Path>, o: ParsedObject, changes: &mut Changes) {
        let id = (o.kind, o.key.clone());
        let entry = self.defs.entry(id.clone()).or_default();
        let served_before = entry.first().map(|(_, h)| h);
        entry.insert(path, o.hash);
        if entry.len() > 1 {
            self.dups.insert(id);
        }
        let first = entry.first().is_some_and(|(p, _)| p == &**path);
        if first && served_before != Some(o.hash) {
            self.serve(o.kind, &o.key, o.value, changes);
        }
    }

    fn serve(&mut self, kind: Kind, key: &ObjKey, value: serde_json::Value, changes: &mut Changes) {
        match self.inputs.insert_value(value) {
            Ok(_) => {
                let unknown = self.inputs.unknown(kind, key);
                if !unknown.is_empty() {
                    tracing::warn!(kind = kind.as_str(), object = %key, fields = ?unknown,
                                   "unknown fields (reported in status where they matter)");
                }
            }
            // Decoded once already; cannot happen short of a bug.
            Err(e) => tracing::error!(kind = kind.as_str(), object = %key, "{e}"),
        }
        changes.record(kind, key);
    }

    /// `path` no longer defines `id`: the next file that does is served, or
    /// the object goes.
    fn undefine(&mut self, path: &Path, id: &Id, changes: &mut Changes) {
        let Some(entry) = self.defs.get_mut(id) else {
            return;
        };
        let was_served = entry.first().is_some_and(|(p, _)| p == path);
        let old_hash = entry.remove(path);
        if entry.len() < 2 {
            self.dups.remove(id);
        }
        if !was_served {
            return;
        }
        loop {
            let next = self
                .defs
                .get(id)
                .and_then(|e| e.first())
                .map(|(p, h)| (p.to_path_buf(), h));
            let Some((other, h)) = next else {
                self.defs.remove(id);
                self.inputs.remove(id.0, &id.1);
                changes.record(id.0, &id.1);
                return;
            };
            if Some(h) == old_hash {
                // The same content: nothing to redo.
                return;
            }
            if let Some(v) = self.value_in(&other, id) {
                self.serve(id.0, &id.1, v, changes);
                return;
            }
            // Only a lingering definition without its text: drop it too.
            if let Some(e) = self.defs.get_mut(id) {
                e.remove(&other);
            }
            if let Some(f) = self.files.get_mut(&other) {
                f.objects.remove(id);
                f.lingering.remove(id);
            }
        }
    }

    /// The manifest of `id` in the served version of `path`.
    fn value_in(&mut self, path: &Path, id: &Id) -> Option<serde_json::Value> {
        if !self.reparsed.contains_key(path) {
            let text = self.files.get(path)?.text.clone()?;
            let parsed = self.parser.parse(text).unwrap_or_default();
            self.reparsed.insert(path.to_path_buf(), parsed);
        }
        self.reparsed
            .get(path)?
            .iter()
            .find(|o| o.kind == id.0 && o.key == id.1)
            .map(|o| o.value.clone())
    }
}

/// Whether `path` is a file the loader reads: a `.yaml`/`.yml` file under
/// `dir`, with no hidden component.
fn is_config_file(dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    let hidden = rel
        .components()
        .any(|c| !walk::visible(&c.as_os_str().to_string_lossy()));
    !hidden && walk::is_yaml(&path.file_name().unwrap_or_default().to_string_lossy())
}

#[cfg(test)]
mod tests;
