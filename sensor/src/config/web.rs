//! `--web-config-file`: TLS, basic auth, response headers and a rate limit for
//! the metrics endpoint, in the Prometheus exporter-toolkit format
//! (`web-config.yml`), read the way exporter-toolkit reads it: unknown keys are
//! an error, relative paths are relative to the file.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt      # PEM (or `cert:` inline); re-read when it changes
//!   key_file: server.key       # (or `key:` inline)
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt     # (or `client_ca:` inline)
//!   min_version: TLS12         # TLS12 | TLS13
//!   max_version: TLS13
//!   cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # TLS 1.2 only, as in Go
//!   curve_preferences: [X25519, CurveP256]
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   http2: true                # offered over TLS (ALPN)
//!   headers:
//!     X-Content-Type-Options: nosniff
//! basic_auth_users:
//!   prometheus: $2y$10$...     # bcrypt hashes
//! rate_limit:
//!   interval: 100ms
//!   burst: 10
//! ```
//!
//! What rustls cannot do the Go toolkit's way is refused with one line, never
//! ignored: TLS 1.0/1.1, CBC and RSA-key-exchange cipher suites, CurveP521,
//! `client_allowed_sans`, and verifying client certificates against the
//! system roots (give `client_ca_file`).

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
    },
    sign::CertifiedKey,
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<Tls>,
    http_server_config: Option<HttpServer>,
    rate_limit: Option<RateLimitFile>,
    basic_auth_users: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServer {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    interval: Option<GoDuration>,
    burst: Option<i64>,
}

/// A Go `time.Duration` as yaml.v2 decodes it: `"1m30s"` or nanoseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GoDuration {
    Nanos(i64),
    Text(String),
}

/// What the metrics server enforces.
#[derive(Clone)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User → bcrypt hash; empty: no authentication.
    pub users: Arc<HashMap<String, String>>,
    /// Verification results (see [`Auth`]).
    pub auth: Arc<Auth>,
    /// Offer HTTP/2 over TLS (`http_server_config.http2`, default true).
    pub http2: bool,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Arc<Vec<(String, String)>>,
    /// Token bucket over all requests (`rate_limit`).
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// `tls_server_config.client_auth_type`, as enforced.
    pub client_cert: ClientCert,
}

/// What is asked of a TLS client's certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCert {
    #[default]
    NotAsked,
    /// Asked for, optional, not verified (`RequestClientCert`).
    Requested,
    /// Required, not verified against a CA (`RequireAnyClientCert`).
    RequiredAny,
    /// Optional; verified against `client_ca_file` if given (`VerifyClientCertIfGiven`).
    VerifiedIfGiven,
    /// Required and verified against `client_ca_file` (`RequireAndVerifyClientCert`).
    Verified,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            tls: None,
            users: Arc::default(),
            auth: Arc::new(Auth::new(&HashMap::new())),
            http2: true,
            headers: Arc::default(),
            rate_limit: None,
            client_cert: ClientCert::NotAsked,
        }
    }
}

fn bad(path: &Path, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: "web-config-file",
        value: path.display().to_string(),
        reason: reason.to_string().replace('\n', " "),
    }
}

/// Empty strings count as unset, as in Go.
fn set<T: AsRef<std::ffi::OsStr>>(v: &Option<T>) -> Option<&T> {
    v.as_ref().filter(|s| !s.as_ref().is_empty())
}

/// Response headers exporter-toolkit lets a config add, with the values it
/// allows (none listed: any).
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e))?;
        // An empty file is an empty configuration, as in Go.
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| bad(path, e))?
        };
        Self::from_file(file, path)
    }

    fn from_file(file: File, path: &Path) -> Result<Self, ConfigError> {
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(bad(
                    path,
                    format!("basic_auth_users.{user}: not a bcrypt hash"),
                ));
            }
        }
        let http = file.http_server_config.unwrap_or_default();
        let mut headers = Vec::new();
        for (name, value) in http.headers.unwrap_or_default() {
            let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| *n == name) else {
                return Err(bad(
                    path,
                    format!(
                        "http_server_config.headers: HTTP header {name:?} can not be configured"
                    ),
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(bad(
                    path,
                    format!("http_server_config.headers.{name}: expected one of {allowed:?}, got {value:?}"),
                ));
            }
            if axum::http::HeaderValue::from_str(&value).is_err() {
                return Err(bad(
                    path,
                    format!("http_server_config.headers.{name}: not a valid header value"),
                ));
            }
            if !value.is_empty() {
                headers.push((name, value));
            }
        }
        let http2 = http.http2.unwrap_or(true);
        let rate_limit = match file.rate_limit {
            None => None,
            Some(r) => {
                let interval = match r.interval {
                    None => Duration::ZERO,
                    Some(GoDuration::Nanos(n)) => Duration::from_nanos(n.max(0) as u64),
                    Some(GoDuration::Text(t)) => parse_go_duration(&t).ok_or_else(|| {
                        bad(path, format!("rate_limit.interval {t:?}: not a duration"))
                    })?,
                };
                if interval.is_zero() {
                    None
                } else {
                    let burst = r.burst.unwrap_or(0);
                    if !(1..=1_000_000).contains(&burst) {
                        return Err(bad(
                            path,
                            format!("rate_limit.burst {burst}: expected 1 to 1000000 (0 would refuse every request)"),
                        ));
                    }
                    Some(Arc::new(RateLimiter::new(interval, burst as u32)))
                }
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let (tls, client_cert) = match file.tls_server_config {
            Some(t) => tls_config(t, dir, http2).map_err(|e| bad(path, e))?,
            None => (None, ClientCert::NotAsked),
        };
        Ok(WebConfig {
            tls,
            auth: Arc::new(Auth::new(&users)),
            users: Arc::new(users),
            http2,
            headers: Arc::new(headers),
            rate_limit,
            client_cert,
        })
    }

    /// Whether an `Authorization` header value lets the request in. Runs
    /// bcrypt unless the answer is cached: call it off the async threads.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        self.auth.check(header)
    }

    /// The answer for `header` if it needs no bcrypt run (no users, a
    /// malformed header, or a cached result).
    pub fn authorized_cached(&self, header: Option<&str>) -> Option<bool> {
        self.auth.check_cached(header)
    }
}

/// `1h2m3.5s`, `100ms`, `250us`, `0`: Go's `time.ParseDuration`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

// ---------------------------------------------------------------- TLS

fn tls_config(
    t: Tls,
    dir: &Path,
    http2: bool,
) -> Result<(Option<Arc<rustls::ServerConfig>>, ClientCert), String> {
    if !tls_enabled(&t)? {
        return Ok((None, ClientCert::NotAsked));
    }
    let (cert, key) = cert_and_key(&t, dir)?;
    if t.client_allowed_sans
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(
            "tls_server_config.client_allowed_sans is not supported by this agent (use client_ca_file and RequireAndVerifyClientCert)"
                .into(),
        );
    }
    let versions = protocol_versions(&t)?;
    let provider = Arc::new(crypto_provider(&t)?);
    let (verifier, client_cert) = client_cert_verifier(&t, dir, &provider)?;

    let resolver = Arc::new(CertReloader::new(cert, key, provider.clone())?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok((Some(Arc::new(config)), client_cert))
}

/// Whether `tls_server_config` asks for TLS at all: a certificate, key,
/// client CA or client_auth_type. Other TLS settings alone are an error.
fn tls_enabled(t: &Tls) -> Result<bool, String> {
    let enabled = set(&t.cert_file).is_some()
        || set(&t.cert).is_some()
        || set(&t.key_file).is_some()
        || set(&t.key).is_some()
        || set(&t.client_ca_file).is_some()
        || set(&t.client_ca).is_some()
        || set(&t.client_auth_type).is_some();
    if !enabled {
        let other = t.min_version.is_some()
            || t.max_version.is_some()
            || t.cipher_suites.is_some()
            || t.curve_preferences.is_some()
            || t.client_allowed_sans.is_some()
            || t.prefer_server_cipher_suites.is_some();
        if other {
            // exporter-toolkit would serve plain HTTP here; a TLS setting
            // without a certificate is more likely a mistake.
            return Err("tls_server_config has TLS settings but no cert_file/key_file".into());
        }
    }
    Ok(enabled)
}

/// Where the server certificate and key come from: `*_file` (relative to
/// `dir`) before the inline text.
fn cert_and_key(t: &Tls, dir: &Path) -> Result<(Source, Source), String> {
    let cert = match (set(&t.cert_file), set(&t.cert)) {
        (Some(f), _) => Source::File(dir.join(f)),
        (None, Some(text)) => Source::Inline(text.clone()),
        (None, None) => return Err("tls_server_config: missing one of cert or cert_file".into()),
    };
    let key = match (set(&t.key_file), set(&t.key)) {
        (Some(f), _) => Source::File(dir.join(f)),
        (None, Some(text)) => Source::Inline(text.clone()),
        (None, None) => return Err("tls_server_config: missing one of key or key_file".into()),
    };
    Ok((cert, key))
}

/// `min_version`..=`max_version` (default TLS12..=TLS13).
fn protocol_versions(t: &Tls) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let (min, max) = (
        tls_version(&t.min_version, 12, "min_version")?,
        tls_version(&t.max_version, 13, "max_version")?,
    );
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if min <= 12 && 12 <= max {
        versions.push(&rustls::version::TLS12);
    }
    if min <= 13 && 13 <= max {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(format!(
            "tls_server_config: min_version TLS{min} is above max_version TLS{max}"
        ));
    }
    Ok(versions)
}

/// One of `min_version`/`max_version` (named by `key`) as 12 or 13.
fn tls_version(v: &Option<String>, default: u8, key: &str) -> Result<u8, String> {
    match v.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some("TLS13") => Ok(13),
        Some("TLS12") => Ok(12),
        Some(old @ ("TLS11" | "TLS10")) => Err(format!(
            "tls_server_config.{key} {old}: this agent speaks TLS12 and TLS13 only"
        )),
        Some(other) => Err(format!(
            "tls_server_config.{key}: unknown TLS version: {other}"
        )),
    }
}

/// ring's provider with `cipher_suites` and `curve_preferences` applied, in
/// the given order.
fn crypto_provider(t: &Tls) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = t.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
        let tls12 = tls12_cipher_suites(names)?;
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13);
        provider.cipher_suites.extend(tls12);
    }
    if let Some(names) = t.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
        provider.kx_groups = kx_groups(names)?;
    }
    Ok(provider)
}

/// `cipher_suites` as TLS 1.2 suites, in order, without repeats.
fn tls12_cipher_suites(names: &[String]) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    let mut tls12 = Vec::new();
    for name in names {
        let Some(suite) = tls12_cipher_suite(name)? else {
            continue;
        };
        if !tls12.contains(&suite) {
            tls12.push(suite);
        }
    }
    Ok(tls12)
}

/// One Go cipher suite name; `None` for TLS 1.3 suites, which Go never
/// applies `cipher_suites` to (neither do we).
fn tls12_cipher_suite(name: &str) -> Result<Option<rustls::SupportedCipherSuite>, String> {
    use rustls::crypto::ring::cipher_suite as cs;
    let suite = match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Ok(None)
        }
        "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA" => {
            return Err(format!(
                "tls_server_config.cipher_suites: {name} is not supported by this agent (ECDHE with AES-GCM or ChaCha20-Poly1305 only)"
            ))
        }
        other => {
            return Err(format!(
                "tls_server_config.cipher_suites: unknown cipher: {other}"
            ))
        }
    };
    Ok(Some(suite))
}

/// `curve_preferences` as key exchange groups, in order, without repeats.
fn kx_groups(
    names: &[String],
) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, String> {
    use rustls::crypto::ring::kx_group;
    let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
    for name in names {
        let group =
            match name.as_str() {
                "X25519" => kx_group::X25519,
                "CurveP256" => kx_group::SECP256R1,
                "CurveP384" => kx_group::SECP384R1,
                "CurveP521" => return Err(
                    "tls_server_config.curve_preferences: CurveP521 is not supported by this agent"
                        .into(),
                ),
                other => {
                    return Err(format!(
                        "tls_server_config.curve_preferences: unknown curve: {other}"
                    ))
                }
            };
        if !groups.iter().any(|g| g.name() == group.name()) {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// The CAs client certificates are verified against: `client_ca_file`
/// (relative to `dir`) before the inline `client_ca`.
fn client_roots(t: &Tls, dir: &Path) -> Result<Option<RootCertStore>, String> {
    Ok(match (set(&t.client_ca_file), set(&t.client_ca)) {
        (Some(f), _) => {
            let f = dir.join(f);
            let pem =
                std::fs::read(&f).map_err(|e| format!("client_ca_file {}: {e}", f.display()))?;
            Some(root_store(&pem).map_err(|e| format!("client_ca_file {}: {e}", f.display()))?)
        }
        (None, Some(text)) => {
            Some(root_store(text.as_bytes()).map_err(|e| format!("client_ca: {e}"))?)
        }
        (None, None) => None,
    })
}

/// `client_auth_type` (with the client CAs) as a rustls verifier, and what
/// it enforces.
fn client_cert_verifier(
    t: &Tls,
    dir: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<dyn ClientCertVerifier>, ClientCert), String> {
    let roots = client_roots(t, dir)?;
    let auth_type = t.client_auth_type.as_deref().unwrap_or("");
    let needs_roots = |roots: Option<RootCertStore>| {
        roots.map(Arc::new).ok_or_else(|| {
            format!(
                "tls_server_config.client_auth_type {auth_type} needs client_ca_file or client_ca (this agent does not verify client certificates against the system roots)"
            )
        })
    };
    let algorithms = provider.signature_verification_algorithms;
    Ok(match auth_type {
        "" | "NoClientCert" => {
            if roots.is_some() {
                return Err(
                    "tls_server_config: client CAs have been configured without a client_auth_type"
                        .into(),
                );
            }
            (Arc::new(rustls::server::NoClientAuth), ClientCert::NotAsked)
        }
        "RequestClientCert" => (
            Arc::new(AnyClientCert {
                mandatory: false,
                algorithms,
            }),
            ClientCert::Requested,
        ),
        "RequireAnyClientCert" | "RequireClientCert" => (
            Arc::new(AnyClientCert {
                mandatory: true,
                algorithms,
            }),
            ClientCert::RequiredAny,
        ),
        "VerifyClientCertIfGiven" => (
            WebPkiClientVerifier::builder_with_provider(needs_roots(roots)?, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client certificates: {e}"))?,
            ClientCert::VerifiedIfGiven,
        ),
        "RequireAndVerifyClientCert" => (
            WebPkiClientVerifier::builder_with_provider(needs_roots(roots)?, provider.clone())
                .build()
                .map_err(|e| format!("client certificates: {e}"))?,
            ClientCert::Verified,
        ),
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: invalid ClientAuth: {other}"
            ))
        }
    })
}

fn root_store(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate".into());
    }
    Ok(roots)
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked for
/// (or required) but, as in Go, not checked against any CA; the client still
/// has to prove it holds the key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Inline(String),
}

impl Source {
    fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Source::File(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())),
            Source::Inline(t) => Ok(t.as_bytes().to_vec()),
        }
    }

    /// What changes when the file is replaced or rewritten.
    fn stamp(&self) -> Option<(SystemTime, u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        match self {
            Source::File(p) => std::fs::metadata(p).ok().map(|m| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    m.ino(),
                )
            }),
            Source::Inline(_) => None,
        }
    }

    fn describe(&self, what: &str) -> String {
        match self {
            Source::File(p) => format!("{what}_file {}", p.display()),
            Source::Inline(_) => what.to_string(),
        }
    }
}

type Stamp = [Option<(SystemTime, u64, u64)>; 2];

/// Serves the certificate and key, re-reading them (at most once a second,
/// on a handshake) when either file's mtime, size or inode changed. A pair
/// that does not load keeps the previous one and is logged once.
#[derive(Debug)]
pub struct CertReloader {
    cert: Source,
    key: Source,
    provider: Arc<CryptoProvider>,
    every: Duration,
    state: Mutex<ReloadState>,
}

#[derive(Debug)]
struct ReloadState {
    current: Arc<CertifiedKey>,
    loaded: Stamp,
    failed: Option<Stamp>,
    checked: Instant,
}

impl CertReloader {
    fn new(cert: Source, key: Source, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let loaded = [cert.stamp(), key.stamp()];
        let current = Arc::new(load_pair(&cert, &key, &provider)?);
        Ok(CertReloader {
            cert,
            key,
            provider,
            every: Duration::from_secs(1),
            state: Mutex::new(ReloadState {
                current,
                loaded,
                failed: None,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to present now (reloaded first if the files changed).
    pub fn current(&self) -> Arc<CertifiedKey> {
        let Ok(mut s) = self.state.lock() else {
            // A panic while holding the lock: nothing sensible to serve.
            return Arc::new(CertifiedKey::new(Vec::new(), dummy_key()));
        };
        if s.checked.elapsed() >= self.every {
            s.checked = Instant::now();
            let stamp = [self.cert.stamp(), self.key.stamp()];
            if stamp != s.loaded && s.failed != Some(stamp) {
                match load_pair(&self.cert, &self.key, &self.provider) {
                    Ok(pair) => {
                        tracing::info!(
                            cert = %self.cert.describe("cert"),
                            "metrics TLS certificate reloaded"
                        );
                        s.current = Arc::new(pair);
                        s.loaded = stamp;
                        s.failed = None;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "metrics TLS certificate not reloaded, keeping the previous one: {e}"
                        );
                        s.failed = Some(stamp);
                    }
                }
            }
        }
        s.current.clone()
    }
}

/// Only reached after a poisoned lock; signing with it fails the handshake.
fn dummy_key() -> Arc<dyn rustls::sign::SigningKey> {
    #[derive(Debug)]
    struct NoKey;
    impl rustls::sign::SigningKey for NoKey {
        fn choose_scheme(&self, _: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }
        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::Unknown(0)
        }
    }
    Arc::new(NoKey)
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn load_pair(
    cert: &Source,
    key: &Source,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let what_cert = cert.describe("cert");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert.read()?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what_cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what_cert}: no certificate"));
    }
    let what_key = key.describe("key");
    let der =
        PrivateKeyDer::from_pem_slice(&key.read()?).map_err(|e| format!("{what_key}: {e}"))?;
    CertifiedKey::from_der(certs, der, provider)
        .map_err(|e| format!("{what_cert} with {what_key}: {e}"))
}

// ---------------------------------------------------------------- basic auth

/// Results kept per kind; successes are kept apart so that a stream of wrong
/// passwords cannot push the scraper's cached success out.
const CACHE_ENTRIES: usize = 64;

/// Basic-auth verification: bcrypt (serialized: it is slow on purpose) with
/// its results cached under a SHA-256 of (user, stored hash, password), like
/// exporter-toolkit. An unknown user costs the same as a known one: bcrypt
/// runs against a configured hash of the highest cost and the answer is no.
#[derive(Debug)]
pub struct Auth {
    users: Vec<(String, String)>,
    dummy: Option<String>,
    ok: Mutex<Recent>,
    failed: Mutex<Recent>,
    bcrypt: Mutex<()>,
    /// bcrypt verifications run so far (tests).
    pub bcrypt_runs: AtomicU64,
}

#[derive(Debug, Default)]
struct Recent {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Recent {
    fn contains(&self, k: &[u8; 32]) -> bool {
        self.set.contains(k)
    }

    fn insert(&mut self, k: [u8; 32]) {
        if self.set.insert(k) {
            self.order.push_back(k);
            while self.order.len() > CACHE_ENTRIES {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Equal without an early exit on the first differing byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(users: &HashMap<String, String>) -> Self {
        let mut users: Vec<(String, String)> =
            users.iter().map(|(u, h)| (u.clone(), h.clone())).collect();
        users.sort();
        let dummy = users
            .iter()
            .max_by_key(|(_, h)| {
                h.parse::<bcrypt::HashParts>()
                    .map(|p| p.get_cost())
                    .unwrap_or(0)
            })
            .map(|(_, h)| h.clone());
        Auth {
            users,
            dummy,
            ok: Mutex::default(),
            failed: Mutex::default(),
            bcrypt: Mutex::new(()),
            bcrypt_runs: AtomicU64::new(0),
        }
    }

    /// User and password from `Basic <base64>`.
    fn credentials(header: Option<&str>) -> Option<(String, String)> {
        use base64::Engine as _;
        let encoded = header?.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    }

    /// The stored hash for `user` (or the dummy), looked at for every user.
    fn lookup(&self, user: &str) -> (bool, &str) {
        let mut found: Option<&str> = None;
        for (name, hash) in &self.users {
            if ct_eq(name.as_bytes(), user.as_bytes()) {
                found = Some(hash);
            }
        }
        match found {
            Some(h) => (true, h),
            None => (false, self.dummy.as_deref().unwrap_or("")),
        }
    }

    fn key(user: &str, hash: &str, password: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [user, hash, password] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    pub fn check_cached(&self, header: Option<&str>) -> Option<bool> {
        if self.users.is_empty() {
            return Some(true);
        }
        let Some((user, password)) = Self::credentials(header) else {
            return Some(false);
        };
        let (known, hash) = self.lookup(&user);
        let key = Self::key(&user, hash, &password);
        if self.ok.lock().is_ok_and(|c| c.contains(&key)) {
            return Some(known);
        }
        if self.failed.lock().is_ok_and(|c| c.contains(&key)) {
            return Some(false);
        }
        None
    }

    pub fn check(&self, header: Option<&str>) -> bool {
        if let Some(answer) = self.check_cached(header) {
            return answer;
        }
        let Some((user, password)) = Self::credentials(header) else {
            return false;
        };
        let (known, hash) = self.lookup(&user);
        let key = Self::key(&user, hash, &password);
        let matches = {
            let _one_at_a_time = self.bcrypt.lock();
            self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
            bcrypt::verify(&password, hash).unwrap_or(false)
        };
        let ok = known && matches;
        let cache = if ok { &self.ok } else { &self.failed };
        if let Ok(mut c) = cache.lock() {
            c.insert(key);
        }
        ok
    }
}

// ---------------------------------------------------------------- rate limit

/// Go's `rate.Limiter`: `burst` tokens, one more every `interval`.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(interval: Duration, burst: u32) -> Self {
        RateLimiter {
            interval,
            burst,
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() / self.interval.as_secs_f64();
        s.0 = (s.0 + refill).min(f64::from(self.burst));
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn header(s: &str) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    /// A self-signed certificate and key (openssl), named `name`.crt/.key.
    fn cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
            ])
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (crt, key)
    }

    fn load(dir: &Path, text: &str) -> Result<WebConfig, String> {
        let p = write(dir, "web.yml", text);
        WebConfig::load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn basic_auth() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let w = load(
            dir.path(),
            &format!("basic_auth_users:\n  prom: '{hash}'\n"),
        )
        .unwrap();
        assert!(w.authorized(Some(&header("prom:s3cret"))));
        assert!(!w.authorized(Some(&header("prom:wrong"))));
        assert!(!w.authorized(Some(&header("eve:s3cret"))));
        assert!(!w.authorized(None));
        assert!(!w.authorized(Some("Bearer x")));
        assert!(WebConfig::default().authorized(None), "no users: open");
    }

    #[test]
    fn bcrypt_results_are_cached_and_bounded() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = Auth::new(&HashMap::from([("prom".to_string(), hash)]));
        let runs = || auth.bcrypt_runs.load(Ordering::Relaxed);
        let good = header("prom:s3cret");
        assert_eq!(auth.check_cached(Some(&good)), None, "not verified yet");
        assert!(auth.check(Some(&good)));
        assert_eq!(runs(), 1);
        for _ in 0..10 {
            assert!(auth.check(Some(&good)));
            assert_eq!(auth.check_cached(Some(&good)), Some(true));
        }
        assert_eq!(runs(), 1, "successes are cached");
        let bad = header("prom:wrong");
        assert!(!auth.check(Some(&bad)));
        assert!(!auth.check(Some(&bad)));
        assert_eq!(runs(), 2, "failures are cached");
        // Many distinct wrong passwords: the failure cache stays bounded and
        // the scraper's success is not pushed out.
        for i in 0..(3 * CACHE_ENTRIES) {
            assert!(!auth.check(Some(&header(&format!("prom:wrong{i}")))));
        }
        assert_eq!(runs(), 2 + 3 * CACHE_ENTRIES as u64);
        assert!(auth.failed.lock().unwrap().set.len() <= CACHE_ENTRIES);
        assert!(auth.failed.lock().unwrap().order.len() <= CACHE_ENTRIES);
        assert_eq!(auth.check_cached(Some(&good)), Some(true));
        // A different password for the same user is a different entry.
        assert_eq!(auth.check_cached(Some(&header("prom:s3cret2"))), None);
    }

    #[test]
    fn unknown_users_cost_a_bcrypt_run_of_the_same_cost() {
        let hash = bcrypt::hash("s3cret", 8).unwrap();
        let auth = Auth::new(&HashMap::from([
            ("cheap".to_string(), bcrypt::hash("x", 4).unwrap()),
            ("prom".to_string(), hash.clone()),
        ]));
        assert_eq!(auth.dummy.as_deref(), Some(hash.as_str()), "highest cost");
        let runs = || auth.bcrypt_runs.load(Ordering::Relaxed);
        let time = |h: &str| {
            let t = Instant::now();
            assert!(!auth.check(Some(&header(h))));
            t.elapsed()
        };
        let known = time("prom:wrong");
        assert_eq!(runs(), 1);
        // The dummy hash is prom's: prom's password must not let eve in.
        let unknown = time("eve:s3cret");
        assert_eq!(runs(), 2, "an unknown user runs bcrypt too");
        assert!(
            unknown * 3 >= known,
            "unknown user {unknown:?} vs known user {known:?}"
        );
        assert!(!auth.check(Some(&header("eve:s3cret"))), "cached: still no");
        assert!(auth.check(Some(&header("prom:s3cret"))));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"ab", b"abc"));
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path(), "basic_auth_users:\n  prom: plaintext\n").unwrap_err();
        assert!(
            e.contains("web-config-file") && e.contains("prom") && e.contains("bcrypt"),
            "{e}"
        );
        let e = load(
            dir.path(),
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
        )
        .unwrap_err();
        assert!(e.contains("nope.crt"), "{e}");
        let e = load(dir.path(), "tls_config: {}\n").unwrap_err();
        assert!(e.contains("tls_config"), "{e}");
        assert!(WebConfig::load(Path::new("/nonexistent/web.yml")).is_err());
    }

    /// Valid exporter-toolkit files load; each key does what it says.
    #[test]
    fn exporter_toolkit_schema_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        cert(d, "server");
        cert(d, "ca");
        // Empty sections (and an empty file) are plain HTTP without auth.
        for text in [
            "",
            "tls_server_config: {}\n",
            "tls_server_config:\nbasic_auth_users:\n",
            "http_server_config:\n  http2: false\n",
        ] {
            let w = load(d, text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(w.tls.is_none() && w.users.is_empty(), "{text:?}");
        }
        // The sample from exporter-toolkit's docs, every key.
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let w = load(
            d,
            &format!(
                "tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS12
  max_version: TLS13
  cipher_suites:
    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    - TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    - TLS_AES_128_GCM_SHA256
  curve_preferences: [X25519, CurveP256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
    Content-Security-Policy: default-src 'self'
    X-XSS-Protection: '1; mode=block'
basic_auth_users:
  alice: '{hash}'
rate_limit:
  interval: 100ms
  burst: 2
"
            ),
        )
        .unwrap();
        let tls = w.tls.clone().unwrap();
        assert!(!w.http2 && tls.alpn_protocols == vec![b"http/1.1".to_vec()]);
        assert!(!tls.ignore_client_order);
        assert_eq!(w.headers.len(), 5);
        assert_eq!(w.users.len(), 1);
        let suites: Vec<_> = tls
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            suites,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        let groups: Vec<_> = tls
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["X25519", "secp256r1"]);
        assert_eq!(w.client_cert, ClientCert::Verified);
        let limiter = w.rate_limit.clone().unwrap();
        assert!(
            limiter.allow() && limiter.allow() && !limiter.allow(),
            "burst 2"
        );
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.allow(), "a token per interval");

        // Inline PEM, the other client auth types.
        let pem = |p: &str| {
            std::fs::read_to_string(d.join(p))
                .unwrap()
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        for (auth, expected) in [
            ("NoClientCert", ClientCert::NotAsked),
            ("RequestClientCert", ClientCert::Requested),
            ("RequireAnyClientCert", ClientCert::RequiredAny),
            ("RequireClientCert", ClientCert::RequiredAny),
            ("VerifyClientCertIfGiven", ClientCert::VerifiedIfGiven),
        ] {
            let ca = if auth.starts_with("Verify") {
                format!("  client_ca: |\n{}", pem("ca.crt"))
            } else {
                String::new()
            };
            let w = load(
                d,
                &format!(
                    "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_auth_type: {auth}\n{ca}",
                    pem("server.crt"),
                    pem("server.key")
                ),
            )
            .unwrap_or_else(|e| panic!("{auth}: {e}"));
            assert!(w.tls.is_some(), "{auth}");
            assert_eq!(w.client_cert, expected, "{auth}");
        }
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("10"), None, "Go wants a unit");
    }

    /// Unknown keys, and settings that cannot be honoured, are one-line errors
    /// naming the setting.
    #[test]
    fn unknown_and_unsupported_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        cert(d, "server");
        cert(d, "ca");
        let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
        let cases: &[(String, &str)] = &[
            ("tls_config: {}\n".into(), "tls_config"),
            ("http_server_config:\n  http3: true\n".into(), "http3"),
            (format!("{tls}  certfile: x\n"), "certfile"),
            ("basic_auth_users:\n  - alice\n".into(), "basic_auth_users"),
            (format!("{tls}  min_version: TLS11\n"), "TLS11"),
            (format!("{tls}  max_version: TLS14\n"), "TLS14"),
            (format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"), "min_version"),
            (format!("{tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"), "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
            (format!("{tls}  cipher_suites: [TLS_MADE_UP]\n"), "TLS_MADE_UP"),
            (format!("{tls}  curve_preferences: [CurveP521]\n"), "CurveP521"),
            (format!("{tls}  curve_preferences: [Curve25519x]\n"), "Curve25519x"),
            (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"), "client_ca_file"),
            (format!("{tls}  client_auth_type: VerifyClientCertIfGiven\n"), "client_ca_file"),
            (format!("{tls}  client_auth_type: Sometimes\n"), "Sometimes"),
            (format!("{tls}  client_ca_file: ca.crt\n"), "client_auth_type"),
            (format!("{tls}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [a.example]\n"), "client_allowed_sans"),
            (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n"), "client_ca_file"),
            ("tls_server_config:\n  key_file: server.key\n".into(), "cert_file"),
            ("tls_server_config:\n  cert_file: server.crt\n".into(), "key_file"),
            ("tls_server_config:\n  cert_file: server.crt\n  key_file: ca.key\n".into(), "key_file"),
            ("tls_server_config:\n  min_version: TLS13\n".into(), "cert_file"),
            ("http_server_config:\n  headers:\n    X-Powered-By: me\n".into(), "X-Powered-By"),
            ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n".into(), "X-Frame-Options"),
            ("rate_limit:\n  interval: 1s\n".into(), "burst"),
            ("rate_limit:\n  interval: soon\n  burst: 1\n".into(), "soon"),
        ];
        for (text, named) in cases {
            let e = load(d, text)
                .err()
                .unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(!e.contains('\n'), "multi-line error: {e}");
            assert!(
                e.contains("web-config-file") && e.contains(named),
                "{named}: {e}"
            );
        }
    }

    #[test]
    fn certificates_are_reloaded_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (crt, key) = cert(d, "a");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut r = CertReloader::new(
            Source::File(crt.clone()),
            Source::File(key.clone()),
            provider,
        )
        .unwrap();
        r.every = Duration::ZERO;
        let first = r.current();
        assert!(Arc::ptr_eq(&first, &r.current()), "unchanged: not re-read");
        // A new pair, written in place (new inode via rename, like most tools).
        let (crt_b, key_b) = cert(d, "b");
        std::fs::rename(&key_b, &key).unwrap();
        // Key changed, certificate not yet: mismatch, the old pair stays.
        let mid = r.current();
        assert_eq!(mid.cert, first.cert, "a bad pair keeps the previous one");
        assert!(r.state.lock().unwrap().failed.is_some());
        std::fs::rename(&crt_b, &crt).unwrap();
        let second = r.current();
        assert_ne!(second.cert, first.cert, "reloaded");
        assert_eq!(
            second.cert[0].as_ref(),
            CertificateDer::pem_file_iter(&crt)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .as_ref()
        );
        // Garbage: kept.
        std::fs::write(&crt, "not a certificate").unwrap();
        assert_eq!(r.current().cert, second.cert);
    }
}
