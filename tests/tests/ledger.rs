//! Rule `slow_exfil` on the real kernel, scaled down: a horizon of two
//! minutes (4 s buckets), 40 MiB to one destination network. Short-lived
//! processes of one identity (one executable) drip slices of the weights
//! out, each far below the window's thresholds; the ledger adds them up,
//! across agent restarts (SIGTERM and SIGKILL), and `sensor ledger` shows
//! the workloads' own byte counts. A server sending the same total spread
//! over 20 networks stays quiet; a corrupt state file is set aside and
//! recorded while the agent runs on.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tests::{agent::Agent, netns::Peer, num as u, workload::Sink};

const MIB: u64 = 1 << 20;
const SLICE: u64 = 8 * MIB;
const THRESHOLD: u64 = 40 * MIB;

/// The watched weights (one slice), a state dir, and a private copy of the
/// workload binary: the identity is the executable, so each test has its
/// own (tests run side by side).
struct Setup {
    dir: tempfile::TempDir,
    weights: PathBuf,
    state: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("sensor-ledger")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let weights = dir.path().join("models/slice.safetensors");
        tests::pattern_file(&weights, SLICE).unwrap();
        let state = dir.path().join("state");
        Setup {
            dir,
            weights,
            state,
        }
    }

    /// A copy of the workload binary named `name` (its own executable path).
    fn exe(&self, name: &str) -> PathBuf {
        let to = self.dir.path().join(name);
        if !to.exists() {
            std::fs::copy(tests::workload::binary(), &to).unwrap();
        }
        to
    }

    fn agent(&self, extra: &[&str]) -> Agent {
        let mut args = vec![
            "--watch",
            self.dir.path().join("models").to_str().unwrap(),
            "--horizon",
            "120",
            "--horizon-send-bytes",
            "40MiB",
            // The window's rule stays out of the way.
            "--min-read-bytes",
            "1GiB",
            "--min-send-bytes",
            "1GiB",
            "--state-dir",
            self.state.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start(&args)
    }
}

/// One short-lived process of `exe`: reads the slice, sends `bytes` of it
/// to a fresh sink on `peer`; its report.
fn drip(exe: &Path, peer: &Peer, weights: &Path, bytes: u64) -> Value {
    let sink = Sink::start({
        let mut c = peer.command(tests::workload::program("ld-sink"));
        c.args(["tcp-sink", "--listen", &format!("{}:0", peer.addr(false))]);
        c
    });
    let out = Command::new("setsid")
        .arg("-w")
        .arg(exe)
        .args([
            "read-send",
            "--file",
            weights.to_str().unwrap(),
            "--to",
            sink.addr(),
            "--send-bytes",
            &bytes.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(sink.finish(), bytes);
    r
}

fn network(peer: &Peer) -> String {
    let ip = peer.addr(false).to_string();
    let (net, _) = ip.rsplit_once('.').unwrap();
    format!("{net}.0/24")
}

/// `sensor ledger --json` of the state dir: its identity lines.
fn ledger(state: &Path) -> Vec<Value> {
    let out = Command::new(tests::sensor_bin())
        .args(["ledger", "--json", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `sensor ledger` row of the identity of executable `exe`.
fn row_of<'a>(rows: &'a [Value], exe: &Path) -> &'a Value {
    rows.iter()
        .find(|r| {
            r["identity"]
                .as_str()
                .is_some_and(|i| i.ends_with(exe.to_str().unwrap()))
        })
        .unwrap_or_else(|| panic!("no row for {}: {rows:?}", exe.display()))
}

fn slow_exfil(agent: &Agent, identity_exe: &Path) -> Value {
    let exe = identity_exe.to_str().unwrap().to_string();
    let (_, a) = agent.wait_for_alert(Duration::from_secs(20), "slow_exfil", |a| {
        a["rule"] == "slow_exfil" && a["identity"].as_str().is_some_and(|i| i.ends_with(&exe))
    });
    a
}

#[test]
fn a_drip_by_short_lived_processes_of_one_identity_alerts_and_the_ledger_shows_it() {
    let s = Setup::new();
    let peer = Peer::new();
    let exe = s.exe("ld-drip");
    let agent = s.agent(&[]);
    let mut sent = 0;
    let mut read = 0;
    for i in 0..6 {
        let r = drip(&exe, &peer, &s.weights, SLICE);
        sent += u(&r, "sent_bytes");
        read += u(&r, "read_bytes");
        if i < 4 {
            assert!(
                !agent
                    .alerts()
                    .iter()
                    .any(|(_, a)| a["rule"] == "slow_exfil"),
                "below 40 MiB after {} slices",
                i + 1
            );
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    let a = slow_exfil(&agent, &exe);
    assert_eq!(a["network"], network(&peer).as_str(), "{a}");
    assert_eq!(a["severity"], "critical");
    assert!(u(&a, "sent_bytes") >= THRESHOLD, "{a}");
    assert!(u(&a, "watched_read_bytes") >= SLICE, "{a}");
    assert!(
        a["identity"].as_str().unwrap().starts_with("uid=0 exe="),
        "the identity is the uid and executable, no pid: {a}"
    );
    // The ledger, read by `sensor ledger` from the state dir (the agent
    // journals every poll), against the workloads' own counts.
    std::thread::sleep(Duration::from_millis(600));
    let rows = ledger(&s.state);
    let row = row_of(&rows, &exe);
    tests::assert_within(
        "ledger: sent to the network",
        u(&row["destinations"][0], "bytes"),
        sent,
        1.0,
    );
    assert_eq!(row["destinations"][0]["network"], network(&peer).as_str());
    tests::assert_within(
        "ledger: watched bytes read",
        u(row, "watched_read_bytes"),
        read,
        1.0,
    );
    assert!(!row["alerts"].as_array().unwrap().is_empty(), "{row}");
    eprintln!("slow_exfil: {a}\nledger: {row}");
    agent.stop();
}

#[test]
fn the_ledger_survives_sigterm_and_sigkill_in_the_middle_of_a_drip() {
    let s = Setup::new();
    let peer = Peer::new();
    let exe = s.exe("ld-restart");
    let mut sent = 0;
    let agent = s.agent(&[]);
    for _ in 0..2 {
        sent += u(&drip(&exe, &peer, &s.weights, SLICE), "sent_bytes");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.stop().success());
    let agent = s.agent(&[]);
    for _ in 0..2 {
        sent += u(&drip(&exe, &peer, &s.weights, SLICE), "sent_bytes");
    }
    // A poll (200 ms) to journal the last bytes, then a crash.
    std::thread::sleep(Duration::from_millis(600));
    agent.kill();
    let agent = s.agent(&[]);
    sent += u(&drip(&exe, &peer, &s.weights, SLICE), "sent_bytes");
    let a = slow_exfil(&agent, &exe);
    tests::assert_within(
        "the alert's total across two restarts",
        u(&a, "sent_bytes"),
        sent,
        1.0,
    );
    let rows = ledger(&s.state);
    assert!(
        rows.iter().all(|r| r.get("gap").is_none()),
        "no gap after clean restarts and a kill: {rows:?}"
    );
}

#[test]
fn a_server_sending_the_same_total_to_twenty_networks_stays_quiet() {
    let s = Setup::new();
    let peers: Vec<Peer> = (0..20).map(|_| Peer::new()).collect();
    let exe = s.exe("ld-server");
    let agent = s.agent(&[]);
    let mut sent = 0;
    // The server loads the weights (reads), then answers 20 client
    // networks with 3 MiB each: 60 MiB in all, 3 MiB per network.
    for p in &peers {
        sent += u(&drip(&exe, p, &s.weights, 3 * MIB), "sent_bytes");
    }
    assert!(sent >= THRESHOLD);
    std::thread::sleep(Duration::from_secs(2));
    let noisy: Vec<Value> = agent
        .alerts()
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| a["rule"] == "slow_exfil")
        .collect();
    assert!(noisy.is_empty(), "{noisy:?}");
    let rows = ledger(&s.state);
    let row = row_of(&rows, &exe);
    tests::assert_within(
        "ledger: untrusted bytes",
        u(row, "untrusted_sent_bytes"),
        sent,
        1.0,
    );
    assert_eq!(
        row["destinations"].as_array().unwrap().len(),
        10,
        "top 10 listed: {row}"
    );
}

#[test]
fn a_corrupt_state_file_is_set_aside_recorded_and_the_agent_counts_on() {
    let s = Setup::new();
    std::fs::create_dir_all(&s.state).unwrap();
    std::fs::write(s.state.join("ledger.json"), "{\"version\":1,\"ids\":{[").unwrap();
    let peer = Peer::new();
    let exe = s.exe("ld-corrupt");
    let agent = s.agent(&[]);
    assert!(
        agent.stderr().contains("ledger state unreadable"),
        "a clear message: {}",
        agent.stderr()
    );
    for _ in 0..5 {
        drip(&exe, &peer, &s.weights, SLICE);
    }
    slow_exfil(&agent, &exe);
    let set_aside = std::fs::read_dir(&s.state)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("ledger.json.corrupt-")
        });
    assert!(set_aside, "the damaged file is kept aside");
    let rows = ledger(&s.state);
    let gap = rows
        .iter()
        .find_map(|r| r.get("gap"))
        .unwrap_or_else(|| panic!("the gap is recorded: {rows:?}"));
    assert!(
        gap["reason"].as_str().unwrap().contains("corrupt snapshot"),
        "{gap}"
    );
}

#[test]
fn bad_horizon_values_are_usage_errors() {
    for (flag, value) in [
        ("--horizon", "30x"),
        ("--horizon", "5"),
        ("--horizon-send-bytes", "0"),
    ] {
        let out = Command::new(tests::sensor_bin())
            .args(["run", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(value) && err.lines().count() == 1, "{err}");
    }
    let out = Command::new(tests::sensor_bin())
        .args(["ledger", "--state-dir", "/nonexistent/sensor-state"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sensor-state"));
}
