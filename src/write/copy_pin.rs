//! Whether a part copied server-side surely comes from the version a file
//! was opened on.
//!
//! A save copies the unchanged parts of a file from its base object
//! (UploadPartCopy). On a bucket that keeps versions the copy names the
//! base's version id, and nothing another client does can change those
//! bytes. On a bucket that keeps none, only `x-amz-copy-source-if-match`
//! pins them, and not every server honours it: B2 does (FACTS.md), moto
//! ignores it. There, a copy made while another client replaces the
//! object would take the other writer's bytes, and the save would store a
//! mix of two files.
//!
//! So the first save that would copy a part without a version id asks the
//! server: it copies one byte of the base into that very part with an ETag
//! that cannot match. A 412 shows the header honoured. A success shows it
//! ignored, and from then on such parts are read instead (GET with
//! `If-Match`, which servers do honour) and uploaded: the save fails with
//! `ESTALE` rather than mix. The probe's one-byte part is replaced by the
//! real one, so nothing of it is ever visible. The answer is kept for the
//! life of the mount and logged once; a probe that fails otherwise (a 503
//! after retries, a vanished base) decides nothing, and that save reads
//! its parts, which is always safe.

use std::ops::Range;

use tokio::sync::OnceCell;

use crate::s3::{CopySource, UploadId};
use crate::store::Store;

/// An ETag no object has: the MD5 of nothing is d41d8cd9…, and no MD5 is
/// thirty-two zeros that anyone has found.
const NEVER_MATCHES: &str = "00000000000000000000000000000000";

/// What this mount knows of the server's `x-amz-copy-source-if-match`.
pub struct CopyPin {
    honoured: OnceCell<bool>,
}

impl CopyPin {
    /// `known`: what the store says before any request (B2: honoured).
    pub fn new(known: Option<bool>) -> Self {
        CopyPin {
            honoured: OnceCell::new_with(known),
        }
    }

    /// Whether parts of `source` (which has no version id) may be copied
    /// server-side. The first call probes with one byte of `range` into
    /// part `part_number` of `upload_id`, which the caller then uploads for
    /// real.
    pub async fn copies_are_pinned(
        &self,
        store: &Store,
        key: &str,
        upload_id: &UploadId,
        part_number: u32,
        source: &CopySource,
        range: &Range<u64>,
    ) -> bool {
        if source.if_match.is_none() {
            return false;
        }
        let probe = CopySource {
            key: source.key.clone(),
            version_id: None,
            if_match: Some(NEVER_MATCHES.to_owned()),
        };
        let answer = self
            .honoured
            .get_or_try_init(|| async {
                let one_byte = range.start..range.start + 1;
                match store
                    .upload_part_copy(key, upload_id, part_number, &probe, one_byte)
                    .await
                {
                    Err(e) if e.is_precondition_failed() => {
                        tracing::info!(
                            "the server honours x-amz-copy-source-if-match: unchanged parts \
                             are copied server-side, pinned to the version a file was opened on"
                        );
                        Ok(true)
                    }
                    Ok(_) => {
                        tracing::warn!(
                            "the server ignores x-amz-copy-source-if-match and this bucket keeps \
                             no versions: unchanged parts of a saved file are read and uploaded \
                             again instead of copied server-side, so that a save racing another \
                             writer fails with ESTALE instead of storing a mix of both files"
                        );
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        match answer {
            Ok(honoured) => *honoured,
            Err(e) => {
                tracing::debug!("the copy-condition probe failed ({e}); this save reads its parts");
                false
            }
        }
    }
}
