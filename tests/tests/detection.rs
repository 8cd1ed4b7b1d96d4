//! The labelled scenario suite for rule `read_then_send`: attacks must alert
//! (scope, pid, bytes and destination checked), benign workloads must stay
//! silent. Thresholds are scaled down by configuration only:
//! 16 MiB read, 8 MiB sent, ratio 0.5, 60 s window. Each scenario prints its
//! detection latency: alert arrival minus the moment the workload's sent
//! bytes crossed the thresholds (its own clock).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tests::{agent::Agent, netns::Peer, workload, workload::Sink};

const MIB: u64 = 1 << 20;
const FILE_BYTES: u64 = 32 * MIB;
/// Where the rule is crossed for a 32 MiB read: sent >= max(8 MiB, 0.5 × read).
const MARK: u64 = 16 * MIB;

/// Bytes that do not compress (so a pipeline through gzip still sends them all).
fn random_file(path: &Path, bytes: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes;
    let mut block = vec![0u8; MIB as usize];
    for _ in 0..bytes / MIB {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
}

struct Scene {
    dir: tempfile::TempDir,
    weights: PathBuf,
    untrusted: Peer,
    trusted: Peer,
    agent: Agent,
}

impl Scene {
    /// A watched directory with 32 MiB of weights, an untrusted and a
    /// trusted peer (subnets `u` and `t`), and the agent.
    fn new(u: u8, t: u8, extra: &[&str]) -> Scene {
        let dir = tempfile::Builder::new()
            .prefix("sensor-dt")
            .tempdir()
            .unwrap();
        let weights = dir.path().join("model-00001-of-00002.safetensors");
        random_file(&weights, FILE_BYTES);
        let untrusted = Peer::new(u);
        let trusted = Peer::new(t);
        let (t4, t6) = (format!("198.18.{t}.0/24"), format!("2001:2:0:{t}::/64"));
        let mut args = vec!["--watch", dir.path().to_str().unwrap()];
        args.extend(tests::SCALED_THRESHOLDS);
        args.extend([
            "--min-send-ratio",
            "0.5",
            "--window",
            "60",
            "--trusted-cidr",
            &t4,
            "--trusted-cidr",
            &t6,
        ]);
        args.extend_from_slice(extra);
        let agent = Agent::start(&args);
        Scene {
            dir,
            weights,
            untrusted,
            trusted,
            agent,
        }
    }

    fn weights(&self) -> &str {
        self.weights.to_str().unwrap()
    }

    /// A sink in `peer`'s namespace.
    fn sink(&self, peer: &Peer, proto: &str, to: &str, conns: u64) -> Sink {
        let mut cmd = peer.command(workload::program("dt-sink"));
        cmd.args([
            &format!("{proto}-sink"),
            "--listen",
            to,
            "--conns",
            &conns.to_string(),
        ]);
        Sink::start(cmd)
    }
}

fn pids(a: &Value) -> Vec<u64> {
    a["pids"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn u(a: &Value, k: &str) -> u64 {
    a[k].as_u64()
        .unwrap_or_else(|| panic!("alert has no {k}: {a}"))
}

/// Waits for the alert naming `pid` and checks what every alert must say.
fn expect_alert(
    s: &Scene,
    what: &str,
    scope: &str,
    pid: u64,
    crossed_ms: u64,
    dest: &str,
) -> Value {
    let (at, a) = s
        .agent
        .wait_for_alert(Duration::from_secs(15), what, |a| pids(a).contains(&pid));
    assert_eq!(a["rule"], "read_then_send", "{what}: {a}");
    assert_eq!(a["scope"], scope, "{what}: {a}");
    assert_eq!(u(&a, "pid"), pid, "{what}: the alert names the sender: {a}");
    assert_eq!(a["severity"], "critical");
    assert_eq!(u(&a, "window_s"), 60);
    let (read, sent) = (u(&a, "watched_read_bytes"), u(&a, "sent_bytes"));
    assert!(
        (16 * MIB..=FILE_BYTES + MIB).contains(&read),
        "{what}: watched_read_bytes {read}"
    );
    assert!(
        sent >= 8 * MIB && sent * 2 >= read,
        "{what}: sent_bytes {sent} (read {read})"
    );
    let d0 = &a["destinations"][0];
    assert_eq!(
        (d0["addr"].as_str(), d0["class"].as_str()),
        (Some(dest), Some("untrusted")),
        "{what}: {a}"
    );
    assert!(
        !a["ts"].as_str().unwrap_or("").is_empty() && !a["host"].as_str().unwrap_or("").is_empty()
    );
    let latency = at.saturating_sub(crossed_ms);
    eprintln!("LATENCY {what}: {latency} ms (scope {scope}, read {read}, sent {sent})");
    a
}

/// Waits until the agent has counted `comm`'s bytes, then two more polls,
/// and checks no alert names any of `pids`.
fn expect_silence(s: &Scene, what: &str, comm: &str, pids_: &[u64]) {
    s.agent.wait_for(Duration::from_secs(10), what, |m| {
        m.sum("sensor_file_read_bytes_total", &[("comm", comm)])
            + m.sum("sensor_socket_send_bytes_total", &[("comm", comm)])
            > 0
    });
    std::thread::sleep(Duration::from_millis(600));
    let noisy: Vec<Value> = s
        .agent
        .alerts()
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| pids(a).iter().any(|p| pids_.contains(p)))
        .collect();
    assert!(
        noisy.is_empty(),
        "{what}: benign workload alerted: {noisy:?}"
    );
    eprintln!("SILENT {what}");
}

/// `read-send` of the scene's weights as `comm` to `to`, marking when the
/// thresholds are crossed; `extra` adds options.
fn read_send(s: &Scene, comm: &str, to: &str, extra: &[&str]) -> Value {
    let mark = MARK.to_string();
    let mut args = vec![
        "read-send",
        "--file",
        s.weights(),
        "--to",
        to,
        "--mark-sent",
        &mark,
    ];
    args.extend_from_slice(extra);
    workload::report(comm, &args)
}

/// The alert for the sender of report `r`, latency from its `key` time.
fn alert_for(s: &Scene, what: &str, scope: &str, r: &Value, key: &str, dest: &str) -> Value {
    expect_alert(s, what, scope, report_u(r, "pid"), report_u(r, key), dest)
}

/// The plain attack: `read-send` of the weights over `conns` TCP connections
/// to the untrusted peer (IPv6 when `v6`), with `extra` options; a process alert.
fn process_attack(
    subnets: (u8, u8),
    comm: &str,
    port: u16,
    v6: bool,
    conns: u64,
    extra: &[&str],
    what: &str,
) {
    let s = Scene::new(subnets.0, subnets.1, &[]);
    let host = if v6 {
        format!("[{}]", s.untrusted.ip6)
    } else {
        s.untrusted.ip.to_string()
    };
    let to = format!("{host}:{port}");
    let sink = s.sink(&s.untrusted, "tcp", &to, conns);
    let conns = conns.to_string();
    let mut args = vec!["--conns", conns.as_str()];
    args.extend_from_slice(extra);
    let r = read_send(&s, comm, &to, &args);
    assert_eq!(sink.finish(), FILE_BYTES);
    let dest = if v6 {
        s.untrusted.ip6.to_string()
    } else {
        s.untrusted.ip.to_string()
    };
    alert_for(&s, what, "process", &r, "crossed_ms", &dest);
}

fn report_u(r: &Value, k: &str) -> u64 {
    r[k].as_u64()
        .unwrap_or_else(|| panic!("workload report has no {k}: {r}"))
}

// ---------------------------------------------------------------- attacks

#[test]
fn attack_one_process_tcp() {
    let alerts_file = tempfile::NamedTempFile::new().unwrap();
    let s = Scene::new(
        60,
        61,
        &["--alerts-file", alerts_file.path().to_str().unwrap()],
    );
    let to = format!("{}:8001", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let r = read_send(&s, "dt-tcp", &to, &[]);
    assert_eq!(sink.finish(), FILE_BYTES);
    let a = alert_for(
        &s,
        "one process, TCP",
        "process",
        &r,
        "crossed_ms",
        &s.untrusted.ip.to_string(),
    );
    assert_eq!(a["comm"], "dt-tcp");
    // /proc/PID/exe (resolved) while alive, else the path given to execve.
    let exe = a["exe"].as_str().unwrap();
    assert!(
        exe.ends_with("/sensor-workload") || exe.ends_with("/dt-tcp"),
        "{a}"
    );
    assert!(a["cmdline"].as_str().unwrap().contains("read-send"), "{a}");
    assert_eq!(a["top_files"][0]["path"], s.weights(), "{a}");
    assert_eq!(a["destinations"][0]["port"], 8001);
    // The same line went to the alerts file, and the counter moved.
    let file = std::fs::read_to_string(alerts_file.path()).unwrap();
    let line: Value =
        serde_json::from_str(file.lines().next().expect("a line in the alerts file")).unwrap();
    assert_eq!(line, a);
    let m = s.agent.metrics();
    assert_eq!(
        m.sum(
            "sensor_alerts_total",
            &[("rule", "read_then_send"), ("comm", "dt-tcp")]
        ),
        1
    );
}

#[test]
fn attack_one_process_udp() {
    let s = Scene::new(62, 63, &[]);
    let to = format!("{}:8002", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "udp", &to, 1);
    let r = read_send(&s, "dt-udp", &to, &["--proto", "udp"]);
    sink.finish();
    alert_for(
        &s,
        "one process, unconnected UDP",
        "process",
        &r,
        "crossed_ms",
        &s.untrusted.ip.to_string(),
    );
}

#[test]
fn attack_sendfile_weights_to_socket() {
    let s = Scene::new(64, 65, &[]);
    let to = format!("{}:8003", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let r = workload::report(
        "dt-sendfile",
        &[
            "tcp-send",
            "--api",
            "sendfile",
            "--file",
            s.weights(),
            "--to",
            &to,
        ],
    );
    assert_eq!(sink.finish(), FILE_BYTES);
    // No byte-level mark inside sendfile(2): latency is measured from its end.
    alert_for(
        &s,
        "sendfile",
        "process",
        &r,
        "done_ms",
        &s.untrusted.ip.to_string(),
    );
}

#[test]
fn attack_mmap_and_send_from_the_mapping() {
    let s = Scene::new(66, 67, &[]);
    let to = format!("{}:8004", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let mark = MARK.to_string();
    let r = workload::report(
        "dt-mmap",
        &[
            "mmap-send",
            "--file",
            s.weights(),
            "--to",
            &to,
            "--mark-sent",
            &mark,
        ],
    );
    assert_eq!(sink.finish(), FILE_BYTES);
    alert_for(
        &s,
        "mmap then send",
        "process",
        &r,
        "crossed_ms",
        &s.untrusted.ip.to_string(),
    );
}

#[test]
fn attack_shell_pipeline_reader_compressor_sender() {
    let s = Scene::new(68, 69, &[]);
    let to = format!("{}:8005", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let sender = workload::program("dt-pipe-send");
    let script = format!(
        "cat {} | gzip -1 | {} stdin-send --to {to} --mark-sent {MARK}",
        s.weights(),
        sender.display()
    );
    let out = Command::new("setsid")
        .args(["-w", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pipeline: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(
        sink.finish() >= FILE_BYTES,
        "gzip -1 does not shrink random bytes"
    );
    let a = expect_alert(
        &s,
        "tar|gzip|nc-style pipeline",
        "session",
        report_u(&r, "pid"),
        report_u(&r, "crossed_ms"),
        &s.untrusted.ip.to_string(),
    );
    assert!(
        pids(&a).len() >= 2,
        "the reader (cat, exited by now) and the sender: {a}"
    );
}

#[test]
fn attack_reader_pipes_to_a_child_that_sends() {
    let s = Scene::new(70, 71, &[]);
    let to = format!("{}:8006", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let child = workload::program("dt-relay-send");
    let out = workload::command("dt-relay-read")
        .args([
            "relay",
            "--file",
            s.weights(),
            "--to",
            &to,
            "--sender",
            child.to_str().unwrap(),
            "--mark-sent",
            &MARK.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "relay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let sender = reports
        .iter()
        .find(|r| r.get("sent_bytes").is_some())
        .expect("sender report");
    let reader = reports
        .iter()
        .find(|r| r.get("read_bytes").is_some())
        .expect("reader report");
    assert_eq!(sink.finish(), FILE_BYTES);
    let a = expect_alert(
        &s,
        "reader -> pipe -> child sender",
        "session",
        report_u(sender, "pid"),
        report_u(sender, "crossed_ms"),
        &s.untrusted.ip.to_string(),
    );
    assert!(pids(&a).contains(&report_u(reader, "pid")), "{a}");
}

#[test]
fn attack_small_chunks_over_several_connections() {
    process_attack(
        (72, 73),
        "dt-chunks",
        8007,
        false,
        8,
        &["--chunk", "4096"],
        "4 KiB chunks over 8 connections",
    );
}

#[test]
fn attack_bursts_spread_over_the_window() {
    process_attack(
        (74, 75),
        "dt-bursts",
        8008,
        false,
        1,
        &["--bursts", "4", "--gap-ms", "1500"],
        "4 bursts 1.5 s apart",
    );
}

#[test]
fn attack_ipv6_destination() {
    process_attack((76, 77), "dt-ipv6", 8009, true, 1, &[], "IPv6");
}

#[test]
fn attack_untrusted_alongside_trusted_traffic() {
    let s = Scene::new(78, 79, &[]);
    let to = format!("{}:8010", s.untrusted.ip);
    let trusted_to = format!("{}:8010", s.trusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let tsink = s.sink(&s.trusted, "tcp", &trusted_to, 1);
    let bytes = (24 * MIB).to_string();
    let r = read_send(
        &s,
        "dt-mixed",
        &to,
        &["--trusted-to", &trusted_to, "--send-bytes", &bytes],
    );
    sink.finish();
    tsink.finish();
    let a = alert_for(
        &s,
        "untrusted beside trusted",
        "process",
        &r,
        "crossed_ms",
        &s.untrusted.ip.to_string(),
    );
    // Trusted bytes are listed but not counted as sent out.
    assert!(u(&a, "sent_bytes") <= 24 * MIB, "{a}");
    let classes: Vec<&str> = a["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["class"].as_str())
        .collect();
    assert!(classes.contains(&"trusted"), "{a}");
}

/// A fake container: a cgroup named the way containerd's systemd driver
/// names one; the reader and the sender share nothing but it.
struct FakeContainer {
    slice: PathBuf,
    scope: PathBuf,
    id: String,
}

impl FakeContainer {
    fn new() -> FakeContainer {
        let root = tests::cgroup2_root();
        let id: String = format!("{:016x}", std::process::id() as u64 * 0x9e37_79b9).repeat(4);
        let slice = root.join(format!("sensor-test-{}.slice", std::process::id()));
        let scope = slice.join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&scope).expect("creating the fake container's cgroup");
        FakeContainer { slice, scope, id }
    }

    /// `sh -c 'echo $$ > cgroup.procs; exec setsid -w PROG ARGS'`.
    fn run(&self, comm: &str, args: &[&str]) -> Value {
        let prog = workload::program(comm);
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec setsid -w {} {}",
            self.scope.display(),
            prog.display(),
            args.join(" ")
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{comm}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.scope);
        let _ = std::fs::remove_dir(&self.slice);
    }
}

#[test]
fn attack_container_reader_and_sender_in_separate_sessions() {
    let s = Scene::new(80, 81, &[]);
    let c = FakeContainer::new();
    let to = format!("{}:8011", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let reader = c.run(
        "dt-ct-read",
        &["read", "--file", s.weights(), "--bs", "65536"],
    );
    assert_eq!(report_u(&reader, "read_bytes"), FILE_BYTES);
    let sender = c.run(
        "dt-ct-send",
        &[
            "tcp-send",
            "--to",
            &to,
            "--bytes",
            &FILE_BYTES.to_string(),
            "--chunk",
            "65536",
        ],
    );
    sink.finish();
    let a = expect_alert(
        &s,
        "container, two sessions",
        "container",
        report_u(&sender, "pid"),
        report_u(&sender, "done_ms"),
        &s.untrusted.ip.to_string(),
    );
    assert_eq!(a["container"], c.id.as_str(), "{a}");
    assert!(pids(&a).contains(&report_u(&reader, "pid")), "{a}");
}

// ---------------------------------------------------------------- benign

#[test]
fn benign_model_server_loads_then_streams_small_responses() {
    let s = Scene::new(82, 83, &[]);
    let to = format!("{}:8020", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let r = workload::report(
        "dt-b-server",
        &[
            "read-send",
            "--file",
            s.weights(),
            "--to",
            &to,
            "--send-bytes",
            "262144",
            "--chunk",
            "512",
        ],
    );
    sink.finish();
    expect_silence(&s, "model server", "dt-b-server", &[report_u(&r, "pid")]);
}

#[test]
fn benign_trainer_sends_gradients_to_trusted_cidr() {
    let s = Scene::new(84, 85, &[]);
    let to = format!("{}:8021", s.trusted.ip);
    let sink = s.sink(&s.trusted, "tcp", &to, 1);
    let r = workload::report(
        "dt-b-trainer",
        &["read-send", "--file", s.weights(), "--to", &to],
    );
    assert_eq!(sink.finish(), FILE_BYTES);
    expect_silence(
        &s,
        "trainer to trusted",
        "dt-b-trainer",
        &[report_u(&r, "pid")],
    );
}

#[test]
fn benign_backup_job_to_trusted_cidr() {
    let s = Scene::new(86, 87, &[]);
    let to = format!("[{}]:8022", s.trusted.ip6);
    let sink = s.sink(&s.trusted, "tcp", &to, 1);
    let r = workload::report(
        "dt-b-backup",
        &[
            "tcp-send",
            "--api",
            "sendfile",
            "--file",
            s.weights(),
            "--to",
            &to,
        ],
    );
    assert_eq!(sink.finish(), FILE_BYTES);
    expect_silence(
        &s,
        "backup (sendfile) to trusted IPv6",
        "dt-b-backup",
        &[report_u(&r, "pid")],
    );
}

#[test]
fn benign_cp_between_local_directories() {
    let s = Scene::new(88, 89, &[]);
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("setsid")
        .args(["-w", "cp", s.weights(), out.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    // cp's pid is not known; no alert may name a `cp`.
    expect_silence(&s, "cp", "cp", &[]);
    let cps: Vec<Value> = s
        .agent
        .alerts()
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| a["comm"] == "cp")
        .collect();
    assert!(cps.is_empty(), "{cps:?}");
    let m = s.agent.metrics();
    assert!(
        m.sum(
            "sensor_file_read_bytes_total",
            &[("comm", "cp"), ("watched", "true")]
        ) >= FILE_BYTES,
        "cp's read was counted"
    );
}

#[test]
fn benign_reads_weights_and_sends_only_to_loopback() {
    let s = Scene::new(90, 91, &[]);
    let to = "127.0.0.1:8023";
    let mut cmd = Command::new(workload::program("dt-sink"));
    cmd.args(["tcp-sink", "--listen", to]);
    let sink = Sink::start(cmd);
    let r = workload::report(
        "dt-b-loop",
        &["read-send", "--file", s.weights(), "--to", to],
    );
    assert_eq!(sink.finish(), FILE_BYTES);
    expect_silence(&s, "loopback only", "dt-b-loop", &[report_u(&r, "pid")]);
}

#[test]
fn benign_sends_a_lot_but_read_no_weights() {
    let s = Scene::new(92, 93, &[]);
    let other = tempfile::tempdir().unwrap();
    let data = other.path().join("dataset.bin.part");
    random_file(&data, FILE_BYTES);
    let to = format!("{}:8024", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    let r = workload::report(
        "dt-b-upload",
        &["read-send", "--file", data.to_str().unwrap(), "--to", &to],
    );
    assert_eq!(sink.finish(), FILE_BYTES);
    expect_silence(
        &s,
        "upload of unwatched data",
        "dt-b-upload",
        &[report_u(&r, "pid")],
    );
}

#[test]
fn benign_small_fraction_of_what_was_read() {
    let s = Scene::new(94, 95, &[]);
    let big = s.dir.path().join("big.gguf");
    random_file(&big, 64 * MIB);
    let to = format!("{}:8025", s.untrusted.ip);
    let sink = s.sink(&s.untrusted, "tcp", &to, 1);
    // 12 MiB out of 64 MiB: above min-send-bytes, below the 0.5 ratio.
    let r = workload::report(
        "dt-b-ratio",
        &[
            "read-send",
            "--file",
            big.to_str().unwrap(),
            "--to",
            &to,
            "--send-bytes",
            &(12 * MIB).to_string(),
        ],
    );
    sink.finish();
    expect_silence(&s, "ratio 0.19", "dt-b-ratio", &[report_u(&r, "pid")]);
}
