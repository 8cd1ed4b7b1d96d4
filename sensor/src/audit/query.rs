//! `sensor audit query`: the access records of a log, filtered, as a table
//! or as the JSON lines themselves.

use std::io::Write as _;

use super::{chain, files_of, parse_rfc3339, record::Access};
use crate::{cli::AuditQueryArgs, failure::Failure, util::size::format_size as human_bytes};

pub fn main(args: &AuditQueryArgs) -> Result<(), Failure> {
    for (flag, value) in [("since", &args.since), ("until", &args.until)] {
        if let Some(v) = value {
            if parse_rfc3339(v).is_none() {
                return Err(Failure::Usage(format!(
                    "invalid --{flag} '{v}': expected UTC time as 2026-11-26T17:00:00Z"
                )));
            }
        }
    }
    let files = files_of(&args.paths).map_err(|e| Failure::Runtime(e.into()))?;
    let mut out = std::io::stdout().lock();
    if !args.json {
        let _ = writeln!(
            out,
            "{:<20}  {:<20}  {:>7}  {:<15}  {:>9}  {:>9}  {:>9}  PATH",
            "START", "END", "PID", "COMM", "READ", "SENT", "UNTRUSTED"
        );
    }
    for file in &files {
        let text = std::fs::read(file).map_err(|e| {
            Failure::Runtime(anyhow::anyhow!("cannot read {}: {e}", file.display()))
        })?;
        for line in String::from_utf8_lossy(&text).lines() {
            let Some(a) = access_of(line) else { continue };
            if !matches(args, &a) {
                continue;
            }
            // A closed stdout (`| head`) ends the listing quietly.
            let written = if args.json {
                writeln!(out, "{line}")
            } else {
                writeln!(
                    out,
                    "{:<20}  {:<20}  {:>7}  {:<15}  {:>9}  {:>9}  {:>9}  {}",
                    a.start,
                    a.end,
                    a.pid,
                    a.comm.chars().take(15).collect::<String>(),
                    human_bytes(a.read_bytes),
                    human_bytes(a.sent_bytes),
                    human_bytes(a.untrusted_sent_bytes),
                    a.path
                )
            };
            if written.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The access record on `line`; `None` for other kinds and unreadable lines
/// (`audit verify` reports those).
fn access_of(line: &str) -> Option<Access> {
    let sealed = chain::unseal(line)?;
    let v: serde_json::Value = serde_json::from_str(&sealed.body).ok()?;
    if v["kind"] != "access" {
        return None;
    }
    serde_json::from_value(v).ok()
}

fn matches(args: &AuditQueryArgs, a: &Access) -> bool {
    // RFC 3339 UTC text in one format sorts as time.
    args.file
        .as_ref()
        .is_none_or(|f| a.path.contains(f.as_str()) || a.origin.contains(f.as_str()))
        && args.pid.is_none_or(|p| a.pid == p)
        && args.comm.as_ref().is_none_or(|c| &a.comm == c)
        && args
            .since
            .as_ref()
            .is_none_or(|s| a.end.as_str() >= s.as_str())
        && args
            .until
            .as_ref()
            .is_none_or(|u| a.start.as_str() <= u.as_str())
}
