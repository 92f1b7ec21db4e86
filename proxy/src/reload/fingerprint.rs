//! Reload's change test: a hash of what the watched files contain right now.
//!
//! Takes the policy paths or the identity files and passes on a [`Fingerprint`]; reload only
//! loads again when it differs from the last one seen, so an interval re-check of unchanged
//! files does nothing. Files are read through symlinks, so a Kubernetes `..data` swap changes
//! the fingerprint even though the visible names (`tls.crt -> ..data/tls.crt`) stay the same.
//! The hash is palisade's one FNV-1a ([`Fnv1a`]): it detects change, it is not a security
//! boundary (whoever can write the files decides what is loaded anyway).

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use palisade_config::Fnv1a;

use crate::tls::IdentityPaths;

/// A hash of file names and contents; a missing or unreadable file hashes as such.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint(u64);

// === impl Fingerprint ===

impl Fingerprint {
    /// The files [`Policy::load`](palisade_config::Policy::load) reads for `paths`: each file,
    /// and every `*.yaml` / `*.yml` of each directory.
    pub(crate) fn of_policy(paths: &[PathBuf]) -> Fingerprint {
        let mut hash = Fnv1a::new();
        for path in paths {
            if path.is_dir() {
                match palisade_config::policy_files(path) {
                    Ok(files) => {
                        for path in files {
                            file(&mut hash, &path);
                        }
                    }
                    Err(_) => hash.write(b"\0unreadable directory\0"),
                }
            } else {
                file(&mut hash, path);
            }
        }
        Fingerprint(hash.finish())
    }

    /// The chain, key and bundle files.
    pub(crate) fn of_identity(paths: &IdentityPaths) -> Fingerprint {
        let mut hash = Fnv1a::new();
        for path in [&paths.chain, &paths.key, &paths.bundle] {
            file(&mut hash, path);
        }
        Fingerprint(hash.finish())
    }
}

/// Hashes the file's name, then its contents (or a marker when it cannot be read).
fn file(hash: &mut Fnv1a, path: &Path) {
    hash.write(path.as_os_str().as_encoded_bytes());
    match std::fs::read(path) {
        Ok(contents) => {
            hash.write(&[1]);
            hash.write(&contents);
        }
        Err(_) => hash.write(&[0]),
    }
    hash.write(&[0xff]);
}

/// 12 hex digits of a hash, the way [`Policy::version`](palisade_config::Policy::version)
/// looks.
pub(crate) fn short_hex(hash: u64) -> String {
    format!("{hash:016x}")[..12].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn policy_fingerprint_follows_contents_not_unrelated_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "one").unwrap();
        let paths = vec![dir.path().to_owned()];
        let first = Fingerprint::of_policy(&paths);
        assert_eq!(first, Fingerprint::of_policy(&paths));
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        assert_eq!(first, Fingerprint::of_policy(&paths));
        std::fs::write(dir.path().join("a.yaml"), "two").unwrap();
        assert_ne!(first, Fingerprint::of_policy(&paths));
    }

    #[test]
    fn identity_fingerprint_tells_missing_from_empty() {
        let dir = tempfile::tempdir().unwrap();
        let paths = IdentityPaths::in_dir(dir.path());
        let missing = Fingerprint::of_identity(&paths);
        std::fs::write(&paths.key, "").unwrap();
        assert_ne!(missing, Fingerprint::of_identity(&paths));
    }
}
