//! The directory scan: bounded in depth, entries and files, and safe from
//! symlink loops (every directory is read once, by device and inode).

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::limits::Limits;

/// What a scan found.
#[derive(Debug, Default)]
pub struct Walk {
    /// YAML files, in path order.
    pub files: Vec<PathBuf>,
    /// Directories read (a file event under any other directory needs a rescan).
    pub dirs: HashSet<PathBuf>,
    /// Problems: (path, message).
    pub errors: Vec<(PathBuf, String)>,
    /// False when a limit stopped the scan: files not seen may still exist.
    pub complete: bool,
}

/// Whether a directory entry name is read: not hidden.
pub fn visible(name: &str) -> bool {
    !name.starts_with('.')
}

/// Whether a file name is a YAML manifest.
pub fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

const ELOOP: i32 = 40;

pub fn walk(dir: &Path, limits: &Limits) -> Walk {
    let mut w = Walk {
        complete: true,
        ..Walk::default()
    };
    let mut seen = HashSet::new();
    let mut entries = 0usize;
    let mut ancestors = Vec::new();
    if let Ok(m) = std::fs::metadata(dir) {
        seen.insert((m.dev(), m.ino()));
        ancestors.push(((m.dev(), m.ino()), dir.to_path_buf()));
    }
    visit(
        dir,
        0,
        limits,
        &mut w,
        &mut seen,
        &mut ancestors,
        &mut entries,
    );
    w
}

fn visit(
    dir: &Path,
    depth: usize,
    limits: &Limits,
    w: &mut Walk,
    seen: &mut HashSet<(u64, u64)>,
    ancestors: &mut Vec<((u64, u64), PathBuf)>,
    entries: &mut usize,
) {
    w.dirs.insert(dir.to_path_buf());
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names = BTreeSet::new();
    for e in rd.flatten() {
        *entries += 1;
        if *entries > limits.max_dir_entries {
            w.errors.push((
                dir.to_path_buf(),
                format!(
                    "more than {} directory entries; the scan stopped here (the limit)",
                    limits.max_dir_entries
                ),
            ));
            w.complete = false;
            return;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if visible(&name) {
            names.insert(name);
        }
    }
    for name in names {
        if !w.complete {
            return;
        }
        let p = dir.join(&name);
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(ELOOP) => {
                w.errors.push((
                    p,
                    "symlink loop (too many levels of symbolic links); not read".into(),
                ));
                continue;
            }
            // Dangling symlinks, races with deletion: nothing to read.
            Err(_) => continue,
        };
        if meta.is_dir() {
            let id = (meta.dev(), meta.ino());
            if let Some((_, a)) = ancestors.iter().find(|(i, _)| *i == id) {
                w.errors.push((
                    p,
                    format!(
                        "symlink loop: this is directory {}; not read again",
                        a.display()
                    ),
                ));
                continue;
            }
            if !seen.insert(id) {
                w.errors.push((
                    p,
                    "this directory was already read under another path (symlink); not read again"
                        .into(),
                ));
                continue;
            }
            if depth + 1 > limits.max_dir_depth {
                w.errors.push((
                    p,
                    format!(
                        "directory nested deeper than {} levels (the limit); not read",
                        limits.max_dir_depth
                    ),
                ));
                continue;
            }
            ancestors.push((id, p.clone()));
            visit(&p, depth + 1, limits, w, seen, ancestors, entries);
            ancestors.pop();
        } else if is_yaml(&name) {
            if w.files.len() >= limits.max_files {
                w.errors.push((
                    p,
                    format!(
                        "more than {} YAML files; this and later files are not read (the limit)",
                        limits.max_files
                    ),
                ));
                w.complete = false;
                return;
            }
            w.files.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("switchyard-walk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn symlink_loops_end_quickly_with_an_error() {
        let d = tmpdir("loops");
        std::fs::create_dir_all(d.join("a/b")).expect("mkdir");
        std::fs::write(d.join("a/b/x.yaml"), "").expect("write");
        symlink("..", d.join("a/b/up")).expect("symlink");
        symlink("../..", d.join("a/b/up2")).expect("symlink");
        symlink(&d, d.join("a/root")).expect("symlink");
        symlink("self", d.join("self")).expect("symlink");
        let t = Instant::now();
        let w = walk(&d, &Limits::default());
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(w.files, vec![d.join("a/b/x.yaml")]);
        assert!(w.complete);
        let msgs: Vec<String> = w
            .errors
            .iter()
            .map(|(p, m)| format!("{}: {m}", p.display()))
            .collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("up: symlink loop")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("self: symlink loop")),
            "{msgs:?}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn depth_files_and_entries_are_bounded() {
        let d = tmpdir("bounds");
        let deep: PathBuf = (0..5).fold(d.clone(), |p, i| p.join(format!("d{i}")));
        std::fs::create_dir_all(&deep).expect("mkdir");
        std::fs::write(deep.join("deep.yaml"), "").expect("write");
        for i in 0..5 {
            std::fs::write(d.join(format!("f{i}.yaml")), "").expect("write");
        }
        std::fs::write(d.join(".hidden.yaml"), "").expect("write");
        let lim = |f: &dyn Fn(&mut Limits)| {
            let mut l = Limits::default();
            f(&mut l);
            l
        };
        let w = walk(&d, &Limits::default());
        assert_eq!(w.files.len(), 6);
        let w = walk(&d, &lim(&|l| l.max_dir_depth = 3));
        assert_eq!(w.files.len(), 5);
        assert!(w.errors[0].1.contains("deeper than 3"), "{:?}", w.errors);
        assert!(
            w.complete,
            "a skipped deep directory is known to be skipped"
        );
        let w = walk(&d, &lim(&|l| l.max_files = 3));
        assert_eq!(w.files.len(), 3);
        assert!(!w.complete);
        assert!(w.errors[0].1.contains("more than 3 YAML files"));
        let w = walk(&d, &lim(&|l| l.max_dir_entries = 4));
        assert!(!w.complete);
        assert!(w.errors[0].1.contains("more than 4 directory entries"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
