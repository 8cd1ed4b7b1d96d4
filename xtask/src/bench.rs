//! `cargo xtask bench`: what `sensor` costs, measured in one run against a
//! baseline, interleaved and repeated (medians), and written to
//! `docs/BENCHMARKS.md`.
//!
//! 1. `dd` sequential reads of a page-cached file, 4 KiB and 1 MiB buffers;
//! 2. TCP sends with 64 KiB writes to a network-namespace peer (iperf3);
//!    each bare, with the agent running, and with a bpftrace one-liner that
//!    sums read bytes per pid (`tracepoint:syscalls:sys_exit_read`);
//! 3. per-program cost from the kernel's BPF statistics;
//! 4. the agent's CPU, peak RSS and lost counts under a read storm;
//! 5. alert latency: thresholds crossed → alert line.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub struct Options {
    pub quick: bool,
    pub reps: usize,
    pub out: PathBuf,
}

const NS: &str = "sensor-bench";
const HOST_IP: &str = "198.18.250.1";
const PEER_IP: &str = "198.18.250.2";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Bare,
    Agent,
    Bpftrace,
    /// An empty program on every syscall exit: the cost of the syscall
    /// tracepoint itself (the kernel's slow syscall path), before any work.
    Floor,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Bare => "bare",
            Setup::Agent => "sensor",
            Setup::Bpftrace => "bpftrace",
            Setup::Floor => "floor",
        }
    }
}

const BPFTRACE_BASELINE: &str =
    "tracepoint:syscalls:sys_exit_read { @bytes[pid] = sum(args->ret); }";
const BPFTRACE_FLOOR: &str = "tracepoint:raw_syscalls:sys_exit { $x = 1; }";

/// Removes the benchmark's network namespace and files, also on error.
struct Cleanup {
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    crate::setup::bench_tools()?;
    let sensor = if opts.quick {
        crate::cargo(root, &["build", "-p", "sensor", "-p", "tests", "--bins"])?;
        root.join("target/debug/sensor")
    } else {
        crate::cargo(root, &["build", "--release", "-p", "sensor"])?;
        crate::cargo(root, &["build", "-p", "tests", "--bins"])?;
        root.join("target/release/sensor")
    };
    let workload = root.join("target/debug/sensor-workload");
    let dir = PathBuf::from("/var/tmp/sensor-bench");
    let _ = Command::new("ip").args(["netns", "del", NS]).output();
    std::fs::create_dir_all(&dir)?;
    let _cleanup = Cleanup { dir: dir.clone() };

    let size_mib: u64 = if opts.quick { 64 } else { 2048 };
    let file = dir.join("bench.safetensors");
    eprintln!("bench: writing a {size_mib} MiB file and caching it");
    sh(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={size_mib}")]))?;
    sh(Command::new("dd")
        .arg(format!("if={}", file.display()))
        .args(["of=/dev/null", "bs=1M"]))?;
    netns()?;
    let mut iperf = Command::new("ip")
        .args(["netns", "exec", NS, "iperf3", "-s", "-B", PEER_IP])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 server")?;
    std::thread::sleep(Duration::from_millis(500));
    if Command::new("mount")
        .arg("-l")
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).contains("tracefs"))
        .unwrap_or(true)
    {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .output();
    }

    let iperf_secs = if opts.quick { "1" } else { "3" };
    let setups = [Setup::Bare, Setup::Agent, Setup::Bpftrace, Setup::Floor];
    // results[setup][workload] = samples, one per repetition
    let mut results: Vec<[Vec<f64>; 3]> = vec![Default::default(); setups.len()];
    for rep in 0..opts.reps {
        // Rotate the order each repetition, so no setup always runs first.
        for k in 0..setups.len() {
            let s = setups[(rep + k) % setups.len()];
            let guard = start(s, &sensor, &dir)?;
            let r4k = dd(&file, "4k")?;
            let r1m = dd(&file, "1M")?;
            let tcp = iperf_client(iperf_secs)?;
            drop(guard);
            eprintln!(
                "bench: rep {rep} {:<8} dd 4k {:.2} GB/s, dd 1M {:.2} GB/s, tcp {:.2} Gbit/s",
                s.name(),
                r4k / 1e9,
                r1m / 1e9,
                tcp / 1e9
            );
            let i = setups.iter().position(|x| *x == s).unwrap_or(0);
            results[i][0].push(r4k);
            results[i][1].push(r1m);
            results[i][2].push(tcp);
        }
    }
    let per_program = program_costs(&sensor, &dir, &file)?;
    let _ = iperf.kill();
    let _ = iperf.wait();
    let storm = storm(
        &sensor,
        &dir,
        &file,
        &workload,
        if opts.quick { 2 } else { 5 },
    )?;
    let latency = alert_latency(&sensor, &dir, &workload)?;
    let report = render(opts, size_mib, &results, &per_program, &storm, &latency)?;
    print!("{report}");
    if let Some(parent) = opts.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&opts.out, report).with_context(|| format!("writing {}", opts.out.display()))?;
    eprintln!("bench: wrote {}", opts.out.display());
    Ok(())
}

fn netns() -> Result<()> {
    sh(Command::new("ip").args(["netns", "add", NS]))?;
    sh(Command::new("ip").args([
        "link", "add", "sbench0", "type", "veth", "peer", "name", "sbench1",
    ]))?;
    sh(Command::new("ip").args(["link", "set", "sbench1", "netns", NS]))?;
    sh(Command::new("ip").args(["addr", "add", &format!("{HOST_IP}/24"), "dev", "sbench0"]))?;
    sh(Command::new("ip").args(["link", "set", "sbench0", "up"]))?;
    sh(Command::new("ip").args([
        "-n",
        NS,
        "addr",
        "add",
        &format!("{PEER_IP}/24"),
        "dev",
        "sbench1",
    ]))?;
    sh(Command::new("ip").args(["-n", NS, "link", "set", "sbench1", "up"]))?;
    sh(Command::new("ip").args(["-n", NS, "link", "set", "lo", "up"]))?;
    Ok(())
}

/// A running agent or bpftrace, stopped on drop.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

fn start(s: Setup, sensor: &Path, dir: &Path) -> Result<Running> {
    match s {
        Setup::Bare => Ok(Running(None)),
        Setup::Agent => {
            let (child, _) = agent(sensor, dir, &[])?;
            Ok(Running(Some(child)))
        }
        Setup::Bpftrace | Setup::Floor => {
            let prog = if s == Setup::Bpftrace {
                BPFTRACE_BASELINE
            } else {
                BPFTRACE_FLOOR
            };
            let mut child = Command::new("bpftrace")
                .args(["-e", prog])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace")?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().context("bpftrace stdout")?).read_line(&mut line)?;
            if !line.contains("Attaching") {
                bail!("bpftrace did not attach: {line}");
            }
            Ok(Running(Some(child)))
        }
    }
}

/// Starts `sensor run` watching `dir`; returns it and its metrics URL once ready.
fn agent(sensor: &Path, dir: &Path, extra: &[&str]) -> Result<(Child, String)> {
    let mut child = Command::new(sensor)
        .arg("run")
        .args(["--metrics-addr", "127.0.0.1:0", "--watch"])
        .arg(dir)
        .arg("--tail-socket")
        .arg(dir.join("tail.sock"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sensor run")?;
    let err = child.stderr.take().context("agent stderr")?;
    let mut lines = BufReader::new(err).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(url) = line
            .split("metrics=")
            .nth(1)
            .filter(|_| line.contains("ready"))
        {
            let url = url.split_whitespace().next().unwrap_or("").to_string();
            std::thread::spawn(move || for _ in lines {});
            return Ok((child, url));
        }
    }
    let _ = child.kill();
    bail!("sensor run did not get ready")
}

/// Throughput (bytes/s) of one `dd` read of `file`, from dd's own timing.
fn dd(file: &Path, bs: &str) -> Result<f64> {
    let out = sh(Command::new("dd")
        .arg(format!("if={}", file.display()))
        .arg("of=/dev/null")
        .arg(format!("bs={bs}")))?;
    let line = out
        .lines()
        .find(|l| l.contains("copied"))
        .context("dd output")?;
    let bytes: f64 = line
        .split_whitespace()
        .next()
        .context("dd bytes")?
        .parse()?;
    // "N bytes (… MB, … MiB) copied, S s, R GB/s"
    let secs: f64 = line
        .split("copied, ")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .context("dd seconds")?
        .parse()?;
    Ok(bytes / secs)
}

/// iperf3 TCP throughput (bits/s) with 64 KiB writes to the namespace peer.
fn iperf_client(secs: &str) -> Result<f64> {
    let out = sh(Command::new("iperf3").args(["-c", PEER_IP, "-t", secs, "-l", "64K", "-J"]))?;
    let v: serde_json::Value =
        serde_json::from_str(&out[..out.rfind('}').map_or(out.len(), |i| i + 1)])?;
    v["end"]["sum_sent"]["bits_per_second"]
        .as_f64()
        .context("iperf3 bits_per_second")
}

pub struct ProgramCost {
    phase: &'static str,
    name: String,
    runs: u64,
    ns_per_run: f64,
}

/// Each of our programs' `(run_time_ns, run_cnt)` now.
fn bpf_stats() -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
    let out = sh(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let progs: serde_json::Value =
        serde_json::from_str(&out[..out.rfind(']').map_or(out.len(), |i| i + 1)])?;
    let mut stats = std::collections::BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("").to_string();
        let ours = ["file_", "net_", "process_"]
            .iter()
            .any(|pre| name.starts_with(pre));
        if let (true, Some(ns), Some(cnt)) =
            (ours, p["run_time_ns"].as_u64(), p["run_cnt"].as_u64())
        {
            let e = stats.entry(name).or_insert((0, 0));
            e.0 += ns;
            e.1 += cnt;
        }
    }
    Ok(stats)
}

/// run_time_ns / run_cnt per program and phase, with
/// kernel.bpf_stats_enabled on: plain reads (a file nobody watches), reads
/// of the watched file (the lineage accounting of a holder), a holder
/// writing a copy (the copy becomes a derived file), reads of that copy
/// (derived), and TCP sends.
fn program_costs(sensor: &Path, dir: &Path, file: &Path) -> Result<Vec<ProgramCost>> {
    let plain = dir.join("plain.bin");
    let copy = dir.join("copy.bin");
    let mib = std::fs::metadata(file)?.len() >> 20;
    sh(Command::new("dd")
        .arg(format!("if={}", file.display()))
        .arg(format!("of={}", plain.display()))
        .args(["bs=1M", &format!("count={}", mib.min(256))]))?;
    sh(Command::new("dd")
        .arg(format!("if={}", plain.display()))
        .args(["of=/dev/null", "bs=1M"]))?;
    let (child, _) = agent(sensor, dir, &[])?;
    let _running = Running(Some(child));
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enabling bpf_stats")?;
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
        }
    }
    let _off = Off;
    let count = format!("count={}", (mib.min(256) << 8).max(1));
    type Phase<'a> = (&'static str, Box<dyn Fn() -> Result<()> + 'a>);
    let phases: [Phase; 5] = [
        (
            "plain reads (dd 4k, unwatched)",
            Box::new(|| dd(&plain, "4k").map(|_| ())),
        ),
        (
            "watched reads (dd 4k)",
            Box::new(|| dd(file, "4k").map(|_| ())),
        ),
        (
            "holder writes a copy (dd 4k)",
            Box::new(|| {
                sh(Command::new("dd")
                    .arg(format!("if={}", file.display()))
                    .arg(format!("of={}", copy.display()))
                    .args(["bs=4k", &count]))
                .map(|_| ())
            }),
        ),
        (
            "derived reads (dd 4k of the copy)",
            Box::new(|| dd(&copy, "4k").map(|_| ())),
        ),
        (
            "tcp sends (iperf3 64 KiB, 1 s)",
            Box::new(|| iperf_client("1").map(|_| ())),
        ),
    ];
    let mut costs = Vec::new();
    for (phase, run) in &phases {
        let before = bpf_stats()?;
        run()?;
        let after = bpf_stats()?;
        for (name, (ns, cnt)) in after {
            let (ns0, cnt0) = before.get(&name).copied().unwrap_or((0, 0));
            let runs = cnt.saturating_sub(cnt0);
            if runs > 0 {
                costs.push(ProgramCost {
                    phase,
                    name,
                    runs,
                    ns_per_run: ns.saturating_sub(ns0) as f64 / runs as f64,
                });
            }
        }
    }
    let _ = std::fs::remove_file(&copy);
    let _ = std::fs::remove_file(&plain);
    Ok(costs)
}

pub struct Storm {
    syscalls_per_sec: f64,
    agent_cpu_pct: f64,
    /// The most resident memory sampled during the storm.
    rss_mib: f64,
    /// The high-water mark since start-up (includes loading).
    hwm_mib: f64,
    lost: u64,
    secs: u64,
}

/// CPU time of a process in nanoseconds (`/proc/PID/schedstat`).
fn cpu_ns(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    Ok(s.split_whitespace().next().context("schedstat")?.parse()?)
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0.0)
}

/// Two readers doing 1-byte preads of a cached file flat out for `secs`.
fn storm(sensor: &Path, dir: &Path, file: &Path, workload: &Path, secs: u64) -> Result<Storm> {
    let (child, url) = agent(sensor, dir, &[])?;
    let pid = child.id();
    let _running = Running(Some(child));
    let t0 = cpu_ns(pid)?;
    let start = Instant::now();
    let readers: Vec<Child> = (0..2)
        .map(|_| {
            Command::new(workload)
                .args(["read", "--mode", "pread", "--bs", "1", "--file"])
                .arg(file)
                .arg("--for-secs")
                .arg(secs.to_string())
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut rss_kib: f64 = 0.0;
    while start.elapsed() < Duration::from_secs(secs) {
        rss_kib = rss_kib.max(status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut calls = 0u64;
    for r in readers {
        let out = r.wait_with_output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("reader report")?;
        calls += v["read_calls"].as_u64().unwrap_or(0);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_ns(pid)? - t0) as f64 / 1e9;
    let hwm_kib = status_kib(pid, "VmHWM:");
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = get(&url)?;
    let lost = metrics
        .lines()
        .filter(|l| l.starts_with("sensor_lost_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    Ok(Storm {
        syscalls_per_sec: calls as f64 / elapsed,
        agent_cpu_pct: cpu / elapsed * 100.0,
        rss_mib: rss_kib / 1024.0,
        hwm_mib: hwm_kib / 1024.0,
        lost,
        secs,
    })
}

/// Plain HTTP GET of the agent's metrics.
fn get(url: &str) -> Result<String> {
    let rest = url.strip_prefix("http://").context("url")?;
    let (host, path) = rest.split_once('/').context("url path")?;
    let mut s = std::net::TcpStream::connect(host)?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body)?;
    Ok(body)
}

/// Milliseconds from the workload crossing the thresholds to the alert line.
fn alert_latency(sensor: &Path, dir: &Path, workload: &Path) -> Result<Vec<u64>> {
    let weights = dir.join("latency.safetensors");
    std::fs::write(&weights, vec![3u8; 32 << 20])?;
    let (mut child, _) = agent(
        sensor,
        dir,
        &["--min-read-bytes", "16MiB", "--min-send-bytes", "8MiB"],
    )?;
    let stdout = child.stdout.take().context("agent stdout")?;
    let _running = Running(Some(child));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let _ = tx.send((now, line));
        }
    });
    let mut latencies = Vec::new();
    for i in 0..5 {
        let port = (9300 + i).to_string();
        let mut sink = Command::new("ip")
            .args(["netns", "exec", NS])
            .arg(workload)
            .args(["tcp-sink", "--listen", &format!("{PEER_IP}:{port}")])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut first = String::new();
        BufReader::new(sink.stdout.as_mut().context("sink")?).read_line(&mut first)?;
        let out = Command::new(workload)
            .args(["read-send", "--file"])
            .arg(&weights)
            .args([
                "--to",
                &format!("{PEER_IP}:{port}"),
                "--mark-sent",
                &(16u64 << 20).to_string(),
            ])
            .output()?;
        let _ = sink.wait();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("read-send report")?;
        let (pid, crossed) = (
            report["pid"].as_u64().unwrap_or(0),
            report["crossed_ms"].as_u64().unwrap_or(0),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Ok((at, line)) = rx.recv_timeout(Duration::from_millis(200)) else {
                if Instant::now() > deadline {
                    bail!("no alert for pid {pid}");
                }
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["pid"].as_u64() == Some(pid) {
                latencies.push(at.saturating_sub(crossed));
                break;
            }
        }
    }
    Ok(latencies)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

fn render(
    opts: &Options,
    size_mib: u64,
    r: &[[Vec<f64>; 3]],
    costs: &[ProgramCost],
    storm: &Storm,
    latency: &[u64],
) -> Result<String> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| l.strip_prefix("model name\t: "))
        .unwrap_or("?")
        .to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse::<f64>()
        .unwrap_or(0.0)
        / 1048576.0;
    let date = sh(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
        .trim()
        .to_string();
    let mut o = String::new();
    use std::fmt::Write as _;
    writeln!(o, "# Benchmarks\n")?;
    writeln!(
        o,
        "Generated by `cargo xtask bench{}` on {date}.\n",
        if opts.quick { " --quick" } else { "" }
    )?;
    writeln!(o, "Machine: {} × {cpu}, {mem:.0} GiB, kernel {kernel}. File: {size_mib} MiB in page cache; {} interleaved repetitions (order rotated), medians.\n", num_cpus(), opts.reps)?;
    writeln!(
        o,
        "## Throughput with the agent vs bare, and vs a bpftrace one-liner\n"
    )?;
    writeln!(o, "The baseline one-liner: `{BPFTRACE_BASELINE}`. The floor: `{BPFTRACE_FLOOR}`, an empty program on every syscall exit, which is what enabling any syscall tracepoint costs on this kernel before a program does anything. Ratios are medians of the per-repetition ratios (each against the bare run of the same repetition).\n")?;
    writeln!(o, "| workload | bare | sensor | bpftrace | floor | sensor / bare | bpftrace / bare | floor / bare | target |")?;
    writeln!(o, "|---|---|---|---|---|---|---|---|---|")?;
    let names = [
        ("dd, 4 KiB reads", "GB/s", 1e9, "≥ 0.95"),
        ("dd, 1 MiB reads", "GB/s", 1e9, "≥ 0.99"),
        ("TCP, 64 KiB writes (iperf3)", "Gbit/s", 1e9, "≥ 0.99"),
    ];
    let ratio = |setup: usize, w: usize| -> f64 {
        let pairs: Vec<f64> = r[setup][w]
            .iter()
            .zip(&r[0][w])
            .map(|(x, b)| x / b)
            .collect();
        median(&pairs)
    };
    for (w, (name, unit, div, target)) in names.iter().enumerate() {
        let m = |s: usize| median(&r[s][w]) / div;
        writeln!(
            o,
            "| {name} | {:.2} {unit} | {:.2} {unit} | {:.2} {unit} | {:.2} {unit} | **{:.3}** | {:.3} | {:.3} | {target} |",
            m(0), m(1), m(2), m(3), ratio(1, w), ratio(2, w), ratio(3, w)
        )?;
    }
    writeln!(
        o,
        "\nOverhead (1 − ratio), sensor vs the bpftrace baseline (target: below half of it):"
    )?;
    for (w, (name, ..)) in names.iter().enumerate() {
        writeln!(
            o,
            "- {name}: sensor {:.1} %, bpftrace {:.1} %, floor {:.1} %",
            (1.0 - ratio(1, w)) * 100.0,
            (1.0 - ratio(2, w)) * 100.0,
            (1.0 - ratio(3, w)) * 100.0
        )?;
    }
    writeln!(o, "\n## Cost per program run (kernel.bpf_stats_enabled)\n")?;
    writeln!(o, "Per phase: plain reads of an unwatched file; reads of the watched file (each run also keeps the reader's lineage: distinct bytes per file, its holding); a holder writing a copy (each write marks the copy derived, up to what the writer holds); reads of that copy (derived: each read takes weights from the carrier); TCP sends of a process holding nothing. Runs of other processes on the host count too.\n")?;
    writeln!(o, "| phase | program | runs | ns per run |")?;
    writeln!(o, "|---|---|---|---|")?;
    for c in costs {
        writeln!(
            o,
            "| {} | {} | {} | {:.0} |",
            c.phase, c.name, c.runs, c.ns_per_run
        )?;
    }
    writeln!(o, "\n## Agent under a read storm\n")?;
    writeln!(
        o,
        "Two processes doing 1-byte `pread`s of a cached watched file for {} s.\n",
        storm.secs
    )?;
    writeln!(o, "| read syscalls/s | agent CPU (% of one core) | agent RSS during the storm | RSS high-water mark since start | lost counts | targets |")?;
    writeln!(o, "|---|---|---|---|---|---|")?;
    writeln!(
        o,
        "| {:.2} M | {:.2} % | {:.1} MiB | {:.1} MiB | {} | ≥ 1 M/s, ≤ 2 %, ≤ 40 MiB, 0 lost |",
        storm.syscalls_per_sec / 1e6,
        storm.agent_cpu_pct,
        storm.rss_mib,
        storm.hwm_mib,
        storm.lost
    )?;
    writeln!(o, "\n## Alert latency\n")?;
    writeln!(o, "Thresholds crossed (the workload's own clock, when its sent bytes reached the mark) → alert line on the agent's stdout; default 1 s poll interval; 5 runs.\n")?;
    let mut l = latency.to_vec();
    l.sort_unstable();
    writeln!(o, "| runs (ms) | median | max | target |")?;
    writeln!(o, "|---|---|---|---|")?;
    writeln!(
        o,
        "| {:?} | {} ms | {} ms | ≤ 2000 ms |",
        l,
        l.get(l.len() / 2).copied().unwrap_or(0),
        l.last().copied().unwrap_or(0)
    )?;
    Ok(o)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
