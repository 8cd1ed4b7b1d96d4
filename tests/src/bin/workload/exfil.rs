//! Read-then-send workloads for the detection scenarios. Each prints what it
//! read and sent, its pid, and `crossed_ms`: the wall-clock time at which its
//! sent bytes first reached `--mark-sent` (when the rule's thresholds were
//! crossed), for the alert latency.

use std::{
    fs::File,
    io::{Read, Result, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{die, files, report, Args};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends to one destination over TCP or unconnected UDP, remembering when
/// the total first reached the mark.
pub struct Sender {
    tcp: Vec<TcpStream>,
    udp: Option<(UdpSocket, SocketAddr)>,
    next: usize,
    pub sent: u64,
    mark: u64,
    pub crossed_ms: u64,
}

impl Sender {
    pub fn open(a: &Args, to_key: &str) -> Result<Sender> {
        let to: SocketAddr = a
            .str(to_key)
            .parse()
            .unwrap_or_else(|_| die(&format!("bad --{to_key}")));
        let mark = a.num_or("mark-sent", u64::MAX);
        let mut s = Sender {
            tcp: Vec::new(),
            udp: None,
            next: 0,
            sent: 0,
            mark,
            crossed_ms: 0,
        };
        if a.opt("proto") == Some("udp") {
            let bind: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            s.udp = Some((UdpSocket::bind(bind)?, to));
        } else {
            for _ in 0..a.num_or("conns", 1) {
                s.tcp
                    .push(TcpStream::connect_timeout(&to, Duration::from_secs(5))?);
            }
        }
        Ok(s)
    }

    /// Sends all of `buf` (TCP: round-robin over the connections).
    pub fn send(&mut self, buf: &[u8]) -> Result<()> {
        let mut off = 0;
        while off < buf.len() {
            let n = match (&self.udp, self.tcp.get_mut(self.next)) {
                (Some((u, to)), _) => {
                    let end = (off + 8192).min(buf.len());
                    match u.send_to(&buf[off..end], to) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                        Err(e) => return Err(e),
                    }
                }
                (None, Some(t)) => t.write(&buf[off..])?,
                (None, None) => die("no connection"),
            };
            off += n;
            self.sent += n as u64;
            if self.crossed_ms == 0 && self.sent >= self.mark {
                self.crossed_ms = now_ms();
            }
        }
        if !self.tcp.is_empty() {
            self.next = (self.next + 1) % self.tcp.len();
        }
        Ok(())
    }

    /// Half-closes TCP and waits for the sinks to have read everything.
    pub fn finish(self) -> Result<()> {
        for mut t in self.tcp {
            t.shutdown(std::net::Shutdown::Write)?;
            let mut ack = [0u8; 1];
            let _ = t.read(&mut ack);
        }
        Ok(())
    }
}

/// `read-send --file F --to ADDR [--proto tcp|udp] [--chunk C] [--conns K]
/// [--bursts N --gap-ms M] [--send-bytes N] [--trusted-to ADDR] [--mark-sent N]
/// [--also-read G]`: read the file (and G, whose bytes are not sent), send
/// what was read (or `--send-bytes` of it), in bursts.
pub fn read_send(a: &Args) -> Result<()> {
    let mut f = File::open(a.str("file"))?;
    let mut data = Vec::new();
    let read = f.read_to_end(&mut data)? as u64;
    let also_read = match a.opt("also-read") {
        Some(g) => File::open(g)?.read_to_end(&mut Vec::new())? as u64,
        None => 0,
    };
    let limit = a.num_or("send-bytes", read) as usize;
    let chunk = a.num_or("chunk", 65536) as usize;
    let bursts = a.num_or("bursts", 1).max(1) as usize;
    let gap = Duration::from_millis(a.num_or("gap-ms", 0));
    let mut out = Sender::open(a, "to")?;
    let mut also = a
        .opt("trusted-to")
        .map(|_| Sender::open(a, "trusted-to"))
        .transpose()?;
    let per_burst = limit.div_ceil(bursts);
    for (i, burst) in data[..limit.min(data.len())].chunks(per_burst).enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        for piece in burst.chunks(chunk) {
            out.send(piece)?;
            if let Some(t) = &mut also {
                t.send(piece)?;
            }
        }
    }
    let (sent, crossed) = (out.sent, out.crossed_ms);
    let trusted = also.as_ref().map_or(0, |t| t.sent);
    out.finish()?;
    if let Some(t) = also {
        t.finish()?;
    }
    report(&[
        ("pid", std::process::id() as u64),
        ("read_bytes", read),
        ("also_read_bytes", also_read),
        ("sent_bytes", sent),
        ("trusted_sent_bytes", trusted),
        ("crossed_ms", crossed),
    ]);
    Ok(())
}

/// `mmap-send --file F --to ADDR [--mark-sent N]`: map the file and send
/// straight from the mapping.
pub fn mmap_send(a: &Args) -> Result<()> {
    let map = files::Mapping::open(a.str("file"))?;
    let data = map.bytes();
    let mut out = Sender::open(a, "to")?;
    for piece in data.chunks(65536) {
        out.send(piece)?;
    }
    let (sent, crossed) = (out.sent, out.crossed_ms);
    out.finish()?;
    // Keep the mapping a moment, as a loader would while it uses the weights.
    std::thread::sleep(Duration::from_millis(a.num_or("hold-ms", 500)));
    let mapped = data.len() as u64;
    drop(map);
    report(&[
        ("mapped_bytes", mapped),
        ("sent_bytes", sent),
        ("crossed_ms", crossed),
    ]);
    Ok(())
}

/// `stdin-send --to ADDR [--mark-sent N] [--first-read F]`: send whatever
/// arrives on stdin (the last stage of a pipeline); with `--first-read`,
/// first read 4 KiB of F (an interpreter reading a `*.pth` at start-up).
pub fn stdin_send(a: &Args) -> Result<()> {
    if let Some(f) = a.opt("first-read") {
        let mut head = [0u8; 4096];
        let n = File::open(f)?.read(&mut head)?;
        report(&[("first_read_bytes", n as u64)]);
    }
    let mut out = Sender::open(a, "to")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut stdin = std::io::stdin().lock();
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.send(&buf[..n])?;
    }
    let (sent, crossed) = (out.sent, out.crossed_ms);
    out.finish()?;
    report(&[
        ("pid", std::process::id() as u64),
        ("sent_bytes", sent),
        ("crossed_ms", crossed),
    ]);
    Ok(())
}

/// `relay --file F --to ADDR --sender PROG [--mark-sent N]`: read the file and
/// write it into a pipe; a child (`PROG stdin-send`) sends what comes out.
pub fn relay(a: &Args) -> Result<()> {
    let mut child = Command::new(a.str("sender"))
        .args([
            "stdin-send",
            "--to",
            a.str("to"),
            "--mark-sent",
            &a.num_or("mark-sent", u64::MAX).to_string(),
        ])
        .stdin(Stdio::piped())
        .spawn()?;
    let mut pipe = child.stdin.take().expect("child stdin");
    let mut f = File::open(a.str("file"))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut read = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        pipe.write_all(&buf[..n])?;
    }
    drop(pipe);
    let status = child.wait()?;
    if !status.success() {
        die(&format!("sender failed: {status}"));
    }
    report(&[("pid", std::process::id() as u64), ("read_bytes", read)]);
    Ok(())
}
