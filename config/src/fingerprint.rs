//! Fingerprints: the one FNV-1a hash palisade uses to notice change.
//!
//! Takes bytes and passes on a 64-bit hash. [`Policy::version`](crate::Policy::version) labels
//! a loaded policy with it, the proxy's reload compares file fingerprints with it, and the
//! policy's no-route index hashes first path segments with it. FNV-1a is fast on short inputs
//! and has no key: it detects change, it is not a security boundary (whoever can write the
//! files decides what is loaded anyway).

use std::hash::Hasher;

/// FNV-1a, 64 bits, as an incremental [`Hasher`]: [`Hasher::write`] bytes, then
/// [`Hasher::finish`]. [`Default`] is the FNV offset basis, so
/// `std::hash::BuildHasherDefault<Fnv1a>` builds it for a `HashMap`.
///
/// # Security
///
/// Not collision resistant and unkeyed: use it to notice change or to index trusted keys,
/// never to authenticate content or to hash keys an attacker chooses into a table it grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv1a(u64);

/// FNV-1a (64-bit) of `bytes`: `Fnv1a::new()`, one `write`, `finish`.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a::new();
    hash.write(bytes);
    hash.finish()
}

// === impl Fnv1a ===

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// A hasher that has seen nothing yet (the FNV-1a 64-bit offset basis).
    pub const fn new() -> Fnv1a {
        Fnv1a(Self::OFFSET_BASIS)
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a::new()
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_64_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv, test vectors for FNV-1a 64).
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fingerprint(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn incremental_writes_equal_one_write() {
        let mut hash = Fnv1a::default();
        hash.write(b"foo");
        hash.write(b"bar");
        assert_eq!(hash.finish(), fingerprint(b"foobar"));
        assert_ne!(fingerprint(b"foobar"), fingerprint(b"foobaz"));
    }
}
