//! Failure modes as tested facts: storms, map pressure, SIGKILL, hostile
//! metrics clients, hostile names, a broken environment, least privilege,
//! TLS and basic auth. docs/RELIABILITY.md lists each with its test.

use std::{
    ffi::OsStr,
    io::{Read, Write},
    net::TcpStream,
    os::unix::ffi::OsStrExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{agent::Agent, assert_within, bpf, netns::Peer, scrape, workload, workload::Sink};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const READ: &str = "sensor_file_read_bytes_total";

fn file(dir: &Path, name: impl AsRef<OsStr>, bytes: u64) -> std::path::PathBuf {
    let p = dir.join(name.as_ref());
    std::fs::write(&p, vec![0x5au8; bytes as usize]).unwrap();
    p
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn report_of(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(String::from_utf8_lossy(&out.stdout).trim().as_bytes()).unwrap()
}

/// Thousands of short-lived readers, two readers flat out, a UDP sender:
/// counts stay exact, nothing is lost, memory stays bounded.
#[test]
fn storm_of_short_lived_processes_and_syscalls() {
    let dir = tempfile::tempdir().unwrap();
    let small = file(dir.path(), "small.safetensors", 64 * KIB);
    let big = file(dir.path(), "big.safetensors", 8 * MIB);
    let agent = Agent::start(&["--watch", dir.path().to_str().unwrap()]);
    let rss_start = rss_kib(agent.pid());
    let secs = 20;
    let heavy: Vec<Child> = ["rl-heavy-a", "rl-heavy-b"]
        .iter()
        .map(|comm| {
            Command::new(workload::program(comm))
                .args([
                    "read",
                    "--mode",
                    "pread",
                    "--bs",
                    "1",
                    "--for-secs",
                    &secs.to_string(),
                    "--file",
                    big.to_str().unwrap(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let sink_prog = workload::program("rl-sink");
    let sink = Sink::start({
        let mut c = Command::new(&sink_prog);
        c.args(["udp-sink", "--listen", "127.0.0.1:0"]);
        c
    });
    let sender = Command::new(workload::program("rl-udp"))
        .args([
            "udp-send",
            "--to",
            sink.addr(),
            "--bytes",
            &(256 * MIB).to_string(),
            "--chunk",
            "1024",
            "--unconnected",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Short-lived readers, 8 at a time, until the heavy readers are done.
    let storm = workload::program("rl-storm");
    let start = Instant::now();
    let mut spawned = 0u64;
    let mut peak = rss_start;
    while start.elapsed() < Duration::from_secs(secs) {
        let batch: Vec<Child> = (0..8)
            .map(|_| {
                Command::new(&storm)
                    .args(["read", "--bs", "4096", "--file", small.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in batch {
            assert!(c.wait().unwrap().success());
            spawned += 1;
        }
        peak = peak.max(rss_kib(agent.pid()));
    }
    let mut heavy_calls = 0;
    let mut heavy_bytes = 0;
    for h in heavy {
        let r = report_of(h);
        heavy_calls += r["read_calls"].as_u64().unwrap();
        heavy_bytes += r["read_bytes"].as_u64().unwrap();
    }
    let sent = report_of(sender)["sent_bytes"].as_u64().unwrap();
    sink.finish();
    let storm_truth = spawned * 64 * KIB;
    eprintln!("truth: storm {storm_truth}, heavy {heavy_bytes} in {heavy_calls} calls, udp {sent}");
    let m = agent.wait_for(Duration::from_secs(15), "storm totals", |m| {
        m.sum(READ, &[("comm", "rl-storm"), ("watched", "true")]) >= storm_truth
            && m.sum(READ, &[("comm", "rl-heavy-a"), ("watched", "true")])
                + m.sum(READ, &[("comm", "rl-heavy-b"), ("watched", "true")])
                >= heavy_bytes
            && m.sum(
                "sensor_socket_send_bytes_total",
                &[("comm", "rl-udp"), ("destination", "loopback")],
            ) >= sent
    });
    let heavy_counted = m.sum(READ, &[("comm", "rl-heavy-a"), ("watched", "true")])
        + m.sum(READ, &[("comm", "rl-heavy-b"), ("watched", "true")]);
    assert_eq!(
        m.sum(READ, &[("comm", "rl-storm"), ("watched", "true")]),
        storm_truth,
        "{spawned} short-lived readers"
    );
    assert_eq!(heavy_counted, heavy_bytes, "{heavy_calls} 1-byte preads");
    assert_eq!(
        m.sum(
            "sensor_socket_send_bytes_total",
            &[("comm", "rl-udp"), ("destination", "loopback")]
        ),
        sent
    );
    assert_eq!(
        m.sum("sensor_lost_events_total", &[]),
        0,
        "lost counts:\n{}",
        m.text
    );
    eprintln!(
        "STORM {secs} s: {spawned} processes, {:.2} M preads/s from 2 readers, {sent} B over UDP; agent RSS {rss_start} -> peak {peak} KiB; lost 0",
        heavy_calls as f64 / secs as f64 / 1e6
    );
    assert!(
        peak < rss_start + 32 * 1024,
        "agent RSS grew from {rss_start} to {peak} KiB"
    );
}

/// More live processes than the maps hold: the overflow entry keeps the
/// bytes in the totals, and the loss of per-process detail is counted.
#[test]
fn map_pressure_keeps_totals_and_counts_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "w.safetensors", MIB);
    let agent = Agent::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--max-processes",
        "64",
    ]);
    let prog = workload::program("rl-press");
    let n = 150;
    let children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new(&prog)
                .args([
                    "read",
                    "--bs",
                    "65536",
                    "--hold-ms",
                    "3000",
                    "--file",
                    f.to_str().unwrap(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let truth: u64 = children
        .into_iter()
        .map(|c| report_of(c)["read_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(truth, n * MIB);
    // Only rl-press reads this directory's file. 64 slots and a spill of
    // 64: the rest of the 150 processes take spilled slots from others
    // (LRU); an evicted process loses what it counted since the previous
    // poll (at most its 1 MiB), and each such eviction is counted.
    let watched = |m: &tests::scrape::Metrics| m.sum(READ, &[("watched", "true")]);
    let evicted = |m: &tests::scrape::Metrics| {
        m.sum("sensor_lost_events_total", &[("reason", "proc_evicted")])
    };
    let m = agent.wait_for(
        Duration::from_secs(15),
        "every byte counted or its loss reported",
        |m| watched(m) + evicted(m) * MIB >= truth,
    );
    assert!(
        watched(&m) <= truth,
        "counted {} of {truth}: more than was read",
        watched(&m)
    );
    let lost = m.sum("sensor_lost_events_total", &[("reason", "proc_map_full")]);
    assert!(
        lost > 0,
        "no proc_map_full counted with {n} processes and room for 64:\n{}",
        m.text
    );
    eprintln!(
        "PRESSURE: {n} live processes, 64 slots + 64 spilled: {} of {truth} B counted, \
         {} evictions reported (≤ 1 MiB each), proc_map_full {lost}",
        watched(&m),
        evicted(&m)
    );
}

fn prog_exists(id: u32) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn sigkill_leaves_nothing_and_a_restart_counts_again() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "w.gguf", 4 * MIB);
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("s.sock");
    let sock = sock.to_str().unwrap();
    let agent = Agent::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--tail-socket",
        sock,
    ]);
    let ids = bpf::prog_ids_of(agent.pid());
    assert!(ids.len() >= 7);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    drop(agent);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ids.iter().any(|id| prog_exists(*id)) {
        assert!(
            Instant::now() < deadline,
            "programs outlived the SIGKILLed agent: {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing pinned anywhere.
    let pinned = Command::new("sh")
        .args(["-c", "find /sys/fs/bpf -mindepth 1 2>/dev/null | head"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&pinned.stdout).trim().is_empty(),
        "pinned objects: {}",
        String::from_utf8_lossy(&pinned.stdout)
    );
    // The dead agent's socket is stale; a new agent replaces it and counts.
    let agent = Agent::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--tail-socket",
        sock,
    ]);
    let truth = workload::run(
        "rl-restart",
        &["read", "--bs", "65536", "--file", f.to_str().unwrap()],
        "read_bytes",
    );
    let m = agent.wait_for(Duration::from_secs(10), "counting after restart", |m| {
        m.sum(READ, &[("comm", "rl-restart"), ("watched", "true")]) >= truth
    });
    assert_within(
        "after restart",
        m.sum(READ, &[("comm", "rl-restart"), ("watched", "true")]),
        truth,
        0.0,
    );
}

#[test]
fn stalled_and_garbage_metrics_clients_do_not_hurt() {
    let agent = Agent::start(&[]);
    let host = agent
        .metrics_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // Connect and say nothing.
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&host).unwrap())
        .collect();
    // Garbage.
    let mut garbage = TcpStream::connect(&host).unwrap();
    garbage
        .write_all(b"\x00\x01\x02GARBAGE {}\"\\\r\n\xff\xfe\r\n\r\n")
        .unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = garbage.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "garbage got: {answer}"
    );
    // Scrapes still work, the agent still counts.
    for _ in 0..3 {
        let m = agent.metrics();
        assert!(m.has("sensor_build_info", &[]));
    }
    drop(stalled);
    assert!(agent.metrics().has("sensor_tracked_processes", &[]));
}

/// Command names and paths with newlines, quotes, backslashes, braces and
/// invalid UTF-8: escaped in /metrics (promtool agrees), valid JSON lines.
#[test]
fn hostile_names_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    // (Invalid UTF-8 goes in the command name below: the workload takes its
    // arguments as text.)
    let name: &[u8] = b"w\n\"x\\{y}.safetensors";
    let weights = file(dir.path(), OsStr::from_bytes(name), 32 * MIB);
    let peer = Peer::new();
    let agent = Agent::start(
        &[
            &["--watch", dir.path().to_str().unwrap()][..],
            &tests::SCALED_THRESHOLDS,
        ]
        .concat(),
    );
    // A command name with the same characters (15 bytes at most).
    let comm: &[u8] = b"h\n\"q\\{}\xff-x";
    let link = tempfile::tempdir().unwrap();
    let prog = link.path().join(OsStr::from_bytes(comm));
    std::os::unix::fs::symlink(tests::target_dir().join("sensor-workload"), &prog).unwrap();
    let mut cmd = peer.command(workload::program("rl-sink"));
    cmd.args(["tcp-sink", "--listen", &format!("{}:0", peer.ip)]);
    let sink = Sink::start(cmd);
    let to = sink.addr().to_string();
    let out = Command::new("setsid")
        .arg("-w")
        .arg(&prog)
        .arg("read-send")
        .arg("--file")
        .arg(&weights)
        .args(["--to", &to])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sink.finish();
    let pid =
        serde_json::from_slice::<Value>(String::from_utf8_lossy(&out.stdout).trim().as_bytes())
            .unwrap()["pid"]
            .as_u64()
            .unwrap();
    // The alert line is JSON (the harness parses every stdout line) and carries the names.
    let (_, alert) = agent.wait_for_alert(Duration::from_secs(15), "hostile names", |a| {
        a["pid"].as_u64() == Some(pid)
    });
    let lossy_comm = String::from_utf8_lossy(comm).into_owned();
    assert_eq!(alert["comm"], lossy_comm.as_str(), "{alert}");
    assert_eq!(
        alert["top_files"][0]["path"],
        String::from_utf8_lossy(weights.as_os_str().as_bytes()).as_ref(),
        "{alert}"
    );
    // /metrics: promtool's parser accepts it, and ours finds the name unescaped.
    let text = scrape::get(&agent.metrics_url).unwrap();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(r#"comm="h\n\"q\\{}"#),
        "escaped comm not found:\n{text}"
    );
    // The escaped series carries the workload's bytes.
    let line = text
        .lines()
        .find(|l| {
            l.starts_with(r#"sensor_file_read_bytes_total{comm="h\n\"q\\{}"#)
                && l.contains(r#"watched="true""#)
        })
        .unwrap_or_else(|| panic!("no watched series for the hostile comm:\n{text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value as u64 >= 32 * MIB, "{line}");
}

fn run_sensor(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(tests::sensor_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_environments_fail_clearly() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = |n: &str| sock_dir.path().join(n).to_str().unwrap().to_string();
    // Not root, no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps",
            "-all",
        ])
        .arg(tests::sensor_bin())
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--tail-socket",
            "/tmp/sensor-nobody.sock",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("insufficient privileges") && err.contains("CAP_BPF"),
        "{err}"
    );
    let _ = std::fs::remove_file("/tmp/sensor-nobody.sock");
    // No BTF where configured.
    let (code, err) = run_sensor(&[
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--tail-socket",
        &sock("a"),
        "--btf-path",
        "/nonexistent/vmlinux",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("/nonexistent/vmlinux"), "{err}");
    // Another agent runs: its metrics port, then its socket.
    let agent = Agent::start(&[]);
    let addr = agent
        .metrics_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (code, err) = run_sensor(&["run", "--metrics-addr", &addr, "--tail-socket", &sock("b")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&addr), "{err}");
    let (code, err) = run_sensor(&[
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--tail-socket",
        agent.tail_socket.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("another sensor agent is running"), "{err}");
    assert!(!err.contains("attached"), "attached before failing: {err}");
}

#[test]
fn least_privilege_after_attach() {
    let agent = Agent::start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    // CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_BPF (39).
    let kept = format!("{:016x}", (1u64 << 2) | (1 << 19) | (1 << 39));
    for k in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(k), kept, "{k}");
    }
    assert_eq!(field("CapInh:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    // And it still works: counting, metrics, its socket is root-only.
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "x.pt", MIB);
    let truth = workload::run(
        "rl-lp",
        &["read", "--bs", "65536", "--file", f.to_str().unwrap()],
        "read_bytes",
    );
    agent.wait_for(
        Duration::from_secs(10),
        "counting with dropped capabilities",
        |m| m.sum(READ, &[("comm", "rl-lp")]) >= truth,
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&agent.tail_socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "tail socket mode");
}

#[test]
fn metrics_over_tls_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    let agent = Agent::start(&["--web-config-file", web.to_str().unwrap()]);
    let url = agent.metrics_url.clone();
    assert!(url.starts_with("https://"), "{url}");
    let curl = |extra: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(&crt)
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    };
    let (code, body) = curl(&["-u", "prometheus:s3cret"]);
    assert_eq!(code, "200");
    assert!(body.contains("sensor_build_info"));
    assert_eq!(curl(&["-u", "prometheus:wrong"]).0, "401");
    assert_eq!(curl(&[]).0, "401");
    // Plain HTTP is not served.
    assert!(scrape::get(&url.replace("https://", "http://")).is_err());
}
