//! Object operations: HeadObject, GetObject, PutObject, CopyObject,
//! DeleteObject and DeleteObjects.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

use super::checksum::{hex, BodyDigest, UploadChecksum};
use super::client::{transport_error_for, Request, S3Client, CRC32C_HEADER};
use super::error::{ErrorKind, S3Error};
use super::server_caps::{refuses_condition_header, Support};
use super::types::*;
use super::xml::{self, parse_timestamp, unquote_etag};
use crate::store::ObjectStore;

/// DeleteObjects takes at most this many keys per request.
pub const DELETE_BATCH: usize = 1000;

use super::client::META_PREFIX;

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Read object metadata from response headers. `size` is the whole object's
/// size, which the caller works out (Content-Length or Content-Range).
fn meta_from_headers(headers: &HeaderMap, size: u64) -> ObjectMeta {
    let mut user_metadata = BTreeMap::new();
    for (name, value) in headers {
        if let Some(meta_name) = name.as_str().strip_prefix(META_PREFIX) {
            user_metadata.insert(
                meta_name.to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
    }
    ObjectMeta {
        size,
        etag: header_str(headers, "etag")
            .map(unquote_etag)
            .unwrap_or_default(),
        last_modified: header_str(headers, "last-modified")
            .and_then(parse_timestamp)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        content_type: header_str(headers, "content-type").map(str::to_owned),
        version_id: header_str(headers, "x-amz-version-id")
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_owned),
        user_metadata,
        content_headers: CONTENT_HEADERS
            .iter()
            .filter_map(|name| Some((*name, header_str(headers, name)?.to_owned())))
            .collect(),
    }
}

/// Parse `Content-Range: bytes START-END/TOTAL` into `(START..END+1, TOTAL)`.
fn parse_content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = end.parse().ok()?;
    let total: u64 = total.parse().ok()?;
    (start <= end && end < total).then(|| (start..end + 1, total))
}

impl S3Client {
    /// HeadObject: the metadata of an object (or of one version of it).
    pub async fn head_object(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectMeta, S3Error> {
        let mut req = Request::new("HeadObject", Method::HEAD, Some(key));
        if let Some(v) = version_id {
            req = req.query("versionId", v);
        }
        self.sse().apply_for_access(&mut req.headers);
        let (_, headers, _) = self.send(&req).await?;
        let size = header_str(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| S3Error::invalid_response(req.op, Some(key), "no Content-Length"))?;
        Ok(meta_from_headers(&headers, size))
    }

    /// GetObject with a streaming body. If the connection breaks mid-body,
    /// the stream resumes with a ranged GET from the byte it reached,
    /// conditioned on the same ETag so the bytes cannot come from a newer
    /// object.
    pub async fn get_object(
        &self,
        key: &str,
        request: GetRequest,
    ) -> Result<GetObjectOutput, S3Error> {
        let op = "GetObject";
        let req = self.get_request(key, &request)?;
        let response = self.send_streaming(&req).await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(GetObjectOutput::NotModified);
        }
        let headers = response.headers();
        let length: u64 = header_str(headers, "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| S3Error::invalid_response(op, Some(key), "no Content-Length"))?;
        let (range, total) = if response.status() == StatusCode::PARTIAL_CONTENT {
            header_str(headers, "content-range")
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    S3Error::invalid_response(op, Some(key), "206 without a valid Content-Range")
                })?
        } else {
            (0..length, length)
        };
        if range.end - range.start != length {
            return Err(S3Error::invalid_response(
                op,
                Some(key),
                "Content-Length does not match Content-Range",
            ));
        }
        let meta = meta_from_headers(headers, total);
        let body = ResumingBody {
            client: self.clone(),
            key: key.to_owned(),
            version_id: request
                .version_id
                .clone()
                .or_else(|| meta.version_id.clone()),
            etag: meta.etag.clone(),
            next: range.start,
            end: range.end,
            resumes_left: RESUMES,
        }
        .into_stream(response);
        Ok(GetObjectOutput::Body { meta, range, body })
    }

    /// GetObject of a whole object or range into memory.
    pub async fn get_object_bytes(
        &self,
        key: &str,
        request: GetRequest,
    ) -> Result<(ObjectMeta, Bytes), S3Error> {
        ObjectStore::get_object_bytes(self, key, request).await
    }

    /// PutObject: store `body` as `key` in one request, with the digest
    /// the server checks (see `send_upload`).
    ///
    /// With `if_none_match_any` (an `O_EXCL` create) the key must not exist:
    /// a 412 says it does. Where the server honours `If-None-Match` it
    /// decides; where it refuses the header (B2's 501) this checks with a
    /// HEAD just before the upload instead (see `server_caps.rs`).
    pub async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<PutObjectOutput, S3Error> {
        if !options.if_none_match_any {
            return self.put_object_once(key, body, options, false).await;
        }
        if self.inner.caps.conditional_put() != Support::No {
            match self.put_object_once(key, body.clone(), options, true).await {
                Err(e) if refuses_condition_header(e.status(), e.code()) => {
                    self.inner
                        .caps
                        .conditional_put_refused(&format!("the server answered {e}"));
                }
                result => {
                    if result.is_ok() || result.as_ref().is_err_and(S3Error::is_precondition_failed)
                    {
                        self.inner.caps.conditional_put_honoured();
                    }
                    return match result {
                        Err(e) if e.is_precondition_failed() && e.attempts > 1 => {
                            self.created_by_an_earlier_attempt(key, &body, e).await
                        }
                        other => other,
                    };
                }
            }
        }
        match self.head_object(key, None).await {
            Ok(_) => {
                return Err(S3Error::new(
                    "PutObject",
                    Some(key),
                    ErrorKind::Service {
                        status: 412,
                        code: "PreconditionFailed".into(),
                        message: "the key exists (checked by a HEAD: the server does not \
                                  honour If-None-Match)"
                            .into(),
                        request_id: None,
                    },
                ))
            }
            Err(e) if e.is_not_found() => {}
            // A key without listBuckets gets 403 for a missing key (B2,
            // AWS without s3:ListBucket): it cannot tell, so the upload
            // goes ahead, as it would have without O_EXCL.
            Err(e) if e.is_access_denied() => {}
            Err(e) => return Err(e),
        }
        self.put_object_once(key, body, options, false).await
    }

    /// A conditional PUT that was sent more than once failed its
    /// condition: an earlier attempt may have stored the object and lost
    /// its answer, and then the key exists because we made it. It is ours
    /// if it holds exactly our bytes (its ETag is their MD5).
    async fn created_by_an_earlier_attempt(
        &self,
        key: &str,
        body: &Bytes,
        failed: S3Error,
    ) -> Result<PutObjectOutput, S3Error> {
        if !self.sse().etag_is_md5() {
            return Err(failed);
        }
        let head = match self.head_object(key, None).await {
            Ok(head) => head,
            Err(_) => return Err(failed),
        };
        let md5 = hex(&Md5::digest(body));
        if head.etag.eq_ignore_ascii_case(&md5) && head.size == body.len() as u64 {
            tracing::debug!(key, "an O_EXCL upload's lost answer: the object is ours");
            Ok(PutObjectOutput {
                etag: head.etag,
                version_id: head.version_id,
            })
        } else {
            Err(failed)
        }
    }

    async fn put_object_once(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
        if_none_match: bool,
    ) -> Result<PutObjectOutput, S3Error> {
        let (headers, digest) = self
            .send_upload(&body, |digest| {
                let mut req = Request::new("PutObject", Method::PUT, Some(key))
                    .body_with_digest(body.clone(), digest);
                req = req.put_options(options)?;
                if if_none_match {
                    req = req.header("if-none-match", "*")?;
                }
                self.sse().apply_for_write(&mut req.headers);
                Ok(req)
            })
            .await?;
        let out = PutObjectOutput {
            etag: header_str(&headers, "etag")
                .map(unquote_etag)
                .unwrap_or_default(),
            version_id: header_str(&headers, "x-amz-version-id")
                .filter(|v| *v != "null")
                .map(str::to_owned),
        };
        self.check_etag("PutObject", key, &out.etag, &digest);
        Ok(out)
    }

    /// Send an upload (PutObject, UploadPart) built by `build` around the
    /// digest of the moment. A CRC32C the server refused sends it again
    /// with the digest that replaces it; one the server did not confirm
    /// moves `auto` off CRC32C. Returns the answer's headers and the digest
    /// the stored body went with.
    pub(crate) async fn send_upload<'k>(
        &self,
        body: &Bytes,
        build: impl Fn(&BodyDigest) -> Result<Request<'k>, S3Error>,
    ) -> Result<(HeaderMap, BodyDigest), S3Error> {
        loop {
            let digest = BodyDigest::of(self.upload_checksum(), body).await;
            let req = build(&digest)?;
            // B2 answers a conditional PUT with 501 NotImplemented: that
            // refuses the condition (see `put_object`), not the checksum.
            let conditional = req.headers.contains_key("if-none-match");
            match self.send(&req).await {
                Ok((_, headers, _)) => {
                    self.check_crc32c_confirmed(&headers, &digest);
                    return Ok((headers, digest));
                }
                Err(e) if conditional && e.status() == Some(501) => return Err(e),
                Err(e) if digest.crc32c.is_some() && self.refused_crc32c(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The digest the next upload carries.
    pub(crate) fn upload_checksum(&self) -> UploadChecksum {
        self.inner.checksum.current()
    }

    /// A server that checked a CRC32C says so by sending it back; one that
    /// did not has stored the body unchecked, and `auto` stops relying on
    /// CRC32C (see `checksum.rs`).
    fn check_crc32c_confirmed(&self, headers: &HeaderMap, digest: &BodyDigest) {
        if digest.crc32c.is_some() && !headers.contains_key(CRC32C_HEADER) {
            self.inner.checksum.crc32c_unconfirmed();
        }
    }

    /// Whether `e` is the server refusing a CRC32C header (B2 and some
    /// others do) and uploads now carry another digest, so the request is
    /// worth sending again.
    pub(crate) fn refused_crc32c(&self, e: &S3Error) -> bool {
        matches!(e.status(), Some(400 | 501))
            && matches!(
                e.code(),
                Some("InvalidRequest" | "InvalidArgument" | "NotImplemented")
            )
            && self.inner.checksum.crc32c_refused()
    }

    /// Compare a returned ETag with the MD5 of what was sent, when it was
    /// computed. The server has already checked `Content-MD5`, so a
    /// mismatch here means a server whose ETags are not MD5s (some encrypt
    /// or compress): worth a warning, not a failed write.
    pub(crate) fn check_etag(&self, op: &'static str, key: &str, etag: &str, digest: &BodyDigest) {
        let Some(md5) = &digest.md5 else { return };
        if !self.sse().etag_is_md5()
            || etag.len() != 32
            || !etag.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return;
        }
        let expected = hex(md5);
        if !etag.eq_ignore_ascii_case(&expected) {
            tracing::warn!(
                op,
                key,
                "server ETag {etag} is not the MD5 of the data sent ({expected})"
            );
        }
    }

    /// DeleteObject: delete the key (adding a delete marker in a versioned
    /// bucket) or, with a version id, remove that version for good.
    /// Deleting a key that does not exist succeeds, as in S3.
    pub async fn delete_object(&self, key: &str, version_id: Option<&str>) -> Result<(), S3Error> {
        let mut req = Request::new("DeleteObject", Method::DELETE, Some(key));
        if let Some(v) = version_id {
            req = req.query("versionId", v);
        }
        self.send(&req).await?;
        Ok(())
    }

    /// DeleteObjects: delete many keys, in batches of at most 1,000. Returns
    /// the keys the server could not delete; a request that fails as a whole
    /// is an error.
    pub async fn delete_objects(
        &self,
        objects: &[ObjectIdentifier],
    ) -> Result<Vec<DeleteFailure>, S3Error> {
        let mut failures = Vec::new();
        for batch in objects.chunks(DELETE_BATCH) {
            let body = Bytes::from(xml::delete_objects_body(batch));
            let req = Request::new("DeleteObjects", Method::POST, None)
                .query("delete", "")
                .body_with_md5(body);
            let (_, _, body) = self.send(&req).await?;
            failures.extend(req.parse(&body, xml::parse_delete_result)?);
        }
        Ok(failures)
    }

    /// CopyObject: copy a whole object (at most 5 GiB; larger ones need
    /// UploadPartCopy) within this bucket, keeping or replacing metadata.
    pub async fn copy_object(
        &self,
        source: &CopySource,
        dest_key: &str,
        directive: &MetadataDirective,
    ) -> Result<CopyObjectOutput, S3Error> {
        let mut req = Request::new("CopyObject", Method::PUT, Some(dest_key)).header(
            "x-amz-copy-source",
            &self.copy_source_header(&source.key, source.version_id.as_deref()),
        )?;
        req = match directive {
            MetadataDirective::Copy => req.header("x-amz-metadata-directive", "COPY")?,
            MetadataDirective::Replace(options) => req
                .header("x-amz-metadata-directive", "REPLACE")?
                .put_options(options)?,
        };
        self.sse().apply_for_write(&mut req.headers);
        if let Some(etag) = &source.if_match {
            req = req.header("x-amz-copy-source-if-match", &format!("\"{etag}\""))?;
        }
        self.sse().apply_for_copy_source(&mut req.headers);
        let (_, headers, body) = self.send(&req).await?;
        let (etag, modified) =
            req.parse(&body, |t| xml::parse_etag_result(t, "CopyObjectResult"))?;
        Ok(CopyObjectOutput {
            etag,
            last_modified: modified.unwrap_or_else(SystemTime::now),
            version_id: header_str(&headers, "x-amz-version-id")
                .filter(|v| *v != "null")
                .map(str::to_owned),
        })
    }
}

/// How many times one GetObject body may resume after a broken connection.
const RESUMES: u32 = 5;

/// State of a GetObject body that can resume where it broke off.
struct ResumingBody {
    client: S3Client,
    key: String,
    version_id: Option<String>,
    etag: String,
    /// Offset of the next byte the reader expects.
    next: u64,
    /// End (exclusive) of the range asked for.
    end: u64,
    resumes_left: u32,
}

impl ResumingBody {
    fn into_stream(self, first: reqwest::Response) -> ByteStream {
        let state = (self, Some(first.bytes_stream().boxed()));
        Box::pin(futures::stream::unfold(
            state,
            |(mut this, mut stream)| async move {
                loop {
                    if this.next >= this.end {
                        return None;
                    }
                    let current = stream.as_mut()?;
                    let failure = match current.next().await {
                        Some(Ok(chunk)) => {
                            this.next += chunk.len() as u64;
                            return Some((Ok(chunk), (this, stream)));
                        }
                        Some(Err(e)) => transport_error_for("GetObject", Some(&this.key), &e),
                        None => S3Error::new(
                            "GetObject",
                            Some(&this.key),
                            ErrorKind::Transport {
                                detail: format!("body ended {} bytes early", this.end - this.next),
                                timeout: false,
                            },
                        ),
                    };
                    if this.resumes_left == 0 || this.etag.is_empty() {
                        return Some((Err(failure), (this, None)));
                    }
                    this.resumes_left -= 1;
                    tracing::warn!(key = this.key, offset = this.next, "{failure}; resuming");
                    let request = GetRequest {
                        range: Some(this.next..this.end),
                        version_id: this.version_id.clone(),
                        if_match: Some(this.etag.clone()),
                        if_none_match: None,
                    };
                    let resumed = this.client.get_object_raw(&this.key, &request).await;
                    match resumed {
                        Ok(response) => stream = Some(response.bytes_stream().boxed()),
                        Err(e) => return Some((Err(e), (this, None))),
                    }
                }
            },
        ))
    }
}

impl S3Client {
    fn get_request<'k>(&self, key: &'k str, request: &GetRequest) -> Result<Request<'k>, S3Error> {
        let mut req = Request::new("GetObject", Method::GET, Some(key));
        if let Some(v) = &request.version_id {
            req = req.query("versionId", v.clone());
        }
        if let Some(range) = &request.range {
            if range.start >= range.end {
                // A zero-length range cannot be expressed in HTTP.
                return Err(S3Error::invalid_request(
                    req.op,
                    Some(key),
                    "empty byte range",
                ));
            }
            req = req.header("range", &format!("bytes={}-{}", range.start, range.end - 1))?;
        }
        if let Some(etag) = &request.if_match {
            req = req.header("if-match", &format!("\"{etag}\""))?;
        }
        if let Some(etag) = &request.if_none_match {
            req = req.header("if-none-match", &format!("\"{etag}\""))?;
        }
        self.sse().apply_for_access(&mut req.headers);
        Ok(req)
    }

    /// A ranged GET returning the raw response, used to resume a body.
    async fn get_object_raw(
        &self,
        key: &str,
        request: &GetRequest,
    ) -> Result<reqwest::Response, S3Error> {
        let req = self.get_request(key, request)?;
        let response = self.send_streaming(&req).await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Err(S3Error::invalid_response(
                req.op,
                Some(key),
                "server ignored the Range of a resumed read",
            ));
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// No header value a server sends makes the header parsers panic,
        /// and what they accept is consistent.
        #[test]
        fn header_parsers_never_panic(value in proptest::prelude::any::<String>()) {
            if let Some((range, total)) = parse_content_range(&value) {
                proptest::prop_assert!(range.start < range.end && range.end <= total);
            }
            let _ = crate::s3::retry::parse_retry_after(&value);
        }
    }

    #[test]
    fn content_range_parses_and_rejects_nonsense() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0..100, 1000)));
        assert_eq!(parse_content_range("bytes 5-5/6"), Some((5..6, 6)));
        assert_eq!(parse_content_range("bytes 10-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        let max = u64::MAX;
        assert_eq!(
            parse_content_range(&format!("bytes 0-{max}/{max}")),
            None,
            "no overflow"
        );
    }
}
