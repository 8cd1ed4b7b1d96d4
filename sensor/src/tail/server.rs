//! The agent's side of `sensor tail`: a UNIX socket (root only) streaming
//! activity records and alerts as JSON lines to every client. A client that
//! falls behind (the shared queue overtakes it, or one write stalls for
//! `WRITE_TIMEOUT`) is disconnected: it cannot grow the agent's memory or
//! slow anything else down.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use prometheus::{IntCounter, IntGauge};
use tokio::{
    io::AsyncWriteExt,
    net::{UnixListener, UnixStream},
    sync::broadcast,
};
use tokio_util::sync::CancellationToken;

use super::record::{ActivityRecord, Message};
use crate::{alerts::AlertJson, config::DEFAULT_SOCKET};
/// Lines queued for all clients together; a client further behind is dropped.
const QUEUE: usize = 4096;
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket: its directory is created root-only, a socket left by a
/// dead agent is replaced, and a live one is an error (another agent runs).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if dir == Path::new(DEFAULT_SOCKET).parent().unwrap_or(dir) {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", dir.display()))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another sensor agent is running: {} answers (stop it, or use --tail-socket)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding tail socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// Publishes poll outputs to connected clients.
#[derive(Clone)]
pub struct Publisher {
    tx: broadcast::Sender<Arc<str>>,
}

impl Publisher {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(QUEUE).0,
        }
    }

    /// Sends one poll's activity records and alerts to every client.
    pub fn publish(&self, records: &[ActivityRecord], alerts: &[AlertJson]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let lines = records.iter().map(|r| Message::Activity(r.clone())).chain(
            alerts
                .iter()
                .filter_map(|a| serde_json::to_value(a).ok())
                .map(|alert| Message::Alert { alert }),
        );
        for m in lines {
            if let Ok(line) = serde_json::to_string(&m) {
                let _ = self.tx.send(Arc::from(line + "\n"));
            }
        }
    }
}

/// Client gauges and the count of clients dropped for being slow.
#[derive(Clone)]
pub struct ClientStats {
    pub connected: IntGauge,
    pub dropped: IntCounter,
}

pub async fn serve(
    listener: UnixListener,
    publisher: Publisher,
    stats: ClientStats,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("tail socket accept: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let rx = publisher.tx.subscribe();
        tokio::spawn(client(stream, rx, stats.clone(), shutdown.clone()));
    }
}

async fn client(
    mut stream: UnixStream,
    mut rx: broadcast::Receiver<Arc<str>>,
    stats: ClientStats,
    shutdown: CancellationToken,
) {
    stats.connected.inc();
    loop {
        let line = tokio::select! {
            line = rx.recv() => line,
            _ = shutdown.cancelled() => break,
        };
        match line {
            Ok(line) => {
                match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(line.as_bytes())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break, // the client went away
                    Err(_) => {
                        stats.dropped.inc();
                        tracing::info!("dropping a tail client that stopped reading");
                        break;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                stats.dropped.inc();
                tracing::info!("dropping a tail client {n} lines behind");
                break;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    stats.connected.dec();
}
