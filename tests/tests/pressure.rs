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
use tests::{agent::Agent, netns::Peer, scrape::Metrics, workload};

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

fn agent(dir: &Path) -> Agent {
    Agent::start(
        &[
            &[
                "--watch",
                dir.to_str().unwrap(),
                "--max-processes",
                "512",
                "--prune-idle-secs",
                "4",
                "--window",
                "30",
            ][..],
            &tests::SCALED_THRESHOLDS,
        ]
        .concat(),
    )
}

fn lost(m: &Metrics, reason: &str) -> u64 {
    m.sum("sensor_lost_events_total", &[("reason", reason)])
}

fn entries(m: &Metrics, map: &str) -> u64 {
    m.sum("sensor_map_entries", &[("map", map)])
}

/// The exfiltration after the flood: 32 MiB of weights to an untrusted
/// namespace peer; its alert must name the process.
fn exfiltrate_and_expect_alert(agent: &Agent, dir: &Path, subnet: u8, comm: &str) -> Value {
    let weights = dir.join("model.safetensors");
    tests::pattern_file(&weights, 32 * MIB).unwrap();
    let peer = Peer::new(subnet);
    let report = workload::exfiltrate(&peer, comm, &weights, 9200 + u16::from(subnet));
    assert_eq!(report["sent_bytes"], 32 * MIB, "{report}");
    let (_, alert) = agent.wait_for_alert(Duration::from_secs(10), comm, |a| {
        a["rule"] == "read_then_send" && a["comm"] == comm
    });
    assert_eq!(alert["pid"], report["pid"], "{alert}");
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
    let agent = agent(dir.path());
    let (mut spray, r) = Background::start(
        "pr-spray",
        &["udp-spray", "--ports", "5000", "--hold-ms", "120000"],
    );
    assert_eq!(r["sent_bytes"], 5000);
    let m = agent.wait_for(Duration::from_secs(10), "send_map_full", |m| {
        lost(m, "send_map_full") > 0
    });
    eprintln!(
        "spray: send_map_full {} send_evicted {} destinations {}",
        lost(&m, "send_map_full"),
        lost(&m, "send_evicted"),
        entries(&m, "destinations")
    );
    exfiltrate_and_expect_alert(&agent, dir.path(), 126, "pr-sendx");
    // The sprayer lingers, idle: its entries leave the maps.
    let m = agent.wait_for(
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
    let agent = agent(dir.path());
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
    let m = agent.wait_for(Duration::from_secs(10), "proc_map_full", |m| {
        lost(m, "proc_map_full") > 0
    });
    eprintln!(
        "idle readers: proc_map_full {} proc_evicted {} processes {}",
        lost(&m, "proc_map_full"),
        lost(&m, "proc_evicted"),
        entries(&m, "processes")
    );
    exfiltrate_and_expect_alert(&agent, dir.path(), 127, "pr-procx");
    // Processes were evicted with bytes no poll had seen: detection may
    // have been blind to them, and the agent says so.
    let m = agent.metrics();
    if lost(&m, "proc_evicted") > 0 {
        agent.wait_for_alert(Duration::from_secs(5), "sensor_blind", |a| {
            a["rule"] == "sensor_blind" && a["severity"] == "critical"
        });
    }
    let m = agent.wait_for(Duration::from_secs(30), "the idle readers pruned", |m| {
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
    let agent = agent(dir.path());
    let junk = dir.path().join("junk.pt");
    tests::pattern_file(&junk, 4096).unwrap();
    let (_maps, r) = Background::start(
        "pr-maps",
        &[
            "mmap-hold",
            "--file",
            junk.to_str().unwrap(),
            "--count",
            "2000",
            "--hold-ms",
            "120000",
        ],
    );
    assert_eq!(r["mappings"], 2000);
    let m = agent.wait_for(Duration::from_secs(10), "mmap_evicted", |m| {
        lost(m, "mmap_evicted") > 0
    });
    eprintln!(
        "mappings: mmap_evicted {} mappings {}",
        lost(&m, "mmap_evicted"),
        entries(&m, "mappings")
    );
    agent.wait_for_alert(Duration::from_secs(5), "sensor_blind", |a| {
        a["rule"] == "sensor_blind"
    });
    // The exfiltration maps the weights and sends them from the mapping.
    let weights = dir.path().join("model.safetensors");
    tests::pattern_file(&weights, 32 * MIB).unwrap();
    let peer = Peer::new(128);
    let to = format!("{}:9328", peer.ip);
    let mut cmd = peer.command(workload::program("pr-mmsink"));
    cmd.args(["tcp-sink", "--listen", &to]);
    let sink = workload::Sink::start(cmd);
    let report = workload::report(
        "pr-mmapx",
        &[
            "mmap-send",
            "--file",
            weights.to_str().unwrap(),
            "--to",
            &to,
        ],
    );
    assert_eq!(sink.finish(), 32 * MIB);
    let (_, alert) = agent.wait_for_alert(Duration::from_secs(10), "pr-mmapx", |a| {
        a["rule"] == "read_then_send" && a["comm"] == "pr-mmapx"
    });
    assert_eq!(alert["pid"], report["pid"], "{alert}");
}
