//! `cargo xtask kernels`: the same static agent on several Debian kernels,
//! each booted under qemu (software emulation), each checked against its
//! workload's own byte counts. Also runs the same checks on the host kernel.
//!
//! The guest side is `tests/src/bin/guest`: it prints `matrix:` lines on
//! the serial console and ends the VM with its verdict as qemu's exit status.

mod fetch;
mod initramfs;

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// The static build the guests run (no libc in an initramfs).
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// One guest boots, loads, runs its workloads and powers off in 15–40 s
/// under emulation; a hung guest is killed after this.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// What one kernel's run reported.
#[derive(Debug, Default)]
struct Outcome {
    label: String,
    release: String,
    /// capability → hook (`none` when it got none).
    hooks: BTreeMap<String, String>,
    /// check → (counted, expected, verdict: `ok`, `covered` or `FAIL`).
    counts: BTreeMap<String, (u64, u64, String)>,
    /// Program runs the kernel skipped (`recursion_miss`).
    misses: u64,
    passed: bool,
    failure: Option<String>,
    seconds: f64,
}

pub fn run(root: &Path, only: Option<&str>) -> Result<()> {
    crate::setup::kernel_tools()?;
    let bins = build_static(root)?;
    let work = root.join("target/kernels");
    std::fs::create_dir_all(&work)?;
    let initrd = work.join("initramfs.cpio");
    initramfs::write(
        &initrd,
        &bins.join("sensor-guest"),
        &[&bins.join("sensor"), &bins.join("sensor-workload")],
    )?;
    let kernels: Vec<fetch::Kernel> = fetch::KERNELS
        .iter()
        .filter(|k| only.is_none_or(|o| k.label == o))
        .copied()
        .collect();
    let images = kernels
        .iter()
        .map(|k| fetch::vmlinuz(k).map(|p| (*k, p)))
        .collect::<Result<Vec<_>>>()?;
    let mut outcomes = vec![host(&bins)];
    // Two guests at a time: each emulated CPU is one host thread.
    for pair in images.chunks(2) {
        let results: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = pair
                .iter()
                .map(|(k, image)| s.spawn(|| boot(k, image, &initrd, &work)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a guest thread panicked"))
                .collect()
        });
        outcomes.extend(results);
    }
    let table = render(&outcomes);
    println!("{table}");
    std::fs::write(work.join("matrix.md"), &table)?;
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| format!("{} ({})", o.label, o.failure.as_deref().unwrap_or("failed")))
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix failed on: {}", failed.join("; "));
    }
    Ok(())
}

/// `sensor`, `sensor-workload` and `sensor-guest`, statically linked.
fn build_static(root: &Path) -> Result<PathBuf> {
    crate::run(
        Command::new("cargo")
            .current_dir(root)
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            )
            .args(["build", "--release", "--target", TARGET])
            .args(["-p", "sensor", "-p", "tests"])
            .args(["--bin", "sensor", "--bin", "sensor-workload"])
            .args(["--bin", "sensor-guest"]),
    )?;
    Ok(root.join("target").join(TARGET).join("release"))
}

/// The same driver on the running kernel (no VM).
fn host(bins: &Path) -> Outcome {
    let started = Instant::now();
    let out = Command::new(bins.join("sensor-guest"))
        .arg("--host")
        .env("SENSOR_GUEST_BIN", bins)
        .stdin(Stdio::null())
        .output();
    let mut o = match out {
        Ok(out) => {
            let mut o = parse(&String::from_utf8_lossy(&out.stdout));
            if out.status.success() != o.passed {
                o.passed = false;
                o.failure
                    .get_or_insert(format!("exit status {}", out.status));
            }
            o
        }
        Err(e) => Outcome {
            failure: Some(format!("cannot run the driver: {e}")),
            ..Outcome::default()
        },
    };
    o.label = "host".into();
    o.seconds = started.elapsed().as_secs_f64();
    o
}

/// Boots `image` with the initramfs and collects the guest's verdict.
fn boot(k: &fetch::Kernel, image: &Path, initrd: &Path, work: &Path) -> Outcome {
    let started = Instant::now();
    let log_path = work.join(format!("{}.log", k.label));
    let mut o = match qemu(image, initrd) {
        Ok((status, console)) => {
            let _ = std::fs::write(&log_path, &console);
            let mut o = parse(&console);
            // isa-debug-exit: qemu exits with (code << 1) | 1.
            match status {
                Some(1) => {}
                Some(3) => o.passed = false,
                other => {
                    o.passed = false;
                    o.failure.get_or_insert(format!(
                        "the guest did not report (qemu status {other:?}); see {}",
                        log_path.display()
                    ));
                }
            }
            if !o.passed {
                eprintln!("--- {} console (last lines) ---", k.label);
                let lines: Vec<&str> = console.lines().collect();
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
            o
        }
        Err(e) => Outcome {
            failure: Some(format!("{e:#}")),
            ..Outcome::default()
        },
    };
    o.label = k.label.into();
    o.seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "kernels: {} ({}) {} in {:.1} s",
        k.label,
        o.release,
        if o.passed { "passed" } else { "FAILED" },
        o.seconds
    );
    o
}

/// Runs qemu to completion (or the timeout): its exit code and console.
fn qemu(image: &Path, initrd: &Path) -> Result<(Option<i32>, String)> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1G"])
        .arg("-kernel")
        .arg(image)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet rdinit=/init"])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).replace('\r', "")
    });
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the guest did not finish within {} s",
                GUEST_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = reader.join().unwrap_or_default();
    Ok((status.code(), console))
}

/// Reads the driver's `matrix:` lines.
fn parse(console: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in console.lines() {
        let Some(rest) = line.split("matrix: ").nth(1) else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["kernel", release] => o.release = release.to_string(),
            ["hook", cap, hook] => {
                o.hooks.insert(cap.to_string(), hook.to_string());
            }
            ["count", name, counted, expected, verdict] => {
                let n = |s: &str| s.parse().unwrap_or(u64::MAX);
                o.counts.insert(
                    name.to_string(),
                    (n(counted), n(expected), verdict.to_string()),
                );
            }
            ["note", "lost", "recursion_miss", n] => {
                o.misses = n.parse::<f64>().unwrap_or(0.0) as u64;
            }
            ["result", "pass"] => o.passed = true,
            ["result", "fail", why @ ..] => {
                o.passed = false;
                o.failure = Some(why.join(" "));
            }
            _ => {}
        }
    }
    if o.release.is_empty() && o.failure.is_none() {
        o.failure = Some("the guest printed no report".into());
    }
    o
}

/// Two markdown tables: the hook each capability got, and each count.
fn render(outcomes: &[Outcome]) -> String {
    let caps: Vec<&String> = column_names(outcomes.iter().flat_map(|o| o.hooks.keys()));
    let checks: Vec<&String> = column_names(outcomes.iter().flat_map(|o| o.counts.keys()));
    let mut s = String::new();
    s += &format!(
        "| kernel | {} |\n",
        caps.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    s += &format!("|---|{}\n", "---|".repeat(caps.len()));
    for o in outcomes {
        let row: Vec<&str> = caps
            .iter()
            .map(|c| o.hooks.get(*c).map(String::as_str).unwrap_or("?"))
            .collect();
        s += &format!("| {} | {} |\n", name(o), row.join(" | "));
    }
    s += "\n";
    s += &format!(
        "| kernel | {} | result | time | skipped runs |\n",
        checks
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    s += &format!("|---|{}---|---|---|\n", "---|".repeat(checks.len()));
    for o in outcomes {
        let row: Vec<String> = checks
            .iter()
            .map(|c| match o.counts.get(*c) {
                Some((counted, expected, verdict)) => match verdict.as_str() {
                    "ok" => format!("{counted}/{expected}"),
                    "covered" => format!("{counted}/{expected} †"),
                    _ => format!("{counted}/{expected} FAIL"),
                },
                None => "n/a".into(),
            })
            .collect();
        let result = if o.passed {
            "pass".to_string()
        } else {
            format!("FAIL: {}", o.failure.as_deref().unwrap_or("?"))
        };
        s += &format!(
            "| {} | {} | {result} | {:.0} s | {} |\n",
            name(o),
            row.join(" | "),
            o.seconds,
            o.misses
        );
    }
    s += "\n† short, by no more than the runs the kernel reports it skipped (`recursion_miss`: \
          a task preempted inside the program; syscall tracepoints are preemptible on recent \
          kernels) times the bytes of one call; exported as `sensor_lost_events_total{reason=\"recursion_miss\"}`.\n";
    s
}

fn name(o: &Outcome) -> String {
    if o.release.is_empty() {
        o.label.clone()
    } else {
        format!("{} ({})", o.label, o.release)
    }
}

fn column_names<'a>(names: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<&String> = names.collect();
    v.sort();
    v.dedup();
    v
}
