//! Encoding of keys and parameters into request URLs, and decoding of keys
//! that listings return URL-encoded.
//!
//! S3's canonical form percent-encodes every byte except the unreserved
//! characters `A-Z a-z 0-9 - _ . ~` (and `/` in a key path). We send exactly
//! that form, so the URL on the wire and the one that was signed agree for any
//! key: spaces, `+`, `%`, `?`, `#`, unicode, trailing `/`.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// As `QUERY`, but `/` separates path segments and stays literal.
const PATH: &AsciiSet = &QUERY.remove(b'/');

/// Percent-encode a key for the request path.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, PATH).to_string()
}

/// Percent-encode a query parameter name or value.
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY).to_string()
}

/// Build a query string from parameters. A parameter without a value (such
/// as `uploads` or `delete`) is written as `name=`, which S3 and the signer
/// treat the same as a bare `name`.
pub fn query_string(params: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, value) in params {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode_query_value(name));
        out.push('=');
        out.push_str(&encode_query_value(value));
    }
    out
}

/// Whether a key can be addressed in a request path at all. URL parsers
/// resolve `.` and `..` segments (also in their `%2E` forms), so a request
/// for `a/../b` would reach `b`. Such keys are listed and can be deleted in a
/// batch, but never read or written by path.
pub fn key_is_addressable(key: &str) -> bool {
    !key.split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// Decode a key from a listing made with `encoding-type=url`. S3 encodes
/// these as HTML forms do (space as `+`), so `+` must become a space before
/// percent-decoding. Returns `None` for a value that does not decode to
/// UTF-8; the caller skips such an entry rather than guess.
pub fn decode_listed_key(value: &str) -> Option<String> {
    // A `%` not followed by two hex digits is not URL encoding: S3 never
    // sends one, and passing it through would show a name whose key does
    // not exist.
    let bytes = value.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    let spaced = value.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_decode_only_when_well_formed() {
        assert_eq!(decode_listed_key("a+b%2Bc%25").as_deref(), Some("a b+c%"));
        assert_eq!(decode_listed_key("%ZZbad"), None);
        assert_eq!(decode_listed_key("trailing%2"), None);
        assert_eq!(decode_listed_key("%FF"), None, "not UTF-8");
    }

    #[test]
    fn keys_are_encoded_as_s3_canonicalises_them() {
        assert_eq!(encode_key("a b/c+d%e?f#g"), "a%20b/c%2Bd%25e%3Ff%23g");
        assert_eq!(encode_key("dir/"), "dir/");
        assert_eq!(
            encode_key("ünï/çødé.txt"),
            "%C3%BCn%C3%AF/%C3%A7%C3%B8d%C3%A9.txt"
        );
        assert_eq!(encode_key("~a-b_c.d"), "~a-b_c.d");
        assert_eq!(encode_query_value("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn dot_segments_are_not_addressable() {
        assert!(key_is_addressable("a/b..c/.d"));
        assert!(!key_is_addressable("a/../b"));
        assert!(!key_is_addressable("./x"));
        assert!(!key_is_addressable("x/."));
    }

    #[test]
    fn listed_keys_decode_plus_as_space() {
        assert_eq!(decode_listed_key("a+b%2Bc%20d").as_deref(), Some("a b+c d"));
        assert_eq!(decode_listed_key("%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(decode_listed_key("%01ctl").as_deref(), Some("\u{1}ctl"));
        assert_eq!(decode_listed_key("%FF%FE"), None);
    }
}
