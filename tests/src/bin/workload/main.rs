//! Workloads for the integration tests. Each knows its own byte counts (the
//! ground truth: what its own calls returned) and prints them as one JSON
//! line when done. Run through a symlink so the test picks the `comm`.

mod abuse;
mod exfil;
mod files;
mod holes;
mod lineage;
mod net;
mod pressure;
mod uring;

use std::collections::HashMap;

/// `--key value` arguments.
pub struct Args(HashMap<String, String>);

impl Args {
    fn parse(raw: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut it = raw.iter();
        while let Some(k) = it.next() {
            if let Some(k) = k.strip_prefix("--") {
                map.insert(k.to_string(), it.next().cloned().unwrap_or_default());
            }
        }
        Args(map)
    }

    pub fn str(&self, k: &str) -> &str {
        self.0
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| die(&format!("missing --{k}")))
    }

    pub fn opt(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn num(&self, k: &str) -> u64 {
        self.str(k)
            .parse()
            .unwrap_or_else(|_| die(&format!("--{k} must be a number")))
    }

    pub fn num_or(&self, k: &str, default: u64) -> u64 {
        self.opt(k).map(|_| self.num(k)).unwrap_or(default)
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("sensor-workload: {msg}");
    std::process::exit(2)
}

/// Prints the ground truth: `{"read_bytes": n, ...}`, with this process's
/// pid and the wall-clock time it finished (`done_ms`).
pub fn report(pairs: &[(&str, u64)]) {
    let done_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut body: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| *k != "pid")
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    body.push(format!("\"pid\":{}", std::process::id()));
    body.push(format!("\"done_ms\":{done_ms}"));
    println!("{{{}}}", body.join(","));
}

/// A libc call's result, as `io::Result`.
pub fn check(ret: isize) -> std::io::Result<usize> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

fn main() {
    // argv[0] may be any bytes (the hostile-name tests): lossy, never a panic.
    let raw: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cmd = raw.get(1).map(String::as_str).unwrap_or("");
    let args = Args::parse(raw.get(2..).unwrap_or(&[]));
    let result = match cmd {
        "read" => files::read(&args),
        "mmap" => files::mmap(&args),
        "mmap-churn" => files::mmap_churn(&args),
        "copy-file-range" => files::copy_file_range(&args),
        "sendfile-file" => files::sendfile_to_file(&args),
        "splice-pipe" => files::splice_to_pipe(&args),
        "uring-read" => uring::read(&args),
        "tcp-send" => net::tcp_send(&args),
        "udp-send" => net::udp_send(&args),
        "unix-send" => net::unix_send(&args),
        "tcp-sink" => net::tcp_sink(&args),
        "udp-sink" => net::udp_sink(&args),
        "unix-sink" => net::unix_sink(&args),
        "read-send" => exfil::read_send(&args),
        "mmap-send" => exfil::mmap_send(&args),
        "stdin-send" => exfil::stdin_send(&args),
        "relay" => exfil::relay(&args),
        "proxy" => lineage::proxy(&args),
        "send-local" => lineage::send_local(&args),
        "write-out" => lineage::write_out(&args),
        "spray-files" => lineage::spray_files(&args),
        "ship" => lineage::ship(&args),
        "read-i386" => holes::read_i386(&args),
        "packet-send" => holes::packet_send(&args),
        "loopback-chatter" => abuse::loopback_chatter(&args),
        "spray" => abuse::spray(&args),
        "mmap-many" => abuse::mmap_many(&args),
        "fds" => abuse::fds(&args),
        "udp-spray" => pressure::udp_spray(&args),
        "idle-readers" => pressure::idle_readers(&args),
        _ => die("usage: read|mmap|mmap-churn|copy-file-range|sendfile-file|splice-pipe|uring-read|tcp-send|udp-send|unix-send|tcp-sink|udp-sink|unix-sink|read-send|mmap-send|stdin-send|relay|loopback-chatter|spray|mmap-many|fds|udp-spray|idle-readers --key value ..."),
    };
    if let Err(e) = result {
        die(&format!("{cmd}: {e}"));
    }
}
