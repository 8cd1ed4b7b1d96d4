//! `sensor tail`: attached to a running agent and standalone, as JSON lines
//! and as a person sees it in a terminal (tmux), filters, a stalled client.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{agent::Agent, assert_within, netns::Peer, workload};

const MIB: u64 = 1 << 20;

fn weights(dir: &Path) -> String {
    let p = dir.join("adapter.safetensors");
    let mut f = std::fs::File::create(&p).unwrap();
    for i in 0..32u8 {
        f.write_all(&vec![i; MIB as usize]).unwrap();
    }
    p.to_str().unwrap().to_string()
}

/// A running `sensor tail` whose stdout lines are collected.
struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    fn start(args: &[&str]) -> Tail {
        let mut child = Command::new(tests::sensor_bin())
            .arg("tail")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sensor tail");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        // Ready once it said how it got its data.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(
            first.contains("sensor tail:"),
            "tail did not start: {first}"
        );
        if first.contains("standalone") {
            // Counting starts once its programs are attached and polled.
            let mut seen = String::new();
            loop {
                let mut line = String::new();
                if err.read_line(&mut line).unwrap() == 0 {
                    panic!("standalone tail ended before attaching:\n{seen}");
                }
                if line.contains("programs attached") {
                    break;
                }
                seen.push_str(&line);
            }
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
        std::thread::spawn(move || for _ in err.lines() {});
        Tail { child, lines }
    }

    fn json(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits until the activity lines of `pid` add up to `read` and `sent`.
    fn wait_totals(&self, pid: u64, read: u64, sent: u64) -> (u64, u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (mut r, mut w, mut s) = (0, 0, 0);
            for v in self
                .json()
                .iter()
                .filter(|v| v["pid"].as_u64() == Some(pid) && v.get("rule").is_none())
            {
                r += v["read_bytes"].as_u64().unwrap();
                w += v["watched_read_bytes"].as_u64().unwrap();
                s += v["untrusted_sent_bytes"].as_u64().unwrap();
            }
            if (w >= read && s >= sent) || Instant::now() > deadline {
                return (r, w, s);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_totals(tail: &Tail, r: &Value, what: &str) {
    let pid = r["pid"].as_u64().unwrap();
    let (read, sent) = (
        r["read_bytes"].as_u64().unwrap(),
        r["sent_bytes"].as_u64().unwrap(),
    );
    let (all, watched, untrusted) = tail.wait_totals(pid, read, sent);
    assert_within(&format!("{what}: watched read deltas"), watched, read, 1.0);
    assert_within(
        &format!("{what}: untrusted sent deltas"),
        untrusted,
        sent,
        1.0,
    );
    assert!(
        all >= watched,
        "{what}: read_bytes {all} < watched {watched}"
    );
}

#[test]
fn attached_json_sums_to_the_workload_and_filters_others() {
    let dir = tempfile::tempdir().unwrap();
    let file = weights(dir.path());
    let peer = Peer::new();
    let agent = Agent::start(
        &[
            &["--watch", dir.path().to_str().unwrap()][..],
            &tests::SCALED_THRESHOLDS,
        ]
        .concat(),
    );
    let socket = agent.tail_socket.to_str().unwrap().to_string();
    let tail = Tail::start(&[
        "--json",
        "--socket",
        &socket,
        "--comm",
        "tl-work",
        "--interval",
        "0.5",
    ]);
    // Another process reading the same weights: filtered out.
    workload::run(
        "tl-other",
        &["read", "--file", &file, "--bs", "65536"],
        "read_bytes",
    );
    let r = workload::exfiltrate(&peer, "tl-work", Path::new(&file));
    check_totals(&tail, &r, "attached");
    let lines = tail.json();
    let pid = r["pid"].as_u64().unwrap();
    for v in lines.iter().filter(|v| v.get("rule").is_none()) {
        assert_eq!(v["comm"], "tl-work", "the --comm filter let through {v}");
        for key in [
            "ts",
            "pid",
            "comm",
            "container",
            "read_bytes",
            "watched_read_bytes",
            "sent_bytes",
            "untrusted_sent_bytes",
        ] {
            assert!(v.get(key).is_some(), "activity line without {key}: {v}");
        }
    }
    // The alert arrives on the same stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tail
        .json()
        .iter()
        .any(|v| v["rule"] == "read_then_send" && v["pid"].as_u64() == Some(pid))
    {
        assert!(
            Instant::now() < deadline,
            "no alert line in tail: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // --pid selects by pid.
    let by_pid = Tail::start(&["--json", "--socket", &socket, "--pid", "1"]);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        by_pid.json().iter().all(|v| v["pid"] == 1),
        "{:?}",
        by_pid.json()
    );
}

#[test]
fn standalone_mode_shows_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let file = weights(dir.path());
    let peer = Peer::new();
    let missing = dir.path().join("no-agent.sock");
    let tail = Tail::start(&[
        "--json",
        "--socket",
        missing.to_str().unwrap(),
        "--watch",
        dir.path().to_str().unwrap(),
        "--comm",
        "tl-solo",
    ]);
    let r = workload::exfiltrate(&peer, "tl-solo", Path::new(&file));
    check_totals(&tail, &r, "standalone");
}

#[test]
fn human_view_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = weights(dir.path());
    let peer = Peer::new();
    let agent = Agent::start(&["--watch", dir.path().to_str().unwrap()]);
    let session = format!("sensor-tail-{}", std::process::id());
    let cmd = format!(
        "{} tail --socket {} --comm tl-tmux",
        tests::sensor_bin().display(),
        agent.tail_socket.display()
    );
    let ok = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "40",
            &cmd,
        ])
        .status()
        .expect("tmux (cargo xtask setup installs it)");
    assert!(ok.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .status();
        }
    }
    let _kill = Kill(session.clone());
    std::thread::sleep(Duration::from_millis(500));
    let r = workload::exfiltrate(&peer, "tl-tmux", Path::new(&file));
    let pid = r["pid"].to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let screen = loop {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        let screen = String::from_utf8_lossy(&out.stdout).to_string();
        if screen.contains("tl-tmux") || Instant::now() > deadline {
            break screen;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{screen}");
    let header = screen
        .lines()
        .find(|l| l.starts_with("TIME"))
        .unwrap_or_else(|| panic!("no header:\n{screen}"));
    let row = screen
        .lines()
        .find(|l| l.contains("tl-tmux"))
        .unwrap_or_else(|| panic!("no tl-tmux line:\n{screen}"));
    for col in [
        "PID",
        "COMM",
        "CONTAINER",
        "READ",
        "WATCHED",
        "SENT",
        "UNTRUSTED",
        "TOP DESTINATION",
    ] {
        assert!(header.contains(col), "header lacks {col}: {header}");
    }
    // Columns line up: the pid under PID, the command under COMM.
    assert_eq!(
        row.find(pid.as_str()),
        header.find("PID"),
        "\n{header}\n{row}"
    );
    assert_eq!(
        row.find("tl-tmux"),
        header.find("COMM"),
        "\n{header}\n{row}"
    );
    assert!(row.contains("32.0 MiB"), "human units: {row}");
    assert!(
        row.contains(&format!("{} (untrusted)", r["to"].as_str().unwrap())),
        "top destination: {row}"
    );
}

#[test]
fn closed_pipe_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&["--watch", dir.path().to_str().unwrap()]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} tail --socket {} --interval 0.2 | head -1",
            tests::sensor_bin().display(),
            agent.tail_socket.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[test]
fn stalled_client_is_dropped_and_does_not_hold_up_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.bin");
    std::fs::write(&small, vec![1u8; 4096]).unwrap();
    let agent = Agent::start(&["--watch", dir.path().to_str().unwrap()]);
    // Connects, never reads.
    let _stalled = std::os::unix::net::UnixStream::connect(&agent.tail_socket).unwrap();
    let rss_before = rss_kib(agent.pid());
    let noise = workload::program("tl-noise");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dropped = 0;
    while Instant::now() < deadline {
        // Many short-lived readers: many activity lines per poll.
        let children: Vec<Child> = (0..50)
            .map(|_| {
                Command::new(&noise)
                    .args(["read", "--file", small.to_str().unwrap(), "--bs", "4096"])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            c.wait().unwrap();
        }
        let t = Instant::now();
        let m = agent.metrics();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a scrape took {:?} while a tail client stalled",
            t.elapsed()
        );
        dropped = m.sum("sensor_tail_clients_dropped_total", &[]);
        if dropped >= 1 {
            break;
        }
    }
    assert_eq!(dropped, 1, "the stalled client was not dropped within 30 s");
    let rss_after = rss_kib(agent.pid());
    eprintln!("agent RSS {rss_before} KiB -> {rss_after} KiB with a stalled client");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(agent.metrics().sum("sensor_tail_clients", &[]), 0);
}
