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
    /// The record says the log is keyed (a `start` with `keyed: true`), or
    /// carries a MAC.
    keyed: bool,
    /// What the agent wrote about records missing before this one.
    note: Option<String>,
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

/// The chain head exported by the agent (`sensor_audit_chain_head`): a
/// sequence number and a prefix of that record's hash.
#[derive(Debug, PartialEq)]
pub struct Head {
    pub seq: u64,
    pub hash_prefix: String,
}

/// `SEQ:HASHPREFIX` (4 to 64 hex digits).
pub fn parse_head(text: &str) -> Result<Head, String> {
    let bad = || {
        format!("invalid --head '{text}': expected SEQ:HASHPREFIX as exported in sensor_audit_chain_head, e.g. 42:9f86d081884c7d65")
    };
    let (seq, prefix) = text.trim().split_once(':').ok_or_else(bad)?;
    let seq = seq.parse::<u64>().map_err(|_| bad())?;
    let prefix = prefix.to_ascii_lowercase();
    if !(4..=64).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(Head {
        seq,
        hash_prefix: prefix,
    })
}

pub fn main(args: &AuditVerifyArgs) -> Result<(), Failure> {
    let head = args
        .head
        .as_deref()
        .map(parse_head)
        .transpose()
        .map_err(Failure::Usage)?;
    let key = args.key_file.as_deref().map(read_key).transpose()?;
    let files = files_of(&args.paths).map_err(|e| Failure::Runtime(e.into()))?;
    let checked = walk(&files, key.as_deref()).and_then(|(s, found)| {
        let note = match &head {
            Some(h) => check_head(&found, h)?,
            None => String::new(),
        };
        Ok((s, note))
    });
    match checked {
        Ok((s, note)) => {
            println!(
                "audit log intact: {} records, seq {}..{}, {} file(s){}{note}",
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

/// The exported head against the log: the record it names must be there
/// with that hash. A missing tail (truncation) or another hash (a rewritten
/// and re-chained tail) is an error.
fn check_head(found: &[Found], head: &Head) -> Result<String, String> {
    let (first, last) = match (found.first(), found.last()) {
        (Some(f), Some(l)) => (f.seq, l.seq),
        _ => return Err("no records".into()),
    };
    match found.iter().find(|f| f.seq == head.seq) {
        Some(f) if f.hash.starts_with(&head.hash_prefix) => {
            Ok(format!(", chain head seq {} matches", head.seq))
        }
        Some(f) => Err(format!(
            "{}: record seq {} is not the one the agent exported as its chain head (hash {}…, exported {}…): the log was rewritten from there",
            f.at(),
            head.seq,
            &f.hash[..head.hash_prefix.len()],
            head.hash_prefix
        )),
        None if head.seq > last => Err(format!(
            "the log ends at seq {last}, but the agent exported seq {} as its chain head: records seq {}..{} were cut off the end (truncated)",
            head.seq,
            last + 1,
            head.seq
        )),
        None if head.seq < first => Ok(format!(
            ", chain head seq {} not checked (rotated away; the log starts at seq {first})",
            head.seq
        )),
        None => Err(format!("record seq {} (the exported chain head) is missing", head.seq)),
    }
}

/// Checks every record's hash (and MAC with a key), then the chain; the
/// first problem as one sentence naming the record and where it is.
#[cfg(test)]
pub fn verify(files: &[PathBuf], key: Option<&[u8]>) -> Result<Summary, String> {
    walk(files, key).map(|(s, _)| s)
}

/// [`verify`], with the records found.
fn walk(files: &[PathBuf], key: Option<&[u8]>) -> Result<(Summary, Vec<Found>), String> {
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
    // A keyed log checked without its key would pass with its MACs
    // stripped: refuse.
    if key.is_none() {
        if let Some(k) = found.iter().find(|f| f.keyed) {
            return Err(format!(
                "{}: keyed log (record seq {} was written with --audit-key-file); pass --key-file to check its MACs",
                k.at(),
                k.seq
            ));
        }
    }
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
        let why = b
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or(boundary);
        return Err(format!("{}: {missing} missing before it{why}", b.at()));
    }
    // The chain may start later only where the agent's rotation dropped files.
    let dropped = found.iter().filter_map(|f| f.dropped_through).max();
    let allowed = dropped.map(|d| d + 1).unwrap_or(0);
    if first.seq > allowed {
        let why = first
            .note
            .clone()
            .unwrap_or_else(|| "the oldest file removed?".into());
        return Err(format!(
            "{}: records seq {allowed}..{} are missing at the start ({why})",
            first.at(),
            first.seq - 1
        ));
    }
    let last = found.last().map(|f| f.seq).unwrap_or(0);
    let summary = Summary {
        records: found.len(),
        first_seq: first.seq,
        last_seq: last,
        files: files.len(),
    };
    Ok((summary, found))
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
    let note = match v["kind"].as_str() {
        Some("gap") => v["damaged_file"]
            .as_str()
            .map(|d| format!("the agent found the log damaged at start and set it aside as {d}")),
        Some("tamper") if v["what"] == "audit_log_removed" => Some(format!(
            "the agent reported: {}",
            v["detail"].as_str().unwrap_or("")
        )),
        _ => None,
    };
    Ok(Found {
        file: file.to_path_buf(),
        line: line_no,
        seq,
        prev: v["prev"].as_str().unwrap_or_default().to_string(),
        hash: sealed.hash.to_string(),
        dropped_through: (v["kind"] == "rotate")
            .then(|| v["dropped_through_seq"].as_u64())
            .flatten(),
        keyed: sealed.mac.is_some() || (v["kind"] == "start" && v["keyed"] == true),
        note,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::{
        audit::{AuditLog, AuditPoll, Now},
        config::AuditConfig,
    };

    fn log_of(dir: &std::path::Path, key: Option<&[u8]>) -> PathBuf {
        let c = AuditConfig {
            path: dir.join("audit.log"),
            interval: Duration::from_secs(1),
            max_bytes: 1 << 20,
            max_files: 4,
            fsync: Duration::from_secs(1),
            key: key.map(<[u8]>::to_vec),
            max_records_per_process: 64,
        };
        let t0 = Now {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_712_400),
            mono: Instant::now(),
        };
        let (mut log, _) = AuditLog::open(&c, "n1", t0).unwrap();
        for i in 1..4u64 {
            log.observe(AuditPoll {
                accesses: vec![crate::audit::Access {
                    pid: 7,
                    inode: i,
                    read_bytes: 1,
                    ..Default::default()
                }],
                sends: Vec::new(),
            });
            log.tick(Now {
                wall: t0.wall + Duration::from_secs(i),
                mono: t0.mono + Duration::from_secs(i),
            })
            .unwrap();
        }
        c.path
    }

    #[test]
    fn a_keyed_log_with_its_macs_stripped_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = b"0123456789abcdef";
        let path = log_of(dir.path(), Some(key));
        verify(std::slice::from_ref(&path), Some(key)).unwrap();
        let err = verify(std::slice::from_ref(&path), None).unwrap_err();
        assert!(
            err.contains("keyed log") && err.contains("--key-file"),
            "{err}"
        );
        // Strip every MAC: the hashes still hold.
        let text = std::fs::read_to_string(&path).unwrap();
        let stripped: String = text
            .lines()
            .map(|l| {
                let s = chain::unseal(l).unwrap();
                format!("{}\n", chain::seal(&s.body, None).0)
            })
            .collect();
        std::fs::write(&path, stripped).unwrap();
        let err = verify(std::slice::from_ref(&path), Some(key)).unwrap_err();
        assert!(err.contains("record seq 0 has no MAC"), "{err}");
        let err = verify(std::slice::from_ref(&path), None).unwrap_err();
        assert!(
            err.contains("keyed log"),
            "the start record still says keyed: {err}"
        );
    }

    #[test]
    fn the_exported_head_catches_a_truncated_or_rewritten_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_of(dir.path(), None);
        let files = vec![path.clone()];
        let (_, found) = walk(&files, None).unwrap();
        let last = found.last().unwrap();
        let head = Head {
            seq: last.seq,
            hash_prefix: last.hash[..16].to_string(),
        };
        assert!(check_head(&found, &head).unwrap().contains("matches"));
        // Truncated: the last record cut off; the rest still chains.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.pop();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let (_, found) = walk(&files, None).expect("a truncated chain is still a chain");
        let err = check_head(&found, &head).unwrap_err();
        assert!(err.contains("cut off the end"), "{err}");
        // Rewritten: another record sealed in its place.
        let prev = found.last().unwrap().hash.clone();
        let body = format!(
            r#"{{"seq":{},"ts":"2026-11-26T17:00:09Z","kind":"stop","reason":"x","prev":"{prev}"}}"#,
            head.seq
        );
        std::fs::write(
            &path,
            lines.join("\n") + "\n" + &chain::seal(&body, None).0 + "\n",
        )
        .unwrap();
        let (_, found) = walk(&files, None).expect("re-chained consistently");
        let err = check_head(&found, &head).unwrap_err();
        assert!(err.contains("rewritten"), "{err}");
        assert_eq!(parse_head("12:AB12cd34").unwrap().hash_prefix, "ab12cd34");
        assert!(parse_head("12").is_err() && parse_head("x:abcd").is_err());
    }
}
