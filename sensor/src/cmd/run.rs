//! `sensor run`: validate, bind, attach, then poll the kernel maps until
//! SIGINT/SIGTERM, and detach.

use std::io::Write as _;

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};
use tokio_util::sync::CancellationToken;

use super::runner::{self, Runner};
use crate::{
    alerts::Sinks,
    cli::RunArgs,
    cmd::{pipeline::Pipeline, trail::Trail},
    config::Config,
    export::{http, metrics::Metrics},
    failure::Failure,
    kernel::{privilege, watch::WatchSet},
    tail::{
        server,
        server::{ClientStats, Publisher},
    },
    util::sysinfo,
};

pub fn main(args: RunArgs) -> Result<(), Failure> {
    // Everything that can be wrong with the input is checked before the
    // kernel is touched.
    let cfg = Config::from_args(&args)?;
    let watch = WatchSet::resolve(&cfg.watch)?;
    if args.dry_run {
        // A closed stdout (`| head`) is not an error here.
        let _ = writeln!(
            std::io::stdout().lock(),
            "configuration valid; watching: {}\n{cfg:#?}",
            watch.describe()
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(cfg, watch))
}

async fn run(cfg: Config, watch: WatchSet) -> Result<(), Failure> {
    let listener = TcpListener::bind(cfg.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on metrics-addr {}", cfg.metrics_addr))?;
    let metrics_addr = listener.local_addr().context("metrics listener address")?;
    let tail_listener = server::bind(&cfg.tail_socket)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let metrics = Metrics::new(cfg.max_comm_labels, &sysinfo::kernel_release())
        .context("creating metrics")?;

    privilege::require_bpf()?;
    let mut trail = Trail::open(&cfg, &sysinfo::hostname())?;
    let sensor = match runner::load(&cfg, &watch) {
        Ok(s) => s,
        Err(e) => {
            trail.stop("the programs could not be attached");
            return Err(e.into());
        }
    };
    trail.watch(&sensor)?;
    for p in &sensor.probes {
        metrics.set_probe(p.capability.name, p.hook_label(), p.attached.is_some());
    }
    // Parsing the kernel's BTF (twice: offsets, attach points) took tens of
    // MiB that are free now; hand them back instead of keeping them resident.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    // Attached: give up what loading needed, before any thread starts.
    let bounding = privilege::drop_to_kept().context("dropping capabilities")?;
    tracing::debug!(
        bounding_set_trimmed = bounding,
        "capabilities dropped to BPF, SYS_PTRACE, DAC_READ_SEARCH"
    );
    let mut sinks = Sinks::new(
        cfg.alerts_file.as_deref(),
        cfg.alertmanager.as_ref(),
        format!("http://{metrics_addr}/metrics"),
        metrics.sink_errors.clone(),
        metrics.sink_dropped.clone(),
    )?;
    let tail_stats = ClientStats {
        connected: metrics.tail_clients.clone(),
        dropped: metrics.tail_dropped.clone(),
    };
    let pipeline = Pipeline::new(&cfg, &watch, metrics);

    let shutdown = CancellationToken::new();
    // The metrics server thread: /metrics and /healthz answer while a poll
    // runs (or is stuck). Started after the capabilities were dropped.
    let server = {
        let listener = listener.into_std().context("metrics listener")?;
        let (registry, web, health, token) = (
            pipeline.metrics.registry.clone(),
            cfg.web.clone(),
            pipeline.metrics.health.clone(),
            shutdown.clone(),
        );
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    http::serve(listener, registry, web, health, token).await
                })
            })
            .context("starting the metrics server thread")?
    };
    let publisher = Publisher::new();
    let tail = tokio::spawn(server::serve(
        tail_listener,
        publisher.clone(),
        tail_stats,
        shutdown.clone(),
    ));
    tracing::info!(
        metrics = %format!("{}://{metrics_addr}/metrics", if cfg.web.tls.is_some() { "https" } else { "http" }),
        watch = %watch.describe(),
        "ready"
    );

    pipeline.metrics.health.start(cfg.poll_interval);
    let mut runner = Runner::new(sensor, pipeline);
    let stop = async {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    };
    runner
        .run(cfg.poll_interval, stop, |r, mut out| {
            for alert in &out.alerts {
                sinks.emit(alert);
            }
            for line in out.notices.drain(..) {
                sinks.emit_line(line);
            }
            trail.after_poll(&mut out, &r.sensor, &r.pipeline.metrics, &mut sinks);
            publisher.publish(&out.records, &out.alerts);
            Ok(())
        })
        .await?;
    runner.pipeline.stop();
    trail.stop("SIGTERM or SIGINT");
    shutdown.cancel();
    drop(runner);
    tracing::info!("programs detached, exiting");
    let _ = tail.await;
    let _ = server.join();
    let _ = std::fs::remove_file(&cfg.tail_socket);
    Ok(())
}
