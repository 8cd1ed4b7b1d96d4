//! The shipped image in a real container runtime (podman with runc), run
//! the way the DaemonSet runs it: the init container installs the seccomp
//! profile, then the agent's container starts with the manifest's
//! securityContext (user, capabilities, read-only root, no_new_privs, the
//! Localhost seccomp profile), hostPID, its volumes, args and environment.
//! It must attach, count a host workload's watched reads and untrusted
//! sends within 1 %, raise `read_then_send`, and detach cleanly on stop.
//!
//! The image is `SENSOR_IMAGE` (`cargo xtask test` builds it with
//! `cargo xtask image`, from Debian packages and the release binary). Host
//! paths a node would own (`/models`, `/run/sensor`, `/var/log/sensor`,
//! `/var/log/pods`, the kubelet's seccomp directory) are temporary
//! directories here; `/sys/...` mounts are the real ones.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{bpf, netns::Peer, scrape, workload};

const MIB: u64 = 1 << 20;

use tests::{repo, yaml};

fn image() -> String {
    std::env::var("SENSOR_IMAGE").unwrap_or_else(|_| {
        panic!("SENSOR_IMAGE is not set: run `cargo xtask test` (it builds the image), or `cargo xtask image --tag T` and SENSOR_IMAGE=T")
    })
}

/// `podman rm -f` on drop, so a failing test leaves no container behind.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// podman arguments for a container's securityContext, as the kubelet would
/// hand it to the runtime. `seccomp_dir` stands for the kubelet's seccomp
/// directory (Localhost profiles are resolved there).
fn security_args(ctx: &Value, seccomp_dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    assert_ne!(ctx["privileged"], true, "the agent is not privileged");
    if let Some(uid) = ctx["runAsUser"].as_u64() {
        args.push(format!("--user={uid}"));
    }
    if ctx["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if ctx["allowPrivilegeEscalation"] == false {
        args.push("--security-opt=no-new-privileges".into());
    }
    for c in ctx["capabilities"]["drop"].as_array().into_iter().flatten() {
        args.push(format!("--cap-drop={}", c.as_str().unwrap()));
    }
    for c in ctx["capabilities"]["add"].as_array().into_iter().flatten() {
        args.push(format!("--cap-add={}", c.as_str().unwrap()));
    }
    match ctx["seccompProfile"]["type"].as_str() {
        Some("RuntimeDefault") | None => {}
        Some("Unconfined") => args.push("--security-opt=seccomp=unconfined".into()),
        Some("Localhost") => {
            let rel = ctx["seccompProfile"]["localhostProfile"].as_str().unwrap();
            args.push(format!(
                "--security-opt=seccomp={}",
                seccomp_dir.join(rel).display()
            ));
        }
        Some(other) => panic!("unknown seccompProfile type {other}"),
    }
    args
}

/// `-v` arguments for a container's volumeMounts; `sources` maps each pod
/// volume to the host directory standing for it.
fn volume_args(container: &Value, sources: &BTreeMap<String, PathBuf>) -> Vec<String> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let name = m["name"].as_str().unwrap();
            let src = sources
                .get(name)
                .unwrap_or_else(|| panic!("no host source for volume {name}"));
            let ro = if m["readOnly"] == true { ":ro" } else { "" };
            format!(
                "-v={}:{}{ro}",
                src.display(),
                m["mountPath"].as_str().unwrap()
            )
        })
        .collect()
}

fn podman(args: &[String]) -> std::process::Output {
    Command::new("podman")
        .arg("--runtime=runc")
        .args(args)
        .output()
        .expect("podman (cargo xtask setup installs it)")
}

#[test]
fn the_image_runs_as_the_daemonset_runs_it_counts_and_alerts() {
    let k8s = repo().join("deploy/kubernetes");
    let ds = yaml(&k8s.join("daemonset.yaml"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let p = tmp.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    // What each pod volume is on this host.
    let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
    let remapped: BTreeMap<&str, PathBuf> = [
        ("/models", dir("models")),
        ("/run/sensor", dir("run")),
        ("/var/log/sensor", dir("log")),
        ("/var/log/pods", dir("pods")),
        ("/var/lib/kubelet/seccomp", dir("kubelet-seccomp")),
        ("/var/lib/sensor", dir("state")),
    ]
    .into_iter()
    .collect();
    for v in pod["volumes"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_string();
        let src = if let Some(path) = v["hostPath"]["path"].as_str() {
            remapped
                .get(path)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(path))
        } else if let Some(cm) = v["configMap"]["name"].as_str() {
            let d = dir(&format!("cm-{cm}"));
            match cm {
                "sensor-config" => {
                    let doc = yaml(&k8s.join("configmap.yaml"));
                    for (key, text) in doc["data"].as_object().unwrap() {
                        std::fs::write(d.join(key), text.as_str().unwrap()).unwrap();
                    }
                }
                // Generated by kustomize from the file of the same name.
                "sensor-seccomp" => {
                    std::fs::copy(
                        k8s.join("sensor-seccomp.json"),
                        d.join("sensor-seccomp.json"),
                    )
                    .unwrap();
                }
                other => panic!("unknown ConfigMap {other}"),
            }
            d
        } else {
            panic!("volume {name}: only hostPath and configMap are expected")
        };
        sources.insert(name, src);
    }
    let seccomp_dir = remapped["/var/lib/kubelet/seccomp"].clone();
    let image = image();
    let ulimits = [
        "--ulimit=nofile=4096:4096".to_string(),
        "--ulimit=nproc=4096:4096".to_string(),
    ];

    // The init container installs the profile where the kubelet looks.
    for init in pod["initContainers"].as_array().into_iter().flatten() {
        let mut args = vec!["run".to_string(), "--rm".into()];
        args.extend(ulimits.iter().cloned());
        args.extend(security_args(&init["securityContext"], &seccomp_dir));
        args.extend(volume_args(init, &sources));
        let cmd = init["command"].as_array().unwrap();
        args.push(format!("--entrypoint={}", cmd[0].as_str().unwrap()));
        args.push(image.clone());
        args.extend(cmd[1..].iter().map(|a| a.as_str().unwrap().to_string()));
        let out = podman(&args);
        assert!(
            out.status.success(),
            "init container {}: {}",
            init["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let main = &pod["containers"][0];
    let ctx = &main["securityContext"];
    if ctx["seccompProfile"]["type"] == "Localhost" {
        let rel = ctx["seccompProfile"]["localhostProfile"].as_str().unwrap();
        assert_eq!(
            std::fs::read(seccomp_dir.join(rel)).unwrap(),
            std::fs::read(k8s.join("sensor-seccomp.json")).unwrap(),
            "the init container installed the shipped profile"
        );
    }

    // The agent's container.
    let name = format!("sensor-ct-{}", std::process::id());
    let guard = Container(name.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let container_port = main["ports"][0]["containerPort"].as_u64().unwrap();
    let mut args = vec![
        "run".to_string(),
        "-d".into(),
        format!("--name={name}"),
        "--pid=host".into(),
        format!("-p=127.0.0.1:{port}:{container_port}"),
    ];
    args.extend(ulimits.iter().cloned());
    args.extend(security_args(ctx, &seccomp_dir));
    args.extend(volume_args(main, &sources));
    for e in main["env"].as_array().into_iter().flatten() {
        let value = e["value"].as_str().unwrap_or("ct-node");
        args.push(format!("--env={}={value}", e["name"].as_str().unwrap()));
    }
    args.push(image.clone());
    args.extend(
        main["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );
    let out = podman(&args);
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = || {
        let o = podman(&["logs".into(), name.clone()]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logs().contains("ready") {
        assert!(
            Instant::now() < deadline,
            "the agent never got ready in its container:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its host pid: what it holds once attached.
    let pid: u32 = String::from_utf8_lossy(
        &podman(&[
            "inspect".into(),
            "--format={{.State.Pid}}".into(),
            name.clone(),
        ])
        .stdout,
    )
    .trim()
    .parse()
    .expect("container pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |f: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(f))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        (1u64 << 39) | (1 << 19) | (1 << 2),
        "BPF, SYS_PTRACE, DAC_READ_SEARCH kept"
    );
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2", "a seccomp filter is in force");
    let progs = bpf::prog_ids_of(pid);
    assert!(progs.len() >= 5, "programs attached: {progs:?}");

    // A host workload exfiltrates weights from the mounted /models.
    let weights = remapped["/models"].join("llama.safetensors");
    tests::pattern_file(&weights, 96 * MIB).unwrap();
    let peer = Peer::new();
    let report = workload::exfiltrate(&peer, "ct-exfil", &weights);
    let read = report["read_bytes"].as_u64().unwrap();
    let sent = report["sent_bytes"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let m = loop {
        let m = scrape::scrape(&url).unwrap_or_else(|e| panic!("{url}: {e}\n{}", logs()));
        if m.sum(
            "sensor_socket_send_bytes_total",
            &[("comm", "ct-exfil"), ("destination", "untrusted")],
        ) >= sent
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "counts never arrived:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    tests::assert_within(
        "watched read bytes (agent in its container)",
        m.sum(
            "sensor_file_read_bytes_total",
            &[("comm", "ct-exfil"), ("watched", "true")],
        ),
        read,
        1.0,
    );
    tests::assert_within(
        "untrusted sent bytes (agent in its container)",
        m.sum(
            "sensor_socket_send_bytes_total",
            &[("comm", "ct-exfil"), ("destination", "untrusted")],
        ),
        sent,
        1.0,
    );
    // The alert, in the alerts file on the node's hostPath.
    let alerts_file = remapped["/var/log/sensor"].join("alerts.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let alert = loop {
        let text = std::fs::read_to_string(&alerts_file).unwrap_or_default();
        if let Some(a) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|a| a["rule"] == "read_then_send" && a["comm"] == "ct-exfil")
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no read_then_send alert in {}:\n{text}\n{}",
            alerts_file.display(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(alert["pid"], report["pid"], "{alert}");
    assert_eq!(alert["host"], "ct-node", "NODE_NAME from the downward API");

    // Stop: SIGTERM, a clean exit, every program detached.
    let out = podman(&["stop".into(), "-t".into(), "30".into(), name.clone()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8_lossy(
        &podman(&[
            "inspect".into(),
            "--format={{.State.ExitCode}}".into(),
            name.clone(),
        ])
        .stdout,
    )
    .trim()
    .to_string();
    assert_eq!(code, "0", "exit code after SIGTERM:\n{}", logs());
    assert!(logs().contains("programs detached"), "{}", logs());
    // The slow_exfil ledger, written under the manifest's security context
    // into the state hostPath, and readable from there with no agent.
    assert_eq!(
        m.sum("sensor_ledger_state_errors_total", &[]),
        0,
        "the state dir was writable:\n{}",
        logs()
    );
    let out = Command::new(tests::sensor_bin())
        .args(["ledger", "--json", "--state-dir"])
        .arg(&remapped["/var/lib/sensor"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = rows
        .iter()
        .find(|r| r["last_comm"] == "ct-exfil")
        .unwrap_or_else(|| panic!("no ledger row for ct-exfil: {rows:?}"));
    tests::assert_within(
        "untrusted sent bytes in the ledger (agent in its container)",
        row["untrusted_sent_bytes"].as_u64().unwrap(),
        sent,
        1.0,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = progs
            .iter()
            .copied()
            .filter(|id| {
                Command::new("bpftool")
                    .args(["prog", "show", "id", &id.to_string()])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs {left:?} still loaded after the container stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(guard);
}

/// The shipped seccomp profile is really in force in the image: a syscall
/// it refuses (unshare) fails under it and works without it, and the agent
/// itself ran under it (test above).
#[test]
fn the_seccomp_profile_refuses_what_it_lists() {
    let profile = repo().join("deploy/kubernetes/sensor-seccomp.json");
    let run = |seccomp: &str| {
        podman(&[
            "run".into(),
            "--rm".into(),
            "--ulimit=nofile=4096:4096".into(),
            "--ulimit=nproc=4096:4096".into(),
            format!("--security-opt=seccomp={seccomp}"),
            "--cap-drop=ALL".into(),
            "--entrypoint=/usr/bin/unshare".into(),
            image(),
            "--user".into(),
            "true".into(),
        ])
    };
    let confined = run(profile.to_str().unwrap());
    assert!(
        !confined.status.success()
            && String::from_utf8_lossy(&confined.stderr).contains("Operation not permitted"),
        "unshare under the profile: {confined:?}"
    );
    let free = run("unconfined");
    assert!(free.status.success(), "unshare unconfined: {free:?}");
}
