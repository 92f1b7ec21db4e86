//! pki (being written)
