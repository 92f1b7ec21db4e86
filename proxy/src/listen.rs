//! listen (being written)
