//! The labelled scenario suite for rule `read_then_send`: attacks must alert
//! (scope, pid, bytes and destination checked), benign workloads must stay
//! silent. Thresholds are scaled down by configuration only:
//! 16 MiB read, 8 MiB sent, ratio 0.5, 60 s window. Each scenario prints its
//! detection latency: alert arrival minus the moment the workload's sent
//! bytes crossed the thresholds (its own clock).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tests::{
    fake_container::FakeContainer,
    num as u,
    scenario::{Rule, Scenario, Scene, To, Workload},
    workload,
};

const MIB: u64 = 1 << 20;
const FILE_BYTES: u64 = 32 * MIB;
/// Where the rule is crossed for a 32 MiB read: sent >= max(8 MiB, 0.5 × read).
const MARK: u64 = 16 * MIB;

/// The watched directory and its 32 MiB of weights.
struct Weights {
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl Weights {
    fn new() -> Weights {
        let dir = tempfile::Builder::new()
            .prefix("sensor-dt")
            .tempdir()
            .unwrap();
        let file = dir.path().join("model-00001-of-00002.safetensors");
        tests::random_file(&file, FILE_BYTES);
        Weights { dir, file }
    }

    fn path(&self) -> &Path {
        &self.file
    }

    fn str(&self) -> &str {
        self.file.to_str().unwrap()
    }
}

/// The suite's scenario: the weights watched, thresholds scaled down
/// (ratio 0.5, 60 s window), an untrusted and a trusted peer.
fn scenario(w: &Weights) -> Scenario {
    Scenario::new()
        .watch(w.dir.path())
        .thresholds(&tests::SCALED_THRESHOLDS)
        .args(&["--min-send-ratio", "0.5", "--window", "60"])
        .untrusted_peer()
        .trusted_peer()
}

/// `read-send` of the weights, marking when the thresholds are crossed.
fn read_send(w: &Weights) -> Workload {
    Workload::read_send(w.path()).arg("--mark-sent", &MARK.to_string())
}

fn pids(a: &Value) -> Vec<u64> {
    a["pids"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn report_u(r: &Value, k: &str) -> u64 {
    r[k].as_u64()
        .unwrap_or_else(|| panic!("workload report has no {k}: {r}"))
}

/// The `read_then_send` alert naming `pid` (latency from `from_ms`), with
/// what every alert must say: critical, the 60 s window, the scaled
/// thresholds crossed, `dest` (untrusted) first among the destinations.
fn exfil_alert(s: &Scene, what: &str, scope: &str, pid: u64, from_ms: u64, dest: IpAddr) -> Value {
    let a = s
        .expect_alert(Rule::ReadThenSend, what)
        .naming_pid(pid)
        .scope(scope)
        .severity("critical")
        .first_destination(dest, "untrusted")
        .latency_from(from_ms)
        .within(Duration::from_secs(15));
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
    assert!(
        !a["ts"].as_str().unwrap_or("").is_empty() && !a["host"].as_str().unwrap_or("").is_empty()
    );
    eprintln!("{what}: read {read}, sent {sent}");
    a
}

/// Once the agent has counted `comm`'s bytes, two more polls without an
/// alert naming any of `pids`.
fn expect_silence(s: &Scene, what: &str, comm: &str, pids: &[u64]) {
    s.expect_silence(what)
        .once_counted(comm)
        .for_pids(pids)
        .after(Duration::from_millis(600));
}

/// The plain attack: `read-send` of the weights over `conns` TCP connections
/// to the untrusted peer (IPv6 when `v6`), with `extra` options; a process alert.
fn process_attack(comm: &str, v6: bool, conns: u64, extra: &[(&str, &str)], what: &str) {
    let w = Weights::new();
    let s = scenario(&w).start();
    let to = if v6 {
        To::untrusted().v6()
    } else {
        To::untrusted()
    };
    let mut work = read_send(&w)
        .as_comm(comm)
        .arg("--conns", &conns.to_string())
        .to(to.conns(conns));
    for (flag, value) in extra {
        work = work.arg(flag, value);
    }
    let r = s.run(work);
    assert_eq!(r.received(), FILE_BYTES);
    let dest = s.untrusted().addr(v6);
    exfil_alert(&s, what, "process", r.pid(), r.u("crossed_ms"), dest);
}

// ---------------------------------------------------------------- attacks

#[test]
fn attack_one_process_tcp() {
    let alerts_file = tempfile::NamedTempFile::new().unwrap();
    let w = Weights::new();
    let s = scenario(&w)
        .arg("--alerts-file", alerts_file.path().to_str().unwrap())
        .start();
    let r = s.run(read_send(&w).as_comm("dt-tcp").to(To::untrusted()));
    assert_eq!(r.received(), FILE_BYTES);
    let a = exfil_alert(
        &s,
        "one process, TCP",
        "process",
        r.pid(),
        r.u("crossed_ms"),
        s.untrusted().ip.into(),
    );
    assert_eq!(a["comm"], "dt-tcp");
    // /proc/PID/exe (resolved) while alive, else the path given to execve.
    let exe = a["exe"].as_str().unwrap();
    assert!(
        exe.ends_with("/sensor-workload") || exe.ends_with("/dt-tcp"),
        "{a}"
    );
    assert!(a["cmdline"].as_str().unwrap().contains("read-send"), "{a}");
    assert_eq!(a["top_files"][0]["path"], w.str(), "{a}");
    assert_eq!(a["destinations"][0]["port"], r.port());
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
    let w = Weights::new();
    let s = scenario(&w).start();
    let r = s.run(
        read_send(&w)
            .as_comm("dt-udp")
            .arg("--proto", "udp")
            .to(To::untrusted().udp()),
    );
    let dest = s.untrusted().ip.into();
    let what = "one process, unconnected UDP";
    exfil_alert(&s, what, "process", r.pid(), r.u("crossed_ms"), dest);
}

#[test]
fn attack_sendfile_weights_to_socket() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let r = s.run(
        Workload::send_file("sendfile", w.path())
            .as_comm("dt-sendfile")
            .to(To::untrusted()),
    );
    assert_eq!(r.received(), FILE_BYTES);
    // No byte-level mark inside sendfile(2): latency is measured from its end.
    let dest = s.untrusted().ip.into();
    exfil_alert(&s, "sendfile", "process", r.pid(), r.u("done_ms"), dest);
}

#[test]
fn attack_mmap_and_send_from_the_mapping() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let r = s.run(
        Workload::mmap_send(w.path())
            .as_comm("dt-mmap")
            .arg("--mark-sent", &MARK.to_string())
            .to(To::untrusted()),
    );
    assert_eq!(r.received(), FILE_BYTES);
    let dest = s.untrusted().ip.into();
    exfil_alert(
        &s,
        "mmap then send",
        "process",
        r.pid(),
        r.u("crossed_ms"),
        dest,
    );
}

#[test]
fn attack_shell_pipeline_reader_compressor_sender() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::untrusted());
    let sender = workload::program("dt-pipe-send");
    let script = format!(
        "cat {} | gzip -1 | {} stdin-send --to {} --mark-sent {MARK}",
        w.str(),
        sender.display(),
        sink.addr()
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
    let a = exfil_alert(
        &s,
        "tar|gzip|nc-style pipeline",
        "session",
        report_u(&r, "pid"),
        report_u(&r, "crossed_ms"),
        s.untrusted().ip.into(),
    );
    assert!(
        pids(&a).len() >= 2,
        "the reader (cat, exited by now) and the sender: {a}"
    );
}

#[test]
fn attack_reader_pipes_to_a_child_that_sends() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::untrusted());
    let child = workload::program("dt-relay-send");
    let out = workload::command("dt-relay-read")
        .args([
            "relay",
            "--file",
            w.str(),
            "--to",
            sink.addr(),
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
    let a = exfil_alert(
        &s,
        "reader -> pipe -> child sender",
        "session",
        report_u(sender, "pid"),
        report_u(sender, "crossed_ms"),
        s.untrusted().ip.into(),
    );
    assert!(pids(&a).contains(&report_u(reader, "pid")), "{a}");
}

#[test]
fn attack_small_chunks_over_several_connections() {
    process_attack(
        "dt-chunks",
        false,
        8,
        &[("--chunk", "4096")],
        "4 KiB chunks over 8 connections",
    );
}

#[test]
fn attack_bursts_spread_over_the_window() {
    process_attack(
        "dt-bursts",
        false,
        1,
        &[("--bursts", "4"), ("--gap-ms", "1500")],
        "4 bursts 1.5 s apart",
    );
}

#[test]
fn attack_ipv6_destination() {
    process_attack("dt-ipv6", true, 1, &[], "IPv6");
}

#[test]
fn attack_untrusted_alongside_trusted_traffic() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let r = s.run(
        read_send(&w)
            .as_comm("dt-mixed")
            .arg("--send-bytes", &(24 * MIB).to_string())
            .to(To::untrusted())
            .to(To::trusted().flag("--trusted-to")),
    );
    let a = exfil_alert(
        &s,
        "untrusted beside trusted",
        "process",
        r.pid(),
        r.u("crossed_ms"),
        s.untrusted().ip.into(),
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

#[test]
fn attack_container_reader_and_sender_in_separate_sessions() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let c = FakeContainer::new();
    let sink = s.sink(&To::untrusted());
    let reader = c.run("dt-ct-read", &["read", "--file", w.str(), "--bs", "65536"]);
    assert_eq!(report_u(&reader, "read_bytes"), FILE_BYTES);
    let sender = c.run(
        "dt-ct-send",
        &[
            "tcp-send",
            "--to",
            sink.addr(),
            "--bytes",
            &FILE_BYTES.to_string(),
            "--chunk",
            "65536",
        ],
    );
    sink.finish();
    let a = exfil_alert(
        &s,
        "container, two sessions",
        "container",
        report_u(&sender, "pid"),
        report_u(&sender, "done_ms"),
        s.untrusted().ip.into(),
    );
    assert_eq!(a["container"], c.id.as_str(), "{a}");
    assert!(pids(&a).contains(&report_u(&reader, "pid")), "{a}");
}

// ---------------------------------------------------------------- benign

#[test]
fn benign_model_server_loads_then_streams_small_responses() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let r = s.run(
        Workload::read_send(w.path())
            .as_comm("dt-b-server")
            .arg("--send-bytes", "262144")
            .arg("--chunk", "512")
            .to(To::untrusted()),
    );
    expect_silence(&s, "model server", "dt-b-server", &[r.pid()]);
}

#[test]
fn benign_trainer_sends_gradients_to_trusted_cidr() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let r = s.run(
        Workload::read_send(w.path())
            .as_comm("dt-b-trainer")
            .to(To::trusted()),
    );
    assert_eq!(r.received(), FILE_BYTES);
    expect_silence(&s, "trainer to trusted", "dt-b-trainer", &[r.pid()]);
}

#[test]
fn benign_backup_job_to_trusted_cidr() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let r = s.run(
        Workload::send_file("sendfile", w.path())
            .as_comm("dt-b-backup")
            .to(To::trusted().v6()),
    );
    assert_eq!(r.received(), FILE_BYTES);
    expect_silence(
        &s,
        "backup (sendfile) to trusted IPv6",
        "dt-b-backup",
        &[r.pid()],
    );
}

#[test]
fn benign_cp_between_local_directories() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("setsid")
        .args(["-w", "cp", w.str(), out.path().to_str().unwrap()])
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
    let w = Weights::new();
    let s = scenario(&w).start();
    let r = s.run(
        Workload::read_send(w.path())
            .as_comm("dt-b-loop")
            .to(To::loopback()),
    );
    assert_eq!(r.received(), FILE_BYTES);
    expect_silence(&s, "loopback only", "dt-b-loop", &[r.pid()]);
}

#[test]
fn benign_sends_a_lot_but_read_no_weights() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let other = tempfile::tempdir().unwrap();
    let data = other.path().join("dataset.bin.part");
    tests::random_file(&data, FILE_BYTES);
    let r = s.run(
        Workload::read_send(&data)
            .as_comm("dt-b-upload")
            .to(To::untrusted()),
    );
    assert_eq!(r.received(), FILE_BYTES);
    expect_silence(&s, "upload of unwatched data", "dt-b-upload", &[r.pid()]);
}

#[test]
fn benign_small_fraction_of_what_was_read() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let big = w.dir.path().join("big.gguf");
    tests::random_file(&big, 64 * MIB);
    // 12 MiB out of 64 MiB: above min-send-bytes, below the 0.5 ratio.
    let r = s.run(
        Workload::read_send(&big)
            .as_comm("dt-b-ratio")
            .arg("--send-bytes", &(12 * MIB).to_string())
            .to(To::untrusted()),
    );
    expect_silence(&s, "ratio 0.19", "dt-b-ratio", &[r.pid()]);
}

/// A hard link to the weights made outside the watched directory, then
/// read and sent from there: the inode is the weights, whatever the name.
#[test]
fn attack_hard_link_outside_the_watched_directory() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let outside = tempfile::Builder::new()
        .prefix("sensor-dt-out")
        .tempdir()
        .unwrap();
    let link = outside.path().join("dataset.tar");
    std::fs::hard_link(w.path(), &link).unwrap();
    let r = s.run(
        Workload::read_send(&link)
            .arg("--mark-sent", &MARK.to_string())
            .as_comm("dt-hardlink")
            .to(To::untrusted()),
    );
    assert_eq!(r.received(), FILE_BYTES);
    let a = exfil_alert(
        &s,
        "hard link outside the watched directory",
        "process",
        r.pid(),
        r.u("crossed_ms"),
        s.untrusted().ip.into(),
    );
    assert_eq!(u(&a, "watched_read_bytes"), FILE_BYTES, "{a}");
}
