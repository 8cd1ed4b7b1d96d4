use aya_build::{Package, Toolchain};

/// Builds `sensor-ebpf` for the BPF target with the nightly toolchain and
/// bpf-linker (`cargo xtask setup` installs both); `AYA_BUILD_SKIP=1` skips
/// it for lint-only builds.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../sensor-ebpf");
    let package = Package {
        name: "sensor-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
