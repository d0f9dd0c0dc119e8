//! Staged upload, for every file that did not stream: at flush, each
//! part is either copied server-side from the base object (UploadPartCopy,
//! pinned to the version the file was opened on, when none of its bytes
//! changed) or assembled from staged and base bytes. A file of one part is
//! a single PutObject (conditional for an O_EXCL create).

use std::ops::Range;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use super::super::context::WriteContext;
use super::super::error::{WriteError, WriteResult};
use super::super::layout::MIN_PART;
use super::{BaseObject, DirtyFile};
use crate::s3::{PutObjectOutput, UploadId};

/// Parts uploaded at once by one flush.
const PARTS_IN_FLIGHT: usize = 4;

impl DirtyFile {
    pub(super) async fn upload_staged(&self, ctx: &WriteContext) -> WriteResult<PutObjectOutput> {
        let parts = ctx
            .layout
            .parts(self.size)
            .ok_or(WriteError::TooLarge("file too large for 10,000 parts"))?;
        if parts.len() == 1 {
            let (body, _permit) = self.part_body(ctx, 0..self.size).await?;
            return match ctx
                .store
                .put_object(&self.key, body.clone(), &self.put_options())
                .await
            {
                Ok(out) => Ok(out),
                Err(e) if self.exclusive && e.is_precondition_failed() => {
                    self.exclusive_conflict(ctx, &body).await
                }
                Err(e) => Err(e.into()),
            };
        }
        let upload_id = ctx.start_upload(&self.key, &self.put_options()).await?;
        let last = parts.len() - 1;
        let may_copy = self.copies_are_pinned(ctx, &upload_id, &parts).await;
        let uploads = futures::stream::iter(parts.into_iter().enumerate())
            .map(|(index, range)| {
                let upload_id = upload_id.clone();
                async move {
                    let number = index as u32 + 1;
                    let copyable = self.copyable(&range, index == last).filter(|_| may_copy);
                    if let Some(base) = copyable {
                        let source = base.source(&self.key);
                        return Ok::<_, WriteError>(
                            ctx.store
                                .upload_part_copy(&self.key, &upload_id, number, &source, range)
                                .await?,
                        );
                    }
                    let _permit = ctx.permit_for_copy(range.end - range.start).await?;
                    let body = self.assemble(ctx, range).await?;
                    Ok(ctx
                        .store
                        .upload_part(&self.key, &upload_id, number, body)
                        .await?)
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await;
        let completed = match uploads {
            Ok(parts) => {
                ctx.finish_upload(&self.key, &upload_id, &parts, self.exclusive)
                    .await
            }
            Err(e) => Err(e),
        };
        if completed.is_err() {
            ctx.abort_upload(&self.key, &upload_id).await;
        }
        completed
    }

    /// An O_EXCL create's PUT found the key taken. If an earlier flush of
    /// this very file stored it and its answer was lost (the caller got an
    /// error, the bucket got the bytes), the object there is ours: same
    /// bytes, same MD5. Anything else was created elsewhere: EEXIST.
    async fn exclusive_conflict(
        &self,
        ctx: &WriteContext,
        body: &Bytes,
    ) -> WriteResult<PutObjectOutput> {
        let there = ctx.store.head_object(&self.key, None).await?;
        if there.etag == crate::s3::hex_digest(&Md5::digest(body)) {
            tracing::info!(
                "{} is already stored by an earlier attempt whose answer was lost",
                self.key
            );
            return Ok(PutObjectOutput {
                etag: there.etag,
                version_id: there.version_id,
            });
        }
        Err(WriteError::NameTaken {
            key: self.key.clone(),
        })
    }

    /// Whether this save may copy parts from its base server-side: always
    /// when the base has a version id, else where the server honours
    /// `x-amz-copy-source-if-match` (probed with the first copyable part,
    /// see `copy_pin.rs`).
    async fn copies_are_pinned(
        &self,
        ctx: &WriteContext,
        upload_id: &UploadId,
        parts: &[Range<u64>],
    ) -> bool {
        let last = parts.len().saturating_sub(1);
        let Some((index, range, base)) = parts
            .iter()
            .enumerate()
            .find_map(|(i, r)| Some((i, r, self.copyable(r, i == last)?)))
        else {
            return false;
        };
        if base.version_id.is_some() {
            return true;
        }
        let source = base.source(&self.key);
        ctx.copy_pin
            .copies_are_pinned(
                &ctx.store,
                &self.key,
                upload_id,
                index as u32 + 1,
                &source,
                range,
            )
            .await
    }

    /// The base object a part can be copied from server-side: none of its
    /// bytes changed, it lies within the base, and it is big enough to be a
    /// part on its own.
    fn copyable(&self, range: &Range<u64>, is_last: bool) -> Option<&BaseObject> {
        let base = self.base.as_ref()?;
        (!base.etag.is_empty()
            && !self.written.overlaps(range)
            && range.end <= base.size
            && (range.end - range.start >= MIN_PART || is_last)
            && range.end > range.start)
            .then_some(base)
    }
}
