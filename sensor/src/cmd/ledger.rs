//! `sensor ledger`: the long-horizon ledger of rule `slow_exfil`, read from
//! the state dir (no agent needed, nothing written): per identity, the
//! watched bytes it took in and the untrusted bytes it sent per destination
//! network over the horizon, most first, with the alerts raised.

use std::{path::PathBuf, time::SystemTime};

use serde::Serialize;

use crate::{
    cli::LedgerArgs,
    failure::Failure,
    ledger::store,
    util::{size::format_size, time::rfc3339},
};

#[derive(Serialize)]
struct NetJson {
    network: String,
    bytes: u64,
}

#[derive(Serialize)]
struct AlertedJson {
    network: String,
    at: String,
    bytes: u64,
}

#[derive(Serialize)]
struct IdentityJson {
    identity: String,
    horizon_s: u64,
    watched_read_bytes: u64,
    untrusted_sent_bytes: u64,
    destinations: Vec<NetJson>,
    alerts: Vec<AlertedJson>,
    last_seen: String,
    last_pid: u32,
    last_comm: String,
}

pub fn main(args: LedgerArgs) -> Result<(), Failure> {
    let dir = args
        .state_dir
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_STATE_DIR));
    let now_t = SystemTime::now();
    let now = now_t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (ledger, gaps) = store::read_only(&dir, now).map_err(Failure::Usage)?;
    let bucket = ledger.cfg.bucket_secs();
    let at = |b: u64| rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(b * bucket));
    let mut rows: Vec<IdentityJson> = ledger
        .ids
        .iter()
        .map(|(id, s)| {
            let (read, nets) = ledger.totals(id, now);
            IdentityJson {
                identity: id.clone(),
                horizon_s: ledger.cfg.horizon_secs,
                watched_read_bytes: read,
                untrusted_sent_bytes: nets.iter().map(|(_, b)| b).sum(),
                destinations: nets
                    .into_iter()
                    .take(args.top)
                    .map(|(network, bytes)| NetJson { network, bytes })
                    .collect(),
                alerts: s
                    .alerted
                    .iter()
                    .map(|(n, (b, bytes))| AlertedJson {
                        network: n.clone(),
                        at: at(*b),
                        bytes: *bytes,
                    })
                    .collect(),
                last_seen: at(s.last),
                last_pid: s.pid,
                last_comm: s.comm.clone(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.untrusted_sent_bytes
            .cmp(&a.untrusted_sent_bytes)
            .then(a.identity.cmp(&b.identity))
    });
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        for g in &gaps {
            println!(
                "{}",
                serde_json::json!({"gap": {"at": rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(g.at)), "reason": g.reason}})
            );
        }
        return Ok(());
    }
    println!(
        "horizon {} s ({} s buckets), alert at {} to one network; {} identities; state {}",
        ledger.cfg.horizon_secs,
        bucket,
        format_size(ledger.cfg.send_bytes),
        rows.len(),
        dir.display()
    );
    println!(
        "{:<48} {:>10} {:>10}  {:<40} ALERTS",
        "IDENTITY", "READ", "SENT", "TOP NETWORKS"
    );
    for r in &rows {
        let top: Vec<String> = r
            .destinations
            .iter()
            .take(3)
            .map(|d| format!("{} {}", d.network, format_size(d.bytes)))
            .collect();
        let alerts: Vec<String> = r.alerts.iter().map(|a| a.network.clone()).collect();
        println!(
            "{:<48} {:>10} {:>10}  {:<40} {}",
            r.identity,
            format_size(r.watched_read_bytes),
            format_size(r.untrusted_sent_bytes),
            top.join(", "),
            if alerts.is_empty() {
                "-".into()
            } else {
                alerts.join(", ")
            }
        );
    }
    for g in &gaps {
        eprintln!(
            "gap at {}: {}",
            rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(g.at)),
            g.reason
        );
    }
    Ok(())
}
