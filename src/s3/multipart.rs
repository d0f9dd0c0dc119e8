//! Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy,
//! CompleteMultipartUpload, AbortMultipartUpload and ListParts.
//!
//! Parts are numbered 1..=10,000; every part but the last must be at least
//! 5 MiB (B2: 5 MB). Choosing part sizes is the writer's job, not this
//! module's.

use std::ops::Range;

use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::Method;

use super::checksum::UploadChecksum;
use super::client::{Request, S3Client};
use super::error::S3Error;
use super::types::*;
use super::xml::{self, unquote_etag};
use crate::store::ObjectStore;

/// Highest part number S3 accepts.
pub const MAX_PARTS: u32 = 10_000;

/// Largest object one CopyObject may copy (S3 and B2: 5 GiB).
pub const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;

fn check_part_number(op: &'static str, key: &str, n: u32) -> Result<(), S3Error> {
    if (1..=MAX_PARTS).contains(&n) {
        Ok(())
    } else {
        Err(S3Error::invalid_request(
            op,
            Some(key),
            format!("part number {n} is outside 1..=10000"),
        ))
    }
}

/// The ETag S3 gives an object made of these parts: the MD5 of their
/// concatenated binary MD5s, then `-` and the number of parts. `None` when a
/// part's ETag is not an MD5 (SSE-C, some servers).
pub fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    let mut all = Vec::with_capacity(parts.len() * 16);
    for part in parts {
        let hex = part.etag.as_bytes();
        if hex.len() != 32 {
            return None;
        }
        for pair in hex.chunks(2) {
            let text = std::str::from_utf8(pair).ok()?;
            all.push(u8::from_str_radix(text, 16).ok()?);
        }
    }
    let digest = super::checksum::hex(&Md5::digest(&all));
    Some(format!("{digest}-{}", parts.len()))
}

impl S3Client {
    /// Copy `source` to `dest` server-side whatever its size (see
    /// `ObjectStore::copy`).
    pub async fn copy(
        &self,
        source: &CopySource,
        dest: &str,
        size: u64,
        directive: &MetadataDirective,
    ) -> Result<crate::store::Copied, S3Error> {
        ObjectStore::copy(self, source, dest, size, directive).await
    }

    /// Start a multipart upload; `options` are the final object's metadata.
    /// Where uploads carry CRC32Cs, the upload is created with that
    /// checksum (S3 refuses parts carrying one the upload was not created
    /// with).
    pub async fn create_multipart_upload(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> Result<UploadId, S3Error> {
        loop {
            let crc32c = self.upload_checksum() == UploadChecksum::Crc32c;
            let mut req =
                Request::new("CreateMultipartUpload", Method::POST, Some(key)).query("uploads", "");
            req = req.put_options(options)?;
            if crc32c {
                req = req.header("x-amz-checksum-algorithm", "CRC32C")?;
            }
            self.sse().apply_for_write(&mut req.headers);
            match self.send(&req).await {
                Ok((_, _, body)) => return req.parse(&body, xml::parse_initiate_multipart),
                Err(e) if crc32c && self.refused_crc32c(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Upload one part, with the digest the server checks (see
    /// `send_upload`).
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &UploadId,
        part_number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, S3Error> {
        check_part_number("UploadPart", key, part_number)?;
        let (headers, digest) = self
            .send_upload(&body, |digest| {
                let mut req = Request::new("UploadPart", Method::PUT, Some(key))
                    .query("partNumber", part_number.to_string())
                    .query("uploadId", upload_id.0.clone())
                    .body_with_digest(body.clone(), digest);
                self.sse().apply_for_access(&mut req.headers);
                Ok(req)
            })
            .await?;
        let etag = headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(unquote_etag)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                S3Error::invalid_response("UploadPart", Some(key), "no ETag for the part")
            })?;
        self.check_etag("UploadPart", key, &etag, &digest);
        Ok(CompletedPart {
            part_number,
            etag,
            checksum_crc32c: digest.crc32c_base64(),
        })
    }

    /// Copy a byte range of an existing object into a part, server-side.
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &UploadId,
        part_number: u32,
        source: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart, S3Error> {
        check_part_number("UploadPartCopy", key, part_number)?;
        if range.start >= range.end {
            return Err(S3Error::invalid_request(
                "UploadPartCopy",
                Some(key),
                "empty source range",
            ));
        }
        let mut req = Request::new("UploadPartCopy", Method::PUT, Some(key))
            .query("partNumber", part_number.to_string())
            .query("uploadId", upload_id.0.clone())
            .header(
                "x-amz-copy-source",
                &self.copy_source_header(&source.key, source.version_id.as_deref()),
            )?
            .header(
                "x-amz-copy-source-range",
                &format!("bytes={}-{}", range.start, range.end - 1),
            )?;
        self.sse().apply_for_access(&mut req.headers);
        if let Some(etag) = &source.if_match {
            req = req.header("x-amz-copy-source-if-match", &format!("\"{etag}\""))?;
        }
        self.sse().apply_for_copy_source(&mut req.headers);
        let (_, _, body) = self.send(&req).await?;
        let (etag, checksum_crc32c) = req.parse(&body, xml::parse_copy_part_result)?;
        Ok(CompletedPart {
            part_number,
            etag,
            checksum_crc32c,
        })
    }

    /// Complete an upload from its parts (in ascending part order).
    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &UploadId,
        parts: &[CompletedPart],
    ) -> Result<PutObjectOutput, S3Error> {
        if parts.is_empty()
            || parts
                .windows(2)
                .any(|w| w[0].part_number >= w[1].part_number)
        {
            return Err(S3Error::invalid_request(
                "CompleteMultipartUpload",
                Some(key),
                "parts must be non-empty and in ascending order",
            ));
        }
        let req = Request::new("CompleteMultipartUpload", Method::POST, Some(key))
            .query("uploadId", upload_id.0.clone())
            .body_with_md5(Bytes::from(xml::complete_multipart_body(parts)));
        let (_, headers, body) = match self.send(&req).await {
            Ok(answer) => answer,
            // A retry after a first attempt that completed but whose answer
            // was lost finds the upload gone. If the object now is exactly
            // what these parts make, the upload did complete.
            Err(e) if e.code() == Some("NoSuchUpload") && e.attempts > 1 => {
                let expected = multipart_etag(parts);
                return match self.head_object(key, None).await {
                    Ok(meta) if expected.as_deref() == Some(meta.etag.as_str()) => {
                        tracing::info!(
                            key,
                            "upload completed on an earlier attempt whose answer was lost"
                        );
                        Ok(PutObjectOutput {
                            etag: meta.etag,
                            version_id: meta.version_id,
                        })
                    }
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let (etag, _) = req.parse(&body, |t| {
            xml::parse_etag_result(t, "CompleteMultipartUploadResult")
        })?;
        Ok(PutObjectOutput {
            etag,
            version_id: headers
                .get("x-amz-version-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| *v != "null")
                .map(str::to_owned),
        })
    }

    /// Abort an upload and free its parts. Aborting one that is already gone
    /// (404 NoSuchUpload) counts as done.
    pub async fn abort_multipart_upload(
        &self,
        key: &str,
        upload_id: &UploadId,
    ) -> Result<(), S3Error> {
        let req = Request::new("AbortMultipartUpload", Method::DELETE, Some(key))
            .query("uploadId", upload_id.0.clone());
        match self.send(&req).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every part uploaded so far, following pagination.
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &UploadId,
    ) -> Result<Vec<PartInfo>, S3Error> {
        let mut marker: Option<u32> = None;
        let mut all = Vec::new();
        loop {
            let mut req = Request::new("ListParts", Method::GET, Some(key))
                .query("uploadId", upload_id.0.clone());
            if let Some(m) = marker {
                req = req.query("part-number-marker", m.to_string());
            }
            let (_, _, body) = self.send(&req).await?;
            let (parts, next) = req.parse(&body, xml::parse_list_parts)?;
            all.extend(parts);
            match next {
                Some(n) if Some(n) != marker => marker = Some(n),
                Some(_) => {
                    return Err(S3Error::invalid_response(
                        req.op,
                        Some(key),
                        "same part marker twice",
                    ))
                }
                None => return Ok(all),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etags_are_computed_as_s3_does() {
        // Two parts whose MD5s are those of "a" and "b".
        let parts = [
            CompletedPart {
                part_number: 1,
                etag: "0cc175b9c0f1b6a831c399e269772661".into(),
                checksum_crc32c: None,
            },
            CompletedPart {
                part_number: 2,
                etag: "92eb5ffee6ae2fec3ad71c777531578f".into(),
                checksum_crc32c: None,
            },
        ];
        let etag = multipart_etag(&parts).unwrap();
        assert!(etag.ends_with("-2") && etag.len() == 34, "{etag}");
        let odd = [CompletedPart {
            part_number: 1,
            etag: "not-an-md5".into(),
            checksum_crc32c: None,
        }];
        assert_eq!(multipart_etag(&odd), None);
    }
}
