//! Reload's change test: a hash of what the watched files contain right now.
//!
//! Takes the policy paths or the identity files and passes on a [`Fingerprint`]; reload only
//! loads again when it differs from the last one seen, so an interval re-check of unchanged
//! files does nothing. Files are read through symlinks, so a Kubernetes `..data` swap changes
//! the fingerprint even though the visible names (`tls.crt -> ..data/tls.crt`) stay the same.
//! The hash is FNV-1a: it detects change, it is not a security boundary (whoever can write the
//! files decides what is loaded anyway).

use std::path::{Path, PathBuf};

use crate::tls::IdentityPaths;

/// A hash of file names and contents; a missing or unreadable file hashes as such.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint(u64);

/// FNV-1a, 64 bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv(u64);

// === impl Fingerprint ===

impl Fingerprint {
    /// The files [`Policy::load`](palisade_config::Policy::load) reads for `paths`: each file,
    /// and every `*.yaml` / `*.yml` of each directory.
    pub(crate) fn of_policy(paths: &[PathBuf]) -> Fingerprint {
        let mut hash = Fnv::new();
        for path in paths {
            if path.is_dir() {
                match palisade_config::policy_files(path) {
                    Ok(files) => {
                        for file in files {
                            hash.file(&file);
                        }
                    }
                    Err(_) => hash.bytes(b"\0unreadable directory\0"),
                }
            } else {
                hash.file(path);
            }
        }
        Fingerprint(hash.finish())
    }

    /// The chain, key and bundle files.
    pub(crate) fn of_identity(paths: &IdentityPaths) -> Fingerprint {
        let mut hash = Fnv::new();
        for path in [&paths.chain, &paths.key, &paths.bundle] {
            hash.file(path);
        }
        Fingerprint(hash.finish())
    }
}

// === impl Fnv ===

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The file's name, then its contents (or a marker when it cannot be read).
    fn file(&mut self, path: &Path) {
        self.bytes(path.as_os_str().as_encoded_bytes());
        match std::fs::read(path) {
            Ok(contents) => {
                self.bytes(&[1]);
                self.bytes(&contents);
            }
            Err(_) => self.bytes(&[0]),
        }
        self.bytes(&[0xff]);
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }

    /// 12 hex digits, the way [`Policy::version`](palisade_config::Policy::version) looks.
    pub(crate) fn short_hex(self) -> String {
        format!("{:016x}", self.0)[..12].to_owned()
    }
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
