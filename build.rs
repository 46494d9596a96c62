//! Lays out the `weir` binary's code so that what `weir run` executes while idle sits together.
//!
//! The kernel maps a binary's code into a process 64 KiB around each page it runs (fault-around),
//! so the few thousand functions an idle controller runs, spread over 21 MiB of code, made 16 MiB
//! of it resident. Listed first, in `build/weir-startup.order` (`scripts/startup-order.sh` writes
//! it), they take about 5 MiB. Only release builds linked by LLD (rustc's default linker on
//! x86_64 Linux since 1.90) take the list; other builds link as before, and a symbol the list
//! names that a build lacks is skipped.

use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "build/weir-startup.order";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed=build.rs");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let release = env("PROFILE") == "release";
    let target = env("TARGET") == "x86_64-unknown-linux-gnu";
    // A linker of the user's choosing may not know the option.
    let default_linker = env("RUSTC_LINKER").is_empty();
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER_FILE);
    if release && target && default_linker && order.exists() && rustc_links_with_lld() {
        println!(
            "cargo:rustc-link-arg-bin=weir=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=weir=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether rustc is 1.90 or newer, which links x86_64 Linux binaries with its own LLD.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
