//! Runs `sensor-workload` under a chosen command name (through a symlink:
//! the kernel takes `comm` from the executed file's name), each run in a
//! session of its own (`setsid`, as a service or a login would), and reads
//! back the byte counts it reports.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

fn links_dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("sensor-wl")
            .tempdir()
            .expect("tempdir")
    })
}

/// The workload binary as `comm` (at most 15 characters). Metrics are
/// cumulative per `comm`, so a name serves one workload run only (sinks,
/// whose counts no test reads, excepted).
pub fn program(comm: &str) -> PathBuf {
    assert!(comm.len() <= 15, "comm {comm} longer than 15 characters");
    static USED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if !comm.contains("sink") {
        let mut used = USED.lock().unwrap();
        assert!(
            !used.iter().any(|c| c == comm),
            "comm {comm} used twice in this test binary: counts would mix"
        );
        used.push(comm.to_string());
    }
    let target = crate::target_dir().join("sensor-workload");
    assert!(target.exists(), "{} not built", target.display());
    let link = links_dir().path().join(comm);
    if !link.exists() {
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
    }
    link
}

/// The workload binary itself (to copy: a test that needs its own
/// executable path).
pub fn binary() -> PathBuf {
    let target = crate::target_dir().join("sensor-workload");
    assert!(target.exists(), "{} not built", target.display());
    target
}

/// `setsid -w <workload as comm>`: a new session, waited for.
pub fn command(comm: &str) -> Command {
    let mut c = Command::new("setsid");
    c.arg("-w").arg(program(comm));
    c
}

/// Runs a workload to completion and returns its report (a JSON object).
pub fn report(comm: &str, args: &[&str]) -> serde_json::Value {
    let out = command(comm).args(args).output().expect("spawn workload");
    assert!(
        out.status.success(),
        "workload {comm} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Runs a workload to completion and returns the number it reports under `key`.
pub fn run(comm: &str, args: &[&str], key: &str) -> u64 {
    let r = report(comm, args);
    r.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("workload printed no {key}: {r}"))
}

fn parse(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(serde_json::Value::is_object)
        })
        .unwrap_or_else(|| panic!("workload printed no report: {stdout}"))
}

/// Reads `file` and sends it over TCP to a sink in `peer`'s namespace (on a
/// port the sink got from the kernel), as `comm` (`read-send` in a session
/// of its own); waits for the sink to have it all and returns the
/// workload's report (`pid`, `read_bytes`, `sent_bytes`, …) with the sink's
/// address added as `to`.
pub fn exfiltrate(
    peer: &crate::netns::Peer,
    comm: &str,
    file: &std::path::Path,
) -> serde_json::Value {
    let mut cmd = peer.command(program("exfil-sink"));
    cmd.args(["tcp-sink", "--listen", &format!("{}:0", peer.ip)]);
    let sink = Sink::start(cmd);
    let file = file.to_str().expect("UTF-8 path");
    let mut r = report(comm, &["read-send", "--file", file, "--to", sink.addr()]);
    r["to"] = sink.addr().into();
    sink.finish();
    r
}

/// A sink (server) started in the background; `finish` waits for its count.
pub struct Sink {
    child: Child,
    reader: BufReader<std::process::ChildStdout>,
    addr: String,
}

impl Sink {
    /// Starts `cmd` (a `tcp-sink`/`udp-sink`/`unix-sink`) and waits for it to
    /// listen. Give it `--listen IP:0`: the kernel picks a free port in the
    /// sink's namespace and [`Sink::addr`] says which.
    pub fn start(mut cmd: Command) -> Sink {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sink");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("sink output");
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("sink did not start: {line:?}"))
            .trim()
            .to_string();
        Sink {
            child,
            reader,
            addr,
        }
    }

    /// Where the sink listens, as it printed it (`IP:PORT`, `[IP6]:PORT`
    /// or a unix socket path): what a workload's `--to` takes.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The port the sink was given.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("sink address {} has no port", self.addr))
    }

    pub fn finish(self) -> u64 {
        self.report()
            .get("received_bytes")
            .and_then(serde_json::Value::as_u64)
            .expect("received_bytes")
    }

    /// Waits for it to end; its whole report (a proxy's pid and
    /// `crossed_ms` too).
    pub fn report(mut self) -> serde_json::Value {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.reader, &mut rest);
        let status = self.child.wait().expect("wait sink");
        assert!(status.success(), "sink failed: {status}");
        parse(&rest)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
