//! The run loop `sensor run` and a standalone `sensor tail` share: load and
//! attach the programs, then poll every interval until told to stop, with
//! one last poll for what moved since the last tick; each poll is timed and
//! the watched decisions are refreshed when due. What is done with a poll's
//! output (alert sinks, audit trail, tail clients; or the terminal) is the
//! caller's.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use super::pipeline::{Pipeline, PollOutput};
use crate::{
    config::Config,
    kernel::{
        loader::{LoadOptions, Sensor},
        privilege,
        watch::WatchSet,
    },
};

/// How often cached watched decisions are recomputed, so a file renamed into
/// (or out of) a watched directory is classified anew.
pub const WATCH_REFRESH: Duration = Duration::from_secs(30);

/// Loads and attaches the programs (a clear error without the privileges).
pub fn load(cfg: &Config, watch: &WatchSet) -> anyhow::Result<Sensor> {
    privilege::require_bpf()?;
    Sensor::load(
        watch,
        &LoadOptions {
            processes: cfg.max_processes,
            btf: cfg.btf_path.clone(),
            epoch: cfg.detect.window,
        },
    )
}

pub struct Runner {
    pub sensor: Sensor,
    pub pipeline: Pipeline,
    last_refresh: Instant,
}

impl Runner {
    pub fn new(sensor: Sensor, pipeline: Pipeline) -> Self {
        Self {
            sensor,
            pipeline,
            last_refresh: Instant::now(),
        }
    }

    /// One poll, timed into the metrics; the watch generation bumped when due.
    pub fn poll(&mut self) -> anyhow::Result<PollOutput> {
        let start = Instant::now();
        let out = self.pipeline.poll(&mut self.sensor)?;
        self.pipeline.metrics.poll_done(start.elapsed());
        if self.last_refresh.elapsed() >= WATCH_REFRESH {
            self.sensor.bump_generation()?;
            self.last_refresh = Instant::now();
        }
        Ok(out)
    }

    /// Polls every `interval` until `stop` completes, then once more, and
    /// hands each poll's output to `each`.
    pub async fn run(
        &mut self,
        interval: Duration,
        stop: impl Future<Output = ()>,
        mut each: impl FnMut(&Runner, PollOutput) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(interval);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut stop => break,
            }
            let out = self.poll()?;
            each(self, out)?;
        }
        // Count what moved since the last tick.
        let out = self.poll()?;
        each(self, out)
    }
}
