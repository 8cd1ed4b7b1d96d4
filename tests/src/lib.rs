//! Harness for the integration tests: start the real agent (real programs in
//! the running kernel), run workloads that know their own byte counts, and
//! compare with what the agent exports.
//!
//! Every test needs root (BPF, network namespaces); nothing is skipped: a
//! program that does not load or attach fails the test with the reason.

pub mod agent;
pub mod bpf;
pub mod fake_container;
pub mod netns;
pub mod scenario;
pub mod scrape;
pub mod workload;

use std::path::PathBuf;

/// The `target/<profile>` directory the test binaries were built into.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test>: two levels up.
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .expect("target dir")
}

/// The workspace root (manifests, README, Dockerfile).
pub fn repo() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// A YAML file of the repository, as JSON values (panics naming the file).
pub fn yaml(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `sensor` binary under test (`SENSOR_BIN`, else next to the tests).
pub fn sensor_bin() -> PathBuf {
    let path = std::env::var_os("SENSOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("sensor"));
    assert!(
        path.exists(),
        "{} not built: run `cargo xtask test` (or `cargo build -p sensor`)",
        path.display()
    );
    path
}

/// The detection thresholds the tests scale down to, by configuration:
/// 16 MiB read, 8 MiB sent.
pub const SCALED_THRESHOLDS: [&str; 4] = ["--min-read-bytes", "16MiB", "--min-send-bytes", "8MiB"];

/// Where cgroup v2 is mounted (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("no cgroup v2 mount")
}

/// Writes `bytes` of a repeating pattern to `path`.
pub fn pattern_file(path: &std::path::Path, bytes: u64) -> std::io::Result<()> {
    let chunk: Vec<u8> = (0..1u64 << 20).map(|i| (i % 251) as u8).collect();
    let body: Vec<u8> = chunk.iter().copied().cycle().take(bytes as usize).collect();
    std::fs::write(path, body)
}

/// `bytes` that do not compress (so a pipeline through gzip still sends
/// them all), in whole MiB, synced.
pub fn random_file(path: &std::path::Path, bytes: u64) {
    use std::io::Write;
    const MIB: u64 = 1 << 20;
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes;
    let mut block = vec![0u8; MIB as usize];
    for _ in 0..bytes / MIB {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
}

/// The number `key` of a JSON object (an alert, a report, a ledger row);
/// panics naming the key and the object when it is missing.
#[track_caller]
pub fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Asserts `actual` is within `pct` percent of `expected` (which comes from
/// the workload, never from the sensor).
#[track_caller]
pub fn assert_within(what: &str, actual: u64, expected: u64, pct: f64) {
    let err = (actual as f64 - expected as f64).abs() / (expected.max(1) as f64) * 100.0;
    assert!(
        err <= pct,
        "{what}: sensor counted {actual}, workload moved {expected} ({err:.3}% off, limit {pct}%)"
    );
    eprintln!("{what}: counted {actual} vs ground truth {expected} ({err:.4}% off)");
}
