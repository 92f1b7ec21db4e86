//! compile (being written)
