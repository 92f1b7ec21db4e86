//! Benchmarks of normalize (being written).
fn main() {}
