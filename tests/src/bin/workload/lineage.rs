//! Workloads for the lineage scenarios: local relays (a sidecar proxy over
//! TCP or a UNIX socket), files written from what a process read (slowly,
//! like a log, or many small ones), and a sender to a local endpoint.

use std::{
    fs::File,
    io::{Read, Result, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::{UnixListener, UnixStream},
    time::Duration,
};

use crate::{die, exfil::now_ms, report, Args};

/// A stream to or from `tcp:ADDR` or `unix:PATH`.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(to: &str) -> Result<Stream> {
        match to.split_once(':') {
            Some(("tcp", addr)) => Ok(Stream::Tcp(TcpStream::connect(addr)?)),
            Some(("unix", path)) => Ok(Stream::Unix(UnixStream::connect(path)?)),
            _ => die(&format!("bad endpoint {to}: tcp:ADDR or unix:PATH")),
        }
    }

    fn write_all(&mut self, b: &[u8]) -> Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(b),
            Stream::Unix(s) => s.write_all(b),
        }
    }

    fn read(&mut self, b: &mut [u8]) -> Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }

    /// Half-closes and waits for the peer's one-byte acknowledgement (the
    /// sinks send one once they read everything).
    fn finish(self) -> Result<()> {
        let mut ack = [0u8; 1];
        match self {
            Stream::Tcp(mut s) => {
                s.shutdown(std::net::Shutdown::Write)?;
                let _ = s.read(&mut ack);
            }
            Stream::Unix(mut s) => {
                s.shutdown(std::net::Shutdown::Write)?;
                let _ = s.read(&mut ack);
            }
        }
        Ok(())
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn bind(at: &str) -> Result<(Listener, String)> {
        match at.split_once(':') {
            Some(("tcp", addr)) => {
                let l = TcpListener::bind(addr)?;
                let name = format!("tcp:{}", l.local_addr()?);
                Ok((Listener::Tcp(l), name))
            }
            Some(("unix", path)) => {
                let _ = std::fs::remove_file(path);
                Ok((
                    Listener::Unix(UnixListener::bind(path)?),
                    format!("unix:{path}"),
                ))
            }
            _ => die(&format!("bad endpoint {at}: tcp:ADDR or unix:PATH")),
        }
    }

    fn accept(&self) -> Result<Stream> {
        Ok(match self {
            Listener::Tcp(l) => Stream::Tcp(l.accept()?.0),
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
        })
    }
}

/// `proxy --listen tcp:ADDR|unix:PATH --to tcp:ADDR|unix:PATH [--conns K]
/// [--mark-sent N]`: a sidecar. Prints `listening ENDPOINT`, then for each
/// of K connections (default 1) forwards what arrives to a new upstream
/// connection; reports the bytes relayed and when they reached the mark.
pub fn proxy(a: &Args) -> Result<()> {
    let (listener, name) = Listener::bind(a.str("listen"))?;
    println!("listening {name}");
    std::io::stdout().flush()?;
    let mark = a.num_or("mark-sent", u64::MAX);
    let (mut relayed, mut crossed) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..a.num_or("conns", 1) {
        let mut down = listener.accept()?;
        let mut up = Stream::connect(a.str("to"))?;
        loop {
            let n = down.read(&mut buf)?;
            if n == 0 {
                break;
            }
            up.write_all(&buf[..n])?;
            relayed += n as u64;
            if crossed == 0 && relayed >= mark {
                crossed = now_ms();
            }
        }
        up.finish()?;
        // The sinks' acknowledgement, for whoever sent to us.
        let _ = down.write_all(b"k");
    }
    report(&[("received_bytes", relayed), ("crossed_ms", crossed)]);
    Ok(())
}

/// `send-local --file F --to tcp:ADDR|unix:PATH [--send-bytes N]
/// [--chunk C] [--gap-ms M]`: read the file, send (the first N bytes of)
/// it to a local endpoint, C bytes at a time with M ms between chunks.
pub fn send_local(a: &Args) -> Result<()> {
    let mut data = Vec::new();
    let read = File::open(a.str("file"))?.read_to_end(&mut data)? as u64;
    let n = (a.num_or("send-bytes", read) as usize).min(data.len());
    let chunk = a.num_or("chunk", 1 << 16) as usize;
    let gap = Duration::from_millis(a.num_or("gap-ms", 0));
    let mut s = Stream::connect(a.str("to"))?;
    for piece in data[..n].chunks(chunk.max(1)) {
        s.write_all(piece)?;
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    s.finish()?;
    report(&[("read_bytes", read), ("sent_bytes", n as u64)]);
    Ok(())
}

/// `write-out --out O --bytes N [--read F] [--read-bytes K] [--chunk C]
/// [--gap-ms M]`: read K bytes of F (all of it without K), then write N
/// bytes into O: F's bytes again and again when `--copy`, else generated
/// ones (a dataset, a log), C at a time with M ms between chunks.
pub fn write_out(a: &Args) -> Result<()> {
    let mut held = Vec::new();
    let mut read = 0u64;
    if let Some(f) = a.opt("read") {
        let mut file = File::open(f)?;
        let limit = a.num_or("read-bytes", u64::MAX);
        read = Read::take(&mut file, limit).read_to_end(&mut held)? as u64;
    }
    let total = a.num("bytes");
    let chunk = a.num_or("chunk", 1 << 16) as usize;
    let gap = Duration::from_millis(a.num_or("gap-ms", 0));
    let copy = a.opt("copy").is_some();
    let mut out = File::create(a.str("out"))?;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut block = vec![0u8; chunk.max(8)];
    let mut written = 0u64;
    let mut at = 0usize;
    while written < total {
        let want = ((total - written) as usize).min(block.len());
        if copy && !held.is_empty() {
            for b in block[..want].iter_mut() {
                *b = held[at % held.len()];
                at += 1;
            }
        } else {
            for c in block[..want].chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let bytes = x.to_le_bytes();
                c.copy_from_slice(&bytes[..c.len()]);
            }
        }
        out.write_all(&block[..want])?;
        written += want as u64;
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    out.sync_all()?;
    report(&[("read_bytes", read), ("written_bytes", written)]);
    Ok(())
}

/// `ship --file F --to ADDR --bytes N [--every-ms M] [--mark-sent X]`: a
/// log shipper. Every M ms (default 1000) sends what was appended to F
/// since, until N bytes were sent.
pub fn ship(a: &Args) -> Result<()> {
    let total = a.num("bytes");
    let every = Duration::from_millis(a.num_or("every-ms", 1000));
    let mut out = crate::exfil::Sender::open(a, "to")?;
    let mut f = File::open(a.str("file"))?;
    let mut buf = vec![0u8; 1 << 16];
    while out.sent < total {
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.send(&buf[..n])?;
        }
        if out.sent < total {
            std::thread::sleep(every);
        }
    }
    let sent = out.sent;
    out.finish()?;
    report(&[("sent_bytes", sent)]);
    Ok(())
}

/// `spray-files --file F [--read-bytes K] --dir D --count N [--bytes B]`:
/// read F (its first K bytes), then write N files of B bytes (default 4096)
/// into D.
pub fn spray_files(a: &Args) -> Result<()> {
    let mut file = File::open(a.str("file"))?;
    let limit = a.num_or("read-bytes", u64::MAX);
    let read = Read::take(&mut file, limit).read_to_end(&mut Vec::new())? as u64;
    let dir = a.str("dir");
    let bytes = vec![7u8; a.num_or("bytes", 4096) as usize];
    let count = a.num("count");
    for i in 0..count {
        File::create(format!("{dir}/f{i}"))?.write_all(&bytes)?;
    }
    report(&[("read_bytes", read), ("files", count)]);
    Ok(())
}
