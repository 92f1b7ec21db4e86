//! Reload's ears: inotify (via `notify`) on the directories that hold the watched files.
//!
//! Takes the directories ([`directories`]) and passes on a wake-up on a channel whenever
//! something in one of them is created, written, renamed or removed. Directories, not files,
//! because Kubernetes updates a mounted ConfigMap or CSI volume by renaming a new `..data`
//! symlink over the old one: the visible files (`tls.crt -> ..data/tls.crt`) are never
//! touched themselves, so a watch on them would never fire. Opens and reads are ignored
//! (reload's own reads would wake it again). A directory that is missing or replaced is
//! watched again on the next interval tick ([`Watch::rewatch`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// The inotify watches of one reloader.
pub(crate) struct Watch {
    watcher: RecommendedWatcher,
    /// Directories without a working watch: not there when first tried, or removed since.
    lost: Arc<Mutex<BTreeSet<PathBuf>>>,
}

// === impl Watch ===

impl Watch {
    /// Watches `dirs`, waking `wake` on changes. A directory that cannot be watched now is
    /// retried by [`Watch::rewatch`].
    pub(crate) fn start(
        dirs: BTreeSet<PathBuf>,
        wake: mpsc::Sender<()>,
    ) -> Result<Watch, notify::Error> {
        let lost = Arc::new(Mutex::new(BTreeSet::new()));
        let handler = {
            let lost = lost.clone();
            let dirs = dirs.clone();
            move |event: notify::Result<notify::Event>| {
                if let Ok(event) = &event {
                    if ignored(&event.kind) {
                        return;
                    }
                    // The watched directory itself went away: its watch is gone with it.
                    if matches!(event.kind, EventKind::Remove(_)) {
                        for path in event.paths.iter().filter(|p| dirs.contains(*p)) {
                            if let Ok(mut lost) = lost.lock() {
                                lost.insert(path.clone());
                            }
                        }
                    }
                }
                // Errors (e.g. an overflowed event queue) may hide a change: re-check.
                // A full channel already holds a wake-up.
                let _ = wake.try_send(());
            }
        };
        let mut watcher = notify::recommended_watcher(handler)?;
        for dir in &dirs {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch; relying on the interval");
                if let Ok(mut lost) = lost.lock() {
                    lost.insert(dir.clone());
                }
            }
        }
        Ok(Watch { watcher, lost })
    }

    /// Tries again to watch the directories that have no working watch. Returns true if a
    /// watch was re-established (the caller should re-check: changes may have been missed).
    pub(crate) fn rewatch(&mut self) -> bool {
        let lost: Vec<PathBuf> = match self.lost.lock() {
            Ok(lost) => lost.iter().cloned().collect(),
            Err(_) => return false,
        };
        let mut restored = false;
        for dir in lost {
            let _ = self.watcher.unwatch(&dir);
            if self
                .watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .is_ok()
            {
                tracing::info!(dir = %dir.display(), "watching again");
                if let Ok(mut lost) = self.lost.lock() {
                    lost.remove(&dir);
                }
                restored = true;
            }
        }
        restored
    }
}

/// The directories to watch for `files`: a path that is a directory is watched itself (a
/// policy directory), any other path through its parent.
pub(crate) fn directories<'a>(files: impl IntoIterator<Item = &'a Path>) -> BTreeSet<PathBuf> {
    files
        .into_iter()
        .map(|path| {
            if path.is_dir() {
                path.to_owned()
            } else {
                match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
                    _ => PathBuf::from("."),
                }
            }
        })
        .collect()
}

/// Events that cannot change what a file contains.
fn ignored(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(notify::event::AccessMode::Read)
        )
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn watches_directories_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        let chain = dir.path().join("identity").join("tls.crt");
        let dirs = directories([
            policies.as_path(),
            chain.as_path(),
            Path::new("orders.yaml"),
        ]);
        let expected: BTreeSet<PathBuf> =
            [policies, dir.path().join("identity"), PathBuf::from(".")]
                .into_iter()
                .collect();
        assert_eq!(dirs, expected);
    }
}
