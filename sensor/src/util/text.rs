//! Text the kernel hands over in fixed-size buffers.

/// The bytes up to the first NUL, invalid UTF-8 replaced (a command name,
/// a path component).
pub fn c_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_at_nul_and_lossy() {
        assert_eq!(c_string(b"ab\0cd"), "ab");
        assert_eq!(c_string(&[0x66, 0xff, 0x67]), "f\u{fffd}g");
        assert_eq!(c_string(b"full"), "full");
    }
}
