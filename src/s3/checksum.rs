//! How the server is asked to check the bytes of an upload.
//!
//! Every PutObject and UploadPart body carries a digest the server
//! recomputes and compares, so a body damaged anywhere between our buffer
//! and the server's disk is refused instead of stored. Two digests are
//! understood by every S3-compatible store we target, B2 included (which
//! refuses the newer `x-amz-checksum-*` headers):
//!
//! - `Content-MD5`, the classic one;
//! - the payload's SHA-256 as `x-amz-content-sha256`, which SigV4 signs, so
//!   the server must hash the body to check the signature.
//!
//! Which is cheaper depends on the CPU: MD5 runs at ~450 MiB/s per core
//! and cannot use hardware help; SHA-256 runs at ~1.4 GiB/s where the CPU
//! has SHA instructions (x86 SHA-NI, ARMv8 SHA2) and at ~300 MiB/s where it
//! does not. On a 2-core machine writing at 200 MiB/s, MD5 alone was half
//! of the daemon's CPU time. `auto` picks the faster one for this CPU.
//! `off` relies on TLS alone (its record MACs protect the bytes on the
//! wire, not in the client's or server's memory).

use bytes::Bytes;
use md5::{Digest, Md5};
use sha2::Sha256;

/// The digest sent with uploaded bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadChecksum {
    Md5,
    Sha256,
    Off,
}

impl UploadChecksum {
    /// SHA-256 where this CPU computes it in hardware, else MD5.
    pub fn fastest() -> Self {
        if sha_in_hardware() {
            UploadChecksum::Sha256
        } else {
            UploadChecksum::Md5
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UploadChecksum::Md5 => "md5",
            UploadChecksum::Sha256 => "sha256",
            UploadChecksum::Off => "off",
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn sha_in_hardware() -> bool {
    std::arch::is_x86_feature_detected!("sha")
}

#[cfg(target_arch = "aarch64")]
fn sha_in_hardware() -> bool {
    std::arch::is_aarch64_feature_detected!("sha2")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn sha_in_hardware() -> bool {
    false
}

/// The digest of one body, as it goes into the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyDigest {
    /// Sent as `Content-MD5`; also compared with the returned ETag.
    pub md5: Option<[u8; 16]>,
    /// Sent (hex) as the signed `x-amz-content-sha256`.
    pub sha256_hex: Option<String>,
}

/// Bodies at least this large are hashed on a blocking thread: 8 MiB of MD5
/// takes ~17 ms, long enough to stall the FUSE requests sharing a worker.
const HASH_OFF_WORKER: usize = 256 * 1024;

impl BodyDigest {
    pub(crate) fn compute(kind: UploadChecksum, body: &[u8]) -> Self {
        match kind {
            UploadChecksum::Md5 => BodyDigest {
                md5: Some(Md5::digest(body).into()),
                sha256_hex: None,
            },
            UploadChecksum::Sha256 => BodyDigest {
                md5: None,
                sha256_hex: Some(hex(&Sha256::digest(body))),
            },
            UploadChecksum::Off => BodyDigest::default(),
        }
    }

    /// `compute`, off the async workers for large bodies.
    pub(crate) async fn of(kind: UploadChecksum, body: &Bytes) -> Self {
        if kind == UploadChecksum::Off || body.len() < HASH_OFF_WORKER {
            return Self::compute(kind, body);
        }
        let body = body.clone(); // shares the buffer, copies nothing
        match tokio::task::spawn_blocking(move || Self::compute(kind, &body)).await {
            Ok(digest) => digest,
            // Only a panic in the hash (or a runtime shutting down) gets
            // here; an unchecked upload is still a correct one.
            Err(e) => {
                tracing::warn!("cannot hash an upload body: {e}");
                BodyDigest::default()
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_the_standard_ones() {
        let md5 = BodyDigest::compute(UploadChecksum::Md5, b"abc");
        assert_eq!(hex(&md5.md5.unwrap()), "900150983cd24fb0d6963f7d28e17f72");
        assert!(md5.sha256_hex.is_none());
        let sha = BodyDigest::compute(UploadChecksum::Sha256, b"abc");
        assert_eq!(
            sha.sha256_hex.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(sha.md5.is_none());
        let off = BodyDigest::compute(UploadChecksum::Off, b"abc");
        assert!(off.md5.is_none() && off.sha256_hex.is_none());
    }

    #[tokio::test]
    async fn large_bodies_hash_the_same_off_the_workers() {
        let body = Bytes::from(vec![7u8; HASH_OFF_WORKER + 1]);
        for kind in [UploadChecksum::Md5, UploadChecksum::Sha256] {
            let inline = BodyDigest::compute(kind, &body);
            let off = BodyDigest::of(kind, &body).await;
            assert_eq!(inline.md5, off.md5);
            assert_eq!(inline.sha256_hex, off.sha256_hex);
        }
    }
}
