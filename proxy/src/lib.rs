//! palisade's sidecar: listeners, mutual TLS with SPIFFE identities, the inbound HTTP path
//! (normalize → authorize → forward) and the admin server.
//!
//! One connection, top to bottom:
//! [`listen`] → [`detect`] (permissive mode) → [`tls`] (handshake, peer identity) →
//! [`inbound`] (HTTP/1.1 or h2 → normalize → authorize → forward to the app).
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod detect;
mod error_chain;
pub mod inbound;
pub mod listen;
pub mod orig_dst;
pub mod outbound;
pub mod pki;
pub mod reload;
pub mod send_io;
pub mod telemetry;
pub mod tls;
