//! Bad input: one line on stderr naming the bad value, exit code 2, and no
//! program ever attached.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(tests::sensor_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("spawn sensor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[track_caller]
fn assert_usage_error(args: &[&str], must_name: &str) {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, Some(2), "{args:?}: exit code (stderr: {stderr})");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line on stderr, got:\n{stderr}"
    );
    assert!(
        lines[0].contains(must_name),
        "{args:?}: error does not name {must_name:?}: {}",
        lines[0]
    );
    assert!(
        !stderr.contains("attached") && !stdout.contains("ready"),
        "{args:?}: attached before failing"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: panic: {stderr}");
    eprintln!("{args:?} -> {}", lines[0]);
}

#[test]
fn unknown_flag() {
    assert_usage_error(&["run", "--frobnicate"], "--frobnicate");
}

#[test]
fn bad_cidr() {
    assert_usage_error(&["run", "--trusted-cidr", "10.0.0.0/33"], "10.0.0.0/33");
    assert_usage_error(&["run", "--trusted-cidr", "not-a-net"], "not-a-net");
}

#[test]
fn bad_size() {
    assert_usage_error(&["run", "--min-read-bytes", "12XB"], "12XB");
    assert_usage_error(&["run", "--min-send-bytes", "lots"], "lots");
}

#[test]
fn bad_metrics_addr_and_ratio() {
    assert_usage_error(&["run", "--metrics-addr", "nowhere:99999"], "nowhere:99999");
    assert_usage_error(&["run", "--min-send-ratio", "-0.5"], "-0.5");
}

#[test]
fn unreadable_config() {
    assert_usage_error(
        &["run", "--config", "/nonexistent/sensor.yaml"],
        "/nonexistent/sensor.yaml",
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "trusted-cidr: [10.0.0.0/99]\n").unwrap();
    assert_usage_error(&["run", "--config", bad.to_str().unwrap()], "10.0.0.0/99");
    std::fs::write(&bad, "wtach: [/models]\n").unwrap();
    assert_usage_error(&["run", "--config", bad.to_str().unwrap()], "wtach");
    std::fs::write(&bad, "watch: [/models\n").unwrap();
    assert_usage_error(
        &["run", "--config", bad.to_str().unwrap()],
        bad.to_str().unwrap(),
    );
}

#[test]
fn nonexistent_watch_path() {
    assert_usage_error(
        &["run", "--watch", "/nonexistent/models"],
        "/nonexistent/models",
    );
    assert_usage_error(&["run", "--watch", "/tmp/model-*.bin"], "/tmp/model-*.bin");
}

#[test]
fn help_and_version_succeed() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")));
    let (code, stdout, _) = run(&["run", "--help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("--trusted-cidr"));
}
