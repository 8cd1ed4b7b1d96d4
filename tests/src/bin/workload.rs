//! Workloads for the integration tests. Each knows its own byte counts (the
//! ground truth) and prints them as one JSON line when done. Run through a
//! symlink so the test picks the process's `comm`.

use std::{
    fs::File,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

fn arg<'a>(args: &'a [String], name: &str) -> &'a str {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or_else(|| die(&format!("missing {name}")))
}

fn num(args: &[String], name: &str) -> u64 {
    arg(args, name)
        .parse()
        .unwrap_or_else(|_| die(&format!("{name} must be a number")))
}

fn die(msg: &str) -> ! {
    eprintln!("sensor-workload: {msg}");
    std::process::exit(2)
}

fn report(key: &str, bytes: u64) {
    println!("{{\"{key}\":{bytes}}}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("");
    let r = match cmd {
        "read" => read(&args),
        "tcp-send" => tcp_send(&args),
        "udp-send" => udp_send(&args),
        "tcp-sink" => tcp_sink(&args),
        "udp-sink" => udp_sink(&args),
        _ => die("usage: read|tcp-send|udp-send|tcp-sink|udp-sink ..."),
    };
    if let Err(e) = r {
        die(&e.to_string());
    }
}

/// `read --file F --bs N`: read(2) the whole file with an N-byte buffer.
fn read(args: &[String]) -> std::io::Result<()> {
    let mut f = File::open(arg(args, "--file"))?;
    let mut buf = vec![0u8; num(args, "--bs") as usize];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    report("read_bytes", total);
    Ok(())
}

fn pattern(chunk: usize) -> Vec<u8> {
    (0..chunk).map(|i| (i % 251) as u8).collect()
}

/// `tcp-send --to ADDR --bytes N --chunk C`: write(2) N bytes in C-byte writes.
fn tcp_send(args: &[String]) -> std::io::Result<()> {
    let to: SocketAddr = arg(args, "--to")
        .parse()
        .unwrap_or_else(|_| die("bad --to"));
    let total = num(args, "--bytes");
    let buf = pattern(num(args, "--chunk") as usize);
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    let mut sent = 0u64;
    while sent < total {
        let want = ((total - sent) as usize).min(buf.len());
        let n = s.write(&buf[..want])?;
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    // Wait for the sink to finish reading, so the bytes really left.
    let mut ack = [0u8; 1];
    let _ = s.read(&mut ack);
    report("sent_bytes", sent);
    Ok(())
}

/// `udp-send --to ADDR --bytes N --chunk C`: send(2) on a connected UDP socket.
fn udp_send(args: &[String]) -> std::io::Result<()> {
    let to: SocketAddr = arg(args, "--to")
        .parse()
        .unwrap_or_else(|_| die("bad --to"));
    let total = num(args, "--bytes");
    let buf = pattern(num(args, "--chunk") as usize);
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(to)?;
    let mut sent = 0u64;
    while sent < total {
        let want = ((total - sent) as usize).min(buf.len());
        match s.send(&buf[..want]) {
            Ok(n) => sent += n as u64,
            // A full socket buffer or a dropped datagram's ICMP: try again.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e),
        }
    }
    report("sent_bytes", sent);
    Ok(())
}

/// `tcp-sink --listen ADDR`: accept one connection, read to EOF.
fn tcp_sink(args: &[String]) -> std::io::Result<()> {
    let l = TcpListener::bind(arg(args, "--listen"))?;
    println!("listening {}", l.local_addr()?);
    let (mut s, _) = l.accept()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let _ = s.write_all(b"k");
    report("received_bytes", total);
    Ok(())
}

/// `udp-sink --listen ADDR`: receive until 2 s pass without a datagram.
fn udp_sink(args: &[String]) -> std::io::Result<()> {
    let s = UdpSocket::bind(arg(args, "--listen"))?;
    println!("listening {}", s.local_addr()?);
    let mut buf = vec![0u8; 65536];
    let mut total = 0u64;
    let mut started = false;
    loop {
        s.set_read_timeout(Some(Duration::from_secs(if started { 2 } else { 60 })))?;
        match s.recv(&mut buf) {
            Ok(n) => {
                started = true;
                total += n as u64;
            }
            Err(_) => break,
        }
    }
    report("received_bytes", total);
    Ok(())
}
