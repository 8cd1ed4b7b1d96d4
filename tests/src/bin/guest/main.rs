//! `/init` of the kernel-matrix guests (`cargo xtask kernels`).
//!
//! Runs as PID 1 in a qemu guest booted with a stock Debian kernel: mounts
//! what the agent needs, starts `sensor run`, drives workloads whose own
//! byte counts are the ground truth, scrapes `/metrics`, and reports one
//! `matrix:` line per fact on the console. It ends the VM through qemu's
//! `isa-debug-exit` port, so the exit status is the verdict.
//!
//! Outside a VM (`--host`), it skips the mounts and the port, which makes
//! the same checks runnable on the development machine.

mod checks;
mod lineage;
mod system;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// Where the initramfs puts the binaries.
const BIN: &str = "/bin";

fn main() {
    let host = std::env::args().any(|a| a == "--host");
    let bin = std::env::var("SENSOR_GUEST_BIN").unwrap_or_else(|_| BIN.to_string());
    if !host {
        if let Err(e) = system::boot() {
            println!("matrix: result fail setting up the guest: {e}");
            system::power_off(1);
        }
    }
    let verdict = run(&bin);
    let code = match &verdict {
        Ok(()) => {
            println!("matrix: result pass");
            0
        }
        Err(e) => {
            println!("matrix: result fail {e}");
            1
        }
    };
    if host {
        std::process::exit(code.into());
    }
    system::power_off(code);
}

fn run(bin: &str) -> anyhow::Result<()> {
    println!("matrix: kernel {}", system::kernel_release());
    let data = checks::Data::create()?;
    let (mut agent, metrics) = start_agent(bin, &data)?;
    let outcome = checks::run_all(bin, &data, &metrics);
    let stopped = stop_agent(&mut agent);
    outcome?;
    stopped
}

/// Starts `sensor run` and waits for its `ready` line; returns the child and
/// the `/metrics` URL it serves.
fn start_agent(bin: &str, data: &checks::Data) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(format!("{bin}/sensor"))
        .arg("run")
        .args(["--watch", &data.watch_glob()])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(["--poll-interval-ms", "200"])
        .args(["--tail-socket", "/run/sensor/tail.sock"])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("spawning {bin}/sensor: {e}"))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // The agent's own log goes to the console too: it explains a failure.
            println!("agent: {line}");
            if let Some(url) = line
                .split("metrics=")
                .nth(1)
                .filter(|_| line.contains("ready"))
            {
                let _ = tx.send(url.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    // An emulated CPU parses the kernel's BTF and verifies the programs slowly.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if let Ok(url) = rx.recv_timeout(Duration::from_millis(200)) {
            return Ok((child, url));
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the agent exited with {status} before it was ready");
        }
    }
    let _ = child.kill();
    anyhow::bail!("the agent was not ready within 120 s")
}

/// SIGTERM, and a clean exit expected.
fn stop_agent(child: &mut Child) -> anyhow::Result<()> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "the agent exited with {status} on SIGTERM"
    );
    Ok(())
}
