//! The last good version of each file, kept on disk so that a restart while a
//! file is broken still serves what that file served before.
//!
//! One copy per config file, `<store>/<first 32 hex digits of sha256(path
//! relative to the config directory)>.yaml`, holding the file's text exactly;
//! written atomically (temporary file, then rename). Names come from a hash,
//! never from the input.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub struct LastGoodStore {
    dir: PathBuf,
}

impl LastGoodStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LastGoodStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_name(rel: &Path) -> String {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(rel.as_os_str().as_encoded_bytes());
        format!("{}.yaml", &hex::encode(d)[..32])
    }

    /// Where the copy of `rel` lives.
    pub fn path_for(&self, rel: &Path) -> PathBuf {
        self.dir.join(Self::file_name(rel))
    }

    /// The saved text of `rel`, if any and not larger than `max_bytes`.
    pub fn load(&self, rel: &Path, max_bytes: u64) -> Option<String> {
        let p = self.path_for(rel);
        let meta = std::fs::metadata(&p).ok()?;
        if meta.len() > max_bytes {
            return None;
        }
        std::fs::read_to_string(p).ok()
    }

    /// Saves `text` as the last good version of `rel` (nothing is written
    /// when the copy on disk is already the same).
    pub fn store(&self, rel: &Path, text: &str) -> std::io::Result<()> {
        let p = self.path_for(rel);
        if std::fs::read(&p).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{}.tmp", Self::file_name(rel)));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &p)
    }

    pub fn remove(&self, rel: &Path) {
        let _ = std::fs::remove_file(self.path_for(rel));
    }

    /// Removes the copies of files not in `keep` (relative paths).
    pub fn retain(&self, keep: &HashSet<PathBuf>) {
        let names: HashSet<String> = keep.iter().map(|r| Self::file_name(r)).collect();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".yaml") && !names.contains(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_loads_and_forgets_by_hashed_name() {
        let d = std::env::temp_dir().join(format!("switchyard-lastgood-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s = LastGoodStore::new(&d);
        let rel = Path::new("../../etc/passwd.yaml");
        s.store(rel, "a: 1\n").expect("store");
        let p = s.path_for(rel);
        assert_eq!(
            p.parent(),
            Some(d.as_path()),
            "names never come from the input"
        );
        assert_eq!(s.load(rel, 100).as_deref(), Some("a: 1\n"));
        assert_eq!(s.load(rel, 2), None, "over the size limit");
        s.store(Path::new("b.yaml"), "b: 2\n").expect("store");
        s.retain(&HashSet::from([PathBuf::from("b.yaml")]));
        assert_eq!(s.load(rel, 100), None);
        assert!(s.load(Path::new("b.yaml"), 100).is_some());
        let leftovers: Vec<_> = std::fs::read_dir(&d).expect("dir").flatten().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left");
        let _ = std::fs::remove_dir_all(&d);
    }
}
