//! End-to-end tests of the `palisade` binary: each module runs the real executable the way a
//! user or CI does and asserts on its output, exit status and what reaches a real app.

mod adversarial;
mod authoring;
mod cli;
mod demo;
mod init;
mod inject;
mod mesh;
mod outbound_telemetry;
mod proxy;
mod reload;
mod support;
mod telemetry;
