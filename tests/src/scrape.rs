//! Scrapes `/metrics` over HTTP and parses it with a Prometheus text parser.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

pub struct Metrics {
    pub text: String,
    pub samples: Vec<prometheus_parse::Sample>,
}

impl Metrics {
    /// Sum of a metric over the samples whose labels include all of `labels`.
    pub fn sum(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        self.samples
            .iter()
            .filter(|s| {
                s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v as u64,
                _ => 0,
            })
            .sum()
    }

    pub fn has(&self, metric: &str, labels: &[(&str, &str)]) -> bool {
        self.samples
            .iter()
            .any(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }
}

/// GET `url` (plain `http://host:port/path`) and parse the body.
pub fn scrape(url: &str) -> anyhow::Result<Metrics> {
    let body = get(url)?;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))?;
    Ok(Metrics {
        text: body,
        samples: scrape.samples,
    })
}

/// GET a plain `http://host:port/path`; the body of a 200 answer.
pub fn get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not http: {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP body"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "HTTP status: {}",
        head.lines().next().unwrap_or("")
    );
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        Ok(body.to_string())
    }
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad chunk"))?;
        let n = usize::from_str_radix(size.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(
            rest.get(..n)
                .ok_or_else(|| anyhow::anyhow!("short chunk"))?,
        );
        body = rest.get(n + 2..).unwrap_or("");
    }
}
