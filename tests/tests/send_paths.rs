//! The send side of the I/O path matrix: every way a process can push bytes
//! into a socket is counted, with the right destination class, within 1 % of
//! what the workload's own calls returned. Peers are network namespaces.
//!
//! Each test runs twice: with the hook this kernel prefers
//! (`sock:sock_send_length`), and with it disabled, so the agent falls back
//! to the send-syscall exits it uses on kernels before 6.3.

use std::{io::Write, process::Command, time::Duration};

use tests::{agent::Agent, assert_within, netns::Peer, scrape::Metrics, workload, workload::Sink};

const MIB: u64 = 1 << 20;
const SEND: &str = "sensor_socket_send_bytes_total";
const CLASSES: [&str; 4] = ["loopback", "local", "trusted", "untrusted"];

/// Which socket_send hook the agent uses, and the names that keep the two
/// variants of a test apart when they run side by side (peers get subnets
/// of their own, sinks ports of their own).
#[derive(Clone, Copy)]
struct Via {
    /// Workload names start with it.
    prefix: &'static str,
    fallback: bool,
}

const PREFERRED: Via = Via {
    prefix: "sp",
    fallback: false,
};
const FALLBACK: Via = Via {
    prefix: "sf",
    fallback: true,
};

impl Via {
    fn agent(&self, args: &[&str]) -> Agent {
        let env: &[(&str, &str)] = if self.fallback {
            &[("SENSOR_DISABLE_HOOKS", "net_sock_send_length")]
        } else {
            &[]
        };
        let agent = Agent::start_with_env(args, env);
        let hook = if self.fallback {
            "tp_btf/sys_exit"
        } else {
            "tp_btf/sock_send_length"
        };
        let m = agent.metrics();
        assert_eq!(
            m.sum(
                "sensor_probe_info",
                &[("capability", "socket_send"), ("hook", hook)]
            ),
            1,
            "socket_send is not on {hook}:\n{}",
            m.text
        );
        agent
    }

    fn comm(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }
}

fn sent(m: &Metrics, comm: &str, class: &str) -> u64 {
    m.sum(SEND, &[("comm", comm), ("destination", class)])
}

/// Runs a sender named `comm` against a fresh sink started with `sink` (a
/// `--listen IP:0` sink's address is passed to the sender as `--to`), then
/// checks the agent counted what the sender's calls accepted, all under
/// `class`.
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
    let listens = sink.contains(&"--listen");
    let sink = Sink::start(cmd);
    let mut args = args.to_vec();
    if listens {
        args.extend(["--to", sink.addr()]);
    }
    let truth = workload::run(comm, &args, "sent_bytes");
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
    tcp_send_apis_via(PREFERRED);
}

#[test]
fn tcp_send_apis_syscall_fallback() {
    tcp_send_apis_via(FALLBACK);
}

fn tcp_send_apis_via(via: Via) {
    let peer = Peer::new();
    let agent = via.agent(&[]);
    let bytes = (32 * MIB).to_string();
    // On the fallback, io_uring's sends are counted at io_uring_complete.
    let apis = [
        ("write", "tcp-write"),
        ("send", "tcp-send"),
        ("sendto", "tcp-sendto"),
        ("sendmsg", "tcp-sendmsg"),
        ("writev", "tcp-writev"),
        ("uring-send", "tcp-usend"),
        ("uring-sendmsg", "tcp-usendmsg"),
    ];
    let listen = format!("{}:0", peer.ip);
    for (api, comm) in apis {
        let comm = &via.comm(comm);
        check(
            &agent,
            Some(&peer),
            &["tcp-sink", "--listen", &listen],
            comm,
            &[
                "tcp-send", "--bytes", &bytes, "--chunk", "65536", "--api", api,
            ],
            "untrusted",
        );
    }
}

#[test]
fn file_to_socket_sendfile_and_splice_count_one_read_and_one_send() {
    file_to_socket_via(PREFERRED);
}

#[test]
fn file_to_socket_sendfile_and_splice_syscall_fallback() {
    file_to_socket_via(FALLBACK);
}

fn file_to_socket_via(via: Via) {
    let peer = Peer::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.gguf");
    let mut f = std::fs::File::create(&file).unwrap();
    for _ in 0..32 {
        f.write_all(&vec![7u8; MIB as usize]).unwrap();
    }
    drop(f);
    let agent = via.agent(&["--watch", dir.path().to_str().unwrap()]);
    let path = file.to_str().unwrap();
    let listen = format!("{}:0", peer.ip);
    for api in ["sendfile", "splice"] {
        let comm = via.comm(&format!("f2s-{api}"));
        let m = check(
            &agent,
            Some(&peer),
            &["tcp-sink", "--listen", &listen],
            &comm,
            &["tcp-send", "--api", api, "--file", path],
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
    udp_via(PREFERRED);
}

#[test]
fn udp_connected_unconnected_and_sendmmsg_syscall_fallback() {
    udp_via(FALLBACK);
}

fn udp_via(via: Via) {
    let untrusted = Peer::new();
    let trusted = Peer::new();
    let (v4, v6) = (trusted.cidr4(), trusted.cidr6());
    let agent = via.agent(&["--trusted-cidr", &v4, "--trusted-cidr", &v6]);
    let bytes = (8 * MIB).to_string();
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
    for (i, (peer, host, api, unconnected, class)) in cases.into_iter().enumerate() {
        let listen = format!("{host}:0");
        let comm = via.comm(&format!(
            "u{}-{}{}",
            if unconnected == "1" { "n" } else { "c" },
            &api[4..],
            i + 1
        ));
        check(
            &agent,
            peer,
            &["udp-sink", "--listen", &listen],
            &comm,
            &[
                "udp-send",
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
    unix_via(PREFERRED);
}

#[test]
fn unix_domain_sends_are_local_syscall_fallback() {
    unix_via(FALLBACK);
}

fn unix_via(via: Via) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sock");
    let path = path.to_str().unwrap();
    let agent = via.agent(&[]);
    let bytes = (32 * MIB).to_string();
    check(
        &agent,
        None,
        &["unix-sink", "--path", path],
        &via.comm("unix"),
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
