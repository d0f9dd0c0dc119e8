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
use crate::s3::{PutObjectOutput, UploadId, MAX_SINGLE_COPY};

/// Parts uploaded at once by one flush.
const PARTS_IN_FLIGHT: usize = 4;

/// One part of a staged upload, copied from the base or uploaded.
struct Piece {
    range: Range<u64>,
    copy: bool,
}

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
        let mut merged = self.pieces(&parts);
        self.shrink_uploads(&mut merged);
        let plan = match self.copies_are_pinned(ctx, &upload_id, &merged).await {
            true => merged,
            // Every part read and uploaded: in the layout's parts, which
            // memory permits are sized for.
            false => parts
                .into_iter()
                .map(|range| Piece { range, copy: false })
                .collect(),
        };
        let uploads = futures::stream::iter(plan.into_iter().enumerate())
            .map(|(index, Piece { range, copy })| {
                let upload_id = upload_id.clone();
                async move {
                    let number = index as u32 + 1;
                    if let (true, Some(base)) = (copy, &self.base) {
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

    /// The parts of this save: the layout's, except that each run of
    /// parts none of whose bytes changed becomes one server-side copy of
    /// up to 5 GiB (S3's limit for one copy). A copy is billed per request
    /// whatever its size (class C on B2), so 4 KiB changed in the middle
    /// of a file costs two copies, not one per part. Uploaded parts keep
    /// the layout's sizes, and a merged copy, made of whole parts, is never
    /// under the 5 MiB minimum except as the last part.
    fn pieces(&self, parts: &[Range<u64>]) -> Vec<Piece> {
        let last = parts.len().saturating_sub(1);
        let mut plan: Vec<Piece> = Vec::with_capacity(parts.len());
        for (index, range) in parts.iter().enumerate() {
            let copy = self.copyable(range, index == last).is_some();
            match plan.last_mut() {
                Some(run)
                    if copy
                        && run.copy
                        && run.range.end == range.start
                        && range.end - run.range.start <= MAX_SINGLE_COPY =>
                {
                    run.range.end = range.end;
                }
                _ => plan.push(Piece {
                    range: range.clone(),
                    copy,
                }),
            }
        }
        plan
    }

    /// An uploaded part next to a copy gives the copy the unchanged bytes
    /// at its edge, down to the 5 MiB minimum around the change: what is
    /// read from the base to assemble the part (billed as egress on B2) is
    /// then 5 MiB, not a whole part of the layout. A part whose neighbours
    /// cannot take the bytes (not copies, or at 5 GiB already) is left
    /// whole.
    fn shrink_uploads(&self, plan: &mut [Piece]) {
        let Some(base) = self.base.as_ref() else {
            return;
        };
        for i in 0..plan.len() {
            let prev = i.checked_sub(1).filter(|&p| plan[p].copy);
            let next = Some(i + 1).filter(|&n| n < plan.len() && plan[n].copy);
            if plan[i].copy || (prev.is_none() && next.is_none()) {
                continue;
            }
            let Range { start, end } = plan[i].range.clone();
            let Some(changed) = self.written.extent(start..end) else {
                continue;
            };
            // Every changed byte stays in the part; it keeps the edge that
            // has no copy beside it to take the rest.
            let (new_start, new_end) = match (prev, next) {
                (None, _) => (start, start + (changed.end - start).max(MIN_PART)),
                (_, None) => (end.saturating_sub((end - changed.start).max(MIN_PART)), end),
                _ => {
                    let len = (changed.end - changed.start).max(MIN_PART);
                    let at = changed.start.min(end.saturating_sub(len));
                    (at, at + len)
                }
            };
            if new_end - new_start >= end - start {
                continue;
            }
            let fits = |n: Option<usize>, extra: u64| {
                n.is_none_or(|n| plan[n].range.end - plan[n].range.start + extra <= MAX_SINGLE_COPY)
            };
            if new_start > base.size || !fits(prev, new_start - start) || !fits(next, end - new_end)
            {
                continue;
            }
            if let Some(p) = prev {
                plan[p].range.end = new_start;
            }
            if let Some(n) = next {
                plan[n].range.start = new_end;
            }
            plan[i].range = new_start..new_end;
        }
    }

    /// Whether this save may copy parts from its base server-side: always
    /// when the base has a version id, else where the server honours
    /// `x-amz-copy-source-if-match` (probed with the first copy of `plan`,
    /// into its part number, which every plan uploads for real; see
    /// `copy_pin.rs`).
    async fn copies_are_pinned(
        &self,
        ctx: &WriteContext,
        upload_id: &UploadId,
        plan: &[Piece],
    ) -> bool {
        let (Some(index), Some(base)) = (plan.iter().position(|p| p.copy), self.base.as_ref())
        else {
            return false;
        };
        let range = &plan[index].range;
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
