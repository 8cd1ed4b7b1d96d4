//! The access audit log (`sensor run --audit-log PATH`): who read which
//! watched file, how much, and what that process sent in the same interval,
//! as hash-chained JSON lines; `sensor audit verify` and `sensor audit query`
//! read it back.

pub mod chain;
pub mod log;
pub mod query;
pub mod record;
pub mod verify;

use std::path::{Path, PathBuf};

pub use log::{AuditLog, Gap, Now};
pub use record::{Access, Destination, Event};

use crate::{cli::AuditCommand, failure::Failure};

/// What one poll gives the audit log: watched-file reads (one entry per
/// process and file, `start`/`end` left empty) and sends by process id.
#[derive(Debug, Default)]
pub struct AuditPoll {
    pub accesses: Vec<Access>,
    pub sends: Vec<(u32, Destination)>,
}

pub fn main(cmd: AuditCommand) -> Result<(), Failure> {
    match cmd {
        AuditCommand::Verify(args) => verify::main(&args),
        AuditCommand::Query(args) => query::main(&args),
    }
}

/// The files of the logs given as `--audit-log` paths, oldest first:
/// `PATH.K` … `PATH.1`, then `PATH`.
pub fn files_of(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let i = n.strip_prefix(&format!("{name}."))?.parse::<u32>().ok()?;
                Some((i, e.path()))
            })
            .collect();
        rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
        out.extend(rotated.into_iter().map(|(_, p)| p));
        if path.exists() {
            out.push(path.clone());
        }
        if out.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such audit log", path.display()),
            ));
        }
    }
    Ok(out)
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` (what the log writes).
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// A path for messages.
pub fn shown(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_rfc3339_writes() {
        for secs in [0u64, 951_782_400, 1_795_712_400, 4_102_444_799] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&crate::util::time::rfc3339(t)), Some(secs));
        }
        for bad in [
            "",
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "2026-11-26T17:00:00+01:00",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
