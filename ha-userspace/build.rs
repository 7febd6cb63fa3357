//! Points the library at the eBPF objects it embeds.
//!
//! `cargo xtask build` passes their directory in `HALB_EBPF_DIR`; without it
//! the default output directory of the eBPF build is used; without that,
//! empty placeholders let `cargo check` and clippy work, and `halb` then
//! reports that it was built without its data plane.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=HALB_EBPF_DIR");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = std::env::var_os("HALB_EBPF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../ha-ebpf/target/bpfel-unknown-none/release"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    for (name, var) in [
        ("halb-xdp", "HALB_XDP_OBJ"),
        ("halb-pass", "HALB_PASS_OBJ"),
        ("halb-decap", "HALB_DECAP_OBJ"),
        ("halb-hc", "HALB_HC_OBJ"),
    ] {
        let obj = dir.join(name);
        println!("cargo:rerun-if-changed={}", obj.display());
        let path = if obj.is_file() {
            obj
        } else {
            let placeholder = out.join(format!("{name}.empty"));
            if let Err(e) = std::fs::write(&placeholder, b"") {
                panic!("cannot write {}: {e}", placeholder.display());
            }
            placeholder
        };
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
