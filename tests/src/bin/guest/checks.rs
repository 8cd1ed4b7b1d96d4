//! The workloads a guest runs and how their own counts are compared with
//! what the agent exports.

use std::{collections::BTreeMap, net::UdpSocket, path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Context as _, Result};
use tests::scrape::{scrape, Metrics};

const MIB: u64 = 1 << 20;
/// Counts must be within 1 % of the workload's own.
const TOLERANCE_PCT: f64 = 1.0;

/// The files the workloads read: one watched, one not.
pub struct Data {
    root: PathBuf,
}

impl Data {
    pub fn create() -> Result<Data> {
        let root = std::env::temp_dir().join(format!("sensor-guest-{}", std::process::id()));
        std::fs::create_dir_all(root.join("weights"))?;
        std::fs::create_dir_all(root.join("other"))?;
        std::fs::create_dir_all(root.join("bin"))?;
        for (path, mib) in [
            (Data::watched_in(&root), 16),
            (Data::unwatched_in(&root), 8),
        ] {
            tests::pattern_file(&path, mib * MIB)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Data { root })
    }

    /// The watched file.
    pub fn watched(&self) -> PathBuf {
        Data::watched_in(&self.root)
    }

    /// A path in the unwatched directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root.join("other").join(name)
    }

    fn watched_in(root: &std::path::Path) -> PathBuf {
        root.join("weights/model.safetensors")
    }

    fn unwatched_in(root: &std::path::Path) -> PathBuf {
        root.join("other/blob.bin")
    }

    pub fn watch_glob(&self) -> String {
        format!("{}/weights/*.safetensors", self.root.display())
    }

    /// The workload binary under the name `comm` (the kernel takes the
    /// task's name from the path it executes).
    pub fn program(&self, bin: &str, comm: &str) -> Result<PathBuf> {
        let link = self.root.join("bin").join(comm);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("{bin}/sensor-workload"), &link)?;
        }
        Ok(link)
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// One comparison: the agent's figure against the workload's.
struct Count {
    name: &'static str,
    counted: u64,
    expected: u64,
}

impl Count {
    fn ok(&self) -> bool {
        let diff = self.counted.abs_diff(self.expected) as f64;
        diff <= self.expected as f64 * TOLERANCE_PCT / 100.0
    }

    /// Short by no more than the runs the kernel said it skipped
    /// (`recursion_miss`) could have carried: each skipped run is one
    /// syscall of at most `per_call` bytes.
    fn covered(&self, misses: u64) -> bool {
        self.counted < self.expected && self.expected - self.counted <= misses * per_call(self.name)
    }

    fn verdict(&self, misses: u64) -> &'static str {
        if self.ok() {
            "ok"
        } else if self.covered(misses) {
            "covered"
        } else {
            "FAIL"
        }
    }
}

/// The most bytes one call of each check's workload moves.
fn per_call(name: &str) -> u64 {
    match name {
        n if n.contains("4k") => 4096,
        n if n.starts_with("udp") => 1024,
        n if n.contains("sendfile") => 16 * MIB,
        _ => 65536,
    }
}

/// Runs every workload, then compares; prints the hooks and each count.
pub fn run_all(bin: &str, data: &Data, url: &str) -> Result<()> {
    let hooks = report_hooks(&scrape(url)?);
    // An optional hook this kernel offers must attach: a program the
    // verifier newly refuses would otherwise pass as "not offered here".
    let release = crate::system::kernel_release();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if version >= (5, 19) && hooks.get("file_read_io_uring").map(String::as_str) == Some("none") {
        bail!("io_uring_complete exists on {release} but its program did not attach");
    }
    let w = Data::watched_in(&data.root).display().to_string();
    let watched = workload(bin, data, "g-read-w", &read_args(&w), "read_bytes")?;
    let unwatched_path = Data::unwatched_in(&data.root).display().to_string();
    let unwatched = workload(
        bin,
        data,
        "g-read-u",
        &read_args(&unwatched_path),
        "read_bytes",
    )?;
    let tcp = tcp_send(
        bin,
        data,
        "g-tcp",
        &["--bytes", &(16 * MIB).to_string(), "--chunk", "65536"],
    )?;
    let sendfile = tcp_send(
        bin,
        data,
        "g-sendfile",
        &["--api", "sendfile", "--file", &w],
    )?;
    let udp_connected = udp_send(bin, data, "g-udp-c", &[])?;
    let udp_unconnected = udp_send(bin, data, "g-udp-u", &["--unconnected", "1"])?;
    let udp_mmsg = udp_send(
        bin,
        data,
        "g-udp-mmsg",
        &["--unconnected", "1", "--api", "sendmmsg"],
    )?;
    // io_uring is seen only where the kernel's tracepoint names the request
    // (5.19+): its reads, and its sends (by sock_send_length from 6.3, by
    // io_uring_complete before).
    let uring = match hooks.get("file_read_io_uring").map(String::as_str) {
        Some("none") | None => None,
        Some(_) => {
            let args = ["uring-read", "--file", &w, "--bs", "65536"].map(String::from);
            let read = workload(bin, data, "g-uring", &args, "read_bytes")?;
            let eight = (8 * MIB).to_string();
            let send_args = ["--api", "uring-send", "--bytes", &eight, "--chunk", "65536"];
            let sent = tcp_send(bin, data, "g-uring-send", &send_args)?;
            Some((read, sent))
        }
    };
    // A 4 KiB reader of the watched file while another task reads a socket
    // on the same (single) CPU: the kernel side must not mix their state.
    let (interleaved_read, interleaved_sent) = std::thread::scope(|s| {
        let sixteen = (16 * MIB).to_string();
        let bg = s.spawn(move || {
            tcp_send(
                bin,
                data,
                "g-tcp-bg",
                &["--bytes", &sixteen, "--chunk", "4096"],
            )
        });
        let args = ["read", "--file", &w, "--bs", "4096"].map(String::from);
        let read = workload(bin, data, "g-read-4k", &args, "read_bytes");
        let sent = bg
            .join()
            .map_err(|_| anyhow::anyhow!("background sender panicked"));
        (read, sent)
    });
    let (interleaved_read, interleaved_sent) = (interleaved_read?, interleaved_sent??);
    let lineage = crate::lineage::run(bin, data)?;
    let evaluate = |m: &Metrics| -> Vec<Count> {
        let read = |comm: &str, watched: &str| {
            m.sum(
                "sensor_file_read_bytes_total",
                &[("comm", comm), ("watched", watched)],
            )
        };
        let sent = |comm: &str| {
            m.sum(
                "sensor_socket_send_bytes_total",
                &[("comm", comm), ("destination", "loopback")],
            )
        };
        let count = |name, counted, expected| Count {
            name,
            counted,
            expected,
        };
        let mut counts = vec![
            count("read_watched", read("g-read-w", "true"), watched),
            count("read_unwatched", read("g-read-u", "false"), unwatched),
            count("read_unwatched_as_watched", read("g-read-u", "true"), 0),
            count("tcp_send", sent("g-tcp"), tcp),
            count("tcp_sendfile_send", sent("g-sendfile"), sendfile),
            count(
                "tcp_sendfile_read_watched",
                read("g-sendfile", "true"),
                sendfile,
            ),
            count("udp_send_connected", sent("g-udp-c"), udp_connected),
            count("udp_sendto_unconnected", sent("g-udp-u"), udp_unconnected),
            count("udp_sendmmsg_unconnected", sent("g-udp-mmsg"), udp_mmsg),
        ];
        counts.push(count(
            "read_watched_4k_interleaved",
            read("g-read-4k", "true"),
            interleaved_read,
        ));
        counts.push(count(
            "read_4k_interleaved_any",
            read("g-read-4k", "true") + read("g-read-4k", "false"),
            interleaved_read,
        ));
        counts.push(count(
            "tcp_send_4k_interleaved",
            sent("g-tcp-bg"),
            interleaved_sent,
        ));
        for e in &lineage {
            counts.push(count(e.name, m.sum(e.metric, &e.labels), e.expected));
        }
        if let Some((read_bytes, sent_bytes)) = uring {
            counts.push(count(
                "io_uring_read_watched",
                read("g-uring", "true"),
                read_bytes,
            ));
            counts.push(count("io_uring_send", sent("g-uring-send"), sent_bytes));
        }
        counts
    };
    // The agent polls every 200 ms, slowly on an emulated CPU: read until
    // every count is reached, or 20 s have passed (then a shortfall stands).
    let waited = std::time::Instant::now();
    let deadline = waited + Duration::from_secs(20);
    let (m, counts) = loop {
        std::thread::sleep(Duration::from_millis(500));
        let m = scrape(url)?;
        let counts = evaluate(&m);
        if counts.iter().all(Count::ok) || std::time::Instant::now() > deadline {
            break (m, counts);
        }
    };
    println!("matrix: note settled_ms {}", waited.elapsed().as_millis());
    // What the kernel side could not count explains a miscount.
    let mut misses = 0;
    for s in m
        .samples
        .iter()
        .filter(|s| s.metric == "sensor_lost_events_total")
    {
        if let prometheus_parse::Value::Counter(v) = s.value {
            let reason = s.labels.get("reason").unwrap_or("?");
            if v > 0.0 {
                println!("matrix: note lost {reason} {v}");
            }
            if reason == "recursion_miss" {
                misses = v as u64;
            }
        }
    }
    let mut failed = Vec::new();
    for c in &counts {
        let verdict = c.verdict(misses);
        println!(
            "matrix: count {} {} {} {verdict}",
            c.name, c.counted, c.expected
        );
        if verdict == "FAIL" {
            failed.push(c.name);
        }
    }
    if !failed.is_empty() {
        bail!("miscounted: {}", failed.join(", "));
    }
    Ok(())
}

/// `matrix: hook CAPABILITY HOOK` for each capability (`none` when it got
/// no hook); returns them.
fn report_hooks(m: &Metrics) -> BTreeMap<String, String> {
    let mut hooks = BTreeMap::new();
    for s in m.samples.iter().filter(|s| s.metric == "sensor_probe_info") {
        let cap = s.labels.get("capability").unwrap_or("?");
        let attached = matches!(s.value, prometheus_parse::Value::Gauge(v) if v > 0.0);
        let hook = if attached {
            s.labels.get("hook").unwrap_or("?")
        } else {
            "none"
        };
        println!("matrix: hook {cap} {hook}");
        hooks.insert(cap.to_string(), hook.to_string());
    }
    hooks
}

fn read_args(file: &str) -> Vec<String> {
    ["read", "--file", file, "--bs", "65536"]
        .map(String::from)
        .to_vec()
}

/// Runs the workload as `comm` and returns the count it reports under `key`.
pub fn workload(bin: &str, data: &Data, comm: &str, args: &[String], key: &str) -> Result<u64> {
    let out = Command::new(data.program(bin, comm)?)
        .args(args)
        .output()
        .with_context(|| format!("running {comm}"))?;
    if !out.status.success() {
        bail!(
            "{comm} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("{comm} report: {line:?}"))?;
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("{comm} reported no {key}: {line}"))
}

/// A `tcp-send` (more arguments in `extra`) to a listener drained by this
/// process; the bytes the workload sent, checked against those received.
fn tcp_send(bin: &str, data: &Data, comm: &str, extra: &[&str]) -> Result<u64> {
    let (addr, drained) = crate::lineage::drain()?;
    let mut args = vec!["tcp-send".to_string(), "--to".into(), addr];
    args.extend(extra.iter().map(|a| a.to_string()));
    let sent = workload(bin, data, comm, &args, "sent_bytes")?;
    crate::lineage::ensure_drained(drained, sent, comm)?;
    Ok(sent)
}

/// 2 MiB of 1 KiB datagrams to a bound (never read) loopback socket, with
/// `extra` arguments (unconnected `sendto`: the destination is only in the
/// call; `sendmmsg`).
fn udp_send(bin: &str, data: &Data, comm: &str, extra: &[&str]) -> Result<u64> {
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let to = sink.local_addr()?.to_string();
    let bytes = (2 * MIB).to_string();
    let mut args: Vec<String> = [
        "udp-send", "--to", &to, "--bytes", &bytes, "--chunk", "1024",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    workload(bin, data, comm, &args, "sent_bytes")
}
