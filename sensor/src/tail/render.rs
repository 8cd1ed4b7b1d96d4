//! How `sensor tail` prints: aligned columns with human units for a person,
//! JSON lines for a program. No colour or escape codes unless stdout is a
//! terminal.

use std::io::Write;

use super::record::ActivityRecord;
use crate::{alerts::field_text, util::size::format_size};

pub const HEADER: &str = "TIME      PID      COMM             CONTAINER     READ        WATCHED     DERIVED     SENT        UNTRUSTED   TOP DESTINATION";

/// One aligned line.
pub fn line(r: &ActivityRecord) -> String {
    let time = r.ts.get(11..19).unwrap_or(&r.ts);
    let container = if r.container.is_empty() {
        "-"
    } else {
        r.container.get(..12).unwrap_or(&r.container)
    };
    let top = match r.destinations.first() {
        Some(d) => format!("{} ({})", d.addr, d.class),
        None => "-".into(),
    };
    format!(
        "{time:<9} {:<8} {:<16} {container:<13} {:<11} {:<11} {:<11} {:<11} {:<11} {top}",
        r.pid,
        printable(&r.comm),
        format_size(r.read_bytes),
        format_size(r.watched_read_bytes),
        format_size(r.derived_read_bytes + r.relayed_bytes),
        format_size(r.sent_bytes),
        format_size(r.untrusted_sent_bytes),
    )
}

/// An alert as one line for a person.
pub fn alert_line(a: &serde_json::Value) -> String {
    let s = |k: &str| field_text(a, k);
    let n = |k: &str| format_size(a.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0));
    let dest = a["destinations"][0]["addr"].as_str().unwrap_or("-");
    // The chain, origin first: `cp(read) > curl(file)`.
    let chain: Vec<String> = a["lineage"]
        .as_array()
        .map(|hops| {
            hops.iter()
                .map(|h| {
                    format!(
                        "{}({})",
                        printable(h["comm"].as_str().unwrap_or("?")),
                        h["via"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let chain = if chain.len() > 1 {
        format!(" lineage={}", chain.join(">"))
    } else {
        String::new()
    };
    format!(
        "ALERT {} scope={} pid={} comm={} container={} read={} sent={} to {dest} file={}{chain}",
        s("rule"),
        s("scope"),
        s("pid"),
        printable(&s("comm")),
        if s("container").is_empty() {
            "-".into()
        } else {
            s("container")
        },
        n("watched_read_bytes"),
        n("sent_bytes"),
        a["top_files"][0]["path"]
            .as_str()
            .or(a["origin_files"][0].as_str())
            .unwrap_or("-"),
    )
}

/// Command names may hold anything; a terminal gets no control characters.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Where lines go.
pub struct Output<W: Write> {
    out: W,
    json: bool,
    colour: bool,
    lines_since_header: usize,
}

impl<W: Write> Output<W> {
    pub fn new(out: W, json: bool, colour: bool) -> Self {
        Self {
            out,
            json,
            colour,
            lines_since_header: usize::MAX,
        }
    }

    /// One interval's records, most bytes first.
    pub fn interval(&mut self, records: &[ActivityRecord]) -> std::io::Result<()> {
        for r in records {
            if self.json {
                writeln!(
                    self.out,
                    "{}",
                    serde_json::to_string(r).map_err(std::io::Error::other)?
                )?;
                continue;
            }
            if self.lines_since_header >= 40 {
                writeln!(self.out, "{HEADER}")?;
                self.lines_since_header = 0;
            }
            writeln!(self.out, "{}", line(r))?;
            self.lines_since_header += 1;
        }
        self.out.flush()
    }

    pub fn alert(&mut self, a: &serde_json::Value) -> std::io::Result<()> {
        if self.json {
            writeln!(self.out, "{a}")?;
        } else if self.colour {
            writeln!(self.out, "\x1b[1;31m{}\x1b[0m", alert_line(a))?;
        } else {
            writeln!(self.out, "{}", alert_line(a))?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::record::DestBytes;

    fn rec() -> ActivityRecord {
        let mut r = ActivityRecord {
            ts: "2026-11-26T18:52:03Z".into(),
            pid: 4242,
            comm: "python3".into(),
            read_bytes: 3 << 30,
            watched_read_bytes: 2 << 30,
            sent_bytes: 512 << 20,
            untrusted_sent_bytes: 512 << 20,
            destinations: vec![DestBytes {
                addr: "198.18.0.2:443".into(),
                class: "untrusted".into(),
                bytes: 512 << 20,
            }],
            ..Default::default()
        };
        r.finish();
        r
    }

    #[test]
    fn columns_line_up_with_the_header() {
        let l = line(&rec());
        for (col, value) in [
            ("PID", "4242"),
            ("COMM", "python3"),
            ("READ", "3.0 GiB"),
            ("WATCHED", "2.0 GiB"),
            ("SENT", "512.0 MiB"),
        ] {
            assert_eq!(
                HEADER.find(col),
                l.find(value),
                "{col} column:\n{HEADER}\n{l}"
            );
        }
        assert!(l.starts_with("18:52:03"));
        assert!(l.ends_with("198.18.0.2:443 (untrusted)"), "{l}");
    }

    #[test]
    fn json_and_plain_output() {
        let mut buf = Vec::new();
        Output::new(&mut buf, true, false)
            .interval(&[rec()])
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["untrusted_sent_bytes"], 512 << 20);
        let mut buf = Vec::new();
        let mut o = Output::new(&mut buf, false, false);
        o.interval(&[rec()]).unwrap();
        o.alert(
            &serde_json::json!({"rule":"read_then_send","scope":"process","pid":1,"comm":"a\nb"}),
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("TIME"), "{text}");
        assert!(
            !text.contains('\x1b'),
            "no escape codes when not a terminal"
        );
        assert!(text.contains("comm=a?b"), "{text}");
    }
}
