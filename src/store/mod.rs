//! The object-store seam: the operations the filesystem core (`fs`, `read`,
//! `write`) asks of a bucket, as one trait.
//!
//! Three stores stand behind it:
//! - `S3Client` (`s3.rs`), the real one, with its retries and probes;
//! - `MemoryStore` (`memory.rs`), an in-process bucket with the S3 rules
//!   that matter to the core: versions and delete markers, conditional
//!   requests, copies by version id, multipart part rules, pagination;
//! - `FaultyStore` (`faults.rs`), a wrapper that injects errors, latency,
//!   pauses and answers lost after the store applied the request.
//!
//! The core holds a `Store` (`Arc<dyn ObjectStore>`) and never knows which.
//! The model tests in `tests/reference_model.rs` run it on the last two.
//!
//! Methods return boxed futures so that the trait can be used as a trait
//! object: one allocation per request is nothing next to a network round
//! trip.

pub mod faults;
pub mod memory;
mod s3;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use crate::s3::listing::MarkerGuard;
use crate::s3::{
    CompletedPart, CopyObjectOutput, CopySource, DeleteFailure, GetObjectOutput, GetRequest,
    ListPage, ListRequest, ListVersionsRequest, MetadataDirective, ObjectIdentifier, ObjectMeta,
    PutObjectOutput, PutOptions, S3Error, UploadId, VersionPage, MAX_PARTS, MAX_SINGLE_COPY,
};

pub use faults::{Fault, FaultyStore, Op};
pub use memory::{MemoryStore, MemoryStoreConfig};

/// The store the core uses.
pub type Store = Arc<dyn ObjectStore>;

/// What a store answers.
pub type StoreResult<'a, T> = BoxFuture<'a, Result<T, S3Error>>;

/// Parts of a multipart copy: at least 1 GiB, well inside the 5 GiB part
/// limit, and few enough for 5 TiB in 10,000.
const COPY_PART: u64 = 1024 * 1024 * 1024;

/// The object operations of one bucket. Keys are full keys (the mount's
/// prefix included); errors are `S3Error`s with S3's statuses and codes, so
/// that one errno table serves every store.
pub trait ObjectStore: Send + Sync {
    /// Names the bucket and where it is (`endpoint/bucket`), for logs and
    /// to tell one bucket's crash leftovers from another's.
    fn location(&self) -> String;

    /// Whether the server is known to honour `x-amz-copy-source-if-match`
    /// without asking (`None`: a save probes it, see `write/copy_pin.rs`).
    fn copy_if_match_known(&self) -> Option<bool> {
        None
    }

    /// Objects up to this size cost less to GET and PUT again than to copy
    /// server-side, by the provider's price list (`s3::PriceList`); 0:
    /// always copy.
    fn reupload_up_to(&self) -> u64 {
        0
    }

    /// HeadObject, of the latest version or of `version_id`.
    fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreResult<'a, ObjectMeta>;

    /// GetObject: a range or all of it, conditions in `request`.
    fn get_object<'a>(
        &'a self,
        key: &'a str,
        request: GetRequest,
    ) -> StoreResult<'a, GetObjectOutput>;

    /// PutObject. With `options.if_none_match_any` the key must not exist
    /// (412 if it does).
    fn put_object<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        options: &'a PutOptions,
    ) -> StoreResult<'a, PutObjectOutput>;

    /// DeleteObject: a delete marker in a versioned bucket, or the given
    /// version removed for good. A missing key is not an error.
    fn delete_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreResult<'a, ()>;

    /// DeleteObjects: the keys that could not be deleted.
    fn delete_objects<'a>(
        &'a self,
        objects: &'a [ObjectIdentifier],
    ) -> StoreResult<'a, Vec<DeleteFailure>>;

    /// CopyObject (at most `MAX_SINGLE_COPY` bytes), honouring the
    /// source's version id and `if_match`.
    fn copy_object<'a>(
        &'a self,
        source: &'a CopySource,
        dest: &'a str,
        directive: &'a MetadataDirective,
    ) -> StoreResult<'a, CopyObjectOutput>;

    fn create_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        options: &'a PutOptions,
    ) -> StoreResult<'a, UploadId>;

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<'a, CompletedPart>;

    /// UploadPartCopy of `range` of `source` (version id and `if_match`
    /// honoured).
    fn upload_part_copy<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        part_number: u32,
        source: &'a CopySource,
        range: Range<u64>,
    ) -> StoreResult<'a, CompletedPart>;

    fn complete_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        parts: &'a [CompletedPart],
    ) -> StoreResult<'a, PutObjectOutput>;

    fn abort_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
    ) -> StoreResult<'a, ()>;

    /// One page of ListObjectsV2.
    fn list_objects<'a>(&'a self, request: &'a ListRequest) -> StoreResult<'a, ListPage>;

    /// One page of ListObjectVersions.
    fn list_object_versions<'a>(
        &'a self,
        request: &'a ListVersionsRequest,
    ) -> StoreResult<'a, VersionPage>;

    /// GetObject of a whole object or range into memory.
    fn get_object_bytes<'a>(
        &'a self,
        key: &'a str,
        request: GetRequest,
    ) -> StoreResult<'a, (ObjectMeta, Bytes)> {
        Box::pin(async move {
            match self.get_object(key, request).await? {
                GetObjectOutput::Body {
                    meta,
                    mut body,
                    range,
                } => {
                    let mut out = Vec::with_capacity((range.end - range.start) as usize);
                    while let Some(chunk) = body.next().await {
                        out.extend_from_slice(&chunk?);
                    }
                    Ok((meta, Bytes::from(out)))
                }
                GetObjectOutput::NotModified => Err(S3Error::invalid_response(
                    "GetObject",
                    Some(key),
                    "304 Not Modified without If-None-Match",
                )),
            }
        })
    }

    /// Follow ListObjectsV2 pagination and gather every page's objects and
    /// common prefixes. A continuation marker that comes back is an error,
    /// not an endless loop.
    fn list_all<'a>(
        &'a self,
        prefix: &'a str,
        delimiter: Option<&'a str>,
    ) -> StoreResult<'a, ListPage> {
        Box::pin(async move {
            let mut request = ListRequest {
                prefix: prefix.to_owned(),
                delimiter: delimiter.map(str::to_owned),
                ..Default::default()
            };
            let mut all = ListPage::default();
            let mut guard = MarkerGuard::default();
            loop {
                let page = self.list_objects(&request).await?;
                for raw in &page.undecodable_keys {
                    tracing::warn!("skipping a listed key that does not decode (bad URL encoding or UTF-8): {raw:?}");
                }
                all.objects.extend(page.objects);
                all.common_prefixes.extend(page.common_prefixes);
                all.undecodable_keys.extend(page.undecodable_keys);
                if !guard.next_page(&mut request, page.next_continuation_token)? {
                    return Ok(all);
                }
            }
        })
    }

    /// Copy `source` to `dest` whatever its size: a GET and a PUT up to
    /// `reupload_up_to` (where the price list makes that cheaper, B2's),
    /// else server-side, with CopyObject up to 5 GiB, else a multipart
    /// upload of UploadPartCopy parts (aborted if any part fails), every
    /// part from the same pinned source. `size` is the source's size. The
    /// copy is the same whichever way: the pinned version's bytes, type,
    /// user metadata and content headers, or the directive's. What it
    /// stored is returned, so that no HEAD is needed to learn it.
    fn copy<'a>(
        &'a self,
        source: &'a CopySource,
        dest: &'a str,
        size: u64,
        directive: &'a MetadataDirective,
    ) -> StoreResult<'a, Copied> {
        Box::pin(async move {
            if size <= self.reupload_up_to() {
                let pinned = GetRequest {
                    version_id: source.version_id.clone(),
                    if_match: source.if_match.clone(),
                    ..Default::default()
                };
                let (meta, body) = self.get_object_bytes(&source.key, pinned).await?;
                // A source found bigger than listed is still copied whole.
                let options = options_of_copy(directive, meta);
                let out = self.put_object(dest, body, &options).await?;
                return Ok(Copied::uploaded(out));
            }
            if size <= MAX_SINGLE_COPY {
                let out = self.copy_object(source, dest, directive).await?;
                return Ok(Copied {
                    etag: out.etag,
                    version_id: out.version_id,
                    last_modified: Some(out.last_modified),
                });
            }
            // Every part must come from one version: an unpinned source is
            // pinned to the one this HEAD sees.
            let meta = self
                .head_object(&source.key, source.version_id.as_deref())
                .await?;
            let source = &CopySource {
                key: source.key.clone(),
                version_id: source.version_id.clone().or(meta.version_id.clone()),
                if_match: source.if_match.clone().or(Some(meta.etag.clone())),
            };
            let options = options_of_copy(directive, meta);
            let part = COPY_PART.max(size.div_ceil(MAX_PARTS as u64));
            let ranges: Vec<Range<u64>> = (0..size)
                .step_by(part as usize)
                .map(|s| s..(s + part).min(size))
                .collect();
            let upload = self.create_multipart_upload(dest, &options).await?;
            let parts = futures::stream::iter(ranges.into_iter().enumerate())
                .map(|(i, range)| {
                    let upload = upload.clone();
                    async move {
                        self.upload_part_copy(dest, &upload, i as u32 + 1, source, range)
                            .await
                    }
                })
                .buffered(4)
                .try_collect::<Vec<_>>()
                .await;
            let done = match parts {
                Ok(parts) => self
                    .complete_multipart_upload(dest, &upload, &parts)
                    .await
                    .map(Copied::uploaded),
                Err(e) => Err(e),
            };
            if done.is_err() {
                let _ = self.abort_multipart_upload(dest, &upload).await;
            }
            done
        })
    }
}

/// What a copy stored (`ObjectStore::copy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub etag: String,
    pub version_id: Option<String>,
    /// Said by a server-side copy; an upload's answer does not say it.
    pub last_modified: Option<std::time::SystemTime>,
}

impl Copied {
    fn uploaded(out: PutObjectOutput) -> Self {
        Copied {
            etag: out.etag,
            version_id: out.version_id,
            last_modified: None,
        }
    }
}

/// What a copy made by a new upload (re-upload, multipart copy) gives the
/// new object: the directive's metadata, or, for `COPY`, the source's own
/// (`meta`, from its GET or HEAD), as a server-side copy would keep it.
fn options_of_copy(directive: &MetadataDirective, meta: ObjectMeta) -> PutOptions {
    match directive {
        MetadataDirective::Replace(options) => options.clone(),
        MetadataDirective::Copy => PutOptions {
            content_type: meta.content_type,
            user_metadata: meta.user_metadata,
            content_headers: meta.content_headers,
            if_none_match_any: false,
        },
    }
}
