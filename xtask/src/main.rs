//! Build, setup and test automation: `cargo xtask <command>`.

mod bench;
mod image;
mod imports;
mod kernels;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "sensor's build, setup and test automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent, quick when done).
    Setup,
    /// Build the agent (release) with its eBPF programs.
    Build,
    /// Build and run the agent (`sensor run`) with the embedded default
    /// configuration; arguments after `--` go to `sensor run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the container image with podman, from Debian packages and the
    /// release binary, with the Dockerfile's runtime-stage contents.
    Image {
        #[arg(long, default_value = "localhost/sensor:0.1.0")]
        tag: String,
    },
    /// Lint (fmt, clippy for user space and, separately, the eBPF crate).
    Lint,
    /// Measure the agent's overhead against bare runs and a bpftrace
    /// baseline; writes docs/BENCHMARKS.md.
    Bench {
        /// A tiny run (64 MiB, one repetition, debug build): a smoke test.
        #[arg(long)]
        quick: bool,
        /// Interleaved repetitions (medians are reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Where the report goes.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Boot Debian kernels (5.10, 6.1, 6.12, 7.x) under qemu and check the
    /// same static agent counts right on each, and on the host kernel.
    Kernels {
        /// Only this kernel (5.10, 6.1, 6.12 or 7.x).
        #[arg(long)]
        only: Option<String>,
    },
    /// Set up, lint, build, and run every test (unit and integration, as
    /// root, against the running kernel).
    Test {
        /// Only tests whose name contains this (passed to cargo test).
        filter: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Build => {
            setup::build()?;
            cargo(&root, &["build", "--release", "-p", "sensor"])
        }
        Cmd::Run { args } => {
            setup::build()?;
            cargo(&root, &["build", "--release", "-p", "sensor"])?;
            let bin = root.join("target/release/sensor");
            let status = Command::new(&bin)
                .arg("run")
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Bench { quick, reps, out } => {
            setup::build()?;
            let reps = if quick { 1 } else { reps.max(1) };
            let out = out.unwrap_or_else(|| root.join("docs/BENCHMARKS.md"));
            bench::run(&root, &bench::Options { quick, reps, out })
        }
        Cmd::Image { tag } => {
            setup::build()?;
            image::build(&root, &tag)
        }
        Cmd::Kernels { only } => {
            setup::build()?;
            kernels::run(&root, only.as_deref())
        }
        Cmd::Lint => {
            setup::run()?;
            lint(&root)
        }
        Cmd::Test { filter } => {
            setup::run()?;
            lint(&root)?;
            test(&root, filter.as_deref())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("cargo").current_dir(root).args(args))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn lint(root: &Path) -> Result<()> {
    cargo(root, &["+nightly", "fmt", "--all", "--", "--check"])?;
    // The agent's modules: no import cycle, imports down the data path.
    let report = imports::check(&root.join("sensor/src"))?;
    eprintln!(
        "+ imports: no cycle, down the data path; files per folder {:?}; most imported {} ({} files)",
        report.files_per_folder, report.most_imported.0, report.most_imported.1
    );
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "sensor-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The eBPF crate in its own pass, for its own target.
    run(Command::new("cargo")
        .current_dir(root.join("sensor-ebpf"))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"",
        )
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(root.join("target/ebpf-lint"))
        .args(["--", "-D", "warnings"]))
}

fn test(root: &Path, filter: Option<&str>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the integration tests load eBPF programs and create network namespaces: run as root"
        );
    }
    cargo(root, &["build", "-p", "sensor", "-p", "tests", "--bins"])?;
    if filter.is_none() {
        // Smoke test: the benchmark still runs (tiny, debug build; no timing asserted).
        eprintln!("+ cargo xtask bench --quick");
        bench::run(
            root,
            &bench::Options {
                quick: true,
                reps: 1,
                out: root.join("target/bench-smoke.md"),
            },
        )?;
    }
    // The container test runs the image as the DaemonSet would.
    image::build(root, image::TEST_TAG)?;
    let mut args = vec![
        "test",
        "--workspace",
        "--exclude",
        "sensor-ebpf",
        "--no-fail-fast",
    ];
    if let Some(f) = filter {
        args.push(f);
    }
    let result = run(Command::new("cargo")
        .current_dir(root)
        .env("SENSOR_BIN", root.join("target/debug/sensor"))
        .env("SENSOR_IMAGE", image::TEST_TAG)
        .args(&args));
    // The kernel frees programs of exited processes asynchronously.
    let mut leftovers = find_leftovers();
    for _ in 0..50 {
        if leftovers.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        leftovers = find_leftovers();
    }
    result?;
    if !leftovers.is_empty() {
        bail!("tests left things behind: {}", leftovers.join("; "));
    }
    if filter.is_none() {
        // The same agent on other kernels, each booted under qemu.
        eprintln!("+ cargo xtask kernels");
        kernels::run(root, None)?;
    }
    Ok(())
}

/// Network namespaces and BPF programs the tests should have removed.
fn find_leftovers() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        let ns: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("sensor-t"))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        if !ns.is_empty() {
            out.push(format!("network namespaces {}", ns.join(" ")));
        }
    }
    if let Ok(o) = Command::new("bpftool").args(["prog", "list"]).output() {
        let names = [
            "file_sys_exit",
            "net_sock_send",
            "net_sys_exit",
            "process_exit",
            "process_exec",
        ];
        let left = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| names.iter().any(|n| l.contains(n)))
            .count();
        if left > 0 {
            out.push(format!("{left} sensor BPF programs still loaded"));
        }
    }
    out
}
