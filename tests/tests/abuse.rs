//! A local user abusing the agent: 4,000 loopback chatterers, a sprayer to
//! 32,768 destinations, a process with 65,536 mappings of a watched file,
//! one with a million open descriptors. The agent stays under its memory
//! bound, polls on schedule, `/healthz` stays honest, and a real
//! exfiltration during the abuse still alerts. Figures in docs/RELIABILITY.md.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{agent::Agent, netns::Peer, pattern_file, scrape, workload, SCALED_THRESHOLDS};

const MIB: u64 = 1 << 20;
/// The agent's resident memory bound under the abuse.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// The production default poll interval.
const POLL_MS: u64 = 1000;

/// A background abuser, killed (and reaped) on drop, also when the test fails.
struct Abuser {
    child: Child,
    ready: Value,
}

impl Abuser {
    fn start(comm: &str, args: &[&str]) -> Abuser {
        let mut child = Command::new(workload::program(comm))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn abuser");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        // The guard exists before the wait, so a failure still kills it.
        let mut a = Abuser {
            child,
            ready: Value::Null,
        };
        BufReader::new(out)
            .read_line(&mut line)
            .expect("abuser output");
        a.ready = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("{comm} not ready ({e}): {line:?}"));
        eprintln!("{comm}: {}", a.ready);
        a
    }

    fn num(&self, k: &str) -> u64 {
        self.ready[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k}: {}", self.ready))
    }
}

impl Drop for Abuser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// vm.max_map_count raised for the test, restored on drop.
struct MaxMapCount(Option<String>);

impl MaxMapCount {
    const PATH: &str = "/proc/sys/vm/max_map_count";

    fn at_least(n: u64) -> MaxMapCount {
        let old = std::fs::read_to_string(Self::PATH).expect("max_map_count");
        if old.trim().parse::<u64>().unwrap_or(0) >= n {
            return MaxMapCount(None);
        }
        std::fs::write(Self::PATH, n.to_string()).expect("raise max_map_count");
        MaxMapCount(Some(old))
    }
}

impl Drop for MaxMapCount {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(Self::PATH, old.trim());
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

/// A sample's value in the exposition text (histogram parts included).
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the scrape"))
}

#[test]
fn abuse_keeps_the_agent_bounded_and_on_time_and_exfiltration_still_alerts() {
    let _maps = MaxMapCount::at_least(70_000);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("many.safetensors");
    pattern_file(&weights, 64 * 1024).unwrap();
    let secret = dir.path().join("secret.safetensors");
    pattern_file(&secret, 24 * MIB).unwrap();
    // The descriptor abuser's file: watched by extension only, so no walk
    // of the watched directories can find its path; only its descriptors.
    let fd_dir = tempfile::tempdir().unwrap();
    let fd_file = fd_dir.path().join("held.abusefd");
    pattern_file(&fd_file, 64 * 1024).unwrap();
    let mut args = vec![
        "--watch",
        dir.path().to_str().unwrap(),
        "--watch",
        "*.abusefd",
        "--poll-interval-ms",
        "1000",
    ];
    args.extend(SCALED_THRESHOLDS);
    let agent = Agent::start(&args);
    let rss_idle = rss_kib(agent.pid());
    let spray_peer = Peer::new();
    let exfil_peer = Peer::new();

    let chatter = Abuser::start(
        "ab-chatter",
        &[
            "loopback-chatter",
            "--procs",
            "4000",
            "--interval-ms",
            "3000",
            "--to",
            "127.0.0.1",
            "--port",
            "9",
        ],
    );
    assert_eq!(chatter.num("procs"), 4000);
    let spray_to = spray_peer.ip.to_string();
    let spray = Abuser::start(
        "ab-spray",
        &[
            "spray",
            "--to",
            &spray_to,
            "--dests",
            "32768",
            "--interval-ms",
            "1000",
        ],
    );
    assert_eq!(spray.num("dests"), 32_768);
    let mmaps = Abuser::start(
        "ab-mmap",
        &[
            "mmap-many",
            "--file",
            weights.to_str().unwrap(),
            "--count",
            "65536",
        ],
    );
    assert_eq!(mmaps.num("mappings"), 65_536);
    let fds = Abuser::start(
        "ab-fds",
        &[
            "fds",
            "--count",
            "1000000",
            "--file",
            fd_file.to_str().unwrap(),
        ],
    );
    // A million where CAP_SYS_RESOURCE lets RLIMIT_NOFILE go that high
    // (fs.nr_open allows 1,048,576); else the hard limit, which must still
    // be several times the agent's per-process search budget (4,096).
    let held_fds = fds.num("fds");
    assert!(held_fds >= 16_000, "{held_fds} descriptors");
    eprintln!("abusers set up; agent idle VmRSS {rss_idle} KiB");

    // Watch the agent through the abuse; the exfiltration runs meanwhile.
    let healthz = agent.metrics_url.replace("/metrics", "/healthz");
    let exfil = std::thread::spawn({
        let secret = secret.clone();
        move || {
            std::thread::sleep(Duration::from_secs(10));
            workload::exfiltrate(&exfil_peer, "ab-exfil", &secret)
        }
    });
    let start = Instant::now();
    let mut rss_peak = 0;
    let mut last: Option<(Instant, f64)> = None;
    let mut max_gap = Duration::ZERO;
    let mut unhealthy = Vec::new();
    let mut first_polls = None;
    while start.elapsed() < Duration::from_secs(45) {
        let now = Instant::now();
        let m = agent.metrics();
        let polls = value(&m.text, "sensor_poll_duration_seconds_count");
        first_polls.get_or_insert(polls);
        match last {
            Some((at, n)) if polls > n => {
                max_gap = max_gap.max(now - at);
                last = Some((now, polls));
            }
            Some((at, _)) => max_gap = max_gap.max(now - at),
            None => last = Some((now, polls)),
        }
        if let Err(e) = scrape::get(&healthz) {
            unhealthy.push(format!("{:?}: {e}", start.elapsed()));
        }
        rss_peak = rss_peak.max(rss_kib(agent.pid()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = exfil.join().expect("exfiltration");
    let pid = report["pid"].as_u64().unwrap();
    let (_, alert) = agent.wait_for_alert(Duration::from_secs(20), "the exfiltration", |a| {
        a["rule"] == "read_then_send" && a["pid"].as_u64() == Some(pid)
    });
    let m = agent.metrics();
    let polls = value(&m.text, "sensor_poll_duration_seconds_count") - first_polls.unwrap_or(0.0);
    let max_poll = value(&m.text, "sensor_poll_duration_max_seconds");
    eprintln!(
        "abuse: {held_fds} descriptors held; agent VmRSS idle {rss_idle} KiB, peak {rss_peak} KiB; {polls} polls in 45 s \
         (interval {POLL_MS} ms), longest poll {max_poll:.3} s, longest gap between completed \
         polls seen {max_gap:?}; alert: {}",
        alert["comm"]
    );
    assert_eq!(alert["comm"], "ab-exfil", "{alert}");
    assert!(
        rss_peak <= RSS_BOUND_KIB,
        "agent VmRSS peaked at {rss_peak} KiB (bound {RSS_BOUND_KIB})"
    );
    assert!(
        max_gap <= Duration::from_millis(3 * POLL_MS),
        "polls fell behind: {max_gap:?} without a completed poll"
    );
    assert!(
        polls >= 45.0 * 1000.0 / POLL_MS as f64 * 0.8,
        "only {polls} polls in 45 s"
    );
    assert!(unhealthy.is_empty(), "/healthz failed: {unhealthy:?}");
    drop((chatter, spray, mmaps, fds));
}
