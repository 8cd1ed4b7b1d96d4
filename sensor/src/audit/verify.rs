//! `sensor audit verify`: walks the chain over every file of a log and
//! names the first record that was edited, removed, inserted or moved.

use std::path::PathBuf;

use super::{chain, files_of, shown};
use crate::{cli::AuditVerifyArgs, config::read_key, failure::Failure};

/// One record as found on disk.
struct Found {
    file: PathBuf,
    line: usize,
    seq: u64,
    prev: String,
    hash: String,
    dropped_through: Option<u64>,
}

impl Found {
    fn at(&self) -> String {
        format!("{}:{}", shown(&self.file), self.line)
    }
}

/// What a verified log holds.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub records: usize,
    pub first_seq: u64,
    pub last_seq: u64,
    pub files: usize,
}

pub fn main(args: &AuditVerifyArgs) -> Result<(), Failure> {
    let key = args.key_file.as_deref().map(read_key).transpose()?;
    let files = files_of(&args.paths).map_err(|e| Failure::Runtime(e.into()))?;
    match verify(&files, key.as_deref()) {
        Ok(s) => {
            println!(
                "audit log intact: {} records, seq {}..{}, {} file(s){}",
                s.records,
                s.first_seq,
                s.last_seq,
                s.files,
                if key.is_some() {
                    ", every MAC checked"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(why) => Err(Failure::Runtime(anyhow::anyhow!("audit log broken: {why}"))),
    }
}

/// Checks every record's hash (and MAC with a key), then the chain; the
/// first problem as one sentence naming the record and where it is.
pub fn verify(files: &[PathBuf], key: Option<&[u8]>) -> Result<Summary, String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", shown(file)))?;
        let text = String::from_utf8_lossy(&text);
        let mut lines: Vec<&str> = text.split('\n').collect();
        if lines.last() == Some(&"") {
            lines.pop();
        } else if !text.is_empty() {
            return Err(format!(
                "{}:{}: the last line is incomplete (the agent was killed while writing; its next start trims it)",
                shown(file),
                lines.len()
            ));
        }
        for (i, line) in lines.iter().enumerate() {
            found.push(check_record(file, i + 1, line, key)?);
        }
    }
    let Some(first) = found.first() else {
        return Err("no records".into());
    };
    let present: std::collections::HashMap<u64, usize> =
        found.iter().enumerate().map(|(i, f)| (f.seq, i)).collect();
    if first.seq == 0 && first.prev != chain::GENESIS {
        return Err(format!(
            "{}: record seq 0 does not start a chain (its prev is not the genesis value)",
            first.at()
        ));
    }
    for (i, pair) in found.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        if b.seq == a.seq + 1 {
            if b.prev != a.hash {
                return Err(format!(
                    "{}: record seq {} does not follow record seq {} at {} (prev hash differs: seq {} was rewritten, or seq {} inserted)",
                    b.at(), b.seq, a.seq, a.at(), a.seq, b.seq
                ));
            }
            continue;
        }
        let want = a.seq + 1;
        if let Some(&later) = present.get(&want).filter(|&&j| j > i + 1) {
            return Err(format!(
                "{}: records out of order: seq {} is here, after seq {}, but seq {} comes later, at {}",
                b.at(),
                b.seq,
                a.seq,
                want,
                found[later].at()
            ));
        }
        if b.seq <= a.seq {
            return Err(format!(
                "{}: record seq {} is out of order (it follows seq {})",
                b.at(),
                b.seq,
                a.seq
            ));
        }
        let boundary = if a.file != b.file {
            format!(
                " (between {} and {}: a rotated file removed?)",
                shown(&a.file),
                shown(&b.file)
            )
        } else {
            String::new()
        };
        let missing = if b.seq - 1 == want {
            format!("record seq {want} is")
        } else {
            format!("records seq {want}..{} are", b.seq - 1)
        };
        return Err(format!("{}: {missing} missing before it{boundary}", b.at()));
    }
    // The chain may start later only where the agent's rotation dropped files.
    let dropped = found.iter().filter_map(|f| f.dropped_through).max();
    let allowed = dropped.map(|d| d + 1).unwrap_or(0);
    if first.seq > allowed {
        return Err(format!(
            "{}: records seq {allowed}..{} are missing at the start (the oldest file removed?)",
            first.at(),
            first.seq - 1
        ));
    }
    let last = found.last().map(|f| f.seq).unwrap_or(0);
    Ok(Summary {
        records: found.len(),
        first_seq: first.seq,
        last_seq: last,
        files: files.len(),
    })
}

fn check_record(
    file: &std::path::Path,
    line_no: usize,
    line: &str,
    key: Option<&[u8]>,
) -> Result<Found, String> {
    let at = format!("{}:{line_no}", shown(file));
    let sealed =
        chain::unseal(line).ok_or_else(|| format!("{at}: not a sealed audit record (edited?)"))?;
    let v: serde_json::Value = serde_json::from_str(&sealed.body)
        .map_err(|_| format!("{at}: not a JSON audit record (edited?)"))?;
    let seq = v["seq"]
        .as_u64()
        .ok_or_else(|| format!("{at}: record without seq (edited?)"))?;
    if chain::hash_of(&sealed.body) != sealed.hash {
        return Err(format!(
            "{at}: record seq {seq} was edited (its hash does not match its content)"
        ));
    }
    if let Some(k) = key {
        match sealed.mac {
            None => {
                return Err(format!(
                    "{at}: record seq {seq} has no MAC (written without the key, or forged)"
                ))
            }
            Some(m) if m != chain::mac_of(k, sealed.hash) => {
                return Err(format!(
                    "{at}: record seq {seq} has a wrong MAC (forged, or another key)"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(Found {
        file: file.to_path_buf(),
        line: line_no,
        seq,
        prev: v["prev"].as_str().unwrap_or_default().to_string(),
        hash: sealed.hash.to_string(),
        dropped_through: (v["kind"] == "rotate")
            .then(|| v["dropped_through_seq"].as_u64())
            .flatten(),
    })
}
