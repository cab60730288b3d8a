//! Notices manifest changes by polling: every manifest file under the watched paths
//! (the files `render` reads: `.yaml`, `.yml`, `.json`, not hidden) is read and
//! hashed. Polling works the same on every filesystem and editor (in-place writes,
//! rename-over, bind mounts in containers), and manifests are small.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the manifests are read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Content hash of every manifest file, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<PathBuf, u64>);

impl Snapshot {
    /// Reads every manifest file under `paths` now (unreadable files hash as absent).
    pub fn take(paths: &[PathBuf]) -> Snapshot {
        let mut files = BTreeMap::new();
        for path in paths {
            collect(path, &mut files);
        }
        Snapshot(files)
    }

    /// The files added, removed or changed between `self` and `newer`.
    pub fn changed_files(&self, newer: &Snapshot) -> Vec<PathBuf> {
        let mut changed: Vec<PathBuf> = newer
            .0
            .iter()
            .filter(|(path, hash)| self.0.get(*path) != Some(*hash))
            .map(|(path, _)| path.clone())
            .collect();
        changed.extend(self.0.keys().filter(|p| !newer.0.contains_key(*p)).cloned());
        changed.sort();
        changed
    }
}

/// Polls until the manifests differ from `last`, then until they stay the same for
/// one more interval (an editor's write in several parts settles); returns the new
/// snapshot and the files that changed. With `until`, gives up then (None).
pub fn wait_for_change(
    paths: &[PathBuf],
    last: &Snapshot,
    until: Option<std::time::Instant>,
) -> Option<(Snapshot, Vec<PathBuf>)> {
    loop {
        std::thread::sleep(POLL_INTERVAL);
        let mut now = Snapshot::take(paths);
        if now == *last {
            if until.is_some_and(|u| std::time::Instant::now() >= u) {
                return None;
            }
            continue;
        }
        loop {
            std::thread::sleep(POLL_INTERVAL);
            let settled = Snapshot::take(paths);
            if settled == now {
                break;
            }
            now = settled;
        }
        let changed = last.changed_files(&now);
        return Some((now, changed));
    }
}

fn collect(path: &Path, files: &mut BTreeMap<PathBuf, u64>) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    if metadata.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let entry = entry.path();
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            let manifest = entry.is_dir()
                || matches!(
                    entry.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                );
            if !hidden && manifest {
                collect(&entry, files);
            }
        }
    } else if let Ok(contents) = std::fs::read(path) {
        let mut hasher = DefaultHasher::new();
        contents.hash(&mut hasher);
        files.insert(path.to_path_buf(), hasher.finish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_additions_and_removals_are_seen_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = vec![dir.path().to_path_buf()];
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "a: 1").unwrap();
        std::fs::write(dir.path().join("sub/b.yml"), "b: 1").unwrap();
        let first = Snapshot::take(&root);
        assert_eq!(first.0.len(), 2);

        std::fs::write(dir.path().join(".a.yaml.swp"), "x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert_eq!(
            Snapshot::take(&root),
            first,
            "hidden and non-manifest files"
        );

        std::fs::write(dir.path().join("a.yaml"), "a: 2").unwrap();
        std::fs::write(dir.path().join("c.json"), "{}").unwrap();
        std::fs::remove_file(dir.path().join("sub/b.yml")).unwrap();
        let second = Snapshot::take(&root);
        let names: Vec<String> = first
            .changed_files(&second)
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.yaml", "c.json", "sub/b.yml"]);
    }

    #[test]
    fn waiting_returns_the_settled_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = vec![dir.path().join("m.yaml")];
        std::fs::write(&root[0], "w: 80").unwrap();
        let before = Snapshot::take(&root);
        let path = root[0].clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            std::fs::write(&path, "w: 50").unwrap();
        });
        let (after, changed) = wait_for_change(&root, &before, None).unwrap();
        writer.join().unwrap();
        assert_eq!(changed, root);
        assert_eq!(after, Snapshot::take(&root));
        // With a deadline and no change: back at the deadline.
        let started = std::time::Instant::now();
        let until = started + Duration::from_millis(300);
        assert_eq!(wait_for_change(&root, &after, Some(until)), None);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
