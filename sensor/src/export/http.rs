//! `/metrics` (Prometheus text format) and `/healthz`, over plain HTTP or,
//! with `--web-config-file`, TLS and basic auth (`/healthz` stays open for
//! probes: it says "ok", or answers 503 with the reason when the last poll
//! completed more than three poll intervals and a slack ago). The server
//! runs on a thread of its own, so it answers while a poll is stuck.
//!
//! The server bounds what a client can hold:
//! - at most [`MAX_CONNECTIONS`] connections; a new one past the cap closes
//!   the *oldest connection with no request in flight* (still handshaking,
//!   trickling its headers, or idle), so slow clients cannot lock out a
//!   scraper, whose request arrives right after it connects;
//! - request headers must arrive within [`HEADER_READ_TIMEOUT`] (also the
//!   idle time allowed between keep-alive requests), a TLS handshake within
//!   [`TLS_HANDSHAKE_TIMEOUT`], and a connection that moves no byte for
//!   [`STALL_TIMEOUT`] is closed (a client that stops reading its answer);
//! - a connection buffers at most [`MAX_BUF`] of request;
//! - accept errors (out of descriptors) back off from 100 ms to 1 s instead
//!   of spinning.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::Registry;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::web::WebConfig,
    export::metrics::{Health, Metrics},
};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time allowed for a request's headers (and between keep-alive requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that moves no byte this long is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Request bytes buffered per connection.
pub const MAX_BUF: usize = 16 * 1024;

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct AppState {
    registry: Registry,
    web: WebConfig,
    health: Arc<Health>,
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.health.problem() {
        None => "ok\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ok = match s.web.authorized_cached(auth.as_deref()) {
        Some(ok) => ok,
        None => {
            let web = s.web.clone();
            // bcrypt is slow by design: off the agent's thread.
            tokio::task::spawn_blocking(move || web.authorized(auth.as_deref()))
                .await
                .unwrap_or(false)
        }
    };
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

fn router(registry: Registry, web: WebConfig, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState {
            registry,
            web,
            health,
        })
}

pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    web: WebConfig,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let server = Server {
        app: router(registry, web.clone(), health),
        tls: web.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        headers: Arc::new(
            web.headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect(),
        ),
        web,
    };
    if server.tls.is_some() {
        tracing::info!(
            http2 = server.web.http2,
            client_cert = ?server.web.client_cert,
            basic_auth_users = server.web.users.len(),
            "metrics over TLS"
        );
    }
    let conns = Arc::new(Conns::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                tcp
            }
            // That connection is gone; the listener is fine.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for resources instead of
            // spinning on a listener that stays readable.
            Err(e) => {
                tracing::warn!("metrics accept: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Some((slot, evicted)) = conns.admit() else {
            // Every connection has a request in flight: this one waits its turn
            // in a retry by the client.
            drop(tcp);
            continue;
        };
        tokio::spawn(server.clone().connection(tcp, slot));
        if evicted {
            // Let the closed connection's task run and release its socket
            // before the next accept: descriptors stay at the cap.
            tokio::task::yield_now().await;
        }
    }
    conns.close_all();
    Ok(())
}

#[derive(Clone)]
struct Server {
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    web: WebConfig,
}

impl Server {
    async fn connection(self, tcp: TcpStream, slot: Slot) {
        let activity = Arc::new(AtomicU64::new(now_ms()));
        let io = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        let service = self.service(slot.busy.clone());
        let tls = self.tls.clone();
        let work = async move {
            match tls {
                None => {
                    let _ = http1().serve_connection(TokioIo::new(io), service).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await
                    else {
                        return;
                    };
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let _ = http2()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    } else {
                        let _ = http1()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        };
        tokio::select! {
            _ = work => {}
            _ = slot.cancel.cancelled() => {}
            _ = stalled(&activity) => {}
        }
    }

    /// The router behind the rate limit, with the configured headers added
    /// and the connection marked busy while a request is in flight.
    fn service(
        &self,
        busy: Arc<AtomicUsize>,
    ) -> impl hyper::service::Service<
        Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future = impl std::future::Future<Output = Result<Response, Infallible>> + Send + 'static,
    > + Clone {
        let app = hyper_util::service::TowerToHyperService::new(self.app.clone());
        let (headers, limit) = (self.headers.clone(), self.web.rate_limit.clone());
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let guard = Busy::new(&busy);
            let limited = limit.as_ref().is_some_and(|l| !l.allow());
            let answer = (!limited).then(|| hyper::service::Service::call(&app, req));
            let headers = headers.clone();
            async move {
                let _busy = guard;
                let mut resp = match answer {
                    Some(fut) => match fut.await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    None => (StatusCode::TOO_MANY_REQUESTS, "too many requests\n").into_response(),
                };
                for (k, v) in headers.iter() {
                    resp.headers_mut().insert(k.clone(), v.clone());
                }
                Ok::<Response<Body>, Infallible>(resp)
            }
        })
    }
}

fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .max_headers(64)
        .keep_alive(true);
    b
}

fn http2() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(8)
        .max_header_list_size(MAX_BUF as u32)
        .max_send_buf_size(64 * 1024)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024);
    b
}

/// Counts a request in flight on its connection while alive.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections being served, oldest first.
struct Conns {
    cap: usize,
    live: Mutex<Live>,
}

#[derive(Default)]
struct Live {
    next: u64,
    conns: BTreeMap<u64, Entry>,
    /// When the cap last made us close a connection (log throttle).
    last_full_log: Option<Instant>,
}

struct Entry {
    busy: Arc<AtomicUsize>,
    cancel: CancellationToken,
}

/// A connection's place in [`Conns`], given back on drop.
struct Slot {
    id: u64,
    busy: Arc<AtomicUsize>,
    cancel: CancellationToken,
    conns: Arc<Conns>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut live) = self.conns.live.lock() {
            live.conns.remove(&self.id);
        }
    }
}

impl Conns {
    fn new(cap: usize) -> Self {
        Conns {
            cap,
            live: Mutex::default(),
        }
    }

    /// A slot for a new connection: past the cap, the oldest connection
    /// with no request in flight is closed to make room; none if every
    /// connection is busy. The flag says whether one was closed.
    fn admit(self: &Arc<Self>) -> Option<(Slot, bool)> {
        let mut live = self.live.lock().ok()?;
        let mut evicted = false;
        if live.conns.len() >= self.cap {
            let victim = live
                .conns
                .iter()
                .find(|(_, e)| e.busy.load(Ordering::Relaxed) == 0)
                .map(|(id, _)| *id);
            let closed = victim.and_then(|id| live.conns.remove(&id));
            let log = live
                .last_full_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
            if log {
                live.last_full_log = Some(Instant::now());
                tracing::warn!(
                    "metrics server at its cap of {} connections: closing the oldest one without a request in flight (logged once a minute)",
                    self.cap
                );
            }
            match closed {
                Some(e) => {
                    e.cancel.cancel();
                    evicted = true;
                }
                None => return None,
            }
        }
        let id = live.next;
        live.next += 1;
        let (busy, cancel) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        live.conns.insert(
            id,
            Entry {
                busy: busy.clone(),
                cancel: cancel.clone(),
            },
        );
        Some((
            Slot {
                id,
                busy,
                cancel,
                conns: self.clone(),
            },
            evicted,
        ))
    }

    fn close_all(&self) {
        if let Ok(mut live) = self.live.lock() {
            for (_, e) in std::mem::take(&mut live.conns) {
                e.cancel.cancel();
            }
        }
    }
}

/// Milliseconds since the first call (a monotonic clock in an atomic).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Resolves once no byte has moved for [`STALL_TIMEOUT`].
async fn stalled(activity: &AtomicU64) {
    let limit = STALL_TIMEOUT.as_millis() as u64;
    loop {
        let idle = now_ms().saturating_sub(activity.load(Ordering::Relaxed));
        if idle >= limit {
            return;
        }
        tokio::time::sleep(Duration::from_millis(limit - idle)).await;
    }
}

/// A socket that notes when bytes last moved.
struct Tracked<T> {
    inner: T,
    activity: Arc<AtomicU64>,
}

impl<T> Tracked<T> {
    fn touch(&self) {
        self.activity.store(now_ms(), Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_closes_the_oldest_connection_without_a_request() {
        let conns = Arc::new(Conns::new(3));
        let a = conns.admit().unwrap().0;
        let b = conns.admit().unwrap().0;
        let (c, evicted) = conns.admit().unwrap();
        assert!(!evicted);
        let _in_flight = Busy::new(&a.busy);
        // Full: the oldest idle one (b, since a is busy) makes room.
        let (d, evicted) = conns.admit().unwrap();
        assert!(evicted);
        assert!(!a.cancel.is_cancelled());
        assert!(b.cancel.is_cancelled());
        assert!(!c.cancel.is_cancelled() && !d.cancel.is_cancelled());
        assert_eq!(conns.live.lock().unwrap().conns.len(), 3);
        drop(b);
        assert_eq!(
            conns.live.lock().unwrap().conns.len(),
            3,
            "b was already out"
        );
        // Everything busy: the newcomer is refused.
        let _c_busy = Busy::new(&c.busy);
        let _d_busy = Busy::new(&d.busy);
        assert!(conns.admit().is_none());
        drop(c);
        assert_eq!(conns.live.lock().unwrap().conns.len(), 2);
        assert!(conns.admit().is_some());
        conns.close_all();
        assert!(a.cancel.is_cancelled() && d.cancel.is_cancelled());
    }
}
