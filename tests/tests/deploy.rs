//! Deployment: the manifests validate, the shipped rules and dashboard are
//! consistent with what the agent exports, and end to end a real Prometheus
//! (Debian's 2.42) scrapes the agent and the shipped rule's alert reaches a
//! real Alertmanager. The DaemonSet's capability set is enough, and each of
//! the BPF ones is needed.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{agent::Agent, netns::Peer, scrape, workload};

const MIB: u64 = 1 << 20;

use tests::{repo, yaml};

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (cargo xtask setup installs it)"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn manifests_lint_and_validate() {
    let root = repo();
    let (ok, out) = run(Command::new("python3")
        .args(["-m", "yamllint", "--strict", "-c"])
        .arg(root.join(".yamllint"))
        .arg(root.join("deploy")));
    assert!(ok, "yamllint:\n{out}");
    let k8s = root.join("deploy/kubernetes");
    for f in [
        "namespace.yaml",
        "serviceaccount.yaml",
        "configmap.yaml",
        "daemonset.yaml",
        "service.yaml",
    ] {
        let (ok, out) = run(Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict"])
            .arg(k8s.join(f)));
        assert!(
            ok && !out.contains("WARN") && !out.contains("ERROR"),
            "{f}:\n{out}"
        );
    }
    // Custom resources: no schema in kubernetes-validate; check what ties them together.
    let service = yaml(&k8s.join("service.yaml"));
    let monitor = yaml(&k8s.join("servicemonitor.yaml"));
    let daemonset = yaml(&k8s.join("daemonset.yaml"));
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("ServiceMonitor selector");
    for (k, v) in selector {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "ServiceMonitor selects label {k} the Service lacks"
        );
    }
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert_eq!(&service["spec"]["ports"][0]["name"], port);
    assert_eq!(
        &daemonset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"],
        &service["spec"]["ports"][0]["targetPort"]
    );
    // The kustomization names every manifest of the directory.
    let kust = yaml(&k8s.join("kustomization.yaml"));
    let mut listed: Vec<String> = kust["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(&k8s)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    listed.sort();
    files.sort();
    assert_eq!(listed, files);
}

#[test]
fn configmap_is_a_valid_agent_configuration() {
    let cm = yaml(&repo().join("deploy/kubernetes/configmap.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    // Its watch paths are host mounts that do not exist here; every other key is checked.
    let (ok, out) = run(Command::new(tests::sensor_bin())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--watch", "/tmp", "--dry-run"]));
    assert!(ok, "{out}");
    assert!(out.contains("metrics_addr: 0.0.0.0:9464"), "{out}");
}

#[test]
fn shipped_rules_are_valid_and_the_prometheusrule_matches_them() {
    let rules_path = repo().join("deploy/prometheus/sensor-rules.yaml");
    let (ok, out) = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules_path));
    assert!(ok, "{out}");
    // The rules' own unit tests: the 30-day egress warning fires on a drip
    // and stays quiet on serving; slow_exfil alerts reach Prometheus.
    let (ok, out) = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(repo().join("deploy/prometheus/sensor-rules.test.yaml")));
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let rule = yaml(&repo().join("deploy/kubernetes/prometheusrule.yaml"));
    assert_eq!(
        rule["spec"],
        yaml(&rules_path),
        "prometheusrule.yaml drifted from sensor-rules.yaml"
    );
}

/// An agent that watched an exfiltration and alerted on it.
fn exfil_scene() -> (Agent, tempfile::TempDir, Peer) {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("m.safetensors");
    std::fs::write(&weights, vec![9u8; 32 * MIB as usize]).unwrap();
    let peer = Peer::new();
    let mut args = vec!["--watch", dir.path().to_str().unwrap()];
    args.extend_from_slice(&tests::SCALED_THRESHOLDS);
    let agent = Agent::start(&args);
    let r = workload::exfiltrate(&peer, "dp-exfil", &weights);
    let pid = r["pid"].as_u64().unwrap();
    agent.wait_for_alert(Duration::from_secs(15), "exfiltration", |a| {
        a["pid"].as_u64() == Some(pid)
    });
    (agent, dir, peer)
}

#[test]
fn dashboard_queries_and_promtool_lint_a_real_scrape() {
    let (agent, _dir, _peer) = exfil_scene();
    let metrics = scrape::get(&agent.metrics_url).unwrap();
    // promtool's own linter on what the agent serves.
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );
    // Every metric a dashboard panel queries is one the agent exports.
    let text =
        std::fs::read_to_string(repo().join("deploy/grafana/sensor-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queried = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("sensor_"))
            {
                queried.push(name.to_string());
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in queried {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "dashboard queries {name}, not exported:\n{metrics}"
        );
    }
}

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &str, args: impl FnOnce(&Path, u16) -> Vec<String>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args(args(dir.path(), port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e} (cargo xtask setup installs it)"));
        let s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while scrape::get(&format!("{}/-/ready", s.url)).is_err() {
            assert!(Instant::now() < deadline, "{bin} not ready within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_and_the_shipped_rule_reaches_alertmanager() {
    let am = Server::start("/usr/bin/prometheus-alertmanager", |dir, port| {
        let cfg = dir.join("am.yml");
        std::fs::write(
            &cfg,
            "route:\n  receiver: sink\n  group_wait: 0s\nreceivers:\n  - name: sink\n",
        )
        .unwrap();
        vec![
            format!("--config.file={}", cfg.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ]
    });
    // The agent (no direct push: whatever reaches Alertmanager went through Prometheus).
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("w");
    std::fs::create_dir(&agent_dir).unwrap();
    let agent = Agent::start(
        &[
            &["--watch", agent_dir.to_str().unwrap()][..],
            &tests::SCALED_THRESHOLDS,
        ]
        .concat(),
    );
    let target = agent
        .metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    // The rules Prometheus loads are the PrometheusRule's own spec.
    let rule = yaml(&repo().join("deploy/kubernetes/prometheusrule.yaml"));
    let rules_file = dir.path().join("rules.yaml");
    std::fs::write(&rules_file, serde_norway::to_string(&rule["spec"]).unwrap()).unwrap();
    let am_target = am.url.trim_start_matches("http://").to_string();
    let prom = Server::start("/usr/bin/prometheus", |pdir, port| {
        let cfg = pdir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [\"{}\"]\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{am_target}\"]\n\
                 scrape_configs:\n  - job_name: sensor\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules_file.display()
            ),
        )
        .unwrap();
        vec![
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", pdir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]
    });
    // Prometheus scrapes the agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = scrape::get(&format!(
            "{}/api/v1/query?query=up%7Bjob%3D%22sensor%22%7D",
            prom.url
        ))
        .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the agent: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Exfiltration.
    let weights = agent_dir.join("m.safetensors");
    std::fs::write(&weights, vec![9u8; 32 * MIB as usize]).unwrap();
    let peer = Peer::new();
    workload::exfiltrate(&peer, "dp-e2e", &weights);
    // The rule's alert arrives in Alertmanager.
    let deadline = Instant::now() + Duration::from_secs(60);
    let alert = loop {
        let body = scrape::get(&format!("{}/api/v2/alerts", am.url)).unwrap();
        let alerts: Value = serde_json::from_str(&body).unwrap();
        let found = alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == "SensorWeightExfiltration")
            .cloned();
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "SensorWeightExfiltration never reached Alertmanager: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(alert["labels"]["comm"], "dp-e2e", "{alert}");
    assert_eq!(alert["labels"]["rule"], "read_then_send");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(
        alert["labels"]["instance"],
        target.as_str(),
        "the node the alert came from"
    );
}

/// The capabilities the DaemonSet adds (after dropping ALL), upper case as
/// Kubernetes spells them.
fn daemonset_capabilities() -> Vec<String> {
    let daemonset = yaml(&repo().join("deploy/kubernetes/daemonset.yaml"));
    let ctx = &daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(
        ctx["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "the DaemonSet drops ALL first"
    );
    ctx["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("capability name").to_string())
        .collect()
}

/// `setpriv` arguments that give a process exactly `caps` (bounding,
/// permitted and effective for uid 0; nothing inheritable) and
/// no_new_privs (`allowPrivilegeEscalation: false`), as a container runtime
/// does with `drop: [ALL]`, `add: caps`.
fn setpriv_with(caps: &[String]) -> Vec<String> {
    let bounding = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{}", c.to_ascii_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    [
        "setpriv",
        "--bounding-set",
        &bounding,
        "--inh-caps",
        "-all",
        "--no-new-privs",
    ]
    .map(String::from)
    .to_vec()
}

/// One source of truth: the agent's capability table (`sensor check
/// --json`), the DaemonSet's `add` list and the README's privileges table
/// name the same capabilities.
#[test]
fn the_capability_set_has_one_source_of_truth() {
    let out = Command::new(tests::sensor_bin())
        .args(["check", "--json"])
        .output()
        .expect("sensor check");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check output ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let table: Vec<String> = doc["capabilities"]
        .as_array()
        .expect("capabilities in sensor check --json")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(daemonset_capabilities(), table, "DaemonSet vs the agent");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("### Privileges")
        .nth(1)
        .expect("README has a Privileges section");
    let listed: Vec<String> = section
        .lines()
        .skip_while(|l| !l.starts_with("| capability"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('`').nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(listed, table, "README's privileges table vs the agent");
    for c in doc["capabilities"].as_array().unwrap() {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", c["name"].as_str().unwrap())))
            .unwrap();
        assert!(
            row.contains(c["why"].as_str().unwrap()),
            "README row {row:?} vs the agent's reason {}",
            c["why"]
        );
    }
}

/// `sensor run` itself (not only `check`) under exactly the DaemonSet's
/// capability set: it starts, drops to what it keeps, counts a workload's
/// watched reads and untrusted sends, alerts, and exits 0 on SIGTERM.
#[test]
fn sensor_run_under_the_daemonset_capability_set_counts_and_alerts() {
    let caps = daemonset_capabilities();
    let wrapper = setpriv_with(&caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_wrapped(
        &wrapper,
        &[
            &["--watch", dir.path().to_str().unwrap()][..],
            &tests::SCALED_THRESHOLDS,
        ]
        .concat(),
        &[],
    );
    // What it holds once attached: BPF, SYS_PTRACE, DAC_READ_SEARCH, and
    // no_new_privs.
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .trim()
            .to_string()
    };
    let expected = (1u64 << 39) | (1 << 19) | (1 << 2);
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        expected,
        "effective capabilities after attach"
    );
    assert_eq!(
        u64::from_str_radix(&field("CapPrm:"), 16).unwrap(),
        expected,
        "permitted capabilities after attach"
    );
    assert_eq!(field("NoNewPrivs:"), "1");
    let weights = dir.path().join("m.safetensors");
    tests::pattern_file(&weights, 24 * MIB).unwrap();
    let peer = Peer::new();
    let report = workload::exfiltrate(&peer, "dp-caps", &weights);
    let read = report["read_bytes"].as_u64().unwrap();
    let sent = report["sent_bytes"].as_u64().unwrap();
    let m = agent.wait_for(Duration::from_secs(10), "the workload's counts", |m| {
        m.sum(
            "sensor_socket_send_bytes_total",
            &[("comm", "dp-caps"), ("destination", "untrusted")],
        ) >= sent
    });
    tests::assert_within(
        "watched read bytes",
        m.sum(
            "sensor_file_read_bytes_total",
            &[("comm", "dp-caps"), ("watched", "true")],
        ),
        read,
        1.0,
    );
    tests::assert_within(
        "untrusted sent bytes",
        m.sum(
            "sensor_socket_send_bytes_total",
            &[("comm", "dp-caps"), ("destination", "untrusted")],
        ),
        sent,
        1.0,
    );
    let (_, alert) = agent.wait_for_alert(Duration::from_secs(10), "read_then_send", |a| {
        a["rule"] == "read_then_send" && a["comm"] == "dp-caps"
    });
    assert_eq!(alert["pid"], report["pid"], "{alert}");
    // exe and cmdline need SYS_PTRACE: kept.
    assert!(
        alert["exe"].as_str().unwrap_or("").contains("dp-caps")
            || alert["exe"]
                .as_str()
                .unwrap_or("")
                .contains("sensor-workload"),
        "{alert}"
    );
    let status = agent.stop();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// `sensor check` under a bounding set: the DaemonSet's set is enough; the
/// BPF capabilities are each needed.
#[test]
fn the_daemonset_capability_set_is_enough_and_bpf_caps_are_needed() {
    let added = daemonset_capabilities();
    let check = |caps: &[String]| -> Value {
        let out = Command::new("setpriv")
            .args(&setpriv_with(caps)[1..])
            .arg(tests::sensor_bin())
            .args(["check", "--json"])
            .output()
            .expect("setpriv (util-linux)");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check output ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let all_ok = |doc: &Value| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "ok")
    };
    let with_all = check(&added);
    assert!(
        with_all["ready"] == true && all_ok(&with_all),
        "with {added:?}: {with_all}"
    );
    for needed in ["BPF", "PERFMON", "NET_ADMIN"] {
        let fewer: Vec<String> = added
            .iter()
            .filter(|c| c.as_str() != needed)
            .cloned()
            .collect();
        let doc = check(&fewer);
        assert!(
            !all_ok(&doc),
            "without {needed} every check still passed: {doc}"
        );
        eprintln!("without {needed}: ready={} ", doc["ready"]);
    }
}
