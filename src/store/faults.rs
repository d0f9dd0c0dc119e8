//! A store wrapper that misbehaves on purpose, for tests of the core:
//! errors, latency, pauses, and answers lost after the store applied the
//! request (the case a retry must not misread).
//!
//! Faults are armed per operation and fire once each, in the order armed;
//! `set_latency` delays every request. The wrapped store is untouched, so
//! a test can compare what it holds with what the core reported.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::{ObjectStore, Store, StoreResult};
use crate::s3::{
    CompletedPart, CopyObjectOutput, CopySource, DeleteFailure, ErrorKind, GetObjectOutput,
    GetRequest, ListPage, ListRequest, ListVersionsRequest, MetadataDirective, ObjectIdentifier,
    ObjectMeta, PutObjectOutput, PutOptions, S3Error, UploadId, VersionPage,
};

/// The operations a fault can be armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Head,
    Get,
    Put,
    Delete,
    Copy,
    CreateUpload,
    UploadPart,
    UploadPartCopy,
    CompleteUpload,
    AbortUpload,
    List,
    ListVersions,
    /// Whichever request comes next.
    Any,
}

/// What happens to the request a fault fires on.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The store is not asked; the request fails with this status and code
    /// (a 5xx or 429 is what a retry would see as transient).
    Error { status: u16, code: &'static str },
    /// The store applies the request, and the answer is lost: the caller
    /// sees a broken connection.
    LostAnswer,
    /// The request waits for a permit of this semaphore before it goes on
    /// (the test adds permits to let it through).
    Pause(Arc<Semaphore>),
}

struct Armed {
    op: Op,
    fault: Fault,
}

/// A store that fails when told to.
pub struct FaultyStore {
    inner: Store,
    armed: Mutex<VecDeque<Armed>>,
    latency: Mutex<Duration>,
}

impl FaultyStore {
    pub fn new(inner: Store) -> Self {
        FaultyStore {
            inner,
            armed: Mutex::new(VecDeque::new()),
            latency: Mutex::new(Duration::ZERO),
        }
    }

    /// The next request of `op` meets `fault`.
    pub fn arm(&self, op: Op, fault: Fault) {
        self.armed.lock().push_back(Armed { op, fault });
    }

    /// Drop every armed fault that has not fired.
    pub fn disarm(&self) {
        self.armed.lock().clear();
    }

    /// Faults armed and not yet fired.
    pub fn pending(&self) -> usize {
        self.armed.lock().len()
    }

    /// Every request waits this long before it is sent.
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock() = latency;
    }

    fn take(&self, op: Op) -> Option<Fault> {
        let mut armed = self.armed.lock();
        let at = armed.iter().position(|a| a.op == op || a.op == Op::Any)?;
        armed.remove(at).map(|a| a.fault)
    }

    /// Run one request through the armed faults.
    async fn run<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        name: &'static str,
        key: Option<&'a str>,
        request: StoreResult<'a, T>,
    ) -> Result<T, S3Error> {
        let latency = *self.latency.lock();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match self.take(op) {
            None => request.await,
            Some(Fault::Error { status, code }) => Err(S3Error::new(
                name,
                key,
                ErrorKind::Service {
                    status,
                    code: code.to_owned(),
                    message: "injected by FaultyStore".to_owned(),
                    request_id: None,
                },
            )),
            Some(Fault::LostAnswer) => {
                // Applied, whatever its outcome; the caller never hears it.
                let _ = request.await;
                Err(S3Error::new(
                    name,
                    key,
                    ErrorKind::Transport {
                        detail: "connection closed before the answer (injected)".to_owned(),
                        timeout: false,
                    },
                ))
            }
            Some(Fault::Pause(gate)) => {
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
                request.await
            }
        }
    }
}

impl ObjectStore for FaultyStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn copy_if_match_known(&self) -> Option<bool> {
        self.inner.copy_if_match_known()
    }

    fn reupload_up_to(&self) -> u64 {
        self.inner.reupload_up_to()
    }

    fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreResult<'a, ObjectMeta> {
        let inner = self.inner.head_object(key, version_id);
        Box::pin(self.run(Op::Head, "HeadObject", Some(key), inner))
    }

    fn get_object<'a>(
        &'a self,
        key: &'a str,
        request: GetRequest,
    ) -> StoreResult<'a, GetObjectOutput> {
        let inner = self.inner.get_object(key, request);
        Box::pin(self.run(Op::Get, "GetObject", Some(key), inner))
    }

    fn put_object<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        options: &'a PutOptions,
    ) -> StoreResult<'a, PutObjectOutput> {
        let inner = self.inner.put_object(key, body, options);
        Box::pin(self.run(Op::Put, "PutObject", Some(key), inner))
    }

    fn delete_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreResult<'a, ()> {
        let inner = self.inner.delete_object(key, version_id);
        Box::pin(self.run(Op::Delete, "DeleteObject", Some(key), inner))
    }

    fn delete_objects<'a>(
        &'a self,
        objects: &'a [ObjectIdentifier],
    ) -> StoreResult<'a, Vec<DeleteFailure>> {
        let inner = self.inner.delete_objects(objects);
        Box::pin(self.run(Op::Delete, "DeleteObjects", None, inner))
    }

    fn copy_object<'a>(
        &'a self,
        source: &'a CopySource,
        dest: &'a str,
        directive: &'a MetadataDirective,
    ) -> StoreResult<'a, CopyObjectOutput> {
        let inner = self.inner.copy_object(source, dest, directive);
        Box::pin(self.run(Op::Copy, "CopyObject", Some(dest), inner))
    }

    fn create_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        options: &'a PutOptions,
    ) -> StoreResult<'a, UploadId> {
        let inner = self.inner.create_multipart_upload(key, options);
        Box::pin(self.run(Op::CreateUpload, "CreateMultipartUpload", Some(key), inner))
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<'a, CompletedPart> {
        let inner = self.inner.upload_part(key, upload_id, part_number, body);
        Box::pin(self.run(Op::UploadPart, "UploadPart", Some(key), inner))
    }

    fn upload_part_copy<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        part_number: u32,
        source: &'a CopySource,
        range: Range<u64>,
    ) -> StoreResult<'a, CompletedPart> {
        let inner = self
            .inner
            .upload_part_copy(key, upload_id, part_number, source, range);
        Box::pin(self.run(Op::UploadPartCopy, "UploadPartCopy", Some(key), inner))
    }

    fn complete_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        parts: &'a [CompletedPart],
    ) -> StoreResult<'a, PutObjectOutput> {
        let inner = self.inner.complete_multipart_upload(key, upload_id, parts);
        Box::pin(self.run(
            Op::CompleteUpload,
            "CompleteMultipartUpload",
            Some(key),
            inner,
        ))
    }

    fn abort_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
    ) -> StoreResult<'a, ()> {
        let inner = self.inner.abort_multipart_upload(key, upload_id);
        Box::pin(self.run(Op::AbortUpload, "AbortMultipartUpload", Some(key), inner))
    }

    fn list_objects<'a>(&'a self, request: &'a ListRequest) -> StoreResult<'a, ListPage> {
        let inner = self.inner.list_objects(request);
        Box::pin(self.run(Op::List, "ListObjectsV2", None, inner))
    }

    fn list_object_versions<'a>(
        &'a self,
        request: &'a ListVersionsRequest,
    ) -> StoreResult<'a, VersionPage> {
        let inner = self.inner.list_object_versions(request);
        Box::pin(self.run(Op::ListVersions, "ListObjectVersions", None, inner))
    }
}
