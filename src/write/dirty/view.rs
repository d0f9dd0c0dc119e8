//! Reads of a dirty file that do not wait for its lock.
//!
//! The file's lock is held through a whole upload (writes must not change
//! the bytes being sent), which can take minutes for a big file. Reads
//! need none of that: they need which bytes are staged, the staging file
//! and the base version, as they were at the last change. The dirty file
//! publishes that `ReadView` after every change; a read takes the current
//! one under a read guard of the staging file, which the end of an upload
//! (or a server-side copy replacing the content) takes for writing before
//! it empties the staging file, so no read ever sees staged bytes that
//! are gone.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::RwLock;

use super::super::context::WriteContext;
use super::super::error::WriteResult;
use super::super::ranges::RangeSet;
use super::super::staging::StagingFile;
use super::{read_staged, BaseObject};
use crate::s3::GetRequest;

/// The file's content as of its last change.
#[derive(Debug, Clone)]
pub(super) struct ReadView {
    pub(super) key: String,
    pub(super) staging: StagingFile,
    pub(super) size: u64,
    pub(super) base: Option<BaseObject>,
    pub(super) written: RangeSet,
}

impl ReadView {
    /// The file's bytes in `range`: staged where written, else the base
    /// version's (fetched), else zeros.
    pub(super) async fn assemble(
        &self,
        ctx: &WriteContext,
        range: Range<u64>,
    ) -> WriteResult<Bytes> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for (piece, staged) in self.written.split(range) {
            if staged {
                out.extend_from_slice(&read_staged(&self.staging, piece).await?);
                continue;
            }
            let base_end = self.base.as_ref().map_or(0, |b| b.size).min(piece.end);
            if piece.start < base_end {
                let base = self.base.as_ref();
                let request = GetRequest {
                    range: Some(piece.start..base_end),
                    version_id: base.and_then(|b| b.version_id.clone()),
                    if_match: base.map(|b| b.etag.clone()).filter(|e| !e.is_empty()),
                    ..Default::default()
                };
                let (_, data) = ctx.store.get_object_bytes(&self.key, request).await?;
                out.extend_from_slice(&data);
            }
            let zeros = piece.end - base_end.max(piece.start);
            out.resize(out.len() + zeros as usize, 0);
        }
        Ok(Bytes::from(out))
    }
}

/// What a reader holds to read a dirty file without its lock. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct ReadAccess {
    view: Arc<Mutex<Arc<ReadView>>>,
    /// Read-held by reads, write-held while the staging file is emptied.
    staging: Arc<RwLock<()>>,
}

impl ReadAccess {
    pub(super) fn new(view: ReadView) -> Self {
        ReadAccess {
            view: Arc::new(Mutex::new(Arc::new(view))),
            staging: Arc::new(RwLock::new(())),
        }
    }

    pub(super) fn publish(&self, view: ReadView) {
        *self.view.lock() = Arc::new(view);
    }

    /// Hold this while emptying the staging file of bytes the published
    /// view no longer names (publish the new view first).
    pub(super) async fn emptying(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.staging.write().await
    }

    /// Read `len` bytes at `offset` as the file was at its last change.
    pub async fn read(&self, ctx: &WriteContext, offset: u64, len: u32) -> WriteResult<Vec<u8>> {
        let _staged_bytes_stay = self.staging.read().await;
        let view = self.view.lock().clone();
        let end = (offset + len as u64).min(view.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        Ok(view.assemble(ctx, offset..end).await?.to_vec())
    }
}
