//! `cargo xtask setup`: what a fresh machine needs to build and test, each
//! step skipped when already done.
//!
//! - `rust-src` on the nightly toolchain (the eBPF crate builds `core`);
//! - `bpf-linker` linked against nightly's own LLVM (a folder holding
//!   `libLLVM.so` links to nightly's `libLLVM.so.NN`, given as `LLVM_PREFIX`:
//!   Debian's LLVM is too old, the default feature wants a newer LLVM);
//! - Debian packages the tests use: bpftool, iproute2, util-linux (setsid),
//!   prometheus-alertmanager, tmux (the `sensor tail` screen test), and the
//!   tools the lineage scenarios stage weights with (gzip, openssl, coreutils).
//!
//! Only `tp_btf` programs are used, so tracefs need not be mounted.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

const BPF_LINKER_VERSION: &str = "0.13.0";
const CACHE: &str = "/var/cache/sensor";

/// Everything: what building needs, and what the tests use.
pub fn run() -> Result<()> {
    build()?;
    test_tools()
}

/// What building the agent needs.
pub fn build() -> Result<()> {
    nightly_components()?;
    bpf_linker()
}

/// What the test suite runs besides the agent.
pub fn test_tools() -> Result<()> {
    debian_packages(&[
        ("bpftool", "bpftool"),
        ("ip", "iproute2"),
        ("setsid", "util-linux"),
        ("prometheus-alertmanager", "prometheus-alertmanager"),
        ("tmux", "tmux"),
        ("prometheus", "prometheus"),
        ("promtool", "prometheus"),
        ("gzip", "gzip"),
        ("openssl", "openssl"),
        ("split", "coreutils"),
        ("tar", "tar"),
    ])?;
    kernel_tools()?;
    image_tools()?;
    python_tools(&[
        ("kubernetes_validate", "kubernetes-validate"),
        ("yamllint", "yamllint"),
    ])
}

/// What `cargo xtask image` and the container test run: podman with runc
/// (crun, podman's default, refuses hosts whose cgroups are in hybrid mode),
/// netavark and iptables for its published ports (the network stack the
/// container test is run with; without recommends apt would pick the CNI
/// plugins instead), mmdebstrap for the Debian base.
pub fn image_tools() -> Result<()> {
    debian_packages(&[
        ("podman", "podman"),
        ("runc", "runc"),
        ("/usr/lib/podman/netavark", "netavark"),
        ("iptables", "iptables"),
        ("mmdebstrap", "mmdebstrap"),
        ("tar", "tar"),
    ])
}

/// What `cargo xtask kernels` runs: qemu, and dpkg-deb to unpack kernels.
pub fn kernel_tools() -> Result<()> {
    debian_packages(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("dpkg-deb", "dpkg"),
        ("apt-get", "apt"),
    ])
}

/// What `cargo xtask bench` runs: the bpftrace baseline and iperf3.
pub fn bench_tools() -> Result<()> {
    debian_packages(&[
        ("bpftrace", "bpftrace"),
        ("iperf3", "iperf3"),
        ("ip", "iproute2"),
        ("bpftool", "bpftool"),
    ])
}

/// Manifest linters from PyPI (for the deployment tests), run as
/// `python3 -m MODULE` so no PATH shim is needed.
fn python_tools(needed: &[(&str, &str)]) -> Result<()> {
    let missing = missing(needed, |module| {
        let mut c = Command::new("python3");
        c.args(["-c", &format!("import {module}")]);
        c
    });
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {} from PyPI", missing.join(" "));
    crate::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(&missing),
    )
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// rust-src (the eBPF crate builds `core`), rustfmt and clippy (the eBPF
/// lint pass and the import-grouping rustfmt options are nightly-only).
fn nightly_components() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("the nightly toolchain is required to build the eBPF programs")?;
    let missing: Vec<&str> = ["rust-src", "rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::run(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", "nightly"])
            .args(&missing),
    )
}

/// bpf-linker built against the nightly toolchain's libLLVM; a stamp records
/// which nightly it was built for, so a toolchain update rebuilds it.
fn bpf_linker() -> Result<()> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?
        .trim()
        .to_string();
    let lib_dir = Path::new(&sysroot).join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let stamp_path = PathBuf::from(CACHE).join("bpf-linker.stamp");
    let stamp = format!("{BPF_LINKER_VERSION} {libllvm}\n");
    let have = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if have && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    let major = libllvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .with_context(|| format!("cannot read the LLVM version from {libllvm}"))?;
    // LLVM_PREFIX/lib must hold libLLVM.so and the versioned name.
    let prefix = PathBuf::from(CACHE).join("llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} (about a minute)");
    crate::run(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major}")]),
    )?;
    std::fs::write(&stamp_path, stamp)
        .with_context(|| format!("writing {}", stamp_path.display()))?;
    Ok(())
}

fn debian_packages(needed: &[(&str, &str)]) -> Result<()> {
    let missing = missing(needed, |bin| {
        let mut c = Command::new("sh");
        c.args(["-c", &format!("command -v {bin}")]);
        c
    });
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    crate::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The packages (second of each pair) whose probe (first) fails, each once.
fn missing<'a>(needed: &[(&str, &'a str)], probe: impl Fn(&str) -> Command) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for (what, pkg) in needed {
        let absent = probe(what)
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true);
        if absent && !out.contains(pkg) {
            out.push(pkg);
        }
    }
    out
}
