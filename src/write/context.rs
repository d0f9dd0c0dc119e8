//! What every dirty file shares: the store, the part layout, the staging
//! directory, the journal of unfinished uploads, and the write budget
//! (memory for part uploads in flight, shared by all files, so that many
//! writers at once cannot exhaust memory).

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::copy_pin::CopyPin;
use super::error::{WriteError, WriteResult};
use super::journal::UploadJournal;
use super::layout::PartLayout;
use super::part_pool::PartPool;
use super::staging::{StagingDir, DIRECT_MIN};
use crate::s3::{multipart_etag, CompletedPart, PutObjectOutput, PutOptions, UploadId};
use crate::store::Store;

/// Files that may fill a part in memory at once (the memory comes on top
/// of the write budget); more writers at once stream from their staging
/// files.
const FILLING_IN_MEMORY: usize = 4;

/// What every dirty file shares.
pub struct WriteContext {
    pub store: Store,
    pub layout: PartLayout,
    pub staging: StagingDir,
    /// Bytes of part data in memory for uploads, in KiB permits.
    budget: Arc<Semaphore>,
    budget_kib: u64,
    /// Memory for parts filled by streaming files and uploaded from there.
    pub(super) pool: PartPool,
    /// Unfinished multipart uploads, for the cleanup after a crash.
    pub journal: Arc<UploadJournal>,
    /// Whether parts copied from a base without a version id are pinned.
    pub(super) copy_pin: CopyPin,
    /// Where a file uploaded whole from staging is kept for reads too.
    pub disk_cache: Option<Arc<crate::read::DiskCache>>,
}

impl WriteContext {
    pub fn new(
        store: Store,
        layout: PartLayout,
        staging: StagingDir,
        journal: UploadJournal,
        write_buffer: u64,
    ) -> Self {
        let kib = (write_buffer / 1024).clamp(layout.first_part() / 1024, u32::MAX as u64 / 2);
        WriteContext {
            disk_cache: None,
            copy_pin: CopyPin::new(store.copy_if_match_known()),
            store,
            layout,
            staging,
            budget: Arc::new(Semaphore::new(kib as usize)),
            budget_kib: kib,
            pool: PartPool::new(layout.first_part(), FILLING_IN_MEMORY),
            journal: Arc::new(journal),
        }
    }

    pub(super) async fn start_upload(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> Result<UploadId, crate::s3::S3Error> {
        let id = self.store.create_multipart_upload(key, options).await?;
        self.journal.started(key, &id);
        Ok(id)
    }

    /// Complete an upload. For an `O_EXCL` create (`exclusive`) the name
    /// is HEADed first, since a multipart upload cannot be made
    /// conditional on every server: taken means `NameTaken` (the caller
    /// aborts the upload), unless what is there is exactly what these
    /// parts make, an earlier attempt of this very save whose answer was
    /// lost. A key without `listBuckets` gets 403 for a missing name,
    /// which counts as absent (FACTS.md).
    pub(super) async fn finish_upload(
        &self,
        key: &str,
        id: &UploadId,
        parts: &[CompletedPart],
        exclusive: bool,
    ) -> WriteResult<PutObjectOutput> {
        if exclusive {
            match self.store.head_object(key, None).await {
                Ok(there) if Some(&there.etag) == multipart_etag(parts).as_ref() => {
                    tracing::info!(
                        "{key} is already stored by an earlier attempt whose answer was lost"
                    );
                    self.abort_upload(key, id).await;
                    return Ok(PutObjectOutput {
                        etag: there.etag,
                        version_id: there.version_id,
                    });
                }
                Ok(_) => return Err(WriteError::NameTaken { key: key.into() }),
                Err(e) if e.is_not_found() || e.is_access_denied() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let out = self.store.complete_multipart_upload(key, id, parts).await?;
        self.journal.ended(id);
        Ok(out)
    }

    pub(super) async fn abort_upload(&self, key: &str, id: &UploadId) {
        match self.store.abort_multipart_upload(key, id).await {
            Ok(()) => self.journal.ended(id),
            Err(e) => tracing::warn!("cannot abort an unfinished upload of {key}: {e}"),
        }
    }

    pub(super) async fn permit(&self, len: u64) -> WriteResult<tokio::sync::OwnedSemaphorePermit> {
        // Never ask for more than the whole budget, or it could never be
        // granted.
        let kib = len.div_ceil(1024).clamp(1, self.budget_kib) as u32;
        self.budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| WriteError::Internal("shutting down".into()))
    }

    /// A permit for a body assembled in new memory. For a big one the
    /// pool's free buffers are let go first, so the two do not add up.
    pub(super) async fn permit_for_copy(
        &self,
        len: u64,
    ) -> WriteResult<tokio::sync::OwnedSemaphorePermit> {
        if len >= DIRECT_MIN as u64 {
            self.pool.trim();
        }
        self.permit(len).await
    }
}
