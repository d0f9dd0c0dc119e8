//! An in-memory bucket with the S3 rules the core depends on, for tests
//! that drive the core without a server or a kernel.
//!
//! What it keeps as S3 does:
//! - versions and delete markers in a versioned bucket; one `null` version
//!   per key, replaced in place, in an unversioned one;
//! - ETags (the MD5 of the body; the multipart form for multipart uploads)
//!   and LastModified, rounded to a configurable granularity (S3 and B2
//!   list whole seconds in some answers, milliseconds in others);
//! - conditional GET (`If-Match`, `If-None-Match`), PUT (`If-None-Match:
//!   *`, or 501 as B2 answers), and copy (`x-amz-copy-source-if-match`,
//!   copy by version id);
//! - multipart uploads: parts 1..=10,000, every part but the last at least
//!   `min_part` bytes (`EntityTooSmall` at completion), part ETags checked;
//! - ListObjectsV2 with prefix, delimiter, `start-after` and pagination,
//!   and ListObjectVersions newest first.
//!
//! Everything happens under one lock, at once: each request is atomic, as
//! a single S3 request is. What happens *between* requests is the point of
//! the tests that use it.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use md5::{Digest, Md5};

use super::{ObjectStore, StoreResult};
use crate::s3::{
    multipart_etag, CompletedPart, CopyObjectOutput, CopySource, DeleteFailure, ErrorKind,
    GetObjectOutput, GetRequest, ListPage, ListRequest, ListVersionsRequest, MetadataDirective,
    ObjectIdentifier, ObjectInfo, ObjectMeta, ObjectVersion, PutObjectOutput, PutOptions, S3Error,
    UploadId, VersionKind, VersionPage, MAX_PARTS, MAX_SINGLE_COPY,
};

/// How the bucket behaves.
#[derive(Debug, Clone)]
pub struct MemoryStoreConfig {
    /// Keep every version (as B2 always does), or one per key.
    pub versioned: bool,
    /// LastModified is rounded down to a multiple of this.
    pub time_granularity: Duration,
    /// Honour `If-None-Match: *` on PutObject; `false` answers 501
    /// NotImplemented, as B2 does.
    pub conditional_put: bool,
    /// Honour `x-amz-copy-source-if-match`; `false` copies whatever the
    /// source is, as moto does.
    pub copy_if_match: bool,
    /// Objects up to this size are copied by a GET and a PUT (as on B2's
    /// price list; see `ObjectStore::reupload_up_to`).
    pub reupload_up_to: u64,
    /// Smallest part but the last (S3: 5 MiB).
    pub min_part: u64,
    /// Page size of listings when the request names none.
    pub page_size: u32,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        MemoryStoreConfig {
            versioned: true,
            time_granularity: Duration::from_millis(1),
            conditional_put: true,
            copy_if_match: true,
            reupload_up_to: 0,
            min_part: 5 * 1024 * 1024,
            page_size: 1000,
        }
    }
}

#[derive(Debug, Clone)]
struct StoredObject {
    data: Bytes,
    etag: String,
    content_type: Option<String>,
    user_metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Version {
    id: String,
    last_modified: SystemTime,
    /// `None` is a delete marker.
    object: Option<StoredObject>,
}

#[derive(Debug)]
struct Upload {
    key: String,
    options: PutOptions,
    parts: BTreeMap<u32, (String, Bytes)>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Each key's versions, oldest first.
    keys: BTreeMap<String, Vec<Version>>,
    uploads: HashMap<String, Upload>,
    next_id: u64,
    /// Requests answered, by operation name.
    requests: BTreeMap<&'static str, u64>,
    /// Body bytes sent by GetObject (what B2 bills as downloaded).
    downloaded: u64,
}

/// The in-memory bucket. Cheap to share: put it in an `Arc` and hand the
/// same one to the core and to the test's "other client".
pub struct MemoryStore {
    config: MemoryStoreConfig,
    bucket: Mutex<Bucket>,
}

fn service(op: &'static str, key: Option<&str>, status: u16, code: &str, message: &str) -> S3Error {
    S3Error::new(
        op,
        key,
        ErrorKind::Service {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            request_id: None,
        },
    )
}

fn md5_hex(data: &[u8]) -> String {
    crate::s3::hex_digest(&Md5::digest(data))
}

impl MemoryStore {
    pub fn new(config: MemoryStoreConfig) -> Self {
        MemoryStore {
            config,
            bucket: Mutex::new(Bucket::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Bucket> {
        self.bucket.lock()
    }

    /// The latest content of every key that has one (no delete marker on
    /// top), for a test to compare with what it expects.
    pub fn contents(&self) -> BTreeMap<String, Bytes> {
        self.lock()
            .keys
            .iter()
            .filter_map(|(k, versions)| {
                let object = versions.last()?.object.as_ref()?;
                Some((k.clone(), object.data.clone()))
            })
            .collect()
    }

    /// The latest content of `key`, if it has one.
    pub fn content(&self, key: &str) -> Option<Bytes> {
        let bucket = self.lock();
        let object = bucket.keys.get(key)?.last()?.object.as_ref()?;
        Some(object.data.clone())
    }

    /// The latest user metadata of `key`, if it has content.
    pub fn metadata(&self, key: &str) -> Option<BTreeMap<String, String>> {
        let bucket = self.lock();
        let object = bucket.keys.get(key)?.last()?.object.as_ref()?;
        Some(object.user_metadata.clone())
    }

    /// Every version of `key` that holds content (not delete markers),
    /// oldest first.
    pub fn versions(&self, key: &str) -> Vec<Bytes> {
        self.lock()
            .keys
            .get(key)
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| v.object.as_ref().map(|o| o.data.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Requests answered so far for the operation (`"PutObject"`, ...).
    pub fn requests(&self, op: &str) -> u64 {
        self.lock().requests.get(op).copied().unwrap_or(0)
    }

    /// Body bytes GetObject has sent so far.
    pub fn downloaded(&self) -> u64 {
        self.lock().downloaded
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let g = self.config.time_granularity.as_nanos().max(1);
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let rounded = since - since % g;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(rounded as u64)
    }

    /// Answer one request: count it, and run `f` on the bucket under the
    /// lock, so that the request is atomic.
    fn answer<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&MemoryStore, &mut Bucket) -> Result<T, S3Error>,
    ) -> Result<T, S3Error> {
        let mut bucket = self.lock();
        *bucket.requests.entry(op).or_default() += 1;
        f(self, &mut bucket)
    }

    fn add_version(&self, bucket: &mut Bucket, key: &str, object: Option<StoredObject>) -> Version {
        let id = if self.config.versioned {
            bucket.next_id += 1;
            format!("v{:08}", bucket.next_id)
        } else {
            "null".to_owned()
        };
        let version = Version {
            id,
            last_modified: self.now(),
            object,
        };
        let versions = bucket.keys.entry(key.to_owned()).or_default();
        if !self.config.versioned {
            versions.clear();
        }
        versions.push(version.clone());
        version
    }

    fn public_id(&self, version: &Version) -> Option<String> {
        self.config.versioned.then(|| version.id.clone())
    }

    /// The version a request names: the latest one, or by id.
    fn find<'b>(
        &self,
        bucket: &'b Bucket,
        op: &'static str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<&'b Version, S3Error> {
        let versions = bucket.keys.get(key);
        match version_id {
            None => versions
                .and_then(|vs| vs.last())
                .filter(|v| v.object.is_some())
                .ok_or_else(|| service(op, Some(key), 404, "NoSuchKey", "no such key")),
            Some(id) => {
                let v = versions
                    .and_then(|vs| vs.iter().find(|v| v.id == id))
                    .ok_or_else(|| {
                        service(op, Some(key), 404, "NoSuchVersion", "no such version")
                    })?;
                if v.object.is_none() {
                    return Err(service(
                        op,
                        Some(key),
                        405,
                        "MethodNotAllowed",
                        "the version is a delete marker",
                    ));
                }
                Ok(v)
            }
        }
    }

    fn meta(&self, version: &Version, object: &StoredObject) -> ObjectMeta {
        ObjectMeta {
            size: object.data.len() as u64,
            etag: object.etag.clone(),
            last_modified: version.last_modified,
            content_type: object.content_type.clone(),
            version_id: self.public_id(version),
            user_metadata: object.user_metadata.clone(),
            // Not modelled: the core never reads them.
            content_headers: Vec::new(),
        }
    }

    /// A copy's source: by version id, and refused (412) unless it still
    /// has the ETag the copy is pinned to.
    fn copy_source(
        &self,
        bucket: &Bucket,
        op: &'static str,
        source: &CopySource,
    ) -> Result<StoredObject, S3Error> {
        let version = self.find(bucket, op, &source.key, source.version_id.as_deref())?;
        let object = version
            .object
            .clone()
            .ok_or_else(|| service(op, Some(&source.key), 404, "NoSuchKey", "no such key"))?;
        if let Some(etag) = source
            .if_match
            .as_ref()
            .filter(|_| self.config.copy_if_match)
        {
            if *etag != object.etag {
                return Err(service(
                    op,
                    Some(&source.key),
                    412,
                    "PreconditionFailed",
                    "x-amz-copy-source-if-match did not hold",
                ));
            }
        }
        Ok(object)
    }
}

fn put_output(store: &MemoryStore, version: &Version) -> PutObjectOutput {
    PutObjectOutput {
        etag: version
            .object
            .as_ref()
            .map(|o| o.etag.clone())
            .unwrap_or_default(),
        version_id: store.public_id(version),
    }
}

impl ObjectStore for MemoryStore {
    fn location(&self) -> String {
        "memory/bucket".to_owned()
    }

    fn reupload_up_to(&self) -> u64 {
        self.config.reupload_up_to
    }

    fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreResult<'a, ObjectMeta> {
        Box::pin(async move {
            self.answer("HeadObject", |store, bucket| {
                let version = store.find(bucket, "HeadObject", key, version_id)?;
                let object = version.object.as_ref().ok_or_else(|| {
                    service("HeadObject", Some(key), 404, "NoSuchKey", "no such key")
                })?;
                Ok(store.meta(version, object))
            })
        })
    }

    fn get_object<'a>(
        &'a self,
        key: &'a str,
        request: GetRequest,
    ) -> StoreResult<'a, GetObjectOutput> {
        let op = "GetObject";
        Box::pin(async move {
            self.answer(op, |store, bucket| {
                let version = store.find(bucket, op, key, request.version_id.as_deref())?;
                let object = version
                    .object
                    .as_ref()
                    .ok_or_else(|| service(op, Some(key), 404, "NoSuchKey", "no such key"))?;
                if let Some(etag) = &request.if_match {
                    if *etag != object.etag {
                        return Err(service(
                            op,
                            Some(key),
                            412,
                            "PreconditionFailed",
                            "If-Match did not hold",
                        ));
                    }
                }
                if request.if_none_match.as_deref() == Some(object.etag.as_str()) {
                    return Ok(GetObjectOutput::NotModified);
                }
                let size = object.data.len() as u64;
                let range = match request.range.clone() {
                    None => 0..size,
                    Some(r) if r.start >= size && size > 0 || r.start > r.end => {
                        return Err(service(
                            op,
                            Some(key),
                            416,
                            "InvalidRange",
                            "the range is not satisfiable",
                        ))
                    }
                    Some(r) => r.start.min(size)..r.end.min(size),
                };
                let body = object.data.slice(range.start as usize..range.end as usize);
                let meta = store.meta(version, object);
                bucket.downloaded += body.len() as u64;
                let stream = futures::stream::once(async move { Ok::<_, S3Error>(body) });
                Ok(GetObjectOutput::Body {
                    meta,
                    range,
                    body: Box::pin(stream),
                })
            })
        })
    }

    fn put_object<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        options: &'a PutOptions,
    ) -> StoreResult<'a, PutObjectOutput> {
        let op = "PutObject";
        Box::pin(async move {
            self.answer(op, |store, bucket| {
                if options.if_none_match_any {
                    if !store.config.conditional_put {
                        return Err(service(
                            op,
                            Some(key),
                            501,
                            "NotImplemented",
                            "conditional PUTs are not implemented",
                        ));
                    }
                    if store.find(bucket, op, key, None).is_ok() {
                        return Err(service(
                            op,
                            Some(key),
                            412,
                            "PreconditionFailed",
                            "the key exists (If-None-Match: *)",
                        ));
                    }
                }
                let object = StoredObject {
                    etag: md5_hex(&body),
                    data: body,
                    content_type: options.content_type.clone(),
                    user_metadata: options.user_metadata.clone(),
                };
                let version = store.add_version(bucket, key, Some(object));
                Ok(put_output(store, &version))
            })
        })
    }

    fn delete_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreResult<'a, ()> {
        Box::pin(async move {
            self.answer("DeleteObject", |store, bucket| {
                store.delete(bucket, key, version_id);
                Ok(())
            })
        })
    }

    fn delete_objects<'a>(
        &'a self,
        objects: &'a [ObjectIdentifier],
    ) -> StoreResult<'a, Vec<DeleteFailure>> {
        Box::pin(async move {
            self.answer("DeleteObjects", |store, bucket| {
                for o in objects {
                    store.delete(bucket, &o.key, o.version_id.as_deref());
                }
                Ok(Vec::new())
            })
        })
    }

    fn copy_object<'a>(
        &'a self,
        source: &'a CopySource,
        dest: &'a str,
        directive: &'a MetadataDirective,
    ) -> StoreResult<'a, CopyObjectOutput> {
        let op = "CopyObject";
        Box::pin(async move {
            self.answer(op, |store, bucket| {
                let object = store.copy_source(bucket, op, source)?;
                if object.data.len() as u64 > MAX_SINGLE_COPY {
                    return Err(service(
                        op,
                        Some(dest),
                        400,
                        "InvalidRequest",
                        "the source is larger than 5 GiB",
                    ));
                }
                let (content_type, user_metadata) = match directive {
                    MetadataDirective::Copy => (object.content_type, object.user_metadata),
                    MetadataDirective::Replace(o) => {
                        (o.content_type.clone(), o.user_metadata.clone())
                    }
                };
                let copied = StoredObject {
                    etag: md5_hex(&object.data),
                    data: object.data,
                    content_type,
                    user_metadata,
                };
                let version = store.add_version(bucket, dest, Some(copied));
                Ok(CopyObjectOutput {
                    etag: put_output(store, &version).etag,
                    last_modified: version.last_modified,
                    version_id: store.public_id(&version),
                })
            })
        })
    }

    fn create_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        options: &'a PutOptions,
    ) -> StoreResult<'a, UploadId> {
        Box::pin(async move {
            self.answer("CreateMultipartUpload", |_, bucket| {
                bucket.next_id += 1;
                let id = format!("upload-{}", bucket.next_id);
                bucket.uploads.insert(
                    id.clone(),
                    Upload {
                        key: key.to_owned(),
                        options: options.clone(),
                        parts: BTreeMap::new(),
                    },
                );
                Ok(UploadId(id))
            })
        })
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<'a, CompletedPart> {
        let op = "UploadPart";
        Box::pin(async move {
            self.answer(op, |_, bucket| {
                let upload = find_upload(bucket, op, key, upload_id, part_number)?;
                let etag = md5_hex(&body);
                upload.parts.insert(part_number, (etag.clone(), body));
                Ok(CompletedPart {
                    part_number,
                    etag,
                    checksum_crc32c: None,
                })
            })
        })
    }

    fn upload_part_copy<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        part_number: u32,
        source: &'a CopySource,
        range: Range<u64>,
    ) -> StoreResult<'a, CompletedPart> {
        let op = "UploadPartCopy";
        Box::pin(async move {
            self.answer(op, |store, bucket| {
                let object = store.copy_source(bucket, op, source)?;
                let size = object.data.len() as u64;
                if range.start >= range.end || range.end > size {
                    return Err(service(
                        op,
                        Some(key),
                        416,
                        "InvalidRange",
                        "the copy range is outside the source",
                    ));
                }
                let body = object.data.slice(range.start as usize..range.end as usize);
                let upload = find_upload(bucket, op, key, upload_id, part_number)?;
                let etag = md5_hex(&body);
                upload.parts.insert(part_number, (etag.clone(), body));
                Ok(CompletedPart {
                    part_number,
                    etag,
                    checksum_crc32c: None,
                })
            })
        })
    }

    fn complete_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        parts: &'a [CompletedPart],
    ) -> StoreResult<'a, PutObjectOutput> {
        let op = "CompleteMultipartUpload";
        Box::pin(async move {
            self.answer(op, |store, bucket| {
                let upload = find_upload(bucket, op, key, upload_id, 1)?;
                if parts.is_empty()
                    || parts
                        .windows(2)
                        .any(|w| w[0].part_number >= w[1].part_number)
                {
                    return Err(service(
                        op,
                        Some(key),
                        400,
                        "InvalidPartOrder",
                        "parts must be listed in ascending order",
                    ));
                }
                let mut data = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    let Some((etag, body)) = upload.parts.get(&part.part_number) else {
                        return Err(service(op, Some(key), 400, "InvalidPart", "no such part"));
                    };
                    if *etag != part.etag {
                        return Err(service(
                            op,
                            Some(key),
                            400,
                            "InvalidPart",
                            "wrong part ETag",
                        ));
                    }
                    if i + 1 < parts.len() && (body.len() as u64) < store.config.min_part {
                        return Err(service(
                            op,
                            Some(key),
                            400,
                            "EntityTooSmall",
                            "a part but the last is smaller than the minimum",
                        ));
                    }
                    data.extend_from_slice(body);
                }
                let options = upload.options.clone();
                bucket.uploads.remove(&upload_id.0);
                let object = StoredObject {
                    etag: multipart_etag(parts).unwrap_or_else(|| md5_hex(&data)),
                    data: Bytes::from(data),
                    content_type: options.content_type,
                    user_metadata: options.user_metadata,
                };
                let version = store.add_version(bucket, key, Some(object));
                Ok(put_output(store, &version))
            })
        })
    }

    fn abort_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
    ) -> StoreResult<'a, ()> {
        let op = "AbortMultipartUpload";
        Box::pin(async move {
            self.answer(op, |_, bucket| {
                find_upload(bucket, op, key, upload_id, 1)?;
                bucket.uploads.remove(&upload_id.0);
                Ok(())
            })
        })
    }

    fn list_objects<'a>(&'a self, request: &'a ListRequest) -> StoreResult<'a, ListPage> {
        Box::pin(async move {
            self.answer("ListObjectsV2", |store, bucket| {
                Ok(store.list(bucket, request))
            })
        })
    }

    fn list_object_versions<'a>(
        &'a self,
        request: &'a ListVersionsRequest,
    ) -> StoreResult<'a, VersionPage> {
        Box::pin(async move {
            self.answer("ListObjectVersions", |store, bucket| {
                Ok(store.list_versions(bucket, request))
            })
        })
    }
}

fn find_upload<'b>(
    bucket: &'b mut Bucket,
    op: &'static str,
    key: &str,
    upload_id: &UploadId,
    part_number: u32,
) -> Result<&'b mut Upload, S3Error> {
    if !(1..=MAX_PARTS).contains(&part_number) {
        return Err(service(
            op,
            Some(key),
            400,
            "InvalidArgument",
            "part number outside 1..=10000",
        ));
    }
    bucket
        .uploads
        .get_mut(&upload_id.0)
        .filter(|u| u.key == key)
        .ok_or_else(|| service(op, Some(key), 404, "NoSuchUpload", "no such upload"))
}

impl MemoryStore {
    fn delete(&self, bucket: &mut Bucket, key: &str, version_id: Option<&str>) {
        match version_id {
            Some(id) => {
                if let Some(versions) = bucket.keys.get_mut(key) {
                    versions.retain(|v| v.id != id);
                    if versions.is_empty() {
                        bucket.keys.remove(key);
                    }
                }
            }
            None if self.config.versioned => {
                if bucket.keys.contains_key(key) {
                    self.add_version(bucket, key, None);
                }
            }
            None => {
                bucket.keys.remove(key);
            }
        }
    }

    /// Where a listed key falls: itself, or the common prefix that holds
    /// it under the delimiter.
    fn entry_of(key: &str, prefix: &str, delimiter: Option<&str>) -> (String, bool) {
        if let Some(d) = delimiter.filter(|d| !d.is_empty()) {
            if let Some(at) = key[prefix.len()..].find(d) {
                return (key[..prefix.len() + at + d.len()].to_owned(), true);
            }
        }
        (key.to_owned(), false)
    }

    fn list(&self, bucket: &Bucket, request: &ListRequest) -> ListPage {
        let max = request.max_keys.unwrap_or(self.config.page_size).max(1) as usize;
        let after = request
            .continuation_token
            .clone()
            .or_else(|| request.start_after.clone())
            .unwrap_or_default();
        let mut page = ListPage::default();
        let mut prefixes = BTreeSet::new();
        let mut count = 0;
        let mut last = String::new();
        for (key, versions) in bucket.keys.range(request.prefix.clone()..) {
            if !key.starts_with(&request.prefix) {
                break;
            }
            let Some((version, object)) = versions
                .last()
                .and_then(|v| v.object.as_ref().map(|o| (v, o)))
            else {
                continue;
            };
            let (entry, is_prefix) =
                Self::entry_of(key, &request.prefix, request.delimiter.as_deref());
            if entry.as_str() <= after.as_str() || (is_prefix && prefixes.contains(&entry)) {
                continue;
            }
            if count == max {
                page.next_continuation_token = Some(last);
                return page;
            }
            count += 1;
            last = entry.clone();
            if is_prefix {
                prefixes.insert(entry.clone());
                page.common_prefixes.push(entry);
            } else {
                page.objects.push(ObjectInfo {
                    key: key.clone(),
                    size: object.data.len() as u64,
                    etag: object.etag.clone(),
                    last_modified: version.last_modified,
                });
            }
        }
        page
    }

    fn list_versions(&self, bucket: &Bucket, request: &ListVersionsRequest) -> VersionPage {
        let max = request.max_keys.unwrap_or(self.config.page_size).max(1) as usize;
        let mut page = VersionPage::default();
        let mut prefixes = BTreeSet::new();
        let mut count = 0;
        // The marker: skip keys before it, and on its key the versions up
        // to and including the marked one.
        let marker_key = request.key_marker.clone().unwrap_or_default();
        let mut skipping_in_marker_key = request.version_id_marker.clone();
        for (key, versions) in bucket.keys.range(request.prefix.clone()..) {
            if !key.starts_with(&request.prefix) {
                break;
            }
            if !marker_key.is_empty()
                && (key.as_str() < marker_key.as_str()
                    || (key.as_str() == marker_key.as_str() && skipping_in_marker_key.is_none()))
            {
                continue;
            }
            let (entry, is_prefix) =
                Self::entry_of(key, &request.prefix, request.delimiter.as_deref());
            if is_prefix {
                if prefixes.insert(entry.clone()) {
                    page.common_prefixes.push(entry);
                }
                continue;
            }
            let latest = versions.len().saturating_sub(1);
            for (i, v) in versions.iter().enumerate().rev() {
                if key.as_str() == marker_key.as_str() {
                    if let Some(id) = &skipping_in_marker_key {
                        if *id == v.id {
                            skipping_in_marker_key = None;
                        }
                        continue;
                    }
                }
                if count == max {
                    page.next_key_marker = page.versions.last().map(|v| v.key.clone());
                    page.next_version_id_marker =
                        page.versions.last().map(|v| v.version_id.clone());
                    return page;
                }
                count += 1;
                page.versions.push(ObjectVersion {
                    key: key.clone(),
                    version_id: v.id.clone(),
                    is_latest: i == latest,
                    last_modified: v.last_modified,
                    kind: match &v.object {
                        Some(o) => VersionKind::Object {
                            size: o.data.len() as u64,
                            etag: o.etag.clone(),
                        },
                        None => VersionKind::DeleteMarker,
                    },
                });
            }
            skipping_in_marker_key = None;
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(versioned: bool) -> MemoryStore {
        MemoryStore::new(MemoryStoreConfig {
            versioned,
            min_part: 4,
            ..Default::default()
        })
    }

    fn opts() -> PutOptions {
        PutOptions::default()
    }

    #[tokio::test]
    async fn versions_and_delete_markers() {
        let s = store(true);
        s.put_object("a", Bytes::from_static(b"1"), &opts())
            .await
            .unwrap();
        let second = s
            .put_object("a", Bytes::from_static(b"2"), &opts())
            .await
            .unwrap();
        s.delete_object("a", None).await.unwrap();
        assert!(s.head_object("a", None).await.unwrap_err().is_not_found());
        assert_eq!(s.versions("a").len(), 2);
        let id = second.version_id.unwrap();
        let (_, data) = s
            .get_object_bytes(
                "a",
                GetRequest {
                    version_id: Some(id),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(&data[..], b"2");
        let all = s
            .list_object_versions(&ListVersionsRequest::default())
            .await
            .unwrap();
        assert_eq!(all.versions.len(), 3);
        assert_eq!(all.versions[0].kind, VersionKind::DeleteMarker);
        assert!(all.versions[0].is_latest);
    }

    #[tokio::test]
    async fn unversioned_keeps_one() {
        let s = store(false);
        s.put_object("a", Bytes::from_static(b"1"), &opts())
            .await
            .unwrap();
        let out = s
            .put_object("a", Bytes::from_static(b"2"), &opts())
            .await
            .unwrap();
        assert_eq!(out.version_id, None);
        assert_eq!(s.versions("a").len(), 1);
        s.delete_object("a", None).await.unwrap();
        assert!(s.contents().is_empty());
    }

    #[tokio::test]
    async fn conditions() {
        let s = store(true);
        let first = s
            .put_object("a", Bytes::from_static(b"1"), &opts())
            .await
            .unwrap();
        let excl = PutOptions {
            if_none_match_any: true,
            ..Default::default()
        };
        let e = s.put_object("a", Bytes::new(), &excl).await.unwrap_err();
        assert!(e.is_precondition_failed());
        s.put_object("a", Bytes::from_static(b"2"), &opts())
            .await
            .unwrap();
        let stale = GetRequest {
            if_match: Some(first.etag.clone()),
            ..Default::default()
        };
        assert!(s
            .get_object("a", stale)
            .await
            .err()
            .unwrap()
            .is_precondition_failed());
        let pinned = CopySource::pinned("a", None, &first.etag);
        let e = s
            .copy_object(&pinned, "b", &MetadataDirective::Copy)
            .await
            .unwrap_err();
        assert!(e.is_precondition_failed());
        let by_version = CopySource::pinned("a", first.version_id.clone(), &first.etag);
        s.copy_object(&by_version, "b", &MetadataDirective::Copy)
            .await
            .unwrap();
        assert_eq!(&s.content("b").unwrap()[..], b"1");
        let b2 = MemoryStore::new(MemoryStoreConfig {
            conditional_put: false,
            ..Default::default()
        });
        assert_eq!(
            b2.put_object("x", Bytes::new(), &excl)
                .await
                .unwrap_err()
                .status(),
            Some(501)
        );
    }

    #[tokio::test]
    async fn multipart_rules() {
        let s = store(true);
        let id = s.create_multipart_upload("m", &opts()).await.unwrap();
        let p1 = s
            .upload_part("m", &id, 1, Bytes::from_static(b"ab"))
            .await
            .unwrap();
        let p2 = s
            .upload_part("m", &id, 2, Bytes::from_static(b"cd"))
            .await
            .unwrap();
        let e = s
            .complete_multipart_upload("m", &id, &[p1, p2.clone()])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("EntityTooSmall"));
        let p1 = s
            .upload_part("m", &id, 1, Bytes::from_static(b"abcd"))
            .await
            .unwrap();
        let out = s
            .complete_multipart_upload("m", &id, &[p1, p2])
            .await
            .unwrap();
        assert!(out.etag.ends_with("-2"));
        assert_eq!(&s.content("m").unwrap()[..], b"abcdcd");
        assert_eq!(s.open_uploads(), 0);
    }

    #[tokio::test]
    async fn listing_pages_and_prefixes() {
        let s = store(true);
        for k in ["a/1", "a/2", "b", "c/d/e", "c/f", "d"] {
            s.put_object(k, Bytes::new(), &opts()).await.unwrap();
        }
        s.delete_object("d", None).await.unwrap();
        let mut request = ListRequest {
            delimiter: Some("/".into()),
            max_keys: Some(2),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = s.list_objects(&request).await.unwrap();
            seen.extend(page.common_prefixes.clone());
            seen.extend(page.objects.iter().map(|o| o.key.clone()));
            match page.next_continuation_token {
                Some(t) => request.continuation_token = Some(t),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, ["a/", "b", "c/"]);
        let all = s.list_all("c/", None).await.unwrap();
        assert_eq!(all.objects.len(), 2);
    }
}
