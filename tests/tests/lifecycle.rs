//! The agent detaches cleanly: after SIGTERM it exits 0 and none of the
//! programs it loaded remain in the kernel.

use std::{collections::BTreeSet, process::Command, time::Duration};

use tests::agent::Agent;

/// BPF program ids held by a process's file descriptors (links and programs
/// both show `prog_id` in fdinfo).
fn prog_ids_of(pid: u32) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("prog_id:") {
                ids.insert(id.trim().parse().expect("prog id"));
            }
        }
    }
    ids
}

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
    let ours = prog_ids_of(agent.pid());
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
    for program in [
        "file_sys_exit",
        "net_sock_send_length",
        "process_exit",
        "process_exec",
    ] {
        let row = checks
            .iter()
            .find(|c| c["item"] == format!("program {program}"))
            .unwrap_or_else(|| panic!("no row for {program}: {stdout}"));
        assert_eq!(row["status"], "ok", "{program}: {row}");
    }
}
