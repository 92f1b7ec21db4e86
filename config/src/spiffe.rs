//! spiffe (being written)
