//! Lineage on this kernel: a derived file, a pipe, a local TCP relay and a
//! UNIX relay, each carrying the watched file; the agent must count what
//! the reader took in through each (derived or relayed bytes).

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::checks::{workload, Data};

/// A count to compare: the metric and labels the agent exports it under,
/// and what the workloads moved.
pub struct Expect {
    pub name: &'static str,
    pub metric: &'static str,
    pub labels: Vec<(&'static str, &'static str)>,
    pub expected: u64,
}

/// Runs the lineage workloads; what the agent must have counted.
pub fn run(bin: &str, data: &Data) -> Result<Vec<Expect>> {
    let w = data.watched().display().to_string();
    let size = std::fs::metadata(data.watched())?.len();
    let mut out = Vec::new();

    // A copy written by a holder, read by another process.
    let derived = data.scratch("derived.bin");
    let d = derived.display().to_string();
    let sixteen = size.to_string();
    workload(
        bin,
        data,
        "g-ln-write",
        &strings(&[
            "write-out",
            "--read",
            &w,
            "--copy",
            "1",
            "--out",
            &d,
            "--bytes",
            &sixteen,
        ]),
        "written_bytes",
    )?;
    workload(
        bin,
        data,
        "g-ln-read-d",
        &strings(&["read", "--file", &d, "--bs", "65536"]),
        "read_bytes",
    )?;
    out.push(Expect {
        name: "lineage_derived_file",
        metric: "sensor_file_read_bytes_total",
        labels: vec![("comm", "g-ln-read-d"), ("watched", "derived")],
        expected: size,
    });

    // reader | sender: relayed through a pipe (this process is the reader:
    // the guest has no shell).
    let (sink, drained) = drain()?;
    let mut sender = Command::new(data.program(bin, "g-ln-pipe")?)
        .args(["stdin-send", "--to", &sink])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    {
        let mut pipe = sender.stdin.take().context("sender stdin")?;
        std::io::copy(&mut std::fs::File::open(data.watched())?, &mut pipe)?;
    }
    let status = sender.wait()?;
    if !status.success() {
        bail!("pipe relay failed: {status}");
    }
    ensure_drained(drained, size, "pipe relay")?;
    out.push(relayed("lineage_pipe", "g-ln-pipe", size));

    // reader -> local TCP proxy -> sink, and the same through a UNIX socket.
    for (name, comm, listen) in [
        (
            "lineage_loopback_relay",
            "g-ln-proxy",
            "tcp:127.0.0.1:0".to_string(),
        ),
        (
            "lineage_unix_relay",
            "g-ln-uproxy",
            format!("unix:{}", data.scratch("relay.sock").display()),
        ),
    ] {
        let (sink, drained) = drain()?;
        let (mut proxy, at, mut report) =
            listening(Command::new(data.program(bin, comm)?).args([
                "proxy",
                "--listen",
                &listen,
                "--to",
                &format!("tcp:{sink}"),
            ]))?;
        workload(
            bin,
            data,
            "g-ln-send",
            &strings(&["send-local", "--file", &w, "--to", &at]),
            "sent_bytes",
        )?;
        // Its report (its stdout must stay open until it exits).
        let mut rest = String::new();
        report.read_to_string(&mut rest)?;
        let status = proxy.wait()?;
        if !status.success() {
            bail!("{comm} failed: {status}");
        }
        ensure_drained(drained, size, comm)?;
        out.push(relayed(name, comm, size));
    }
    Ok(out)
}

fn relayed(name: &'static str, comm: &'static str, bytes: u64) -> Expect {
    Expect {
        name,
        metric: "sensor_relayed_bytes_total",
        labels: vec![("comm", comm)],
        expected: bytes,
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A loopback listener drained by a thread: its address, and the bytes it
/// will have read.
pub fn drain() -> Result<(String, std::thread::JoinHandle<std::io::Result<u64>>)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?.to_string();
    let h = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    Ok((addr, h))
}

pub fn ensure_drained(
    h: std::thread::JoinHandle<std::io::Result<u64>>,
    want: u64,
    what: &str,
) -> Result<()> {
    let got = h.join().map_err(|_| anyhow::anyhow!("drain panicked"))??;
    anyhow::ensure!(got == want, "{what}: the sink got {got} of {want} bytes");
    Ok(())
}

/// Starts a proxy and reads its `listening ENDPOINT` line; its stdout, to
/// read the rest from.
fn listening(cmd: &mut Command) -> Result<(Child, String, BufReader<std::process::ChildStdout>)> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().context("proxy stdout")?);
    out.read_line(&mut line)?;
    let at = line
        .strip_prefix("listening ")
        .with_context(|| format!("proxy did not start: {line:?}"))?
        .trim()
        .to_string();
    Ok((child, at, out))
}
