//! The send side of the I/O path matrix: every way a process can push bytes
//! into a socket is counted, with the right destination class, within 1 % of
//! what the workload's own calls returned. Peers are network namespaces.

use std::{io::Write, process::Command, time::Duration};

use tests::{agent::Agent, assert_within, netns::Peer, scrape::Metrics, workload, workload::Sink};

const MIB: u64 = 1 << 20;
const SEND: &str = "sensor_socket_send_bytes_total";
const CLASSES: [&str; 4] = ["loopback", "local", "trusted", "untrusted"];

fn sent(m: &Metrics, comm: &str, class: &str) -> u64 {
    m.sum(SEND, &[("comm", comm), ("destination", class)])
}

/// Runs a sender named `comm` against a fresh sink at `to`, then checks the
/// agent counted what the sender's calls accepted, all under `class`.
fn check(
    agent: &Agent,
    peer: Option<&Peer>,
    sink: &[&str],
    comm: &str,
    args: &[&str],
    class: &str,
) -> Metrics {
    let prog = workload::program("sp-sink");
    let mut cmd = match peer {
        Some(p) => p.command(&prog),
        None => Command::new(&prog),
    };
    cmd.args(sink);
    let sink = Sink::start(cmd);
    let truth = workload::run(comm, args, "sent_bytes");
    let received = sink.finish();
    assert!(
        received <= truth && received > 0,
        "{comm}: sink received {received} of {truth}"
    );
    let m = agent.wait_for(Duration::from_secs(10), comm, |m| {
        sent(m, comm, class) >= truth
    });
    assert_within(
        &format!("{comm} {class} bytes"),
        sent(&m, comm, class),
        truth,
        1.0,
    );
    for other in CLASSES.iter().filter(|c| **c != class) {
        assert_eq!(sent(&m, comm, other), 0, "{comm}: bytes counted as {other}");
    }
    m
}

#[test]
fn tcp_send_apis() {
    let peer = Peer::new(50);
    let agent = Agent::start(&[]);
    let bytes = (32 * MIB).to_string();
    let apis = [
        ("write", "sp-tcp-write"),
        ("send", "sp-tcp-send"),
        ("sendto", "sp-tcp-sendto"),
        ("sendmsg", "sp-tcp-sendmsg"),
        ("writev", "sp-tcp-writev"),
        ("uring-send", "sp-tcp-usend"),
        ("uring-sendmsg", "sp-tcp-usendmsg"),
    ];
    for (i, (api, comm)) in apis.iter().enumerate() {
        let to = format!("{}:{}", peer.ip, 7100 + i);
        check(
            &agent,
            Some(&peer),
            &["tcp-sink", "--listen", &to],
            comm,
            &[
                "tcp-send", "--to", &to, "--bytes", &bytes, "--chunk", "65536", "--api", api,
            ],
            "untrusted",
        );
    }
}

#[test]
fn file_to_socket_sendfile_and_splice_count_one_read_and_one_send() {
    let peer = Peer::new(51);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.gguf");
    let mut f = std::fs::File::create(&file).unwrap();
    for _ in 0..32 {
        f.write_all(&vec![7u8; MIB as usize]).unwrap();
    }
    drop(f);
    let agent = Agent::start(&["--watch", dir.path().to_str().unwrap()]);
    let path = file.to_str().unwrap();
    for (i, api) in ["sendfile", "splice"].iter().enumerate() {
        let to = format!("{}:{}", peer.ip, 7200 + i);
        let comm = format!("sp-f2s-{api}");
        let m = check(
            &agent,
            Some(&peer),
            &["tcp-sink", "--listen", &to],
            &comm,
            &["tcp-send", "--to", &to, "--api", api, "--file", path],
            "untrusted",
        );
        let read = m.sum(
            "sensor_file_read_bytes_total",
            &[("comm", &comm), ("watched", "true")],
        );
        assert_within(
            &format!("{comm} watched read (once, not twice)"),
            read,
            32 * MIB,
            1.0,
        );
    }
}

#[test]
fn udp_connected_unconnected_and_sendmmsg() {
    let untrusted = Peer::new(52);
    let trusted = Peer::new(53);
    let agent = Agent::start(&[
        "--trusted-cidr",
        "198.18.53.0/24",
        "--trusted-cidr",
        "2001:2:0:53::/64",
    ]);
    let bytes = (8 * MIB).to_string();
    let mut port = 7300;
    let cases: Vec<(Option<&Peer>, String, &str, &str, &str)> = vec![
        (
            Some(&untrusted),
            untrusted.ip.to_string(),
            "sendto",
            "1",
            "untrusted",
        ),
        (
            Some(&untrusted),
            untrusted.ip.to_string(),
            "sendmsg",
            "1",
            "untrusted",
        ),
        (
            Some(&untrusted),
            untrusted.ip.to_string(),
            "sendmmsg",
            "1",
            "untrusted",
        ),
        (
            Some(&untrusted),
            untrusted.ip.to_string(),
            "sendmmsg",
            "0",
            "untrusted",
        ),
        (
            Some(&untrusted),
            format!("[{}]", untrusted.ip6),
            "sendto",
            "1",
            "untrusted",
        ),
        (
            Some(&trusted),
            trusted.ip.to_string(),
            "sendto",
            "1",
            "trusted",
        ),
        (
            Some(&trusted),
            format!("[{}]", trusted.ip6),
            "sendmsg",
            "1",
            "trusted",
        ),
        (
            Some(&trusted),
            trusted.ip.to_string(),
            "sendmmsg",
            "1",
            "trusted",
        ),
        (None, "127.0.0.1".to_string(), "sendto", "1", "loopback"),
    ];
    for (peer, host, api, unconnected, class) in cases {
        port += 1;
        let to = format!("{host}:{port}");
        let comm = format!(
            "sp-u{}-{}{}",
            if unconnected == "1" { "n" } else { "c" },
            &api[4..],
            port % 100
        );
        check(
            &agent,
            peer,
            &["udp-sink", "--listen", &to],
            &comm,
            &[
                "udp-send",
                "--to",
                &to,
                "--bytes",
                &bytes,
                "--chunk",
                "8192",
                "--api",
                api,
                "--unconnected",
                unconnected,
            ],
            class,
        );
    }
}

#[test]
fn unix_domain_sends_are_local() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sock");
    let path = path.to_str().unwrap();
    let agent = Agent::start(&[]);
    let bytes = (32 * MIB).to_string();
    check(
        &agent,
        None,
        &["unix-sink", "--path", path],
        "sp-unix",
        &[
            "unix-send",
            "--path",
            path,
            "--bytes",
            &bytes,
            "--chunk",
            "65536",
        ],
        "local",
    );
}
