//! How the server is asked to check the bytes of an upload.
//!
//! Every PutObject and UploadPart body carries a digest the server
//! recomputes and compares, so a body damaged anywhere between our buffer
//! and the server's disk is refused instead of stored. Three digests:
//!
//! - `x-amz-checksum-crc32c`, S3's newer checksum header (AWS, Garage,
//!   MinIO, Ceph): a CRC the CPU computes in hardware at several GiB/s, on
//!   both ends. B2 refuses these headers, and some servers ignore them.
//! - the payload's SHA-256 as `x-amz-content-sha256`, which SigV4 signs, so
//!   the server must hash the body to check the signature: ~1.4 GiB/s
//!   where the CPU has SHA instructions (x86 SHA-NI, ARMv8 SHA2), ~300
//!   MiB/s where it does not; the server pays as much again.
//! - `Content-MD5`, the classic one: ~450 MiB/s, no hardware help.
//!
//! `auto` sends CRC32C, except to B2, and checks that the server answers
//! with the CRC it verified; a server that does not (it ignored the
//! header) or that refuses the header gets the faster of SHA-256 and MD5
//! for the rest of the mount. On a 2-core machine writing through a local
//! server, SHA-256 cost 1.3 CPU-seconds per GiB (ours and the server's)
//! and CRC32C ~0.1. `off` relies on TLS alone (its record MACs protect the
//! bytes on the wire, not in the client's or server's memory).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use bytes::Bytes;
use md5::{Digest, Md5};
use sha2::Sha256;

/// The digest sent with uploaded bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadChecksum {
    Crc32c,
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
            UploadChecksum::Crc32c => "crc32c",
            UploadChecksum::Md5 => "md5",
            UploadChecksum::Sha256 => "sha256",
            UploadChecksum::Off => "off",
        }
    }
}

/// The digest uploads carry now: fixed, or CRC32C until the server shows
/// it does not check it (see the module comment).
#[derive(Debug)]
pub(crate) struct ChecksumChoice {
    current: AtomicU8,
    /// Where `auto` goes when the server does not check CRC32C.
    fallback: Option<UploadChecksum>,
    warned: AtomicBool,
}

impl ChecksumChoice {
    /// `None` is `auto`: CRC32C unless `b2`, with a fallback.
    pub(crate) fn new(setting: Option<UploadChecksum>, b2: bool) -> Self {
        let (first, fallback) = match setting {
            Some(kind) => (kind, None),
            None if b2 => (UploadChecksum::fastest(), None),
            None => (UploadChecksum::Crc32c, Some(UploadChecksum::fastest())),
        };
        tracing::debug!("uploads carry {} digests", first.name());
        ChecksumChoice {
            current: AtomicU8::new(first as u8),
            fallback,
            warned: AtomicBool::new(false),
        }
    }

    pub(crate) fn current(&self) -> UploadChecksum {
        match self.current.load(Ordering::Relaxed) {
            x if x == UploadChecksum::Crc32c as u8 => UploadChecksum::Crc32c,
            x if x == UploadChecksum::Md5 as u8 => UploadChecksum::Md5,
            x if x == UploadChecksum::Sha256 as u8 => UploadChecksum::Sha256,
            _ => UploadChecksum::Off,
        }
    }

    /// An upload that carried a CRC32C was answered without one: the
    /// server stored the body without checking it. Returns whether the
    /// choice changed.
    pub(crate) fn crc32c_unconfirmed(&self) -> bool {
        self.leave_crc32c("did not confirm checking")
    }

    /// The server refused a request for its CRC32C header. Returns whether
    /// the choice changed (and the request is worth sending again).
    pub(crate) fn crc32c_refused(&self) -> bool {
        self.leave_crc32c("refused")
    }

    fn leave_crc32c(&self, why: &str) -> bool {
        match self.fallback {
            Some(next) => {
                let changed = self
                    .current
                    .compare_exchange(
                        UploadChecksum::Crc32c as u8,
                        next as u8,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok();
                if changed {
                    tracing::warn!(
                        "the server {why} the x-amz-checksum-crc32c of an upload; uploads carry {} digests from now on",
                        next.name()
                    );
                }
                changed
            }
            None => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the server {why} the x-amz-checksum-crc32c of an upload (upload_checksum=crc32c): uploads may not be checked"
                    );
                }
                false
            }
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
    /// Sent (base64, big-endian) as `x-amz-checksum-crc32c`.
    pub crc32c: Option<u32>,
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
            UploadChecksum::Crc32c => BodyDigest {
                crc32c: Some(crc32c::crc32c(body)),
                ..Default::default()
            },
            UploadChecksum::Md5 => BodyDigest {
                md5: Some(Md5::digest(body).into()),
                ..Default::default()
            },
            UploadChecksum::Sha256 => BodyDigest {
                sha256_hex: Some(hex(&Sha256::digest(body))),
                ..Default::default()
            },
            UploadChecksum::Off => BodyDigest::default(),
        }
    }

    /// The CRC32C as S3 writes it: base64 of the four big-endian bytes.
    pub(crate) fn crc32c_base64(&self) -> Option<String> {
        use base64::Engine;
        self.crc32c
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c.to_be_bytes()))
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

/// Lower-case hex of a digest, as ETags and signed payloads spell it.
pub(crate) fn hex(bytes: &[u8]) -> String {
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
        let crc = BodyDigest::compute(UploadChecksum::Crc32c, b"abc");
        assert_eq!(crc.crc32c, Some(0x364b_3fb7));
        assert_eq!(crc.crc32c_base64().as_deref(), Some("Nks/tw=="));
        assert!(crc.md5.is_none() && crc.sha256_hex.is_none());
        let off = BodyDigest::compute(UploadChecksum::Off, b"abc");
        assert!(off.md5.is_none() && off.sha256_hex.is_none() && off.crc32c.is_none());
    }

    #[test]
    fn auto_leaves_crc32c_once_for_a_server_that_does_not_check_it() {
        let auto = ChecksumChoice::new(None, false);
        assert_eq!(auto.current(), UploadChecksum::Crc32c);
        assert!(auto.crc32c_unconfirmed());
        assert_eq!(auto.current(), UploadChecksum::fastest());
        assert!(!auto.crc32c_refused(), "already left");
        // B2 refuses the header: never tried there.
        assert_eq!(
            ChecksumChoice::new(None, true).current(),
            UploadChecksum::fastest()
        );
        // A choice the user made stays.
        let fixed = ChecksumChoice::new(Some(UploadChecksum::Crc32c), false);
        assert!(!fixed.crc32c_refused());
        assert_eq!(fixed.current(), UploadChecksum::Crc32c);
    }

    #[tokio::test]
    async fn large_bodies_hash_the_same_off_the_workers() {
        let body = Bytes::from(vec![7u8; HASH_OFF_WORKER + 1]);
        for kind in [
            UploadChecksum::Crc32c,
            UploadChecksum::Md5,
            UploadChecksum::Sha256,
        ] {
            let inline = BodyDigest::compute(kind, &body);
            let off = BodyDigest::of(kind, &body).await;
            assert_eq!(inline.md5, off.md5);
            assert_eq!(inline.sha256_hex, off.sha256_hex);
            assert_eq!(inline.crc32c, off.crc32c);
        }
    }
}
