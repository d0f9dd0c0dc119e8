//! The real store: `S3Client` behind the seam. Every method is the
//! client's own; this file only forwards.

use std::ops::Range;

use bytes::Bytes;

use super::{ObjectStore, StoreResult};
use crate::s3::{
    CompletedPart, CopyObjectOutput, CopySource, DeleteFailure, GetObjectOutput, GetRequest,
    ListPage, ListRequest, ListVersionsRequest, MetadataDirective, ObjectIdentifier, ObjectMeta,
    PutObjectOutput, PutOptions, S3Client, UploadId, VersionPage,
};

impl ObjectStore for S3Client {
    fn location(&self) -> String {
        format!("{}/{}", self.endpoint().display_url(), self.bucket())
    }

    /// B2 accepts `x-amz-copy-source-if-match` (FACTS.md); other servers
    /// are asked.
    fn copy_if_match_known(&self) -> Option<bool> {
        self.endpoint().is_b2().then_some(true)
    }

    fn reupload_up_to(&self) -> u64 {
        self.price_list().reupload_up_to()
    }

    fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreResult<'a, ObjectMeta> {
        Box::pin(S3Client::head_object(self, key, version_id))
    }

    fn get_object<'a>(
        &'a self,
        key: &'a str,
        request: GetRequest,
    ) -> StoreResult<'a, GetObjectOutput> {
        Box::pin(S3Client::get_object(self, key, request))
    }

    fn put_object<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        options: &'a PutOptions,
    ) -> StoreResult<'a, PutObjectOutput> {
        Box::pin(S3Client::put_object(self, key, body, options))
    }

    fn delete_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreResult<'a, ()> {
        Box::pin(S3Client::delete_object(self, key, version_id))
    }

    fn delete_objects<'a>(
        &'a self,
        objects: &'a [ObjectIdentifier],
    ) -> StoreResult<'a, Vec<DeleteFailure>> {
        Box::pin(S3Client::delete_objects(self, objects))
    }

    fn copy_object<'a>(
        &'a self,
        source: &'a CopySource,
        dest: &'a str,
        directive: &'a MetadataDirective,
    ) -> StoreResult<'a, CopyObjectOutput> {
        Box::pin(S3Client::copy_object(self, source, dest, directive))
    }

    fn create_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        options: &'a PutOptions,
    ) -> StoreResult<'a, UploadId> {
        Box::pin(S3Client::create_multipart_upload(self, key, options))
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<'a, CompletedPart> {
        Box::pin(S3Client::upload_part(
            self,
            key,
            upload_id,
            part_number,
            body,
        ))
    }

    fn upload_part_copy<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        part_number: u32,
        source: &'a CopySource,
        range: Range<u64>,
    ) -> StoreResult<'a, CompletedPart> {
        Box::pin(S3Client::upload_part_copy(
            self,
            key,
            upload_id,
            part_number,
            source,
            range,
        ))
    }

    fn complete_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
        parts: &'a [CompletedPart],
    ) -> StoreResult<'a, PutObjectOutput> {
        Box::pin(S3Client::complete_multipart_upload(
            self, key, upload_id, parts,
        ))
    }

    fn abort_multipart_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a UploadId,
    ) -> StoreResult<'a, ()> {
        Box::pin(S3Client::abort_multipart_upload(self, key, upload_id))
    }

    fn list_objects<'a>(&'a self, request: &'a ListRequest) -> StoreResult<'a, ListPage> {
        Box::pin(S3Client::list_objects(self, request))
    }

    fn list_object_versions<'a>(
        &'a self,
        request: &'a ListVersionsRequest,
    ) -> StoreResult<'a, VersionPage> {
        Box::pin(S3Client::list_object_versions(self, request))
    }
}
