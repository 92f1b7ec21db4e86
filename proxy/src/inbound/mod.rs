//! inbound (being written)
