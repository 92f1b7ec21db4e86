//! Benchmarks of the normalize step (`palisade_config::normalize::normalize`).
//!
//! Three inputs: a typical already-canonical path (the fast path), a typical path with
//! escapes to decode and re-encode, and the worst case within the 8 KiB cap (nothing but
//! dot segments and escapes). Run with `cargo bench --bench normalize`; figures go in
//! BENCHMARKS.md.

use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use palisade_config::normalize::{MAX_TARGET_LEN, normalize};

fn main() {
    divan::main();
}

/// What every benchmark checks before timing, so a broken input can't time an error path.
fn assert_accepted(target: &str) {
    if let Err(error) = normalize(target) {
        panic!("benchmark input {target:?} must be accepted: {error}");
    }
}

fn bench_target(bencher: Bencher<'_, '_>, target: &str) {
    assert_accepted(target);
    bencher
        .counter(BytesCount::of_str(target))
        .bench(|| normalize(black_box(target)));
}

/// A typical request that is already canonical.
#[divan::bench]
fn typical_canonical(bencher: Bencher<'_, '_>) {
    bench_target(bencher, "/api/v1/items/42?fields=name,price");
}

/// A typical request with escapes: decoded unreserved, upper-cased reserved, a dot segment.
#[divan::bench]
fn typical_encoded(bencher: Bencher<'_, '_>) {
    bench_target(bencher, "/api/v1/items/%34%32/caf%c3%a9/./name%3bx?q=a%20b");
}

/// The worst case within the cap: 8 KiB of `/./a/../%41`.
#[divan::bench]
fn worst_case_8k(bencher: Bencher<'_, '_>) {
    let unit = "/./a/../%41";
    let target = unit.repeat(MAX_TARGET_LEN / unit.len());
    bench_target(bencher, &target);
}

/// A long canonical path (8 KiB of plain segments): the fast path at the cap.
#[divan::bench]
fn canonical_8k(bencher: Bencher<'_, '_>) {
    let unit = "/segment";
    let target = unit.repeat(MAX_TARGET_LEN / unit.len());
    bench_target(bencher, &target);
}
