//! Link flags for the `small` profile (the router build; see Cargo.toml).
//!
//! A cargo profile cannot carry linker flags on stable Rust, so they are chosen here.
//! Build scripts are not told the profile's name, nor its panic strategy; the profile
//! is recognised by its output directory (`target/small/build/wsgate-*/out`) and its
//! `opt-level = "z"`. Were cargo's layout to change, the flags would stop applying and
//! `scripts/size-check.sh` (CI) would fail on the size: never a silent misbuild.
//! Measured on x86-64 Linux (docs/performance.md#binary-size):
//!
//! - `-z pack-relative-relocs` (DT_RELR): the position-independent binary's relative
//!   relocations as a bitmap, not 24 bytes each: −27 KiB, ASLR kept. The loader must
//!   know DT_RELR: glibc 2.36 or later (an older one refuses the binary,
//!   `GLIBC_ABI_DT_RELR` not found, rather than running it unrelocated). So only for
//!   glibc targets, built natively on a glibc that has it (`getconf
//!   GNU_LIBC_VERSION`), so that the binary at least runs where it was built; not
//!   when cross-compiling, where we cannot tell.
//! - `link/no-unwind-tables.ld`: drops `.eh_frame`, `.eh_frame_hdr` and
//!   `.gcc_except_table`: −102 KiB. `small` sets `panic = "abort"`, so nothing unwinds;
//!   the only loss is the backtrace a panic would print (its message still prints).
//!   This is why the flags are tied to that profile and not to every `opt-level = "z"`:
//!   with `panic = "unwind"` a panic needs those tables.
//! - `--icf=all` (identical code folding: one copy of functions whose machine code is
//!   the same, e.g. generic code instantiated for types of one layout): −6.3 KiB. Only
//!   when the linker is known to be lld: rustc 1.90 and later link
//!   `x86_64-unknown-linux-gnu` with its own `rust-lld` unless a linker is configured
//!   (GNU ld has no `--icf`; gold has). Rust does not promise distinct addresses for
//!   distinct functions (MSVC builds always fold them, `/OPT:ICF`).
//!
//! Both need GNU ld or lld, the toolchain's default on Linux.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/no-unwind-tables.ld");
    let var = |name: &str| env::var(name).unwrap_or_default();
    let out_dir = var("OUT_DIR");
    // OUT_DIR = <target>/[<triple>/]<profile>/build/<package>-<hash>/out
    let profile = Path::new(&out_dir)
        .ancestors()
        .nth(3)
        .and_then(Path::file_name);
    if profile.is_none_or(|p| p != "small")
        || var("OPT_LEVEL") != "z"
        || var("CARGO_CFG_TARGET_OS") != "linux"
    {
        return;
    }
    if var("CARGO_CFG_TARGET_ENV") == "gnu" && var("HOST") == var("TARGET") && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    if links_with_rust_lld() {
        println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    }
    let script = format!("{}/link/no-unwind-tables.ld", var("CARGO_MANIFEST_DIR"));
    println!("cargo:rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{script}");
}

/// Whether this machine's glibc loads DT_RELR binaries (2.36 or later).
fn glibc_has_relr() -> bool {
    let Ok(out) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text.trim().strip_prefix("glibc ").unwrap_or("").split('.');
    let mut next = || version.next().and_then(|n| n.parse::<u32>().ok());
    matches!((next(), next()), (Some(major), Some(minor)) if (major, minor) >= (2, 36))
}

/// Whether the binary is linked by rustc's own lld: `x86_64-unknown-linux-gnu` on rustc
/// 1.90 or later, with no linker set by configuration or flags.
fn links_with_rust_lld() -> bool {
    let var = |name: &str| env::var(name).unwrap_or_default();
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if var("TARGET") != "x86_64-unknown-linux-gnu"
        || !var("RUSTC_LINKER").is_empty()
        || flags.contains("linker")
        || flags.contains("fuse-ld")
    {
        return false;
    }
    let Ok(out) = std::process::Command::new(var("RUSTC")).arg("-V").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text.split(' ').nth(1).unwrap_or("").split('.');
    let mut next = || version.next().and_then(|n| n.parse::<u32>().ok());
    matches!((next(), next()), (Some(major), Some(minor)) if (major, minor) >= (1, 90))
}
