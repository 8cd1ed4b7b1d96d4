//! The access audit log and tamper detection: records against the
//! workload's own counts, `sensor audit verify` against edited, deleted,
//! reordered and removed records, a kill -9 and restart, and tampering from
//! outside (a detached link, a written watch map) raising `sensor_tamper`.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use tests::{
    agent::{now_ms, Agent},
    assert_within, bpf,
    netns::Peer,
    workload,
    workload::Sink,
};

const MIB: u64 = 1 << 20;

/// Every record of the log at `path` (its rotated files first), parsed.
fn records(path: &Path) -> Vec<serde_json::Value> {
    log_files(path)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `PATH.K` … `PATH.1`, `PATH`.
fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = path.file_name().unwrap().to_string_lossy().into_owned();
            let i = name.strip_prefix(&format!("{base}."))?.parse().ok()?;
            Some((i, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(path.to_path_buf());
    out
}

/// An agent watching `watch` and writing the audit log `log`.
fn audited(watch: &Path, log: &Path, extra: &[&str]) -> Agent {
    let mut args = vec!["--watch", watch.to_str().unwrap()];
    args.extend(["--audit-log", log.to_str().unwrap()]);
    args.extend(extra);
    Agent::start(&args)
}

fn sensor(args: &[&str]) -> Output {
    Command::new(tests::sensor_bin())
        .args(args)
        .output()
        .expect("run sensor")
}

fn verify(path: &Path) -> (Option<i32>, String) {
    let out = sensor(&["audit", "verify", path.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A key file as the agent accepts it: owner-only.
fn write_key(path: &Path, key: &[u8]) {
    std::fs::write(path, key).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn write_file(path: &Path, mib: u64) {
    tests::pattern_file(path, mib * MIB).unwrap();
}

#[test]
fn audit_records_each_file_read_and_what_the_reader_sent() {
    let peer = Peer::new();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("weights");
    std::fs::create_dir(&weights).unwrap();
    let (a, b) = (weights.join("a.safetensors"), weights.join("b.gguf"));
    write_file(&a, 16);
    write_file(&b, 8);
    let log = dir.path().join("audit.log");
    let agent = audited(&weights, &log, &["--audit-interval", "600"]);
    let mut cmd = peer.command(workload::program("au-sink"));
    cmd.args(["tcp-sink", "--listen", &format!("{}:0", peer.ip)]);
    let sink = Sink::start(cmd);
    let (to, port) = (sink.addr().to_string(), sink.port());
    let truth = workload::report(
        "au-reader",
        &[
            "read-send",
            "--file",
            a.to_str().unwrap(),
            "--also-read",
            b.to_str().unwrap(),
            "--to",
            &to,
        ],
    );
    sink.finish();
    // Let a poll see the last bytes, then stop: the open interval is flushed.
    std::thread::sleep(Duration::from_millis(600));
    assert!(agent.stop().success());

    let pid = truth["pid"].as_u64().unwrap();
    let all = records(&log);
    let mine: Vec<&serde_json::Value> = all
        .iter()
        .filter(|r| r["kind"] == "access" && r["pid"] == pid)
        .collect();
    for (file, key) in [(&a, "read_bytes"), (&b, "also_read_bytes")] {
        let path = file.to_str().unwrap();
        let recs: Vec<_> = mine.iter().filter(|r| r["path"] == path).collect();
        assert_eq!(recs.len(), 1, "one record for {path}: {all:#?}");
        let r = recs[0];
        assert_within(
            &format!("audited bytes read of {path}"),
            r["read_bytes"].as_u64().unwrap(),
            truth[key].as_u64().unwrap(),
            1.0,
        );
        assert_within(
            &format!("audited bytes sent by the reader of {path}"),
            r["untrusted_sent_bytes"].as_u64().unwrap(),
            truth["sent_bytes"].as_u64().unwrap(),
            1.0,
        );
        let dests = r["destinations"].as_array().unwrap();
        assert!(
            dests.iter().any(|d| d["addr"] == peer.ip.to_string()
                && d["port"] == port
                && d["class"] == "untrusted"),
            "destination of {path}: {r}"
        );
        assert_eq!(r["comm"], "au-reader");
        assert!(r["exe"].as_str().unwrap().ends_with("au-reader"), "{r}");
        assert!(r["cmdline"].as_str().unwrap().contains("read-send"), "{r}");
        assert!(r["inode"].as_u64().unwrap() > 0 && !r["start"].as_str().unwrap().is_empty());
    }
    assert_eq!(all.first().unwrap()["kind"], "start");
    assert_eq!(all.last().unwrap()["kind"], "stop");

    let (code, text) = verify(&log);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit log intact"), "{text}");

    let out = sensor(&[
        "audit",
        "query",
        log.to_str().unwrap(),
        "--file",
        "b.gguf",
        "--pid",
        &pid.to_string(),
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "query --file b.gguf: {lines:?}");
    assert_eq!(lines[0]["path"], b.to_str().unwrap());
    let table = sensor(&[
        "audit",
        "query",
        log.to_str().unwrap(),
        "--comm",
        "au-reader",
    ]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.lines().count(), 3, "header and two rows:\n{table}");
    let bad = sensor(&[
        "audit",
        "query",
        log.to_str().unwrap(),
        "--since",
        "yesterday",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'yesterday'"));
}

/// A rotated log of many records: 30 watched files read one after another.
fn rotated_log(dir: &Path) -> PathBuf {
    let weights = dir.join("w");
    std::fs::create_dir(&weights).unwrap();
    let mut files = Vec::new();
    for i in 0..30 {
        let f = weights.join(format!("shard-{i:02}.safetensors"));
        std::fs::write(&f, vec![1u8; 4096]).unwrap();
        files.push(f.to_str().unwrap().to_string());
    }
    let log = dir.join("audit.log");
    let agent = audited(
        &weights,
        &log,
        &[
            "--audit-interval",
            "1",
            "--audit-max-bytes",
            "4KiB",
            "--audit-max-files",
            "20",
        ],
    );
    for (i, f) in files.iter().enumerate() {
        let comm = format!("au-shard-{i}");
        workload::run(&comm, &["read", "--file", f, "--bs", "4096"], "read_bytes");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(agent.stop().success());
    assert!(log_files(&log).len() >= 4, "rotated: {:?}", log_files(&log));
    log
}

/// A copy of the log set in a fresh directory, to break.
fn copy_log(log: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for f in log_files(log) {
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let copy = dir.path().join(log.file_name().unwrap());
    (dir, copy)
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn assert_broken(path: &Path, expect: &[&str]) {
    let (code, text) = verify(path);
    assert_eq!(code, Some(1), "verify should fail: {text}");
    for e in expect {
        assert!(text.contains(e), "expected {e:?} in: {text}");
    }
}

#[test]
fn verify_names_the_edited_deleted_reordered_or_removed_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let (code, text) = verify(&log);
    assert_eq!(code, Some(0), "untouched: {text}");
    let files = log_files(&log);
    let middle = files[files.len() / 2].clone();
    let middle_name = middle.file_name().unwrap().to_string_lossy().into_owned();

    // Edited: one byte count changed.
    let (_d, copy) = copy_log(&log);
    let target = copy.with_file_name(&middle_name);
    let mut l = lines(&target);
    let victim = l
        .iter()
        .position(|x| x.contains("\"read_bytes\":4096"))
        .unwrap();
    let seq = seq_of(&l[victim]);
    l[victim] = l[victim].replace("\"read_bytes\":4096", "\"read_bytes\":4095");
    write_lines(&target, &l);
    assert_broken(
        &copy,
        &[
            &format!("record seq {seq} was edited"),
            &format!("{middle_name}:{}", victim + 1),
        ],
    );

    // Deleted: one record removed.
    let (_d, copy) = copy_log(&log);
    let target = copy.with_file_name(&middle_name);
    let mut l = lines(&target);
    let seq = seq_of(&l[1]);
    l.remove(1);
    write_lines(&target, &l);
    assert_broken(&copy, &[&format!("record seq {seq} is missing")]);

    // Reordered: two records swapped.
    let (_d, copy) = copy_log(&log);
    let target = copy.with_file_name(&middle_name);
    let mut l = lines(&target);
    let (first, second) = (seq_of(&l[0]), seq_of(&l[1]));
    l.swap(0, 1);
    write_lines(&target, &l);
    assert_broken(
        &copy,
        &[
            "out of order",
            &format!("seq {second}"),
            &format!("seq {first}"),
        ],
    );

    // A rotated file removed.
    let (_d, copy) = copy_log(&log);
    let target = copy.with_file_name(&middle_name);
    let l = lines(&target);
    let (from, to) = (seq_of(&l[0]), seq_of(l.last().unwrap()));
    std::fs::remove_file(&target).unwrap();
    assert_broken(
        &copy,
        &[
            &format!("records seq {from}..{to} are missing"),
            "a rotated file removed",
        ],
    );

    // The oldest file removed: the chain starts late.
    let (_d, copy) = copy_log(&log);
    let oldest = copy.with_file_name(files[0].file_name().unwrap());
    let first = seq_of(&lines(&oldest)[0]);
    std::fs::remove_file(&oldest).unwrap();
    assert_broken(
        &copy,
        &[&format!("records seq {first}.."), "missing at the start"],
    );
}

#[test]
fn keyed_log_verifies_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, other) = (dir.path().join("key"), dir.path().join("other"));
    write_key(&key, b"0123456789abcdef0123456789abcdef");
    write_key(&other, b"fedcba9876543210fedcba9876543210");
    let log = dir.path().join("audit.log");
    let agent = audited(
        dir.path(),
        &log,
        &["--audit-key-file", key.to_str().unwrap()],
    );
    assert!(agent.stop().success());
    let check = |k: &Path| {
        sensor(&[
            "audit",
            "verify",
            log.to_str().unwrap(),
            "--key-file",
            k.to_str().unwrap(),
        ])
    };
    let ok = check(&key);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("every MAC checked"));
    let bad = check(&other);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("record seq 0 has a wrong MAC"));
    let short = dir.path().join("short");
    write_key(&short, b"abc");
    let out = sensor(&[
        "audit",
        "verify",
        log.to_str().unwrap(),
        "--key-file",
        short.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "a short key is a usage error");
}

#[test]
fn kill_9_and_restart_continue_the_chain_and_record_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w");
    std::fs::create_dir(&weights).unwrap();
    let file = weights.join("m.safetensors");
    write_file(&file, 8);
    let log = dir.path().join("audit.log");
    let args = ["--audit-interval", "1", "--audit-fsync-secs", "0"];
    let first = audited(&weights, &log, &args);
    let path = file.to_str().unwrap();
    let before = workload::report("au-before", &["read", "--file", path, "--bs", "65536"]);
    let has_access = |pid: &serde_json::Value| {
        std::path::Path::new(&log).exists()
            && records(&log)
                .iter()
                .any(|r| r["kind"] == "access" && r["pid"] == *pid)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !has_access(&before["pid"]) {
        assert!(
            std::time::Instant::now() < deadline,
            "no access record before the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on the agent's pid.
    unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
    drop(first);
    let killed = records(&log);
    assert_ne!(killed.last().unwrap()["kind"], "stop");

    let second = audited(&weights, &log, &args);
    let (_, alert) = second.wait_for_alert(Duration::from_secs(5), "agent_gap", |a| {
        a["rule"] == "sensor_tamper" && a["what"] == "agent_gap"
    });
    assert!(
        alert["detail"]
            .as_str()
            .unwrap()
            .contains("without a clean stop"),
        "{alert}"
    );
    let after = workload::report("au-after", &["read", "--file", path, "--bs", "65536"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(second.stop().success());

    let all = records(&log);
    let gap = all
        .iter()
        .find(|r| r["kind"] == "gap")
        .unwrap_or_else(|| panic!("no gap record: {all:#?}"));
    assert_eq!(gap["clean"], false, "{gap}");
    assert_eq!(
        gap["seq"],
        killed.last().unwrap()["seq"].as_u64().unwrap() + 1
    );
    for (who, truth) in [("before", &before), ("after", &after)] {
        let read: u64 = all
            .iter()
            .filter(|r| r["kind"] == "access" && r["pid"] == truth["pid"])
            .map(|r| r["read_bytes"].as_u64().unwrap())
            .sum();
        assert_within(&format!("audited {who} the kill"), read, 8 * MIB, 1.0);
    }
    assert!(all
        .iter()
        .any(|r| r["kind"] == "tamper" && r["what"] == "agent_gap"));
    let (code, text) = verify(&log);
    assert_eq!(code, Some(0), "the chain continues across the kill: {text}");
}

/// `NAME → id` of the BPF maps the agent holds, and its cgroup links' ids.
fn agent_objects(pid: u32) -> (Vec<(String, u32)>, Vec<u32>) {
    let (mut maps, mut links) = (Vec::new(), Vec::new());
    for e in bpf::fdinfo(pid) {
        if let Some(id) = bpf::field(&e, "map_id") {
            let v: serde_json::Value =
                serde_json::from_slice(&bpf::bpftool(&["-j", "map", "show", "id", id])).unwrap();
            maps.push((
                v["name"].as_str().unwrap_or("").to_string(),
                id.parse().unwrap(),
            ));
        }
        if bpf::field(&e, "link_type") == Some("cgroup") {
            links.push(bpf::field(&e, "link_id").unwrap().parse().unwrap());
        }
    }
    (maps, links)
}

#[test]
fn detaching_a_link_or_writing_the_watch_map_raises_sensor_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&["--watch", dir.path().to_str().unwrap()]);
    let (maps, links) = agent_objects(agent.pid());
    assert_eq!(links.len(), 2, "the agent's cgroup links: {links:?}");

    let detached_at = now_ms();
    bpf::bpftool(&["link", "detach", "id", &links[0].to_string()]);
    let (arrived, alert) = agent.wait_for_alert(Duration::from_secs(2), "program_detached", |a| {
        a["rule"] == "sensor_tamper" && a["what"] == "program_detached"
    });
    assert!(
        alert["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("link {}", links[0])),
        "{alert}"
    );

    let inodes = maps
        .iter()
        .find(|(n, _)| n == "WATCH_INODES")
        .map(|(_, id)| *id)
        .expect("WATCH_INODES");
    // A bogus directory inode (dev 1, inode 2) watched for everything.
    let mut args = vec!["map", "update", "id"];
    let id = inodes.to_string();
    args.push(&id);
    args.extend(["key", "hex", "01", "0", "0", "0", "0", "0", "0", "0"]);
    args.extend(["02", "0", "0", "0", "0", "0", "0", "0", "value", "hex"]);
    args.extend(["ff"; 8]);
    let written_at = now_ms();
    bpf::bpftool(&args);
    let (arrived_map, alert) = agent.wait_for_alert(Duration::from_secs(2), "map_written", |a| {
        a["rule"] == "sensor_tamper" && a["what"] == "map_written"
    });
    assert!(
        alert["detail"].as_str().unwrap().contains("WATCH_INODES"),
        "{alert}"
    );

    eprintln!(
        "TAMPER latency: link detached -> alert {} ms, map written -> alert {} ms",
        arrived.saturating_sub(detached_at),
        arrived_map.saturating_sub(written_at)
    );
    let m = agent.metrics();
    for what in ["program_detached", "map_written"] {
        assert_eq!(
            m.sum("sensor_tamper_events_total", &[("what", what)]),
            1,
            "{what}: one finding, raised once"
        );
    }
    let beat = m.sum("sensor_heartbeat_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(beat) <= 5, "heartbeat {beat}, now {now}");
}

/// Runs `sensor audit verify` with extra arguments.
fn verify_with(path: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["audit", "verify", path.to_str().unwrap()];
    args.extend(extra);
    let out = sensor(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn key_file_mode_is_checked_the_key_never_printed_and_stripped_macs_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let secret = b"S3CRET-0123456789abcdef";
    std::fs::write(&key, secret).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = dir.path().join("audit.log");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--dry-run",
            "--watch",
            dir.path().to_str().unwrap(),
            "--audit-log",
            log.to_str().unwrap(),
            "--audit-key-file",
            key.to_str().unwrap(),
        ];
        args.extend(extra);
        sensor(&args)
    };
    // Readable by group and others: refused, one line naming file and mode.
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(key.to_str().unwrap()) && err.contains("0644"),
        "{err}"
    );
    // verify refuses it too.
    std::fs::write(&log, b"").unwrap();
    let (code, text) = verify_with(&log, &["--key-file", key.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    std::fs::remove_file(&log).unwrap();
    // Owner-only: accepted, and --dry-run shows no key bytes.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&[]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("<redacted"), "{shown}");
    assert!(
        !shown.contains("S3CRET") && !shown.contains("83, 51"),
        "{shown}"
    );

    // A keyed log, then its MACs stripped (hashes left intact).
    let agent = audited(
        dir.path(),
        &log,
        &["--audit-key-file", key.to_str().unwrap()],
    );
    assert!(agent.stop().success());
    assert!(!std::fs::read_to_string(&log).unwrap().contains("S3CRET"));
    let (code, text) = verify_with(&log, &["--key-file", key.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = verify(&log);
    assert_eq!(code, Some(1), "a keyed log without --key-file: {text}");
    assert!(
        text.contains("keyed log") && text.contains("--key-file"),
        "{text}"
    );
    let stripped: Vec<String> = lines(&log)
        .iter()
        .map(|l| {
            let at = l.find(",\"mac\":\"").expect("a MAC on every record");
            format!("{}}}", &l[..at])
        })
        .collect();
    write_lines(&log, &stripped);
    let (code, text) = verify_with(&log, &["--key-file", key.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("record seq 0 has no MAC"), "{text}");
    let (code, text) = verify(&log);
    assert_eq!(code, Some(1), "stripped MACs, no key: {text}");
    assert!(text.contains("keyed log"), "{text}");
}

/// The `sensor_audit_chain_head` series: (seq, hash prefix).
fn chain_head(agent: &Agent) -> Option<(u64, String)> {
    let m = agent.metrics();
    let heads: Vec<_> = m
        .samples
        .iter()
        .filter(|s| s.metric == "sensor_audit_chain_head")
        .collect();
    assert!(heads.len() <= 1, "one series: {}", m.text);
    let s = heads.first()?;
    let v = match s.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v as u64,
        _ => return None,
    };
    Some((v, s.labels.get("hash_prefix")?.to_string()))
}

#[test]
fn exported_chain_head_detects_a_truncated_tail_off_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w");
    std::fs::create_dir(&weights).unwrap();
    let file = weights.join("m.safetensors");
    write_file(&file, 4);
    let log = dir.path().join("audit.log");
    let agent = audited(
        &weights,
        &log,
        &["--audit-interval", "1", "--audit-fsync-secs", "0"],
    );
    workload::run(
        "au-head",
        &["read", "--file", file.to_str().unwrap(), "--bs", "65536"],
        "read_bytes",
    );
    // The exported head is the file's last record (hash included).
    let deadline = Instant::now() + Duration::from_secs(10);
    let head = loop {
        let recs = records(&log);
        let last = recs.last().unwrap();
        let has_access = recs.iter().any(|r| r["comm"] == "au-head");
        if let Some((seq, prefix)) = chain_head(&agent) {
            if has_access
                && last["seq"] == seq
                && last["hash"].as_str().unwrap().starts_with(&prefix)
            {
                break (seq, prefix);
            }
        }
        assert!(Instant::now() < deadline, "head never matched the file");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(head.1.len(), 16, "{head:?}");
    // Taken off the node; then the agent is killed (no more records).
    // SAFETY: kill(2) on the agent's pid.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    drop(agent);
    let arg = format!("{}:{}", head.0, head.1);
    let (code, text) = verify_with(&log, &["--head", &arg]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("chain head seq {} matches", head.0)),
        "{text}"
    );
    // The tail cut off from the exported head on: the rest still chains.
    let kept: Vec<String> = lines(&log)
        .into_iter()
        .filter(|l| seq_of(l) < head.0)
        .collect();
    write_lines(&log, &kept);
    let (code, text) = verify(&log);
    assert_eq!(
        code,
        Some(0),
        "truncation alone is invisible in the file: {text}"
    );
    let (code, text) = verify_with(&log, &["--head", &arg]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("the log ends at seq {}", head.0 - 1)) && text.contains("cut off"),
        "{text}"
    );
    let (code, text) = verify_with(&log, &["--head", "nonsense"]);
    assert_eq!(code, Some(2), "{text}");
}

#[test]
fn a_garbage_line_does_not_stop_the_agent_and_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let first = audited(dir.path(), &log, &[]);
    assert!(first.stop().success());
    let before = lines(&log);
    let last_seq = seq_of(before.last().unwrap());
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("}}} not a record {{{\n");
    std::fs::write(&log, &text).unwrap();

    let second = audited(dir.path(), &log, &[]);
    let (_, alert) = second.wait_for_alert(Duration::from_secs(5), "agent_gap", |a| {
        a["rule"] == "sensor_tamper" && a["what"] == "agent_gap"
    });
    assert!(
        alert["detail"].as_str().unwrap().contains("set aside as"),
        "{alert}"
    );
    assert!(second.stop().success());
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("audit.log.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(&aside[0]).unwrap(),
        text,
        "kept as it was"
    );
    let all = records(&log);
    assert_eq!(all[0]["kind"], "gap", "{all:#?}");
    assert_eq!(all[0]["seq"], last_seq + 1, "the chain continues");
    assert_eq!(all[0]["damaged_file"], aside[0].to_str().unwrap());
    assert_eq!(all[0]["clean"], false);
    let (code, text) = verify(&log);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("records seq 0..{last_seq} are missing"))
            && text.contains("set it aside"),
        "{text}"
    );
}

#[test]
fn a_log_deleted_while_running_is_reopened_and_verify_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w");
    std::fs::create_dir(&weights).unwrap();
    let file = weights.join("m.safetensors");
    write_file(&file, 4);
    let log = dir.path().join("audit.log");
    let agent = audited(&weights, &log, &["--audit-interval", "1"]);
    let path = file.to_str().unwrap();
    let before = workload::report("au-del-before", &["read", "--file", path, "--bs", "65536"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !records(&log).iter().any(|r| r["pid"] == before["pid"]) {
        assert!(Instant::now() < deadline, "no record before the deletion");
        std::thread::sleep(Duration::from_millis(100));
    }
    let last_before = seq_of(lines(&log).last().unwrap());
    std::fs::remove_file(&log).unwrap();
    let (_, alert) = agent.wait_for_alert(Duration::from_secs(3), "audit_log_removed", |a| {
        a["rule"] == "sensor_tamper" && a["what"] == "audit_log_removed"
    });
    assert!(
        alert["detail"].as_str().unwrap().contains("removed"),
        "{alert}"
    );
    let after = workload::report("au-del-after", &["read", "--file", path, "--bs", "65536"]);
    std::thread::sleep(Duration::from_millis(1500));
    let m = agent.metrics();
    assert_eq!(
        m.sum(
            "sensor_tamper_events_total",
            &[("what", "audit_log_removed")]
        ),
        1
    );
    assert!(agent.stop().success());
    let all = records(&log);
    assert_eq!(all[0]["kind"], "tamper", "{all:#?}");
    assert_eq!(all[0]["what"], "audit_log_removed");
    let first_new = all[0]["seq"].as_u64().unwrap();
    assert!(
        first_new > last_before,
        "the chain goes on: {first_new} after {last_before}"
    );
    let read: u64 = all
        .iter()
        .filter(|r| r["kind"] == "access" && r["pid"] == after["pid"])
        .map(|r| r["read_bytes"].as_u64().unwrap())
        .sum();
    assert_within(
        "audited after the deletion",
        read,
        after["read_bytes"].as_u64().unwrap(),
        1.0,
    );
    let (code, text) = verify(&log);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "records seq 0..{} are missing at the start",
            first_new - 1
        )) && text.contains("was removed while the agent ran"),
        "{text}"
    );
}

#[test]
fn a_flood_of_files_from_one_process_is_folded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w");
    std::fs::create_dir(&weights).unwrap();
    const FILES: u64 = 100;
    const SIZE: u64 = 8192;
    for i in 0..FILES {
        std::fs::write(
            weights.join(format!("s-{i:03}.safetensors")),
            vec![7u8; SIZE as usize],
        )
        .unwrap();
    }
    let log = dir.path().join("audit.log");
    let agent = audited(
        &weights,
        &log,
        &[
            "--audit-interval",
            "1",
            "--audit-max-records-per-process",
            "8",
        ],
    );
    // One process reads every file: python3 under its own comm.
    let exe = dir.path().join("au-flood");
    std::os::unix::fs::symlink("/usr/bin/python3", &exe).unwrap();
    let script = format!(
        "import os,json\nn=0\nfor f in sorted(os.listdir({w:?})):\n  with open(os.path.join({w:?},f),'rb',buffering=0) as h:\n    while True:\n      b=h.read(4096)\n      if not b: break\n      n+=len(b)\nprint(json.dumps({{'pid':os.getpid(),'read_bytes':n}}))\n",
        w = weights.to_str().unwrap()
    );
    let out = Command::new(&exe).args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(truth["read_bytes"], FILES * SIZE);
    let pid = truth["pid"].clone();
    // Wait until every file is in the log (as a record or folded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (access, folded) = loop {
        let all = records(&log);
        let access: Vec<serde_json::Value> = all
            .iter()
            .filter(|r| r["kind"] == "access" && r["pid"] == pid)
            .cloned()
            .collect();
        let folded: Vec<serde_json::Value> = all
            .iter()
            .filter(|r| r["kind"] == "folded" && r["pid"] == pid)
            .cloned()
            .collect();
        let files = access.len() as u64
            + folded
                .iter()
                .map(|r| r["files"].as_u64().unwrap())
                .sum::<u64>();
        if files >= FILES {
            assert_eq!(files, FILES, "each file once");
            break (access, folded);
        }
        assert!(Instant::now() < deadline, "only {files} files in the log");
        std::thread::sleep(Duration::from_millis(200));
    };
    // At most 8 records per interval for the process.
    let mut per_interval = std::collections::HashMap::<String, u64>::new();
    for r in &access {
        *per_interval
            .entry(r["start"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(per_interval.values().all(|n| *n <= 8), "{per_interval:?}");
    assert!(!folded.is_empty());
    let bytes: u64 = access
        .iter()
        .chain(&folded)
        .map(|r| r["read_bytes"].as_u64().unwrap())
        .sum();
    assert_within("audited bytes of the flood", bytes, FILES * SIZE, 1.0);
    let folded_files: u64 = folded.iter().map(|r| r["files"].as_u64().unwrap()).sum();
    agent.wait_for(Duration::from_secs(3), "the folded metric", |m| {
        m.sum("sensor_audit_records_folded_total", &[]) == folded_files
    });
    eprintln!(
        "FOLD: {FILES} files -> {} records + {} folded records ({folded_files} files folded)",
        access.len(),
        folded.len()
    );
    assert!(agent.stop().success());
    let (code, text) = verify(&log);
    assert_eq!(code, Some(0), "{text}");
}

/// What a SIGKILL loses is the open interval, and nothing before it: a
/// read whose interval ended before the kill is in the log; a read in the
/// open interval is not, and the restart's `gap` record says so.
#[test]
fn sigkill_mid_interval_loses_at_most_the_open_interval() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w");
    std::fs::create_dir(&weights).unwrap();
    let file = weights.join("m.safetensors");
    write_file(&file, 4);
    let log = dir.path().join("audit.log");
    let args = ["--audit-interval", "3", "--audit-fsync-secs", "0"];
    let agent = audited(&weights, &log, &args);
    let path = file.to_str().unwrap();
    let closed = workload::report("au-k-closed", &["read", "--file", path, "--bs", "65536"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !records(&log).iter().any(|r| r["pid"] == closed["pid"]) {
        assert!(
            Instant::now() < deadline,
            "the closed interval never written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Just after an interval boundary: this read is in the open interval.
    let open = workload::report("au-k-open", &["read", "--file", path, "--bs", "65536"]);
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: kill(2) on the agent's pid.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    drop(agent);
    let second = audited(&weights, &log, &args);
    assert!(second.stop().success());
    let all = records(&log);
    let read_by = |truth: &serde_json::Value| -> u64 {
        all.iter()
            .filter(|r| r["kind"] == "access" && r["pid"] == truth["pid"])
            .map(|r| r["read_bytes"].as_u64().unwrap())
            .sum()
    };
    assert_within(
        "audited read of the closed interval",
        read_by(&closed),
        4 * MIB,
        1.0,
    );
    assert_eq!(
        read_by(&open),
        0,
        "the open interval is lost with the agent (README: at most one interval)"
    );
    let gap = all
        .iter()
        .find(|r| r["kind"] == "gap")
        .expect("a gap record");
    assert_eq!(gap["clean"], false);
    eprintln!(
        "SIGKILL: open interval lost ({} bytes read by au-k-open), closed interval kept; gap {} s",
        open["read_bytes"], gap["seconds"]
    );
    let (code, text) = verify(&log);
    assert_eq!(code, Some(0), "{text}");
}
