//! palisade's sidecar: listeners, mutual TLS with SPIFFE identities, the inbound HTTP path
//! (normalize → authorize → forward) and the admin server.
#![forbid(unsafe_code)]
