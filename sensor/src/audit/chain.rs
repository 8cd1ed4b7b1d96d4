//! The hash chain of the audit log.
//!
//! A record is one JSON object on one line. Its *body* is the object as
//! serialized without `hash` and `mac`, and it includes `prev`, the `hash` of
//! the record before it (64 zeros for the very first). Then
//! `hash = hex(sha256(body))`, and with a key `mac = hex(hmac_sha256(key,
//! hash))`; the line is the body with `,"hash":"…"[,"mac":"…"]` appended
//! before its closing brace. Verification re-hashes the text as written, so
//! no canonical re-serialization is involved: any edit of a byte shows.

use ring::{digest, hmac};

/// `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_FIELD: &str = ",\"hash\":\"";
const MAC_FIELD: &str = "\",\"mac\":\"";

/// A record as read back: its body text, and what the line claims.
#[derive(Debug, PartialEq)]
pub struct Sealed<'a> {
    pub body: String,
    pub hash: &'a str,
    pub mac: Option<&'a str>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hash_of(body: &str) -> String {
    hex(digest::digest(&digest::SHA256, body.as_bytes()).as_ref())
}

pub fn mac_of(key: &[u8], hash: &str) -> String {
    hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), hash.as_bytes()).as_ref())
}

/// The line for `body` (a JSON object that already carries `prev`), and its hash.
pub fn seal(body: &str, key: Option<&[u8]>) -> (String, String) {
    let hash = hash_of(body);
    let open = body.strip_suffix('}').unwrap_or(body);
    let line = match key {
        Some(k) => format!(
            "{open}{HASH_FIELD}{hash}{MAC_FIELD}{}\"}}",
            mac_of(k, &hash)
        ),
        None => format!("{open}{HASH_FIELD}{hash}\"}}"),
    };
    (line, hash)
}

/// Splits a line into its body and the hash (and MAC) it claims; `None`
/// when the line does not have the sealed shape.
pub fn unseal(line: &str) -> Option<Sealed<'_>> {
    let at = line.rfind(HASH_FIELD)?;
    let tail = line[at + HASH_FIELD.len()..].strip_suffix("\"}")?;
    let (hash, mac) = match tail.split_once(MAC_FIELD) {
        Some((h, m)) => (h, Some(m)),
        None => (tail, None),
    };
    let is_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex(hash) || !mac.is_none_or(is_hex) {
        return None;
    }
    Some(Sealed {
        body: format!("{}}}", &line[..at]),
        hash,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lines_open_to_their_body() {
        let body = r#"{"seq":0,"kind":"start","prev":"00"}"#;
        for key in [None, Some(&b"0123456789abcdef"[..])] {
            let (line, hash) = seal(body, key);
            let s = unseal(&line).expect("sealed shape");
            assert_eq!(s.body, body);
            assert_eq!(s.hash, hash);
            assert_eq!(hash, hash_of(body));
            assert_eq!(s.mac.map(String::from), key.map(|k| mac_of(k, &hash)));
            serde_json::from_str::<serde_json::Value>(&line).expect("a JSON line");
        }
    }

    #[test]
    fn known_sha256() {
        assert_eq!(
            hash_of("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_lines_do_not_open() {
        assert_eq!(unseal(r#"{"seq":1}"#), None);
        assert_eq!(unseal(r#"{"seq":1,"hash":"abc"}"#), None);
    }
}
