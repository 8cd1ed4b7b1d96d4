//! Visibility holes: the paths the README's table did not list. Each
//! workload moves exactly 64 MiB of a watched file its own way; the agent's
//! counts must be within 1 % of the workload's, and the exfiltration
//! variant must raise `read_then_send`. (The i386 ABI's workload,
//! `read-i386`, is ready; its decoding does not fit the 6.1 and 5.10
//! verifiers yet.)

use std::{path::Path, time::Duration};

use tests::{
    agent::Agent,
    netns::Peer,
    num as u,
    scenario::{Scenario, To},
    workload,
};

const MIB: u64 = 1 << 20;
const FILE_BYTES: u64 = 64 * MIB;

fn weights(dir: &Path) -> String {
    let f = dir.join("model.safetensors");
    tests::pattern_file(&f, FILE_BYTES).unwrap();
    f.to_str().unwrap().to_string()
}

const SENT: &str = "sensor_socket_send_bytes_total";

/// A UDP socket connected to a trusted peer that `sendto`s an untrusted
/// one: the datagrams go to the untrusted peer and are counted there.
#[test]
fn connected_udp_told_another_destination_is_counted_where_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let file = weights(dir.path());
    let s = Scenario::new()
        .watch(dir.path())
        .thresholds(&tests::SCALED_THRESHOLDS)
        .untrusted_peer()
        .trusted_peer()
        .start();
    let sink = s.sink(&To::untrusted().udp());
    let trusted = s.trusted().addr(false);
    // First the weights are read (watched), then sent by sendto.
    workload::report("ho-udp-read", &["read", "--file", &file, "--bs", "1048576"]);
    let r = workload::report(
        "ho-udp-c",
        &[
            "udp-send",
            "--to",
            sink.addr(),
            "--connect",
            &format!("{trusted}:9"),
            "--bytes",
            &FILE_BYTES.to_string(),
            "--chunk",
            "8192",
        ],
    );
    let received = sink.finish();
    let sent = u(&r, "sent_bytes");
    assert_eq!(sent, FILE_BYTES);
    // UDP may drop; the sensor counts what the sends returned.
    assert!(received > 0);
    let m = s
        .agent
        .wait_for(Duration::from_secs(10), "udp counted", |m| {
            m.sum(SENT, &[("comm", "ho-udp-c")]) >= sent
        });
    tests::assert_within(
        "sent to the untrusted peer",
        m.sum(SENT, &[("comm", "ho-udp-c"), ("destination", "untrusted")]),
        sent,
        1.0,
    );
    assert_eq!(
        m.sum(SENT, &[("comm", "ho-udp-c"), ("destination", "trusted")]),
        0,
        "classed by the connected (trusted) peer:\n{}",
        m.text
    );
}

/// Raw Ethernet frames (`AF_PACKET`): counted, untrusted, and a reader that
/// sends the weights that way alerts.
#[test]
fn packet_socket_frames_are_counted_untrusted_and_alert() {
    let dir = tempfile::tempdir().unwrap();
    let file = weights(dir.path());
    let peer = Peer::new();
    let agent = Agent::start(
        &[
            &["--watch", dir.path().to_str().unwrap()][..],
            &tests::SCALED_THRESHOLDS,
        ]
        .concat(),
    );
    let r = workload::report(
        "ho-packet",
        &[
            "packet-send",
            "--ifname",
            &peer.host_if,
            "--file",
            &file,
            "--mark-sent",
            &(32 * MIB).to_string(),
        ],
    );
    let sent = u(&r, "sent_bytes");
    assert!(sent >= FILE_BYTES, "{r}");
    let m = agent.wait_for(Duration::from_secs(10), "packet sends", |m| {
        m.sum(SENT, &[("comm", "ho-packet")]) >= sent
    });
    tests::assert_within(
        "raw frames",
        m.sum(SENT, &[("comm", "ho-packet"), ("destination", "untrusted")]),
        sent,
        1.0,
    );
    let (at, a) = agent.wait_for_alert(Duration::from_secs(15), "packet exfil", |a| {
        a["rule"] == "read_then_send" && a["comm"] == "ho-packet"
    });
    assert_eq!(a["destinations"][0]["addr"], "packet", "{a}");
    eprintln!(
        "LATENCY AF_PACKET: {} ms",
        at.saturating_sub(u(&r, "crossed_ms"))
    );
}
