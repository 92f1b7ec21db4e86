//! One module per subcommand. Each exposes `Args` (clap) and `run(Args)`.

pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod diff;
pub(crate) mod explain;
pub(crate) mod import;
pub(crate) mod init;
pub(crate) mod inject;
pub(crate) mod learn;
pub(crate) mod outbound_args;
pub(crate) mod proxy;
