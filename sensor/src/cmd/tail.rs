//! `sensor tail`: attaches to the agent's socket when an agent runs on this
//! host, else loads its own programs; prints each interval's active
//! processes (filtered, most bytes first) and alerts as they fire. Exits 0
//! on Ctrl-C and when its output is closed (`sensor tail | head`).

use std::{
    collections::HashMap,
    io::{ErrorKind, IsTerminal},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::UnixStream,
};

use super::runner::{self, Runner};
use crate::{
    cli::{RunArgs, TailArgs},
    cmd::pipeline::Pipeline,
    config::{Config, DEFAULT_SOCKET},
    export::metrics::Metrics,
    failure::Failure,
    kernel::watch::WatchSet,
    tail::{
        record::{ActivityRecord, Message},
        render::Output,
    },
    util::sysinfo,
};

/// Which processes to show.
#[derive(Debug, Default)]
struct Filter {
    pids: Vec<u32>,
    comms: Vec<String>,
    container: Option<String>,
    watched_only: bool,
}

impl Filter {
    /// Which process it is (known from any one record).
    fn process(&self, r: &ActivityRecord) -> bool {
        (self.pids.is_empty() || self.pids.contains(&r.pid))
            && (self.comms.is_empty() || self.comms.contains(&r.comm))
            && self
                .container
                .as_ref()
                .is_none_or(|c| r.container.starts_with(c.as_str()))
    }

    /// The process, and what it did over the whole interval.
    fn record(&self, r: &ActivityRecord) -> bool {
        self.process(r)
            && (!self.watched_only
                || r.watched_read_bytes + r.derived_read_bytes + r.relayed_bytes > 0)
    }

    fn alert(&self, a: &serde_json::Value) -> bool {
        let pids: Vec<u32> = a["pids"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|p| p.as_u64())
                    .map(|p| p as u32)
                    .collect()
            })
            .unwrap_or_default();
        (self.pids.is_empty() || pids.iter().any(|p| self.pids.contains(p)))
            && (self.comms.is_empty() || self.comms.iter().any(|c| a["comm"] == c.as_str()))
            && self.container.as_ref().is_none_or(|c| {
                a["container"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(c.as_str())
            })
    }
}

fn parse_interval(text: &str) -> Result<Duration, Failure> {
    let t = text.trim().trim_end_matches('s');
    match t.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(Failure::Usage(format!(
            "invalid interval '{text}': expected seconds from 0.1 to 3600"
        ))),
    }
}

pub fn main(args: TailArgs) -> Result<(), Failure> {
    let interval = parse_interval(&args.interval)?;
    let filter = Filter {
        pids: args.pid.clone(),
        comms: args.comm.clone(),
        container: args.container.clone(),
        watched_only: args.watched_only,
    };
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    // For standalone mode: validated up front like `sensor run`'s.
    let mut run_args = RunArgs::default();
    run_args.flags.insert("watch", args.watch.clone());
    run_args
        .flags
        .insert("trusted-cidr", args.trusted_cidr.clone());
    let cfg = Config::from_args(&run_args)?;
    let stdout = std::io::stdout();
    let colour = stdout.is_terminal();
    let mut out = Output::new(stdout.lock(), args.json, colour);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async {
        if !args.standalone {
            if let Ok(stream) = UnixStream::connect(&socket).await {
                eprintln!("sensor tail: attached to the agent at {}", socket.display());
                return attached(stream, interval, &filter, &mut out).await;
            }
        }
        eprintln!(
            "sensor tail: no agent at {}; loading the programs (standalone)",
            socket.display()
        );
        standalone(cfg, interval, &filter, &mut out).await
    });
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other.map_err(Failure::from),
    }
}

async fn attached(
    stream: UnixStream,
    interval: Duration,
    filter: &Filter,
    out: &mut Output<impl std::io::Write>,
) -> anyhow::Result<()> {
    let mut lines = BufReader::new(stream).lines();
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    let mut acc: HashMap<u32, ActivityRecord> = HashMap::new();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.context("reading the agent's socket")? else {
                    anyhow::bail!("the agent closed the connection (it stopped, or dropped this client for reading too slowly)");
                };
                match serde_json::from_str::<Message>(&line) {
                    Ok(Message::Activity(r)) if filter.process(&r) => {
                        match acc.get_mut(&r.pid) {
                            Some(a) => a.absorb(&r),
                            None => { acc.insert(r.pid, r); }
                        }
                    }
                    Ok(Message::Alert { alert }) if filter.alert(&alert) => out.alert(&alert)?,
                    Ok(_) => {}
                    Err(e) => tracing::debug!("ignoring a line from the agent: {e}"),
                }
            }
            _ = ticker.tick() => flush(&mut acc, filter, out)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Prints one interval, most bytes first.
fn flush(
    acc: &mut HashMap<u32, ActivityRecord>,
    filter: &Filter,
    out: &mut Output<impl std::io::Write>,
) -> std::io::Result<()> {
    let mut records: Vec<ActivityRecord> = acc
        .drain()
        .map(|(_, r)| r)
        .filter(|r| filter.record(r))
        .collect();
    records.sort_by(|a, b| b.volume().cmp(&a.volume()).then(a.pid.cmp(&b.pid)));
    out.interval(&records)
}

async fn standalone(
    cfg: Config,
    interval: Duration,
    filter: &Filter,
    out: &mut Output<impl std::io::Write>,
) -> anyhow::Result<()> {
    let watch = WatchSet::resolve(&cfg.watch)?;
    let sensor = runner::load(&cfg, &watch)?;
    let metrics = Metrics::new(cfg.max_comm_labels, &sysinfo::kernel_release())?;
    let mut runner = Runner::new(sensor, Pipeline::new(&cfg, &watch, metrics));
    runner.poll()?; // what happened before we started is not this view's
    eprintln!("sensor tail: programs attached, watching");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    runner
        .run(interval, stop, |_, polled| {
            let mut acc: HashMap<u32, ActivityRecord> =
                polled.records.into_iter().map(|r| (r.pid, r)).collect();
            flush(&mut acc, filter, out)?;
            for a in polled.alerts {
                let v = serde_json::to_value(&a)?;
                if filter.alert(&v) {
                    out.alert(&v)?;
                }
            }
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let r = ActivityRecord {
            pid: 7,
            comm: "nc".into(),
            container: "abcdef123".into(),
            ..Default::default()
        };
        assert!(Filter::default().record(&r));
        assert!(Filter {
            pids: vec![7],
            ..Default::default()
        }
        .record(&r));
        assert!(!Filter {
            pids: vec![8],
            ..Default::default()
        }
        .record(&r));
        assert!(Filter {
            comms: vec!["nc".into()],
            ..Default::default()
        }
        .record(&r));
        assert!(Filter {
            container: Some("abc".into()),
            ..Default::default()
        }
        .record(&r));
        assert!(!Filter {
            watched_only: true,
            ..Default::default()
        }
        .record(&r));
        let a = serde_json::json!({"pids": [3, 7], "comm": "nc", "container": ""});
        assert!(Filter {
            pids: vec![3],
            ..Default::default()
        }
        .alert(&a));
        assert!(!Filter {
            container: Some("abc".into()),
            ..Default::default()
        }
        .alert(&a));
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_interval("0.5s").unwrap(), Duration::from_millis(500));
        for bad in ["0", "-1", "x", "99999"] {
            assert!(matches!(parse_interval(bad), Err(Failure::Usage(m)) if m.contains(bad)));
        }
    }
}
