//! Lineage scenarios: weights that leave through copies, archives, tmpfs,
//! hard links, renames, pipes, FIFOs, local TCP and UNIX relays, chains of
//! relays and relays between containers must alert, with the chain named
//! (`lineage`, origin first) and its byte counts checked against what the
//! workloads really moved; and what must stay quiet stays quiet, with the
//! lineage it did cause checked too (so silence is not blindness).
//!
//! Thresholds: 32 MiB read, 16 MiB sent, ratio 0.5, 10 s window; the
//! weights are 40 MiB. Each attack prints its detection latency: alert
//! arrival minus the moment the last hop's sent bytes crossed the
//! thresholds (the workload's own clock).

use std::{
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    fake_container::FakeContainer,
    num as u,
    scenario::{Rule, Scenario, Scene, To, Workload},
    workload::{self, Sink},
};

const MIB: u64 = 1 << 20;
const FILE_BYTES: u64 = 40 * MIB;
const WINDOW_S: u64 = 10;
/// Where the rule is crossed for 40 MiB in: sent >= max(16 MiB, 0.5 × 40 MiB).
const MARK: u64 = 20 * MIB;

/// The watched directory with 40 MiB of weights, and a scratch directory
/// on the same file system, outside the watch set.
struct Weights {
    dir: tempfile::TempDir,
    file: PathBuf,
    scratch: tempfile::TempDir,
}

impl Weights {
    fn new() -> Weights {
        let dir = tempfile::Builder::new()
            .prefix("sensor-ln")
            .tempdir()
            .unwrap();
        let file = dir.path().join("model-00001-of-00002.safetensors");
        tests::random_file(&file, FILE_BYTES);
        let scratch = tempfile::Builder::new()
            .prefix("sensor-ln-scratch")
            .tempdir()
            .unwrap();
        Weights { dir, file, scratch }
    }

    fn str(&self) -> &str {
        self.file.to_str().unwrap()
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

fn scenario(w: &Weights) -> Scenario {
    Scenario::new()
        .watch(w.dir.path())
        .args(&[
            "--min-read-bytes",
            "32MiB",
            "--min-send-bytes",
            "16MiB",
            "--min-send-ratio",
            "0.5",
            "--window",
            &WINDOW_S.to_string(),
        ])
        .untrusted_peer()
        .trusted_peer()
}

/// Runs `script` under `sh` in a new session, to completion; the JSON
/// reports its workloads printed.
fn sh(script: &str) -> Vec<Value> {
    let out = Command::new("setsid")
        .args(["-w", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// What a lineage hop must say.
struct Hop<'a> {
    via: &'a str,
    comm: Option<&'a str>,
    pid: Option<u64>,
    /// The path (or `ADDR:PORT`) exactly, when known.
    path: Option<String>,
}

fn hop(via: &str) -> Hop<'_> {
    Hop {
        via,
        comm: None,
        pid: None,
        path: None,
    }
}

impl<'a> Hop<'a> {
    fn comm(mut self, comm: &'a str) -> Self {
        self.comm = Some(comm);
        self
    }
    fn pid(mut self, pid: u64) -> Self {
        self.pid = Some(pid);
        self
    }
    fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

/// The alert naming `sender` (latency from `crossed_ms`): its scope, the
/// untrusted peer first among destinations, the thresholds crossed, and
/// its lineage hop by hop, each hop carrying what the workloads moved
/// (`hop_bytes`, within 1 MiB below: the last partial read of a window).
fn lineage_alert(
    s: &Scene,
    what: &str,
    scope: &str,
    sender: u64,
    crossed_ms: u64,
    hops: &[Hop],
    hop_bytes: u64,
) -> Value {
    let a = s
        .expect_alert(Rule::ReadThenSend, what)
        .naming_pid(sender)
        .scope(scope)
        .severity("critical")
        .first_destination(IpAddr::from(s.untrusted().ip), "untrusted")
        .latency_from(crossed_ms)
        .within(Duration::from_secs(20));
    let (read, sent) = (u(&a, "watched_read_bytes"), u(&a, "sent_bytes"));
    assert!(read >= 32 * MIB, "{what}: read {read}: {a}");
    assert!(
        sent >= 16 * MIB && sent * 2 >= read,
        "{what}: sent {sent}: {a}"
    );
    let got = a["lineage"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no lineage: {a}"));
    let vias: Vec<&str> = got.iter().filter_map(|h| h["via"].as_str()).collect();
    let want: Vec<&str> = hops.iter().map(|h| h.via).collect();
    assert_eq!(vias, want, "{what}: hops: {a}");
    for (h, want) in got.iter().zip(hops) {
        if let Some(c) = want.comm {
            assert_eq!(h["comm"], c, "{what}: hop {h}");
        }
        if let Some(pid) = want.pid {
            assert_eq!(u(h, "pid"), pid, "{what}: hop {h}");
        }
        if let Some(path) = &want.path {
            assert_eq!(h["path"], path.as_str(), "{what}: hop {h}");
        }
        let b = u(h, "bytes");
        assert!(
            b <= hop_bytes && b + MIB >= hop_bytes,
            "{what}: hop bytes {b}, moved {hop_bytes}: {h}"
        );
    }
    assert_eq!(
        got.last().map(|h| u(h, "pid")),
        Some(sender),
        "{what}: the last hop is the sender: {a}"
    );
    let origin = got[0]["path"].as_str().unwrap_or_default().to_string();
    let origins: Vec<&str> = a["origin_files"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        origins.contains(&origin.as_str()),
        "{what}: origin_files: {a}"
    );
    eprintln!("{what}: read {read}, sent {sent}, lineage {vias:?}");
    a
}

/// `read-send` of `file` to the untrusted peer; (pid, crossed_ms, sent).
fn send_out(s: &Scene, comm: &str, file: &Path) -> (u64, u64, u64) {
    let r = s.run(
        Workload::read_send(file)
            .arg("--mark-sent", &MARK.to_string())
            .as_comm(comm)
            .to(To::untrusted()),
    );
    (r.pid(), r.u("crossed_ms"), r.received())
}

/// A file removed when dropped (for paths outside the temp dirs).
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ----------------------------------------------------------------- attacks

#[test]
fn copy_then_send_two_windows_later_from_another_session() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let copy = w.scratch("copy.bin");
    sh(&format!("cp {} {}", w.str(), p(&copy)));
    std::thread::sleep(Duration::from_secs(2 * WINDOW_S + 1));
    let (pid, crossed, sent) = send_out(&s, "ln-copy-send", &copy);
    assert_eq!(sent, FILE_BYTES);
    let a = lineage_alert(
        &s,
        "copy, sent two windows later",
        "flow",
        pid,
        crossed,
        &[
            hop("read").comm("cp").path(w.str()),
            hop("file").comm("ln-copy-send").path(p(&copy)),
        ],
        FILE_BYTES,
    );
    println!("LINEAGE-EXAMPLE {a}");
}

/// The weights staged by `stager` (`script`, in its own session) into
/// `staged`; `comm` reads that and sends it out. The flow alert, naming
/// the weights file read by the stager and the staged file; what was sent.
fn staged_then_sent(
    w: &Weights,
    what: &str,
    stager: &str,
    script: &str,
    staged: &Path,
    comm: &str,
) -> u64 {
    let s = scenario(w).start();
    sh(script);
    let (pid, crossed, sent) = send_out(&s, comm, staged);
    lineage_alert(
        &s,
        what,
        "flow",
        pid,
        crossed,
        &[
            hop("read").comm(stager).path(w.str()),
            hop("file").path(p(staged)),
        ],
        FILE_BYTES,
    );
    sent
}

#[test]
fn compress_then_send() {
    let w = Weights::new();
    let gz = w.scratch("weights.gz");
    let script = format!("gzip -1 -c {} > {}", w.str(), p(&gz));
    let sent = staged_then_sent(&w, "gzip, then send", "gzip", &script, &gz, "ln-gz-send");
    assert!(sent >= FILE_BYTES, "gzip does not shrink random bytes");
}

#[test]
fn encrypt_then_send() {
    let w = Weights::new();
    let enc = w.scratch("weights.enc");
    let script = format!(
        "openssl enc -aes-256-ctr -pbkdf2 -pass pass:k -in {} -out {}",
        w.str(),
        p(&enc)
    );
    staged_then_sent(
        &w,
        "openssl enc, then send",
        "openssl",
        &script,
        &enc,
        "ln-enc-send",
    );
}

#[test]
fn tmpfs_staging_then_send() {
    let w = Weights::new();
    let staged = PathBuf::from(format!("/dev/shm/sensor-ln-{}.bin", std::process::id()));
    let _gone = Removed(staged.clone());
    let script = format!("dd if={} of={} bs=1M status=none", w.str(), p(&staged));
    staged_then_sent(
        &w,
        "dd to /dev/shm, then send",
        "dd",
        &script,
        &staged,
        "ln-shm-send",
    );
}

#[test]
fn hard_link_outside_the_watched_directory() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let link = w.scratch("dataset.tar");
    std::fs::hard_link(&w.file, &link).unwrap();
    let (pid, crossed, _) = send_out(&s, "ln-link-send", &link);
    // The link is the weights file (watched by inode): read directly.
    let a = lineage_alert(
        &s,
        "hard link",
        "process",
        pid,
        crossed,
        &[hop("read").pid(pid)],
        FILE_BYTES,
    );
    let path = a["lineage"][0]["path"].as_str().unwrap_or_default();
    assert!(path == w.str() || path == p(&link), "{a}");
}

#[test]
fn rename_out_of_the_watched_directory() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let moved = w.scratch("notes.dat");
    std::fs::rename(&w.file, &moved).unwrap();
    let (pid, crossed, _) = send_out(&s, "ln-mv-send", &moved);
    lineage_alert(
        &s,
        "rename out of the watched directory",
        "process",
        pid,
        crossed,
        &[hop("read").pid(pid).path(p(&moved))],
        FILE_BYTES,
    );
}

#[test]
fn setsid_pipeline_sender_leaves_the_session() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::untrusted());
    let sender = workload::program("ln-setsid-send");
    let reports = sh(&format!(
        "cat {} | setsid -w {} stdin-send --to {} --mark-sent {MARK}",
        w.str(),
        sender.display(),
        sink.addr()
    ));
    let r = reports.last().expect("the sender's report");
    assert_eq!(sink.finish(), FILE_BYTES);
    lineage_alert(
        &s,
        "cat | setsid sender",
        "flow",
        u(r, "pid"),
        u(r, "crossed_ms"),
        &[
            hop("read").comm("cat").path(w.str()),
            hop("pipe").comm("ln-setsid-send"),
        ],
        FILE_BYTES,
    );
}

/// Walking around flow membership: the sender first reads a few KiB of a
/// watched file itself (as an interpreter reads `*.pth` files at start-up),
/// then takes the model through a pipe. The pipe, which gave it far more,
/// becomes its source: the flow still alerts and names the pipe.
#[test]
fn pipe_to_a_sender_that_first_read_a_little_weights_itself() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let pth = w.dir.path().join("distutils-precedence.pth");
    std::fs::write(&pth, vec![b'#'; 8192]).unwrap();
    let sink = s.sink(&To::untrusted());
    let sender = workload::program("ln-pth-send");
    let reports = sh(&format!(
        "cat {} | setsid -w {} stdin-send --first-read {} --to {} --mark-sent {MARK}",
        w.str(),
        sender.display(),
        p(&pth),
        sink.addr()
    ));
    assert_eq!(u(&reports[0], "first_read_bytes"), 4096);
    let r = reports.last().unwrap();
    assert_eq!(sink.finish(), FILE_BYTES);
    lineage_alert(
        &s,
        "sender read a *.pth first, then the model through a pipe",
        "flow",
        u(r, "pid"),
        u(r, "crossed_ms"),
        &[
            hop("read").comm("cat").path(w.str()),
            hop("pipe").comm("ln-pth-send"),
        ],
        FILE_BYTES,
    );
}

#[test]
fn fifo_between_unrelated_sessions() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let fifo = w.scratch("spool");
    sh(&format!("mkfifo {}", p(&fifo)));
    let sink = s.sink(&To::untrusted());
    let sender = workload::program("ln-fifo-send");
    let reader = Command::new("setsid")
        .args([
            "-w",
            "sh",
            "-c",
            &format!(
                "exec {} stdin-send --to {} --mark-sent {MARK} < {}",
                sender.display(),
                sink.addr(),
                p(&fifo)
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    sh(&format!("cat {} > {}", w.str(), p(&fifo)));
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success());
    let r: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(sink.finish(), FILE_BYTES);
    lineage_alert(
        &s,
        "FIFO between two sessions",
        "flow",
        u(&r, "pid"),
        u(&r, "crossed_ms"),
        &[
            hop("read").comm("cat").path(w.str()),
            hop("pipe").comm("ln-fifo-send").path(p(&fifo)),
        ],
        FILE_BYTES,
    );
}

/// A sidecar proxy, listening on `listen`, forwarding to `to`.
fn proxy(comm: &str, listen: &str, to: &str) -> Sink {
    let mut c = workload::command(comm);
    c.args([
        "proxy",
        "--listen",
        listen,
        "--to",
        to,
        "--mark-sent",
        &MARK.to_string(),
    ]);
    Sink::start(c)
}

/// `send-local` of the weights to `to` (a proxy), in its own session.
fn send_local(comm: &str, w: &Weights, to: &str, bytes: u64) -> Value {
    workload::report(
        comm,
        &[
            "send-local",
            "--file",
            w.str(),
            "--to",
            to,
            "--send-bytes",
            &bytes.to_string(),
        ],
    )
}

#[test]
fn local_tcp_relay() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::untrusted());
    let px = proxy(
        "ln-tcp-proxy",
        "tcp:127.0.0.1:0",
        &format!("tcp:{}", sink.addr()),
    );
    let at = px.addr().strip_prefix("tcp:").unwrap().to_string();
    let r = send_local("ln-tcp-reader", &w, px.addr(), FILE_BYTES);
    let pr = px.report();
    assert_eq!(u(&pr, "received_bytes"), FILE_BYTES);
    assert_eq!(sink.finish(), FILE_BYTES);
    lineage_alert(
        &s,
        "local TCP relay",
        "flow",
        u(&pr, "pid"),
        u(&pr, "crossed_ms"),
        &[
            hop("read").pid(u(&r, "pid")).path(w.str()),
            hop("loopback").comm("ln-tcp-proxy").path(at),
        ],
        FILE_BYTES,
    );
}

#[test]
fn local_unix_relay() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::untrusted());
    let sock = w.scratch("relay.sock");
    let px = proxy(
        "ln-unix-proxy",
        &format!("unix:{}", p(&sock)),
        &format!("tcp:{}", sink.addr()),
    );
    let r = send_local("ln-unix-reader", &w, px.addr(), FILE_BYTES);
    let pr = px.report();
    assert_eq!(sink.finish(), FILE_BYTES);
    lineage_alert(
        &s,
        "local UNIX relay",
        "flow",
        u(&pr, "pid"),
        u(&pr, "crossed_ms"),
        &[
            hop("read").pid(u(&r, "pid")).path(w.str()),
            hop("unix").comm("ln-unix-proxy"),
        ],
        FILE_BYTES,
    );
}

#[test]
fn chain_of_two_local_relays() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::untrusted());
    let sock = w.scratch("second.sock");
    let second = proxy(
        "ln-chain-2",
        &format!("unix:{}", p(&sock)),
        &format!("tcp:{}", sink.addr()),
    );
    let first = proxy("ln-chain-1", "tcp:127.0.0.1:0", second.addr());
    let r = send_local("ln-chain-read", &w, first.addr(), FILE_BYTES);
    let p1 = first.report();
    let p2 = second.report();
    assert_eq!(sink.finish(), FILE_BYTES);
    lineage_alert(
        &s,
        "reader -> TCP relay -> UNIX relay -> out",
        "flow",
        u(&p2, "pid"),
        u(&p2, "crossed_ms"),
        &[
            hop("read").pid(u(&r, "pid")).path(w.str()),
            hop("loopback").pid(u(&p1, "pid")),
            hop("unix").pid(u(&p2, "pid")),
        ],
        FILE_BYTES,
    );
}

#[test]
fn relay_between_two_containers() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::untrusted());
    let (a, b) = (FakeContainer::new(), FakeContainer::new());
    let px = Sink::start(b.command(
        "ln-ct-proxy",
        &[
            "proxy",
            "--listen",
            "tcp:127.0.0.1:0",
            "--to",
            &format!("tcp:{}", sink.addr()),
            "--mark-sent",
            &MARK.to_string(),
        ],
    ));
    let r = a.run(
        "ln-ct-reader",
        &["send-local", "--file", w.str(), "--to", px.addr()],
    );
    let pr = px.report();
    assert_eq!(sink.finish(), FILE_BYTES);
    let alert = lineage_alert(
        &s,
        "relay between two containers",
        "flow",
        u(&pr, "pid"),
        u(&pr, "crossed_ms"),
        &[
            hop("read").pid(u(&r, "pid")).path(w.str()),
            hop("loopback").comm("ln-ct-proxy"),
        ],
        FILE_BYTES,
    );
    assert_eq!(alert["container"], b.id.as_str(), "{alert}");
}

#[test]
fn ratio_padding_with_a_sparse_watched_file() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let pad = w.dir.path().join("optimizer-state.pt");
    let f = std::fs::File::create(&pad).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let r = s.run(
        Workload::read_send(&w.file)
            .arg("--also-read", p(&pad))
            .arg("--mark-sent", &MARK.to_string())
            .as_comm("ln-pad-send")
            .to(To::untrusted()),
    );
    assert_eq!(r.u("also_read_bytes"), 1 << 30, "the pad was read whole");
    let a = lineage_alert(
        &s,
        "ratio padded with a sparse watched file",
        "process",
        r.pid(),
        r.u("crossed_ms"),
        &[hop("read").pid(r.pid())],
        FILE_BYTES,
    );
    assert!(
        u(&a, "watched_read_bytes") <= FILE_BYTES + MIB,
        "the sparse pad is credited with what it stores: {a}"
    );
}

/// Weights written just now (no fsync: ext4 has not allocated their blocks
/// yet) are credited in full: the sparse-file cap must not blind the
/// sensor to a fresh download read at once.
#[test]
fn fresh_unsynced_weights_are_credited_in_full() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let fresh = w.dir.path().join("model-00002-of-00002.safetensors");
    {
        let mut f = std::fs::File::create(&fresh).unwrap();
        let block: Vec<u8> = (0..MIB).map(|i| (i * 7 + 3) as u8).collect();
        for _ in 0..FILE_BYTES / MIB {
            f.write_all(&block).unwrap();
        }
    }
    let (pid, crossed, _) = send_out(&s, "ln-fresh-send", &fresh);
    let a = lineage_alert(
        &s,
        "unsynced weights read at once",
        "process",
        pid,
        crossed,
        &[hop("read").pid(pid).path(p(&fresh))],
        FILE_BYTES,
    );
    assert!(u(&a, "watched_read_bytes") >= FILE_BYTES, "{a}");
}

/// Walking around the flow: the copy leaves in chunks, each sent by its
/// own short-lived process in its own session, each below the send
/// threshold. The flow sums them.
#[test]
fn copy_split_and_sent_by_many_small_senders() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let parts = w.scratch("parts");
    std::fs::create_dir(&parts).unwrap();
    sh(&format!(
        "cd {} && split -b 8M {} part-",
        p(&parts),
        w.str()
    ));
    let mut names: Vec<PathBuf> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5);
    // The flow crosses 32 MiB in, 16 MiB out with the fourth sender.
    let mut crossed = 0;
    let mut total = 0;
    for (i, part) in names.iter().enumerate() {
        let r = s.run(
            Workload::read_send(part)
                .arg("--mark-sent", &(8 * MIB).to_string())
                .as_comm(&format!("ln-part-{i}"))
                .to(To::untrusted()),
        );
        assert_eq!(r.received(), 8 * MIB, "each sender stays below 16 MiB");
        total += r.received();
        if i == 3 {
            crossed = r.u("crossed_ms");
        }
    }
    assert_eq!(total, FILE_BYTES);
    let a = s
        .expect_alert(Rule::ReadThenSend, "split copy, five senders")
        .scope("flow")
        .first_destination(IpAddr::from(s.untrusted().ip), "untrusted")
        .latency_from(crossed)
        .within(Duration::from_secs(20));
    assert!(u(&a, "sent_bytes") >= 32 * MIB, "{a}");
    assert!(u(&a, "watched_read_bytes") >= 32 * MIB, "{a}");
    assert_eq!(a["lineage"][0]["comm"], "split", "{a}");
    assert_eq!(a["lineage"][0]["path"], w.str(), "{a}");
    assert_eq!(a["lineage"][1]["via"], "file", "{a}");
}

/// The audit log records the derived read with the weights file it came
/// from, and `sensor tail` shows the derived bytes (and the chain on the
/// alert line).
#[test]
fn audit_and_tail_show_derived_reads() {
    let w = Weights::new();
    let log = w.scratch("audit.log");
    let s = scenario(&w)
        .args(&[
            "--audit-log",
            p(&log),
            "--audit-interval",
            "1",
            "--audit-fsync-secs",
            "0",
        ])
        .start();
    let socket = s.agent.tail_socket.to_str().unwrap().to_string();
    let mut tail = Command::new(tests::sensor_bin())
        .args([
            "tail",
            "--json",
            "--socket",
            &socket,
            "--comm",
            "ln-tail-send",
        ])
        .args(["--interval", "0.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let copy = w.scratch("staged.bin");
    sh(&format!("cp {} {}", w.str(), p(&copy)));
    let (pid, crossed, _) = send_out(&s, "ln-tail-send", &copy);
    lineage_alert(
        &s,
        "copy, for the audit log and tail",
        "flow",
        pid,
        crossed,
        &[hop("read").comm("cp"), hop("file").path(p(&copy))],
        FILE_BYTES,
    );
    std::thread::sleep(Duration::from_millis(2500));
    let _ = tail.kill();
    let out = tail.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let derived: u64 = lines
        .iter()
        .filter(|v| v["pid"].as_u64() == Some(pid) && v.get("rule").is_none())
        .map(|v| v["derived_read_bytes"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(derived, FILE_BYTES, "tail's derived bytes: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|v| v["rule"] == "read_then_send" && v["lineage"][1]["via"] == "file"),
        "the alert on tail's stream names the chain: {lines:?}"
    );
    let q = Command::new(tests::sensor_bin())
        .args(["audit", "query", p(&log), "--file", w.str(), "--json"])
        .output()
        .unwrap();
    let records: Vec<Value> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let derived_reads: Vec<&Value> = records
        .iter()
        .filter(|r| r["pid"].as_u64() == Some(pid))
        .collect();
    assert!(
        !derived_reads.is_empty(),
        "query --file WEIGHTS: {records:?}"
    );
    let total: u64 = derived_reads.iter().map(|r| u(r, "read_bytes")).sum();
    // (Plus the sink's one-byte acknowledgement: it runs on this host, in a
    // network namespace, and received weights.)
    assert!(
        (FILE_BYTES..=FILE_BYTES + 16).contains(&total),
        "{total}: {derived_reads:?}"
    );
    for r in &derived_reads {
        assert_eq!(r["via"], "file", "{r}");
        assert_eq!(r["path"], p(&copy), "{r}");
        assert_eq!(r["origin"], w.str(), "{r}");
    }
    // cp's own read of the weights is there too, as a plain watched read.
    assert!(
        records
            .iter()
            .any(|r| r["comm"] == "cp" && r["path"] == w.str() && r.get("via").is_none()),
        "{records:?}"
    );
}

// ------------------------------------------------------------------ benign

fn silent(s: &Scene, what: &str, comm: &str, pids: &[u64]) {
    s.expect_silence(what)
        .once_counted(comm)
        .for_pids(pids)
        .after(Duration::from_millis(2500));
}

/// `comm`'s `sensor_file_read_bytes_total{watched="derived"}` and
/// `sensor_relayed_bytes_total`, once the agent counted `comm` at all.
fn lineage_counts(s: &Scene, comm: &str) -> (u64, u64) {
    s.agent.wait_for(Duration::from_secs(10), comm, |m| {
        m.sum("sensor_file_read_bytes_total", &[("comm", comm)])
            + m.sum("sensor_socket_send_bytes_total", &[("comm", comm)])
            + m.sum("sensor_relayed_bytes_total", &[("comm", comm)])
            > 0
    });
    // One more poll, for the last deltas.
    std::thread::sleep(Duration::from_millis(1500));
    let m = s.agent.metrics();
    (
        m.sum(
            "sensor_file_read_bytes_total",
            &[("comm", comm), ("watched", "derived")],
        ),
        m.sum("sensor_relayed_bytes_total", &[("comm", comm)]),
    )
}

#[test]
fn benign_read_a_few_kib_of_weights_then_upload_a_dataset() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let data = w.scratch("dataset.bin");
    let maker = workload::report(
        "ln-ds-make",
        &[
            "write-out",
            "--read",
            w.str(),
            "--read-bytes",
            "8192",
            "--out",
            p(&data),
            "--bytes",
            &(48 * MIB).to_string(),
        ],
    );
    assert_eq!(u(&maker, "read_bytes"), 8192);
    let (up, _, sent) = send_out(&s, "ln-ds-upload", &data);
    assert_eq!(sent, 48 * MIB);
    let (derived, _) = lineage_counts(&s, "ln-ds-upload");
    assert!(
        (1..=8192).contains(&derived),
        "the dataset carries at most what its writer read: {derived}"
    );
    silent(
        &s,
        "a few KiB read, a 48 MiB dataset uploaded",
        "ln-ds-upload",
        &[up, u(&maker, "pid")],
    );
}

#[test]
fn benign_model_server_streams_tokens_through_a_sidecar() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::untrusted());
    let px = proxy(
        "ln-side-proxy",
        "tcp:127.0.0.1:0",
        &format!("tcp:{}", sink.addr()),
    );
    let server = send_local("ln-side-server", &w, px.addr(), 2 * MIB);
    assert_eq!(u(&server, "read_bytes"), FILE_BYTES);
    let pr = px.report();
    assert_eq!(sink.finish(), 2 * MIB);
    let (_, relayed) = lineage_counts(&s, "ln-side-proxy");
    // (The sink's one-byte acknowledgement comes back relayed too: it runs
    // on this host, in a network namespace.)
    assert!(
        (2 * MIB..=2 * MIB + 16).contains(&relayed),
        "the sidecar is seen relaying the tokens: {relayed}"
    );
    silent(
        &s,
        "model server streaming below the thresholds through a sidecar",
        "ln-side-proxy",
        &[u(&pr, "pid"), u(&server, "pid")],
    );
}

#[test]
fn benign_backup_through_a_local_proxy_to_a_trusted_cidr() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let sink = s.sink(&To::trusted());
    let px = proxy(
        "ln-bk-proxy",
        "tcp:127.0.0.1:0",
        &format!("tcp:{}", sink.addr()),
    );
    let backup = send_local("ln-bk-reader", &w, px.addr(), FILE_BYTES);
    let pr = px.report();
    assert_eq!(sink.finish(), FILE_BYTES);
    let (_, relayed) = lineage_counts(&s, "ln-bk-proxy");
    assert!(
        (FILE_BYTES..=FILE_BYTES + 16).contains(&relayed),
        "the proxy is seen relaying the weights: {relayed}"
    );
    silent(
        &s,
        "backup relayed to a trusted CIDR",
        "ln-bk-proxy",
        &[u(&pr, "pid"), u(&backup, "pid")],
    );
}

#[test]
fn benign_conversion_writes_derived_weights_locally() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let out = w.scratch("model.gguf.tmp");
    let conv = workload::report(
        "ln-convert",
        &[
            "write-out",
            "--read",
            w.str(),
            "--copy",
            "1",
            "--out",
            p(&out),
            "--bytes",
            &FILE_BYTES.to_string(),
        ],
    );
    let check = workload::report(
        "ln-conv-check",
        &["read", "--file", p(&out), "--bs", "65536"],
    );
    let (derived, _) = lineage_counts(&s, "ln-conv-check");
    assert_eq!(derived, FILE_BYTES, "the converted file is derived weights");
    silent(
        &s,
        "local conversion, nothing sent",
        "ln-conv-check",
        &[u(&conv, "pid"), u(&check, "pid")],
    );
}

#[test]
fn benign_log_shipper_sends_a_log_the_model_server_writes_slowly() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let log = w.scratch("server.log");
    std::fs::File::create(&log).unwrap();
    // 24 MiB over ~24 s: at most ~10 MiB in any 10 s window.
    let server = workload::command("ln-log-server")
        .args([
            "write-out",
            "--read",
            w.str(),
            "--out",
            p(&log),
            "--bytes",
            &(24 * MIB).to_string(),
            "--chunk",
            &MIB.to_string(),
            "--gap-ms",
            "1000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let r = s.run(
        Workload::new("ship")
            .arg("--file", p(&log))
            .arg("--bytes", &(24 * MIB).to_string())
            .arg("--every-ms", "1000")
            .as_comm("ln-log-ship")
            .to(To::untrusted()),
    );
    let out = server.wait_with_output().unwrap();
    assert!(out.status.success());
    let sv: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(r.received(), 24 * MIB);
    let (derived, _) = lineage_counts(&s, "ln-log-ship");
    assert!(derived > 0, "the log is derived (its writer holds weights)");
    silent(
        &s,
        "log shipper, log written slowly",
        "ln-log-ship",
        &[r.pid(), u(&sv, "pid")],
    );
}

#[test]
fn benign_package_install_reads_a_little_and_writes_many_files() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let site = w.scratch("site-packages");
    std::fs::create_dir(&site).unwrap();
    let install = workload::report(
        "ln-pip",
        &[
            "spray-files",
            "--file",
            w.str(),
            "--read-bytes",
            "4096",
            "--dir",
            p(&site),
            "--count",
            "40",
            "--bytes",
            &MIB.to_string(),
        ],
    );
    let tarball = w.scratch("wheelhouse.tar");
    sh(&format!("tar -C {} -cf {} .", p(&site), p(&tarball)));
    let (up, _, sent) = send_out(&s, "ln-pip-upload", &tarball);
    assert!(sent >= 40 * MIB);
    silent(
        &s,
        "package install, then its files uploaded",
        "ln-pip-upload",
        &[up, u(&install, "pid")],
    );
}

#[test]
fn benign_many_short_lived_readers_that_never_send() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let reader = workload::program("ln-short-read");
    let script = format!(
        "for i in $(seq 60); do setsid -w {} read --file {} --bs 1048576 > /dev/null; done",
        reader.display(),
        w.str()
    );
    sh(&script);
    silent(&s, "60 short-lived readers", "ln-short-read", &[]);
    let alerts = s.agent.alerts();
    assert!(
        alerts.iter().all(|(_, a)| a["comm"] != "ln-short-read"),
        "{alerts:?}"
    );
}

// ------------------------------------------------------------ map pressure

#[test]
fn carrier_map_pressure_is_counted_and_a_later_copy_still_alerts() {
    let w = Weights::new();
    let s = scenario(&w).start();
    let many = w.scratch("many");
    std::fs::create_dir(&many).unwrap();
    let n = sensor_common::maps::CARRIERS_SIZE as u64 + 4_000;
    let spray = workload::report(
        "ln-spray",
        &[
            "spray-files",
            "--file",
            w.str(),
            "--dir",
            p(&many),
            "--count",
            &n.to_string(),
            "--bytes",
            "512",
        ],
    );
    assert_eq!(u(&spray, "files"), n);
    let lost = |m: &tests::scrape::Metrics| {
        m.sum("sensor_lost_events_total", &[("reason", "carrier_evicted")])
    };
    let m = s
        .agent
        .wait_for(Duration::from_secs(20), "carrier evictions", |m| {
            lost(m) >= 4_000
        });
    let evicted = lost(&m);
    assert!(evicted <= n, "{evicted} evictions for {n} carriers");
    // The agent still works, and a copy made now still alerts.
    let copy = w.scratch("copy-after.bin");
    sh(&format!("cp {} {}", w.str(), p(&copy)));
    let (pid, crossed, _) = send_out(&s, "ln-press-send", &copy);
    lineage_alert(
        &s,
        "copy after carrier pressure",
        "flow",
        pid,
        crossed,
        &[hop("read").comm("cp"), hop("file").path(p(&copy))],
        FILE_BYTES,
    );
}
