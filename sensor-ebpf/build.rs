use which::which;

/// Rebuild the eBPF object when bpf-linker changes: cargo does not know it
/// is a dependency (it is the linker of the bpf target).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
