//! The files that define one object, with the content hash of each
//! definition, ordered by path (the first is the one served).
//!
//! Nearly every object is defined by one file, so this is a sorted vector
//! (one small allocation) rather than a map (a node sized for eleven
//! entries), and the path is shared by every object of its file: at 5,000
//! routes the index took ~2.7 MiB as a map of owned paths.

use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(super) struct Definitions(Vec<(Arc<Path>, u64)>);

impl Definitions {
    /// Records (or replaces) `path`'s definition.
    pub(super) fn insert(&mut self, path: &Arc<Path>, hash: u64) {
        match self.0.binary_search_by(|(p, _)| (**p).cmp(&**path)) {
            Ok(i) => self.0[i].1 = hash,
            Err(i) => self.0.insert(i, (Arc::clone(path), hash)),
        }
    }

    /// Forgets `path`'s definition; returns its hash.
    pub(super) fn remove(&mut self, path: &Path) -> Option<u64> {
        let i = self.0.binary_search_by(|(p, _)| (**p).cmp(path)).ok()?;
        Some(self.0.remove(i).1)
    }

    /// The served definition: the first by path.
    pub(super) fn first(&self) -> Option<(&Path, u64)> {
        self.0.first().map(|(p, h)| (&**p, *h))
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.0.iter().map(|(p, _)| &**p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_stay_ordered_by_path_and_the_first_is_served() {
        let (a, b, c): (Arc<Path>, Arc<Path>, Arc<Path>) = (
            Path::new("/d/a.yaml").into(),
            Path::new("/d/b.yaml").into(),
            Path::new("/d/c.yaml").into(),
        );
        let mut d = Definitions::default();
        d.insert(&c, 3);
        d.insert(&a, 1);
        d.insert(&b, 2);
        assert_eq!(d.first(), Some((Path::new("/d/a.yaml"), 1)));
        d.insert(&a, 10);
        assert_eq!(
            d.len(),
            3,
            "a second definition by the same file replaces the first"
        );
        assert_eq!(d.first(), Some((Path::new("/d/a.yaml"), 10)));
        assert_eq!(d.remove(Path::new("/d/a.yaml")), Some(10));
        assert_eq!(d.remove(Path::new("/d/a.yaml")), None);
        let paths: Vec<&Path> = d.paths().collect();
        assert_eq!(paths, [Path::new("/d/b.yaml"), Path::new("/d/c.yaml")]);
        assert_eq!(d.first(), Some((Path::new("/d/b.yaml"), 2)));
    }
}
