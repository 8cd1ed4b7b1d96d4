//! Alerts reach a real Alertmanager (Debian's prometheus-alertmanager,
//! started here on loopback) through its v2 API; an Alertmanager that is
//! down does not hold back the alert lines or the counting.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{agent::Agent, netns::Peer, scrape, workload};

const MIB: u64 = 1 << 20;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let bin = PathBuf::from("/usr/bin/prometheus-alertmanager");
        assert!(
            bin.exists(),
            "{} missing: `cargo xtask setup` installs prometheus-alertmanager",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: sink\n  group_wait: 0s\nreceivers:\n  - name: sink\n",
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while scrape::get(&format!("{}/-/ready", am.url)).is_err() {
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    fn alerts(&self) -> Vec<Value> {
        let body = scrape::get(&format!("{}/api/v2/alerts", self.url)).expect("GET /api/v2/alerts");
        serde_json::from_str::<Value>(&body)
            .expect("alerts JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes 32 MiB of weights into `dir` and sends them to `peer`; returns the sender's pid.
fn exfiltrate(dir: &std::path::Path, peer: &Peer, comm: &str, port: u16) -> u64 {
    let weights = dir.join("w.safetensors");
    std::fs::write(&weights, vec![5u8; 32 * MIB as usize]).unwrap();
    workload::exfiltrate(peer, comm, &weights, port)["pid"]
        .as_u64()
        .expect("pid")
}

const WINDOW: [&str; 2] = ["--window", "60"];

#[test]
fn alert_reaches_alertmanager_v2_api() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::new(100);
    let mut args = vec![
        "--watch",
        dir.path().to_str().unwrap(),
        "--alertmanager-url",
        &am.url,
    ];
    args.extend_from_slice(&tests::SCALED_THRESHOLDS);
    args.extend_from_slice(&WINDOW);
    let agent = Agent::start(&args);
    let pid = exfiltrate(dir.path(), &peer, "am-exfil", 8100);
    let (_, line) = agent.wait_for_alert(Duration::from_secs(15), "stdout alert", |a| {
        a["pid"].as_u64() == Some(pid)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid_label = pid.to_string();
    let pushed = loop {
        let found = am
            .alerts()
            .into_iter()
            .find(|a| a["labels"]["pid"].as_str() == Some(pid_label.as_str()));
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "alert for pid {pid} not in Alertmanager: {:?}",
            am.alerts()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(pushed["labels"]["alertname"], "SensorReadThenSend");
    assert_eq!(pushed["labels"]["rule"], "read_then_send");
    assert_eq!(pushed["labels"]["scope"], "process");
    assert_eq!(pushed["labels"]["comm"], "am-exfil");
    assert_eq!(pushed["labels"]["actor"], format!("process:{pid}"));
    assert_eq!(pushed["status"]["state"], "active", "{pushed}");
    let carried: Value = serde_json::from_str(
        pushed["annotations"]["alert"]
            .as_str()
            .expect("alert annotation"),
    )
    .unwrap();
    assert_eq!(
        carried, line,
        "Alertmanager carries the same alert as the JSON line"
    );
}

#[test]
fn alertmanager_down_does_not_hold_back_alerts_or_counting() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::new(101);
    // Nothing listens there.
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut args = vec![
        "--watch",
        dir.path().to_str().unwrap(),
        "--alertmanager-url",
        &url,
    ];
    args.extend_from_slice(&tests::SCALED_THRESHOLDS);
    args.extend_from_slice(&WINDOW);
    let agent = Agent::start(&args);
    let pid = exfiltrate(dir.path(), &peer, "am-down-exfil", 8101);
    agent.wait_for_alert(
        Duration::from_secs(15),
        "stdout alert with Alertmanager down",
        |a| a["pid"].as_u64() == Some(pid),
    );
    // Counting goes on while the push is retried.
    let truth = workload::run(
        "am-down-read",
        &[
            "read",
            "--file",
            dir.path().join("w.safetensors").to_str().unwrap(),
            "--bs",
            "65536",
        ],
        "read_bytes",
    );
    agent.wait_for(Duration::from_secs(10), "counting after the alert", |m| {
        m.sum(
            "sensor_file_read_bytes_total",
            &[("comm", "am-down-read"), ("watched", "true")],
        ) >= truth
    });
}
