//! `--web-config-file`: TLS and basic auth for `/metrics`, in the Prometheus
//! exporter-toolkit format:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt      # PEM; relative paths are relative to this file
//!   key_file: server.key
//! basic_auth_users:
//!   prometheus: $2y$10$...     # bcrypt hashes
//! ```

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<Tls>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// What the metrics server enforces.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User → bcrypt hash; empty: no authentication.
    pub users: Arc<HashMap<String, String>>,
}

fn bad(path: &Path, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: "web-config-file",
        value: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e))?;
        let file: File = serde_norway::from_str(&text)
            .map_err(|e| bad(path, e.to_string().replace('\n', " ")))?;
        for (user, hash) in &file.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(bad(
                    path,
                    format!("basic_auth_users.{user}: not a bcrypt hash"),
                ));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match file.tls_server_config {
            Some(t) => {
                let (cert, key) = (dir.join(&t.cert_file), dir.join(&t.key_file));
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
                    .and_then(|it| it.collect())
                    .map_err(|e| bad(path, format!("cert_file {}: {e}", cert.display())))?;
                if certs.is_empty() {
                    return Err(bad(
                        path,
                        format!("cert_file {}: no certificate", cert.display()),
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(&key)
                    .map_err(|e| bad(path, format!("key_file {}: {e}", key.display())))?;
                let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
                .map_err(|e| bad(path, format!("TLS: {e}")))?;
                Some(Arc::new(config))
            }
            None => None,
        };
        Ok(WebConfig {
            tls,
            users: Arc::new(file.basic_auth_users),
        })
    }

    /// Whether an `Authorization` header value lets the request in.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        use base64::Engine as _;
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        self.users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false))
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

    #[test]
    fn basic_auth() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let p = write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  prom: '{hash}'\n"),
        );
        let w = WebConfig::load(&p).unwrap();
        use base64::Engine as _;
        let header = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(w.authorized(Some(&header("prom:s3cret"))));
        assert!(!w.authorized(Some(&header("prom:wrong"))));
        assert!(!w.authorized(Some(&header("eve:s3cret"))));
        assert!(!w.authorized(None));
        assert!(!w.authorized(Some("Bearer x")));
        assert!(WebConfig::default().authorized(None), "no users: open");
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "web.yml",
            "basic_auth_users:\n  prom: plaintext\n",
        );
        let e = WebConfig::load(&p).err().unwrap().to_string();
        assert!(
            e.contains("web-config-file") && e.contains("prom") && e.contains("bcrypt"),
            "{e}"
        );
        let p = write(
            dir.path(),
            "web2.yml",
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
        );
        let e = WebConfig::load(&p).err().unwrap().to_string();
        assert!(e.contains("nope.crt"), "{e}");
        let p = write(dir.path(), "web3.yml", "tls_config: {}\n");
        assert!(WebConfig::load(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("tls_config"));
        assert!(WebConfig::load(Path::new("/nonexistent/web.yml")).is_err());
    }
}
