//! Bytes sent on TCP and UDP sockets (IPv4 and IPv6), classified by
//! destination, against the bytes the workload's send calls accepted.

use std::time::Duration;

use tests::{agent::Agent, assert_within, netns::Peer, workload, workload::Sink};

const MIB: u64 = 1 << 20;
const SEND: &str = "sensor_socket_send_bytes_total";

fn sent(m: &tests::scrape::Metrics, comm: &str, dest: &str) -> u64 {
    m.sum(SEND, &[("comm", comm), ("destination", dest)])
}

/// Sends `bytes` from a workload named `comm` to a sink on `host` (in
/// `peer`'s namespace, or on this host; the port is the sink's, from the
/// kernel), and returns what the sender's calls accepted.
fn send(peer: Option<&Peer>, proto: &str, comm: &str, host: &str, bytes: u64, chunk: u64) -> u64 {
    let sink_prog = workload::program("wl-sink");
    let mut cmd = match peer {
        Some(p) => p.command(&sink_prog),
        None => std::process::Command::new(&sink_prog),
    };
    cmd.args([&format!("{proto}-sink"), "--listen", &format!("{host}:0")]);
    let sink = Sink::start(cmd);
    let to = sink.addr().to_string();
    let truth = workload::run(
        comm,
        &[
            &format!("{proto}-send"),
            "--to",
            &to,
            "--bytes",
            &bytes.to_string(),
            "--chunk",
            &chunk.to_string(),
        ],
        "sent_bytes",
    );
    assert_eq!(truth, bytes);
    let received = sink.finish();
    if proto == "tcp" {
        assert_eq!(received, truth, "TCP sink got every byte");
    }
    truth
}

#[test]
fn tcp_and_udp_to_untrusted_trusted_and_loopback() {
    let untrusted = Peer::new();
    let trusted = Peer::new();
    let agent = Agent::start(&[
        "--trusted-cidr",
        &trusted.cidr4(),
        "--trusted-cidr",
        &trusted.cidr6(),
    ]);

    let cases = [
        (
            Some(&untrusted),
            "tcp",
            "wl-tcp-untr",
            untrusted.ip.to_string(),
            128 * MIB,
            65536,
            "untrusted",
        ),
        (
            Some(&untrusted),
            "udp",
            "wl-udp-untr",
            untrusted.ip.to_string(),
            16 * MIB,
            8192,
            "untrusted",
        ),
        (
            Some(&untrusted),
            "tcp",
            "wl-tcp6-untr",
            format!("[{}]", untrusted.ip6),
            32 * MIB,
            65536,
            "untrusted",
        ),
        (
            Some(&trusted),
            "tcp",
            "wl-tcp-trust",
            trusted.ip.to_string(),
            128 * MIB,
            65536,
            "trusted",
        ),
        (
            Some(&trusted),
            "udp",
            "wl-udp-trust",
            trusted.ip.to_string(),
            16 * MIB,
            8192,
            "trusted",
        ),
        (
            Some(&trusted),
            "udp",
            "wl-udp6-trust",
            format!("[{}]", trusted.ip6),
            16 * MIB,
            8192,
            "trusted",
        ),
        (
            None,
            "tcp",
            "wl-tcp-loop",
            "127.0.0.1".to_string(),
            128 * MIB,
            65536,
            "loopback",
        ),
        (
            None,
            "udp",
            "wl-udp-loop",
            "127.0.0.1".to_string(),
            16 * MIB,
            8192,
            "loopback",
        ),
    ];
    for (peer, proto, comm, to, bytes, chunk, class) in cases {
        let truth = send(peer, proto, comm, &to, bytes, chunk);
        let m = agent.wait_for(Duration::from_secs(10), comm, |m| {
            sent(m, comm, class) >= truth
        });
        assert_within(
            &format!("{comm} ({proto} to {to}) {class} bytes"),
            sent(&m, comm, class),
            truth,
            1.0,
        );
        for other in ["loopback", "local", "trusted", "untrusted"]
            .into_iter()
            .filter(|c| *c != class)
        {
            assert_eq!(
                sent(&m, comm, other),
                0,
                "{comm}: bytes classified as {other}"
            );
        }
    }
}
