//! Release builds for x86-64 Linux lay the binary's functions out in the order of
//! `link/palisade.order` (see `link/order.sh`): the functions that serve requests together,
//! then those that start the proxy up. Rust's linker there is its own lld (since Rust 1.90,
//! the workspace's minimum), which takes the order as `--symbol-ordering-file` and skips names
//! it does not find. A build that names another linker gets the compiler's order.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=link/palisade.order");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let target = env::var("TARGET").unwrap_or_default();
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let own_linker = env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|flags| flags.contains("link"));
    if !release || target != "x86_64-unknown-linux-gnu" || own_linker {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest).join("link").join("palisade.order");
    if order.is_file() {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
