//! Benchmarks of Policy::decide and compile (being written).
fn main() {}
