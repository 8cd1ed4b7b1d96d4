//! Detection survives map pressure. Each test fills one of the kernel's
//! counting maps from a process that then lingers (idle, alive), runs a
//! real exfiltration right after, and checks that the exfiltration still
//! raises `read_then_send` naming its process, that the pressure is visible
//! (`sensor_lost_events_total`, `sensor_blind` where detail the rules need
//! was lost), and that the flood's entries leave the maps once idle.
//!
//! The agent runs with `--max-processes 512` (maps of 512 processes, 1,025
//! destinations, 512 mappings, plus spills of 128 processes and 256
//! destinations) so a flood fills them in a second; the logic is the same
//! at the default sizes.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    scenario::{Rule, Scenario, Scene, To, Workload},
    scrape::Metrics,
    workload,
};

const MIB: u64 = 1 << 20;

/// A background workload in a process group of its own, killed (with its
/// children) on drop.
struct Background(Child);

impl Background {
    fn start(comm: &str, args: &[&str]) -> (Background, Value) {
        let mut child = Command::new(workload::program(comm))
            .args(args)
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn workload");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("workload report");
        let report: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{comm} report ({e}): {line:?}"));
        (Background(child), report)
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we made.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Small maps, idle entries pruned after 4 s, a 30 s window, the scaled
/// thresholds, and an untrusted peer for the exfiltration.
fn scenario(dir: &Path) -> Scene {
    Scenario::new()
        .watch(dir)
        .args(&["--max-processes", "512", "--prune-idle-secs", "4"])
        .args(&["--window", "30"])
        .thresholds(&tests::SCALED_THRESHOLDS)
        .untrusted_peer()
        .start()
}

fn lost(m: &Metrics, reason: &str) -> u64 {
    m.sum("sensor_lost_events_total", &[("reason", reason)])
}

fn entries(m: &Metrics, map: &str) -> u64 {
    m.sum("sensor_map_entries", &[("map", map)])
}

/// The exfiltration after the flood: 32 MiB of weights to the untrusted
/// peer; its alert must name the process.
fn exfiltrate_and_expect_alert(s: &Scene, dir: &Path, comm: &str) -> Value {
    let weights = dir.join("model.safetensors");
    tests::pattern_file(&weights, 32 * MIB).unwrap();
    let r = s.run(
        Workload::read_send(&weights)
            .as_comm(comm)
            .to(To::untrusted()),
    );
    assert_eq!(r.u("sent_bytes"), 32 * MIB, "{}", r.report);
    let alert = s
        .expect_alert(Rule::ReadThenSend, comm)
        .from_comm(comm)
        .naming_pid(r.pid())
        .within(Duration::from_secs(10));
    assert!(
        alert["sent_bytes"].as_u64().unwrap() >= 8 * MIB,
        "the alert's sent bytes: {alert}"
    );
    eprintln!("{comm}: alert {alert}");
    alert
}

/// A process sprays one byte of UDP to 5,000 loopback ports (more than the
/// destination map and its spill hold) and stays alive.
#[test]
fn destination_map_flood_then_exfiltration_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path());
    let (mut spray, r) = Background::start(
        "pr-spray",
        &["udp-spray", "--ports", "5000", "--hold-ms", "120000"],
    );
    assert_eq!(r["sent_bytes"], 5000);
    let m = s
        .agent
        .wait_for(Duration::from_secs(10), "send_map_full", |m| {
            lost(m, "send_map_full") > 0
        });
    eprintln!(
        "spray: send_map_full {} send_evicted {} destinations {}",
        lost(&m, "send_map_full"),
        lost(&m, "send_evicted"),
        entries(&m, "destinations")
    );
    exfiltrate_and_expect_alert(&s, dir.path(), "pr-sendx");
    // The sprayer lingers, idle: its entries leave the maps.
    let m = s.agent.wait_for(
        Duration::from_secs(30),
        "the idle flood's destinations pruned",
        |m| entries(m, "destinations") < 100,
    );
    assert!(spray.alive(), "the sprayer is still alive");
    eprintln!(
        "spray pruned: destinations {} while the sprayer lives",
        entries(&m, "destinations")
    );
}

/// 800 processes each read one byte (more than the process map and its
/// spill hold) and stay alive, idle.
#[test]
fn process_map_flood_then_exfiltration_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let plain = other.path().join("plain.txt");
    std::fs::write(&plain, b"x").unwrap();
    let s = scenario(dir.path());
    let (mut readers, r) = Background::start(
        "pr-idle",
        &[
            "idle-readers",
            "--procs",
            "800",
            "--file",
            plain.to_str().unwrap(),
            "--hold-ms",
            "120000",
        ],
    );
    assert_eq!(r["read_bytes"], 800, "{r}");
    let m = s
        .agent
        .wait_for(Duration::from_secs(10), "proc_map_full", |m| {
            lost(m, "proc_map_full") > 0
        });
    eprintln!(
        "idle readers: proc_map_full {} proc_evicted {} processes {}",
        lost(&m, "proc_map_full"),
        lost(&m, "proc_evicted"),
        entries(&m, "processes")
    );
    exfiltrate_and_expect_alert(&s, dir.path(), "pr-procx");
    // Processes were evicted with bytes no poll had seen: detection may
    // have been blind to them, and the agent says so.
    let m = s.agent.metrics();
    if lost(&m, "proc_evicted") > 0 {
        s.expect_alert(Rule::SensorBlind, "sensor_blind")
            .severity("critical")
            .within(Duration::from_secs(5));
    }
    let m = s
        .agent
        .wait_for(Duration::from_secs(30), "the idle readers pruned", |m| {
            entries(m, "processes") < 100
        });
    assert!(readers.alive(), "the readers are still alive");
    eprintln!(
        "idle readers pruned: processes {} identities {}",
        entries(&m, "processes"),
        entries(&m, "identities")
    );
}

/// A process keeps 2,000 mappings of its own `*.pt` (more than the
/// mappings map holds); then another maps the weights and sends them.
#[test]
fn mapping_map_flood_then_mmap_exfiltration_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path());
    let junk = dir.path().join("junk.pt");
    tests::pattern_file(&junk, 4096).unwrap();
    let (_maps, r) = Background::start(
        "pr-maps",
        &[
            "mmap-many",
            "--file",
            junk.to_str().unwrap(),
            "--count",
            "2000",
            "--for-secs",
            "120",
        ],
    );
    assert_eq!(r["mappings"], 2000);
    let m = s
        .agent
        .wait_for(Duration::from_secs(10), "mmap_evicted", |m| {
            lost(m, "mmap_evicted") > 0
        });
    eprintln!(
        "mappings: mmap_evicted {} mappings {}",
        lost(&m, "mmap_evicted"),
        entries(&m, "mappings")
    );
    s.expect_alert(Rule::SensorBlind, "sensor_blind")
        .within(Duration::from_secs(5));
    // The exfiltration maps the weights and sends them from the mapping.
    let weights = dir.path().join("model.safetensors");
    tests::pattern_file(&weights, 32 * MIB).unwrap();
    let r = s.run(
        Workload::mmap_send(&weights)
            .as_comm("pr-mmapx")
            .to(To::untrusted()),
    );
    assert_eq!(r.received(), 32 * MIB);
    s.expect_alert(Rule::ReadThenSend, "pr-mmapx")
        .from_comm("pr-mmapx")
        .naming_pid(r.pid())
        .within(Duration::from_secs(10));
}
