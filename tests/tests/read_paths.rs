//! The read side of the I/O path matrix: every way a process can take bytes
//! out of a watched file is counted, within 1 % of what the workload's own
//! calls returned (mmap: see the mmap tests).

use std::{io::Write, path::Path, time::Duration};

use tests::{agent::Agent, assert_within, scrape::Metrics, workload};

const MIB: u64 = 1 << 20;
const READ: &str = "sensor_file_read_bytes_total";

fn make_file(path: &Path, bytes: u64) {
    let mut f = std::fs::File::create(path).expect("create");
    let block: Vec<u8> = (0..MIB).map(|i| (i * 13 % 256) as u8).collect();
    for _ in 0..bytes / MIB {
        f.write_all(&block).expect("write");
    }
    f.sync_all().expect("sync");
}

fn watched(m: &Metrics, comm: &str) -> u64 {
    m.sum(READ, &[("comm", comm), ("watched", "true")])
}

struct Setup {
    _dir: tempfile::TempDir,
    out: tempfile::TempDir,
    file: String,
    agent: Agent,
}

/// A 64 MiB file in a watched directory (on the root file system, which
/// supports O_DIRECT), an unwatched scratch directory, and the agent.
fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("sensor-rp")
        .tempdir_in("/var/tmp")
        .unwrap();
    let out = tempfile::Builder::new()
        .prefix("sensor-out")
        .tempdir_in("/var/tmp")
        .unwrap();
    let file = dir.path().join("shard-00001.safetensors");
    make_file(&file, 64 * MIB);
    let mut args = vec!["--watch", dir.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    Setup {
        file: file.to_str().unwrap().to_string(),
        agent,
        _dir: dir,
        out,
    }
}

/// Runs `args` as `comm` and checks the watched bytes against the
/// workload's own count of `key`.
fn check(s: &Setup, comm: &str, args: &[&str], key: &str) -> u64 {
    let truth = workload::run(comm, args, key);
    assert_eq!(truth, 64 * MIB, "{comm}: the workload took the whole file");
    let m = s
        .agent
        .wait_for(Duration::from_secs(10), comm, |m| watched(m, comm) >= truth);
    assert_within(
        &format!("{comm} watched bytes"),
        watched(&m, comm),
        truth,
        1.0,
    );
    truth
}

#[test]
fn read_syscall_family() {
    let s = setup(&[]);
    for (comm, mode) in [
        ("rp-pread", "pread"),
        ("rp-readv", "readv"),
        ("rp-preadv", "preadv"),
        ("rp-preadv2", "preadv2"),
        ("rp-odirect", "odirect"),
    ] {
        check(
            &s,
            comm,
            &["read", "--file", &s.file, "--bs", "65536", "--mode", mode],
            "read_bytes",
        );
    }
}

#[test]
fn kernel_copies_count_the_source_once() {
    let s = setup(&[]);
    let out = |name: &str| s.out.path().join(name).to_str().unwrap().to_string();
    check(
        &s,
        "rp-cfr",
        &["copy-file-range", "--file", &s.file, "--out", &out("cfr")],
        "read_bytes",
    );
    check(
        &s,
        "rp-sendfile",
        &["sendfile-file", "--file", &s.file, "--out", &out("sf")],
        "read_bytes",
    );
    check(
        &s,
        "rp-splice",
        &["splice-pipe", "--file", &s.file],
        "read_bytes",
    );
    // The copies landed in an unwatched directory: writing them is not reading.
    let m = s.agent.metrics();
    for comm in ["rp-cfr", "rp-sendfile", "rp-splice"] {
        let all = m.sum(READ, &[("comm", comm)]);
        assert!(
            all - watched(&m, comm) < MIB,
            "{comm}: unwatched reads {}",
            all - watched(&m, comm)
        );
    }
}

#[test]
fn io_uring_reads() {
    let s = setup(&[]);
    for (comm, op) in [
        ("rp-uring-rd", "read"),
        ("rp-uring-rdv", "readv"),
        ("rp-uring-fix", "read-fixed"),
    ] {
        check(
            &s,
            comm,
            &[
                "uring-read",
                "--file",
                &s.file,
                "--bs",
                "131072",
                "--op",
                op,
            ],
            "read_bytes",
        );
    }
}

/// mmap counts the pages resident in the process's page tables, sampled
/// every poll: touching every page of a 64 MiB mapping counts 64 MiB.
#[test]
fn mmap_whole_file_touched() {
    let s = setup(&[]);
    let comm = "rp-mmap-all";
    let truth = workload::run(
        comm,
        &[
            "mmap",
            "--file",
            &s.file,
            "--touch",
            &(64 * MIB).to_string(),
            "--hold-ms",
            "1000",
        ],
        "touched_bytes",
    );
    assert_eq!(truth, 64 * MIB);
    let m = s
        .agent
        .wait_for(Duration::from_secs(10), comm, |m| watched(m, comm) >= truth);
    let counted = watched(&m, comm);
    assert!(
        counted.abs_diff(truth) <= 4096,
        "{comm}: counted {counted}, touched {truth}: more than one page off"
    );
    eprintln!("{comm}: counted {counted} vs touched {truth}");
}

/// Only what was touched (plus at most one large folio that fault-around
/// or a PMD mapping brought in with it), not the whole mapping.
#[test]
fn mmap_half_touched_counts_half() {
    let s = setup(&[]);
    let comm = "rp-mmap-half";
    let truth = workload::run(
        comm,
        &[
            "mmap",
            "--file",
            &s.file,
            "--touch",
            &(32 * MIB).to_string(),
            "--hold-ms",
            "1000",
        ],
        "touched_bytes",
    );
    assert_eq!(truth, 32 * MIB);
    // The mapping is gone and sampled by now; give the agent a poll to report.
    let m = s
        .agent
        .wait_for(Duration::from_secs(10), comm, |m| watched(m, comm) >= truth);
    let counted = watched(&m, comm);
    assert!(
        counted >= truth && counted <= truth + 2 * MIB,
        "{comm}: counted {counted}, touched {truth}"
    );
    eprintln!("{comm}: counted {counted} vs touched {truth}");
}

/// A process that maps, reads and exits before any sample saw its mapping
/// is counted by its whole mapped length (it may have read all of it).
#[test]
fn mmap_gone_before_sampled_counts_mapped_length() {
    let s = setup(&["--poll-interval-ms", "5000"]);
    let comm = "rp-mmap-quick";
    std::thread::sleep(Duration::from_millis(300)); // past the agent's first (immediate) poll
    let mapped = workload::run(
        comm,
        &["mmap", "--file", &s.file, "--touch", &(8 * MIB).to_string()],
        "mapped_bytes",
    );
    let m = s
        .agent
        .wait_for(Duration::from_secs(15), comm, |m| watched(m, comm) > 0);
    assert_eq!(watched(&m, comm), mapped, "{comm}: mapped length");
}

/// Counting cannot be inflated by mappings: a huge sparse `*.pt` (32 TiB
/// long, 1 MiB written) mapped and unmapped 200 times without a sample ever
/// seeing a mapping is credited at most what the file holds per mapping,
/// not its length (which would add 2^52 bytes and overflow sums).
#[test]
fn sparse_mmap_churn_is_credited_what_the_file_holds() {
    let dir = tempfile::Builder::new()
        .prefix("sensor-sparse")
        .tempdir_in("/dev/shm")
        .unwrap();
    let file = dir.path().join("huge.pt");
    {
        let f = std::fs::File::create(&file).unwrap();
        std::io::Write::write_all(&mut &f, &vec![7u8; MIB as usize]).unwrap();
        f.set_len(1 << 46).unwrap();
    }
    let agent = Agent::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--poll-interval-ms",
        "5000",
    ]);
    std::thread::sleep(Duration::from_millis(300)); // past the first (immediate) poll
    let comm = "rp-mmap-churn";
    let times = 200u64;
    let r = workload::report(
        comm,
        &[
            "mmap-churn",
            "--file",
            file.to_str().unwrap(),
            "--len",
            &(1u64 << 45).to_string(),
            "--times",
            &times.to_string(),
        ],
    );
    let mapped = r["mapped_bytes"].as_u64().unwrap();
    let allocated = r["allocated_bytes"].as_u64().unwrap();
    assert!((MIB..4 * MIB).contains(&allocated), "{r}");
    let m = agent.wait_for(Duration::from_secs(15), comm, |m| watched(m, comm) > 0);
    let counted = watched(&m, comm);
    assert!(
        counted <= times * allocated,
        "{comm}: credited {counted} for {times} untouched mappings of a file holding \
         {allocated} bytes (mapped {mapped} in all)"
    );
    eprintln!("{comm}: credited {counted} (≤ {times} × {allocated}); mapped {mapped}");
    // Still alive and scraping.
    agent.metrics();
    assert!(agent.stop().success());
}
