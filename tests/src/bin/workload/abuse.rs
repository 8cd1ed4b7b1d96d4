//! Abusers of the agent (tests/abuse.rs): many small loopback senders, a
//! destination sprayer, tens of thousands of mappings of a watched file, a
//! million open descriptors. Each prints a `ready` JSON line with its own
//! counts once set up, then holds for `--for-secs` (or until killed).

use std::{
    fs::File,
    io::{Result, Write},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use crate::{check, die, Args};

/// Only loopback and the benchmarking range (198.18.0.0/15) may be sent to.
fn allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || (v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18)
        }
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

fn target(a: &Args) -> IpAddr {
    let ip: IpAddr = a.str("to").parse().unwrap_or_else(|_| die("bad --to"));
    if !allowed(ip) {
        die("--to must be loopback or in 198.18.0.0/15");
    }
    ip
}

fn ready(pairs: &[(&str, u64)]) {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!(
        "{{\"ready\":1,{},\"pid\":{}}}",
        body.join(","),
        std::process::id()
    );
    let _ = std::io::stdout().flush();
}

fn hold(a: &Args) {
    std::thread::sleep(Duration::from_secs(a.num_or("for-secs", 3600)));
}

/// `loopback-chatter --procs N --interval-ms M --to IP --port P [--for-secs S]`:
/// N child processes (forked, so they share this `comm`), each sending one
/// byte over UDP to IP:P every M ms, spread over the interval. Children die
/// with the parent.
pub fn loopback_chatter(a: &Args) -> Result<()> {
    let ip = target(a);
    let to = SocketAddr::new(ip, a.num("port") as u16);
    let procs = a.num("procs");
    let interval = Duration::from_millis(a.num("interval-ms"));
    let parent = std::process::id() as i32;
    let mut children = Vec::new();
    for i in 0..procs {
        // SAFETY: this process is single-threaded here; the child only makes
        // plain system calls and leaves with _exit.
        let pid = check(unsafe { libc::fork() } as isize)?;
        if pid == 0 {
            // SAFETY: prctl/getppid/_exit in the fresh child.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
            }
            std::thread::sleep(interval * (i as u32 % 1000) / 1000);
            if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
                loop {
                    let _ = s.send_to(b"x", to);
                    std::thread::sleep(interval);
                }
            }
            // SAFETY: leaving the child without running the parent's atexit.
            unsafe { libc::_exit(1) };
        }
        children.push(pid as i32);
    }
    ready(&[("procs", children.len() as u64)]);
    hold(a);
    for pid in &children {
        // SAFETY: our own children.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for pid in &children {
        // SAFETY: reaping our own children.
        unsafe { libc::waitpid(*pid, std::ptr::null_mut(), 0) };
    }
    Ok(())
}

/// `spray --to IP --dests N [--interval-ms M] [--for-secs S]`: one byte
/// over UDP to each of N ports of IP (1024 up), every M ms (default 1000).
pub fn spray(a: &Args) -> Result<()> {
    let ip = target(a);
    let dests = a.num("dests").min(64_000) as u16;
    let interval = Duration::from_millis(a.num_or("interval-ms", 1000));
    let deadline = Instant::now() + Duration::from_secs(a.num_or("for-secs", 3600));
    let s = UdpSocket::bind(if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    let mut sent = 0u64;
    let round = |sent: &mut u64| {
        for p in 0..dests {
            if s.send_to(b"x", SocketAddr::new(ip, 1024 + p)).is_ok() {
                *sent += 1;
            }
        }
    };
    round(&mut sent);
    ready(&[("dests", u64::from(dests)), ("sent_datagrams", sent)]);
    while Instant::now() < deadline {
        std::thread::sleep(interval);
        round(&mut sent);
    }
    Ok(())
}

/// `mmap-many --file F --count N [--for-secs S]`: N separate read-only
/// shared mappings of the file's first page (same offset each, so the
/// kernel cannot merge them), each touched once; the descriptor is closed.
pub fn mmap_many(a: &Args) -> Result<()> {
    let f = File::open(a.str("file"))?;
    let count = a.num("count");
    let mut mapped = 0u64;
    let mut sum = 0u64;
    for _ in 0..count {
        // SAFETY: a fresh read-only shared mapping of an open file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the first byte of the page just mapped.
        sum = sum.wrapping_add(u64::from(unsafe {
            std::ptr::read_volatile(p.cast::<u8>())
        }));
        mapped += 1;
    }
    std::hint::black_box(sum);
    drop(f);
    let vmas = std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count() as u64)
        .unwrap_or(0);
    ready(&[("mappings", mapped), ("vmas", vmas)]);
    hold(a);
    Ok(())
}

/// `fds --count N --file F [--read-every-ms M] [--for-secs S]`: raises
/// RLIMIT_NOFILE (to its hard limit when it cannot go past it: fewer than N
/// then), holds N descriptors of /dev/null, then opens F (its
/// descriptor the highest) and reads 4 KiB of it every M ms (default 100).
pub fn fds(a: &Args) -> Result<()> {
    let mut count = a.num("count");
    let want = count + 64;
    let lim = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        // Without CAP_SYS_RESOURCE the hard limit stays: use all of it.
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with valid structs.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
        }
        count = count.min(cur.rlim_max.saturating_sub(16));
        eprintln!(
            "sensor-workload fds: RLIMIT_NOFILE cannot be raised past {} here; holding {count}",
            cur.rlim_max
        );
    }
    let null = File::open("/dev/null")?;
    let mut held = 1u64;
    while held < count {
        // SAFETY: duplicating a descriptor we own; the copies are kept open
        // until exit on purpose.
        check(unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) } as isize)?;
        held += 1;
    }
    let f = File::open(a.str("file"))?;
    let fd = f.as_raw_fd();
    ready(&[("fds", held + 1), ("file_fd", fd as u64)]);
    let every = Duration::from_millis(a.num_or("read-every-ms", 100));
    let deadline = Instant::now() + Duration::from_secs(a.num_or("for-secs", 3600));
    let mut buf = vec![0u8; 4096];
    let mut read = 0u64;
    while Instant::now() < deadline {
        // SAFETY: valid descriptor and buffer.
        let n = check(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) })?;
        read += n as u64;
        std::thread::sleep(every);
    }
    std::hint::black_box(read);
    Ok(())
}
