//! The agent detaches cleanly: after SIGTERM it exits 0 and none of the
//! programs it loaded remain in the kernel.

use std::{collections::BTreeSet, process::Command, time::Duration};

use tests::{agent::Agent, bpf};

/// Program ids the kernel lists (`bpftool prog list`).
fn loaded_prog_ids() -> BTreeSet<u32> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "list"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    progs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .map(|id| id as u32)
        .collect()
}

#[test]
fn sigterm_exits_zero_and_detaches_everything() {
    let agent = Agent::start(&[]);
    let ours = bpf::prog_ids_of(agent.pid());
    assert!(
        ours.len() >= 4,
        "expected the agent to hold at least 4 programs, found {ours:?}"
    );
    let loaded = loaded_prog_ids();
    assert!(
        ours.is_subset(&loaded),
        "bpftool does not list the agent's programs {ours:?}: {loaded:?}"
    );

    let status = agent.stop();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    // The kernel frees programs once their last reference (the agent's fds) is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: BTreeSet<u32> = ours.intersection(&loaded_prog_ids()).copied().collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "programs still loaded after exit: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sensor_check_reports_every_program_attached() {
    let out = Command::new(tests::sensor_bin())
        .args(["check", "--json"])
        .output()
        .expect("sensor check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sensor check failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("check --json output");
    assert_eq!(doc["ready"], true);
    let checks = doc["checks"].as_array().expect("checks");
    // This kernel (6.18) has every preferred hook.
    for (capability, hook) in [
        ("file_read", "tp_btf/sys_exit (file_sys_exit)"),
        (
            "file_read_io_uring",
            "tp_btf/io_uring_complete (file_io_uring_complete)",
        ),
        (
            "socket_send",
            "tp_btf/sock_send_length (net_sock_send_length)",
        ),
        (
            "udp_destination_ipv4",
            "cgroup/sendmsg4 (net_cgroup_sendmsg4)",
        ),
        (
            "udp_destination_ipv6",
            "cgroup/sendmsg6 (net_cgroup_sendmsg6)",
        ),
        ("process_exit", "tp_btf/sched_process_exit (process_exit)"),
        ("process_exec", "tp_btf/sched_process_exec (process_exec)"),
    ] {
        let row = checks
            .iter()
            .find(|c| c["item"] == format!("capability {capability}"))
            .unwrap_or_else(|| panic!("no row for {capability}: {stdout}"));
        assert_eq!(row["status"], "ok", "{capability}: {row}");
        assert_eq!(row["detail"], hook, "{capability}: {row}");
    }
}

#[test]
fn sensor_check_names_the_fallback_hook_and_why() {
    let out = Command::new(tests::sensor_bin())
        .args(["check", "--json"])
        .env("SENSOR_DISABLE_HOOKS", "net_sock_send_length")
        .output()
        .expect("sensor check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sensor check failed: {stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("check --json output");
    let row = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["item"] == "capability socket_send")
        .unwrap_or_else(|| panic!("no socket_send row: {stdout}"))
        .clone();
    assert_eq!(row["status"], "ok", "{row}");
    let detail = row["detail"].as_str().unwrap_or("");
    assert!(
        detail.starts_with(
            "tp_btf/sys_exit (net_sys_exit_send), in place of tp_btf/sock_send_length"
        ) && detail.contains("disabled by SENSOR_DISABLE_HOOKS"),
        "{row}"
    );
}

#[test]
fn a_required_capability_without_any_hook_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(tests::sensor_bin())
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--tail-socket"])
        .arg(dir.path().join("tail.sock"))
        .env(
            "SENSOR_DISABLE_HOOKS",
            "net_sock_send_length,net_sys_exit_send",
        )
        .output()
        .expect("sensor run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no hook of this kernel gives socket_send"),
        "{stderr}"
    );
}
