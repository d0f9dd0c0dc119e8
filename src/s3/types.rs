//! What S3 operations take and return, in this crate's terms.
//!
//! ETags are stored without their surrounding quotes; the client adds them
//! back where a header needs them. Times are `SystemTime`. User metadata
//! names are lower-case and without the `x-amz-meta-` prefix.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;

use super::S3Error;

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
}

/// One page of ListObjectsV2.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes (the "subdirectories" when a delimiter was given),
    /// each ending in the delimiter.
    pub common_prefixes: Vec<String>,
    /// Token for the next page; `None` on the last page.
    pub next_continuation_token: Option<String>,
    /// Keys the server sent that could not be decoded to UTF-8 (as sent).
    pub undecodable_keys: Vec<String>,
}

/// Parameters of one ListObjectsV2 request.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub continuation_token: Option<String>,
    pub start_after: Option<String>,
    /// At most this many keys and prefixes in the page (server default 1,000).
    pub max_keys: Option<u32>,
}

/// An object's metadata, from HeadObject or the headers of GetObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size of the whole object (not of a requested range).
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub content_type: Option<String>,
    pub version_id: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    /// The standard headers other tools set at upload and a copy keeps
    /// (`Content-Encoding`, `Cache-Control`, ...; see `CONTENT_HEADERS`), so
    /// that an object uploaded again instead of copied keeps them too.
    pub content_headers: Vec<(&'static str, String)>,
}

/// Headers of an object, besides its type and `x-amz-meta-*`, that a
/// server-side copy keeps and a PutObject can set.
pub const CONTENT_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

/// A streaming object body.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, S3Error>> + Send>>;

/// Conditions and range of a GetObject.
#[derive(Debug, Clone, Default)]
pub struct GetRequest {
    /// Byte range: `start..end` (end exclusive). `None` reads it all.
    pub range: Option<std::ops::Range<u64>>,
    pub version_id: Option<String>,
    /// Fail with 412 unless the object still has this ETag.
    pub if_match: Option<String>,
    /// Answer `NotModified` if the object still has this ETag.
    pub if_none_match: Option<String>,
}

/// The result of a GetObject.
pub enum GetObjectOutput {
    Body {
        meta: ObjectMeta,
        /// The range actually returned, `start..end`.
        range: std::ops::Range<u64>,
        body: ByteStream,
    },
    /// `If-None-Match` held: the object is unchanged.
    NotModified,
}

/// Metadata to store with a new object (PutObject, CreateMultipartUpload, or
/// CopyObject with the REPLACE directive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    /// Any of `CONTENT_HEADERS`, as an object to be copied had them.
    pub content_headers: Vec<(&'static str, String)>,
    /// Create only: fail with 412 if the key already exists (`If-None-Match: *`).
    pub if_none_match_any: bool,
}

/// What a successful write returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutObjectOutput {
    pub etag: String,
    pub version_id: Option<String>,
}

/// The source of a copy: a key, optionally one of its versions, and
/// optionally the ETag it must still have (`x-amz-copy-source-if-match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    pub key: String,
    pub version_id: Option<String>,
    pub if_match: Option<String>,
}

impl CopySource {
    /// Whatever version is the key's latest when the server copies it.
    pub fn latest(key: impl Into<String>) -> Self {
        CopySource {
            key: key.into(),
            version_id: None,
            if_match: None,
        }
    }

    /// Exactly the version with this ETag (and version id, where the bucket
    /// keeps versions): the copy fails with 412 rather than take other
    /// bytes. An empty ETag (unknown) pins by version id alone.
    pub fn pinned(key: impl Into<String>, version_id: Option<String>, etag: &str) -> Self {
        CopySource {
            key: key.into(),
            version_id,
            if_match: (!etag.is_empty()).then(|| etag.to_owned()),
        }
    }
}

/// How CopyObject treats metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataDirective {
    /// Keep the source's metadata.
    Copy,
    /// Replace it with this.
    Replace(PutOptions),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyObjectOutput {
    pub etag: String,
    pub last_modified: SystemTime,
    pub version_id: Option<String>,
}

/// The id of an in-progress multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(pub String);

/// A part uploaded (or copied) into a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
    /// The part's CRC32C (base64) when the upload checks them: listed in
    /// CompleteMultipartUpload, as S3 asks of uploads created with one.
    pub checksum_crc32c: Option<String>,
}

/// A part as ListParts reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

/// An unfinished multipart upload, from ListMultipartUploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUploadInfo {
    pub key: String,
    pub upload_id: UploadId,
    pub initiated: SystemTime,
}

/// One entry of ListObjectVersions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub last_modified: SystemTime,
    pub kind: VersionKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionKind {
    Object { size: u64, etag: String },
    DeleteMarker,
}

/// Parameters of one ListObjectVersions request.
#[derive(Debug, Clone, Default)]
pub struct ListVersionsRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub version_id_marker: Option<String>,
    pub max_keys: Option<u32>,
}

/// One page of ListObjectVersions, in the server's order: by key, and for
/// each key newest first, delete markers in place.
#[derive(Debug, Clone, Default)]
pub struct VersionPage {
    pub versions: Vec<ObjectVersion>,
    pub common_prefixes: Vec<String>,
    /// Markers for the next page; `None` on the last page.
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
    pub undecodable_keys: Vec<String>,
}

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersioningStatus {
    Enabled,
    Suspended,
    /// Versioning was never turned on.
    Unversioned,
}

/// A key (and optionally a version) to delete in DeleteObjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentifier {
    pub key: String,
    pub version_id: Option<String>,
}

/// A key DeleteObjects could not delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFailure {
    pub key: String,
    pub version_id: Option<String>,
    pub code: String,
    pub message: String,
}
