//! Ways to push bytes into a socket, and sinks to receive them.

use std::{
    fs::File,
    io::{Read, Result, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{
        fd::AsRawFd,
        unix::net::{UnixListener, UnixStream},
    },
    time::Duration,
};

use crate::{check, die, files, report, uring, Args};

fn pattern(chunk: usize) -> Vec<u8> {
    (0..chunk).map(|i| (i % 251) as u8).collect()
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Sends `buf` once through `api` on a connected socket; returns what the call accepted.
fn send_once(fd: i32, api: &str, buf: &[u8]) -> Result<usize> {
    let p = buf.as_ptr().cast::<libc::c_void>();
    let mut iov = [libc::iovec {
        iov_base: p.cast_mut(),
        iov_len: buf.len(),
    }];
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 1;
    // SAFETY: valid fd and buffers.
    check(unsafe {
        match api {
            "write" => libc::write(fd, p, buf.len()),
            "send" => libc::send(fd, p, buf.len(), 0),
            "sendto" => libc::sendto(fd, p, buf.len(), 0, std::ptr::null(), 0),
            "sendmsg" => libc::sendmsg(fd, &msg, 0),
            "writev" => libc::writev(fd, iov.as_ptr(), 1),
            _ => die("unknown --api"),
        }
    })
}

/// `tcp-send --to ADDR --bytes N --chunk C [--api write|send|sendto|sendmsg|writev|uring-send|uring-sendmsg]`
/// or `--api sendfile|splice --file F` (the file's bytes, through the kernel).
pub fn tcp_send(a: &Args) -> Result<()> {
    let to: SocketAddr = a.str("to").parse().unwrap_or_else(|_| die("bad --to"));
    let api = a.opt("api").unwrap_or("write");
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    let fd = s.as_raw_fd();
    let mut sent = 0u64;
    let mut read = 0u64;
    match api {
        "sendfile" => {
            let f = File::open(a.str("file"))?;
            sent = files::sendfile_all(f.as_raw_fd(), fd)?;
            read = sent;
        }
        "splice" => {
            let f = File::open(a.str("file"))?;
            let (r, w) = files::pipe()?;
            loop {
                let n = files::splice(f.as_raw_fd(), w, 1 << 16)?;
                if n == 0 {
                    break;
                }
                read += n as u64;
                let mut left = n;
                while left > 0 {
                    let m = files::splice(r, fd, left)?;
                    left -= m;
                    sent += m as u64;
                }
            }
        }
        "uring-send" | "uring-sendmsg" => {
            let buf = pattern(a.num("chunk") as usize);
            sent = uring::send_all(fd, &buf, a.num("bytes"), api == "uring-sendmsg")?;
        }
        _ => {
            let total = a.num("bytes");
            let buf = pattern(a.num("chunk") as usize);
            while sent < total {
                let want = ((total - sent) as usize).min(buf.len());
                sent += send_once(fd, api, &buf[..want])? as u64;
            }
        }
    }
    s.shutdown(Shutdown::Write)?;
    // Wait for the sink to finish reading, so the bytes really left.
    let mut ack = [0u8; 1];
    let _ = s.read(&mut ack);
    report(&[("sent_bytes", sent), ("read_bytes", read)]);
    Ok(())
}

/// `udp-send --to ADDR --bytes N --chunk C [--api send|sendto|sendmsg|sendmmsg] [--unconnected 1]`
pub fn udp_send(a: &Args) -> Result<()> {
    let to: SocketAddr = a.str("to").parse().unwrap_or_else(|_| die("bad --to"));
    let total = a.num("bytes");
    let buf = pattern(a.num("chunk") as usize);
    let api = a.opt("api").unwrap_or("send");
    let unconnected = a.opt("unconnected") == Some("1");
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind)?;
    // `--connect ADDR`: connected to ADDR, yet each datagram sent to --to.
    let connected_elsewhere = a.opt("connect").map(|c| {
        c.parse::<SocketAddr>()
            .unwrap_or_else(|_| die("bad --connect"))
    });
    if let Some(c) = connected_elsewhere {
        s.connect(c)?;
    } else if !unconnected {
        s.connect(to)?;
    }
    let fd = s.as_raw_fd();
    let (mut ss, sslen) = sockaddr(&to);
    let (name, namelen) = if unconnected || connected_elsewhere.is_some() {
        ((&raw mut ss).cast::<libc::c_void>(), sslen)
    } else {
        (std::ptr::null_mut(), 0)
    };
    let mut sent = 0u64;
    while sent < total {
        let want = ((total - sent) as usize).min(buf.len());
        let p = buf.as_ptr().cast::<libc::c_void>().cast_mut();
        let mut iov = [
            libc::iovec {
                iov_base: p,
                iov_len: want,
            },
            libc::iovec {
                iov_base: p,
                iov_len: want,
            },
        ];
        let r = match api {
            // SAFETY: valid fd, buffer and address.
            "send" | "sendto" => {
                check(unsafe { libc::sendto(fd, p, want, 0, name.cast(), namelen) })
            }
            "sendmsg" => {
                // SAFETY: an all-zero msghdr is valid.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_name = name;
                msg.msg_namelen = namelen;
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = 1;
                // SAFETY: valid fd and message.
                check(unsafe { libc::sendmsg(fd, &msg, 0) })
            }
            "sendmmsg" => {
                // Two datagrams per call (when two fit in what is left).
                let n = if total - sent >= 2 * want as u64 {
                    2
                } else {
                    1
                };
                // SAFETY: an all-zero mmsghdr is valid.
                let mut msgs: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
                for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
                    m.msg_hdr.msg_name = name;
                    m.msg_hdr.msg_namelen = namelen;
                    m.msg_hdr.msg_iov = v;
                    m.msg_hdr.msg_iovlen = 1;
                }
                // SAFETY: valid fd and messages.
                let got = check(unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n, 0) } as isize)?;
                Ok(msgs[..got].iter().map(|m| m.msg_len as usize).sum())
            }
            _ => die("unknown --api"),
        };
        match r {
            Ok(n) => sent += n as u64,
            // A full socket buffer, or a dropped datagram's ICMP: try again.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e),
        }
    }
    report(&[("sent_bytes", sent)]);
    Ok(())
}

/// `unix-send --path P --bytes N --chunk C`
pub fn unix_send(a: &Args) -> Result<()> {
    let mut s = UnixStream::connect(a.str("path"))?;
    let total = a.num("bytes");
    let buf = pattern(a.num("chunk") as usize);
    let mut sent = 0u64;
    while sent < total {
        let want = ((total - sent) as usize).min(buf.len());
        sent += s.write(&buf[..want])? as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut ack = [0u8; 1];
    let _ = s.read(&mut ack);
    report(&[("sent_bytes", sent)]);
    Ok(())
}

fn drain(mut s: impl Read + Write) -> Result<u64> {
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
    Ok(total)
}

/// `tcp-sink --listen ADDR [--conns K]`: accept K connections (default 1),
/// read each to EOF.
pub fn tcp_sink(a: &Args) -> Result<()> {
    let l = TcpListener::bind(a.str("listen"))?;
    println!("listening {}", l.local_addr()?);
    let mut readers = Vec::new();
    for _ in 0..a.num_or("conns", 1) {
        let (s, _) = l.accept()?;
        readers.push(std::thread::spawn(move || drain(s)));
    }
    let mut total = 0;
    for r in readers {
        total += r
            .join()
            .map_err(|_| std::io::Error::other("reader panicked"))??;
    }
    report(&[("received_bytes", total)]);
    Ok(())
}

/// `unix-sink --path P`: accept one connection, read to EOF.
pub fn unix_sink(a: &Args) -> Result<()> {
    let path = a.str("path");
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    println!("listening {path}");
    let (s, _) = l.accept()?;
    report(&[("received_bytes", drain(s)?)]);
    Ok(())
}

/// `udp-sink --listen ADDR`: receive until 2 s pass without a datagram.
pub fn udp_sink(a: &Args) -> Result<()> {
    let s = UdpSocket::bind(a.str("listen"))?;
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
    report(&[("received_bytes", total)]);
    Ok(())
}
