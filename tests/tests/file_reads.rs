//! Bytes read from files, watched and not, counted in the kernel and exported
//! on /metrics, against the bytes the workload itself read.

use std::{io::Write, time::Duration};

use tests::{agent::Agent, assert_within, workload};

const MIB: u64 = 1 << 20;
const READ: &str = "sensor_file_read_bytes_total";

fn make_file(path: &std::path::Path, bytes: u64) {
    let mut f = std::fs::File::create(path).expect("create");
    let block: Vec<u8> = (0..MIB).map(|i| (i * 7 % 256) as u8).collect();
    for _ in 0..bytes / MIB {
        f.write_all(&block).expect("write");
    }
    f.sync_all().expect("sync");
}

fn watched(m: &tests::scrape::Metrics, comm: &str) -> u64 {
    m.sum(READ, &[("comm", comm), ("watched", "true")])
}

fn unwatched(m: &tests::scrape::Metrics, comm: &str) -> u64 {
    m.sum(READ, &[("comm", comm), ("watched", "false")])
}

#[test]
fn watched_file_read_with_4k_and_1m_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model-00001.safetensors");
    make_file(&file, 256 * MIB);
    let agent = Agent::start(&["--watch", dir.path().to_str().unwrap()]);
    let path = file.to_str().unwrap();

    for (comm, bs) in [("wl-read-4k", "4096"), ("wl-read-1m", "1048576")] {
        let truth = workload::run(comm, &["read", "--file", path, "--bs", bs], "read_bytes");
        assert_eq!(truth, 256 * MIB, "the workload read the whole file");
        let m = agent.wait_for(Duration::from_secs(10), comm, |m| watched(m, comm) >= truth);
        assert_within(
            &format!("{comm} watched bytes"),
            watched(&m, comm),
            truth,
            1.0,
        );
        // What else it read (shared libraries at start-up) is not watched and small.
        assert!(
            unwatched(&m, comm) < MIB,
            "{comm} unwatched bytes: {}",
            unwatched(&m, comm)
        );
    }
}

#[test]
fn unwatched_file_is_not_counted_as_watched() {
    let watched_dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let file = other.path().join("dataset.dat");
    make_file(&file, 64 * MIB);
    let agent = Agent::start(&["--watch", watched_dir.path().to_str().unwrap()]);
    let comm = "wl-unwatched";
    let truth = workload::run(
        comm,
        &["read", "--file", file.to_str().unwrap(), "--bs", "65536"],
        "read_bytes",
    );
    assert_eq!(truth, 64 * MIB);
    let m = agent.wait_for(Duration::from_secs(10), comm, |m| {
        unwatched(m, comm) >= truth
    });
    assert_eq!(
        watched(&m, comm),
        0,
        "read of an unwatched file counted as watched"
    );
    // Start-up reads of shared libraries add a few KiB at most.
    assert_within("unwatched bytes", unwatched(&m, comm), truth, 1.0);
}

#[test]
fn file_created_after_start_in_watched_directory_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&["--watch", dir.path().to_str().unwrap()]);
    // A new subdirectory and file, both created after the agent attached.
    let sub = dir.path().join("llama").join("v2");
    std::fs::create_dir_all(&sub).unwrap();
    let file = sub.join("weights.part");
    make_file(&file, 32 * MIB);
    let comm = "wl-late-file";
    let truth = workload::run(
        comm,
        &["read", "--file", file.to_str().unwrap(), "--bs", "131072"],
        "read_bytes",
    );
    let m = agent.wait_for(Duration::from_secs(10), comm, |m| watched(m, comm) >= truth);
    assert_within(
        "watched bytes of a late file",
        watched(&m, comm),
        truth,
        1.0,
    );
}

#[test]
fn extension_glob_watches_files_anywhere_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.GGUF");
    let txt = dir.path().join("notes.txt");
    make_file(&gguf, 16 * MIB);
    make_file(&txt, 16 * MIB);
    let agent = Agent::start(&["--watch", "*.gguf"]);
    let (a, b) = ("wl-glob-gguf", "wl-glob-txt");
    let truth_a = workload::run(
        a,
        &["read", "--file", gguf.to_str().unwrap(), "--bs", "65536"],
        "read_bytes",
    );
    let truth_b = workload::run(
        b,
        &["read", "--file", txt.to_str().unwrap(), "--bs", "65536"],
        "read_bytes",
    );
    let m = agent.wait_for(Duration::from_secs(10), "both readers", |m| {
        watched(m, a) >= truth_a && unwatched(m, b) >= truth_b
    });
    assert_within(
        "*.gguf watched bytes (case-insensitive)",
        watched(&m, a),
        truth_a,
        1.0,
    );
    assert_eq!(watched(&m, b), 0, "a .txt file matched *.gguf");
}

/// Watched by inode as well as by path: a hard link made outside the
/// watched directory, a file moved out of it (both before any read), and a
/// file read once in place then moved out and read under another name: all
/// their bytes count as watched (`WATCHED_FILES`), not as plain reads.
#[test]
fn hard_links_and_moves_out_keep_a_file_watched() {
    // One file system for the directory and the places outside it.
    let base = tempfile::Builder::new()
        .prefix("sensor-inode")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = base.path().join("models");
    let outside = base.path().join("scratch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let linked = dir.join("a.pt");
    let moved = dir.join("b.pt");
    make_file(&linked, 8 * MIB);
    make_file(&moved, 8 * MIB);
    let agent = Agent::start(&["--watch", dir.to_str().unwrap()]);
    // Made after the agent started, before any read.
    let link = outside.join("innocent.dat");
    std::fs::hard_link(&linked, &link).unwrap();
    let renamed = outside.join("notes.txt");
    std::fs::rename(&moved, &renamed).unwrap();
    // A file created after start, read once in place, then moved out.
    let late = dir.join("c.pt");
    make_file(&late, 8 * MIB);
    let first = workload::run(
        "fr-ino-first",
        &["read", "--file", late.to_str().unwrap(), "--bs", "1048576"],
        "read_bytes",
    );
    agent.wait_for(Duration::from_secs(10), "the first read", |m| {
        watched(m, "fr-ino-first") >= first
    });
    let late_moved = outside.join("c.bak");
    std::fs::rename(&late, &late_moved).unwrap();
    for (comm, path) in [
        ("fr-ino-link", &link),
        ("fr-ino-moved", &renamed),
        ("fr-ino-late", &late_moved),
    ] {
        let truth = workload::run(
            comm,
            &["read", "--file", path.to_str().unwrap(), "--bs", "1048576"],
            "read_bytes",
        );
        assert_eq!(truth, 8 * MIB);
        let m = agent.wait_for(Duration::from_secs(10), comm, |m| {
            watched(m, comm) + unwatched(m, comm) >= truth
        });
        assert_within(
            &format!("{comm}: watched bytes of {}", path.display()),
            watched(&m, comm),
            truth,
            1.0,
        );
    }
}
