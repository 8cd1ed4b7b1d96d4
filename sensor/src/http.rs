//! `/metrics` (Prometheus text format) and `/healthz`, over plain HTTP or,
//! with `--web-config-file`, TLS and basic auth (`/healthz` stays open for
//! probes: it says nothing but "ok").

use std::time::Duration;

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{metrics::Metrics, webconfig::WebConfig};

#[derive(Clone)]
struct AppState {
    registry: Registry,
    web: WebConfig,
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let web = s.web.clone();
    // bcrypt is slow by design: off the agent's thread.
    let ok = tokio::task::spawn_blocking(move || web.authorized(auth.as_deref()))
        .await
        .unwrap_or(false);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"sensor\"")],
            "unauthorized\n",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Metrics::encode(&s.registry),
    )
        .into_response()
}

fn router(registry: Registry, web: WebConfig) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AppState { registry, web })
}

pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    web: WebConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tls = web.tls.clone();
    let app = router(registry, web);
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        }
        Some(config) => {
            serve_tls(listener, app, config, shutdown).await;
            Ok(())
        }
    }
}

async fn serve_tls(
    listener: TcpListener,
    app: Router,
    config: std::sync::Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("metrics accept: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that never finishes the handshake is dropped.
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        });
    }
}
