//! Server-side encryption settings and their request headers.
//!
//! SSE-S3 / SSE-B2 (`x-amz-server-side-encryption: AES256`) is asked for on
//! writes only. SSE-C sends the customer key with every request that reads or
//! writes object data, and again as the copy source's key on copies. The key
//! is a secret: it is held in a `SecretString` and never printed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::{Digest, Md5};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

/// How objects are encrypted at rest.
#[derive(Clone, Default)]
pub enum ServerSideEncryption {
    /// Whatever the bucket's default is.
    #[default]
    BucketDefault,
    /// Server-managed keys (SSE-S3 on AWS, SSE-B2 on Backblaze).
    ServerManaged,
    /// A key the customer supplies with every request (SSE-C).
    Customer(SseCustomerKey),
}

impl std::fmt::Debug for ServerSideEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BucketDefault => f.write_str("BucketDefault"),
            Self::ServerManaged => f.write_str("ServerManaged"),
            Self::Customer(_) => f.write_str("Customer([REDACTED])"),
        }
    }
}

/// A 256-bit SSE-C key, kept base64-encoded as the headers need it.
#[derive(Clone)]
pub struct SseCustomerKey {
    key_base64: SecretString,
    key_md5_base64: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SseKeyError {
    #[error("cannot read SSE-C key file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("SSE-C key file {0} is accessible by group or others; run `chmod 600` on it")]
    TooOpen(String),
    #[error("SSE-C key file {0} must hold a 32-byte key, raw or base64-encoded")]
    BadLength(String),
}

impl SseCustomerKey {
    pub fn from_bytes(key: &[u8; 32]) -> Self {
        SseCustomerKey {
            key_base64: SecretString::from(BASE64.encode(key)),
            key_md5_base64: BASE64.encode(Md5::digest(key)),
        }
    }

    /// Read a key file: exactly 32 raw bytes, or their base64 text.
    pub fn from_file(path: &Path) -> Result<Self, SseKeyError> {
        let shown = path.display().to_string();
        let unreadable = |source| SseKeyError::Unreadable {
            path: shown.clone(),
            source,
        };
        let meta = fs::metadata(path).map_err(unreadable)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(SseKeyError::TooOpen(shown));
        }
        let raw = fs::read(path).map_err(unreadable)?;
        let key: Vec<u8> = if raw.len() == 32 {
            raw
        } else {
            let text = String::from_utf8_lossy(&raw);
            BASE64
                .decode(text.trim())
                .map_err(|_| SseKeyError::BadLength(shown.clone()))?
        };
        let key: [u8; 32] = key.try_into().map_err(|_| SseKeyError::BadLength(shown))?;
        Ok(Self::from_bytes(&key))
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str, sensitive: bool) {
    // Base64 text and fixed strings are always valid header values.
    if let Ok(mut v) = HeaderValue::from_str(value) {
        v.set_sensitive(sensitive);
        headers.insert(HeaderName::from_static(name), v);
    }
}

impl ServerSideEncryption {
    /// Headers for a request that creates object data (PutObject,
    /// CreateMultipartUpload, CopyObject's destination).
    pub(crate) fn apply_for_write(&self, headers: &mut HeaderMap) {
        match self {
            Self::BucketDefault => {}
            Self::ServerManaged => insert(headers, "x-amz-server-side-encryption", "AES256", false),
            Self::Customer(key) => key.apply(headers),
        }
    }

    /// Headers for a request that reads or appends object data (GetObject,
    /// HeadObject, UploadPart). Only SSE-C needs any.
    pub(crate) fn apply_for_access(&self, headers: &mut HeaderMap) {
        if let Self::Customer(key) = self {
            key.apply(headers);
        }
    }

    /// Headers naming the key of a copy's source object.
    pub(crate) fn apply_for_copy_source(&self, headers: &mut HeaderMap) {
        if let Self::Customer(key) = self {
            insert(
                headers,
                "x-amz-copy-source-server-side-encryption-customer-algorithm",
                "AES256",
                false,
            );
            insert(
                headers,
                "x-amz-copy-source-server-side-encryption-customer-key",
                key.key_base64.expose_secret(),
                true,
            );
            insert(
                headers,
                "x-amz-copy-source-server-side-encryption-customer-key-md5",
                &key.key_md5_base64,
                false,
            );
        }
    }

    /// Whether returned ETags are MD5s of the data (not under SSE-C).
    pub(crate) fn etag_is_md5(&self) -> bool {
        !matches!(self, Self::Customer(_))
    }
}

impl SseCustomerKey {
    fn apply(&self, headers: &mut HeaderMap) {
        insert(
            headers,
            "x-amz-server-side-encryption-customer-algorithm",
            "AES256",
            false,
        );
        insert(
            headers,
            "x-amz-server-side-encryption-customer-key",
            self.key_base64.expose_secret(),
            true,
        );
        insert(
            headers,
            "x-amz-server-side-encryption-customer-key-md5",
            &self.key_md5_base64,
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn key_file_accepts_raw_and_base64_and_never_shows_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        fs::File::create(&raw)
            .unwrap()
            .write_all(&[7u8; 32])
            .unwrap();
        fs::set_permissions(&raw, fs::Permissions::from_mode(0o600)).unwrap();
        let b64 = dir.path().join("b64");
        writeln!(
            fs::File::create(&b64).unwrap(),
            "{}",
            BASE64.encode([7u8; 32])
        )
        .unwrap();
        fs::set_permissions(&b64, fs::Permissions::from_mode(0o600)).unwrap();
        let a = SseCustomerKey::from_file(&raw).unwrap();
        let b = SseCustomerKey::from_file(&b64).unwrap();
        assert_eq!(a.key_md5_base64, b.key_md5_base64);
        let sse = ServerSideEncryption::Customer(a);
        assert_eq!(format!("{sse:?}"), "Customer([REDACTED])");
        let mut headers = HeaderMap::new();
        sse.apply_for_copy_source(&mut headers);
        assert!(headers["x-amz-copy-source-server-side-encryption-customer-key"].is_sensitive());
    }

    #[test]
    fn key_file_with_wrong_length_or_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        fs::write(&short, b"too short").unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            SseCustomerKey::from_file(&short),
            Err(SseKeyError::BadLength(_))
        ));
        fs::set_permissions(&short, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SseCustomerKey::from_file(&short),
            Err(SseKeyError::TooOpen(_))
        ));
    }
}
