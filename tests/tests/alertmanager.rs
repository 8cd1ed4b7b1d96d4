//! Alerts reach a real Alertmanager (Debian's prometheus-alertmanager,
//! started here on loopback) through its v2 API, also over TLS with a CA
//! file; an Alertmanager that is down does not hold back the alert lines or
//! the counting; one that refuses an alert (4xx) is not asked again; at
//! SIGTERM queued alerts are still pushed, within a bound; credentials never
//! reach the logs.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{agent::Agent, bpf, netns::Peer, scrape, workload};

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
fn exfiltrate(dir: &std::path::Path, peer: &Peer, comm: &str) -> u64 {
    let weights = dir.join("w.safetensors");
    std::fs::write(&weights, vec![5u8; 32 * MIB as usize]).unwrap();
    workload::exfiltrate(peer, comm, &weights)["pid"]
        .as_u64()
        .expect("pid")
}

const WINDOW: [&str; 2] = ["--window", "60"];

#[test]
fn alert_reaches_alertmanager_v2_api() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::new();
    let mut args = vec![
        "--watch",
        dir.path().to_str().unwrap(),
        "--alertmanager-url",
        &am.url,
    ];
    args.extend_from_slice(&tests::SCALED_THRESHOLDS);
    args.extend_from_slice(&WINDOW);
    let agent = Agent::start(&args);
    let pid = exfiltrate(dir.path(), &peer, "am-exfil");
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
    let peer = Peer::new();
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
    let pid = exfiltrate(dir.path(), &peer, "am-down-exfil");
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

/// One request the fake Alertmanager received.
#[derive(Clone, Debug)]
struct Request {
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A fake Alertmanager: records each request as it arrives, then answers
/// `status` after `delay`.
struct FakeAm {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeAm {
    fn start(status: u16, delay: Duration) -> FakeAm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.push((k.trim().to_string(), v.trim().to_string()));
                            }
                        }
                        let len: usize = headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0u8; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        seen.lock().unwrap().push(Request {
                            headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        std::thread::sleep(delay);
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                        );
                        if conn.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeAm { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// The ids of the agent's cgroup links (detaching one raises a
/// `sensor_tamper` alert: an alert without a network workload).
fn cgroup_links(pid: u32) -> Vec<String> {
    bpf::fdinfo(pid)
        .iter()
        .filter(|e| bpf::field(e, "link_type") == Some("cgroup"))
        .filter_map(|e| bpf::field(e, "link_id").map(String::from))
        .collect()
}

fn detach(link: &str) {
    bpf::bpftool(&["link", "detach", "id", link]);
}

#[test]
fn alertmanager_4xx_is_not_retried_and_credentials_stay_out_of_logs() {
    let am = FakeAm::start(400, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-9f3a7c1e55\n").unwrap();
    let alerts_file = dir.path().join("alerts.jsonl");
    let url = am.url.replace("http://", "http://am-user:pa55word@");
    let agent = Agent::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--alertmanager-url",
        &url,
        "--alertmanager-bearer-token-file",
        token.to_str().unwrap(),
        "--alerts-file",
        alerts_file.to_str().unwrap(),
    ]);
    let mode = std::fs::metadata(&alerts_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "alerts file mode {mode:o}");
    let links = cgroup_links(agent.pid());
    detach(&links[0]);
    agent.wait_for_alert(Duration::from_secs(3), "program_detached", |a| {
        a["what"] == "program_detached"
    });
    // Retries would come after 0.5, 1.5 and 3.5 s.
    agent.wait_for(Duration::from_secs(5), "the refused push counted", |m| {
        m.sum(
            "sensor_alert_sink_errors_total",
            &[("sink", "alertmanager")],
        ) == 1
    });
    std::thread::sleep(Duration::from_secs(4));
    let reqs = am.requests();
    assert_eq!(reqs.len(), 1, "one request for one refused alert: {reqs:?}");
    assert_eq!(
        reqs[0].header("authorization"),
        Some("Bearer tok-9f3a7c1e55")
    );
    assert!(reqs[0].body.contains("SensorTamper"), "{}", reqs[0].body);
    let m = agent.metrics();
    assert_eq!(
        m.sum(
            "sensor_alert_sink_errors_total",
            &[("sink", "alertmanager")]
        ),
        1
    );
    let logs = agent.stderr();
    assert!(logs.contains("refused"), "the refusal is logged: {logs}");
    assert!(
        !logs.contains("pa55word") && !logs.contains("am-user") && !logs.contains("tok-9f3a7c1e55"),
        "credentials in the logs: {logs}"
    );
    assert!(agent.stop().success());
}

#[test]
fn queued_alerts_are_flushed_at_sigterm_within_a_bound() {
    // Each answer takes 2 s: the second alert waits in the queue behind
    // the first when SIGTERM comes.
    let am = FakeAm::start(200, Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--alertmanager-url",
        &am.url,
    ]);
    let links = cgroup_links(agent.pid());
    assert_eq!(links.len(), 2, "{links:?}");
    for l in &links {
        detach(l);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while agent
        .alerts()
        .iter()
        .filter(|(_, a)| a["what"] == "program_detached")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "two alerts: {:?}",
            agent.alerts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = am.requests().len();
    let t = Instant::now();
    assert!(agent.stop().success());
    let took = t.elapsed();
    let reqs = am.requests();
    eprintln!(
        "FLUSH: {before} of 2 alerts pushed at SIGTERM, {} after; exit took {took:?}",
        reqs.len()
    );
    assert!(before < 2, "the second alert was still queued at SIGTERM");
    for l in &links {
        assert!(
            reqs.iter().any(|r| r.body.contains(&format!("link {l} "))),
            "alert for link {l} pushed: {reqs:?}"
        );
    }
    assert!(took < Duration::from_secs(8), "exit took {took:?}");

    // An Alertmanager that never answers: the agent still exits within
    // the bound (5 s), the alert counted as not delivered.
    let stuck = FakeAm::start(200, Duration::from_secs(120));
    let agent = Agent::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--alertmanager-url",
        &stuck.url,
    ]);
    let links = cgroup_links(agent.pid());
    detach(&links[0]);
    agent.wait_for_alert(Duration::from_secs(3), "program_detached", |a| {
        a["what"] == "program_detached"
    });
    let t = Instant::now();
    assert!(agent.stop().success());
    let took = t.elapsed();
    eprintln!("FLUSH: stuck Alertmanager, exit took {took:?}");
    assert_eq!(stuck.requests().len(), 1);
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
}

#[test]
fn alerts_reach_alertmanager_over_tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (ca, crt, key) = (p("ca.crt"), p("am.crt"), p("am.key"));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    // A CA, and a server certificate it signs (rustls does not accept a
    // CA certificate as the server's).
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            &p("ca.key"),
            "-out",
            &ca,
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &key,
            "-out",
            &p("am.csr"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &p("am.csr"),
            "-CA",
            &ca,
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &crt,
        ],
    ] {
        let ok = Command::new("openssl").args(&args).output().unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let crt = PathBuf::from(crt);
    let key = PathBuf::from(key);
    let ca = PathBuf::from(ca);
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: sink\n  group_wait: 0s\nreceivers:\n  - name: sink\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new("/usr/bin/prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config.file={}", web.display()))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start alertmanager");
    let url = format!("https://127.0.0.1:{port}");
    let curl = |path: &str| -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&ca)
            .arg(format!("{url}{path}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl("/-/ready").is_none() {
        assert!(Instant::now() < deadline, "alertmanager (TLS) not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let agent = Agent::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--alertmanager-url",
        &url,
        "--alertmanager-ca-file",
        ca.to_str().unwrap(),
    ]);
    let links = cgroup_links(agent.pid());
    detach(&links[0]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alerts: Value = serde_json::from_str(&curl("/api/v2/alerts").unwrap_or_default())
            .unwrap_or(Value::Null);
        let found = alerts.as_array().into_iter().flatten().any(|a| {
            a["labels"]["alertname"] == "SensorTamper" && a["labels"]["what"] == "program_detached"
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SensorTamper alert over TLS: {alerts}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = agent.metrics();
    assert_eq!(
        m.sum(
            "sensor_alert_sink_errors_total",
            &[("sink", "alertmanager")]
        ),
        0
    );
    assert!(agent.stop().success());
    let _ = child.kill();
    let _ = child.wait();
}
