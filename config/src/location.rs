//! location (being written)
