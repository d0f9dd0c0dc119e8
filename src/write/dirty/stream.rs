//! Streaming upload: a new (or emptied) file written front to back sends
//! each whole part while the application keeps writing, from pool memory
//! when it fills one, else read back from the staging file; the close
//! sends the rest and completes the upload. A write behind the upload
//! frontier gives the stream up (the upload is aborted in the background)
//! and the file is saved staged instead.

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::super::context::WriteContext;
use super::super::error::{WriteError, WriteResult};
use super::super::part_pool::PartBuf;
use super::super::staging::{StagingFile, DIRECT_MIN};
use super::{read_staged, DirtyFile};
use crate::s3::{
    CompletedPart, CopySource, MetadataDirective, PutObjectOutput, PutOptions, UploadId,
};
use std::ops::Range;

pub(super) struct Stream {
    pub(super) upload_id: Option<UploadId>,
    pub(super) next_index: u64,
    /// Bytes before this are handed to part uploads.
    pub(super) frontier: u64,
    pub(super) tasks: Vec<JoinHandle<WriteResult<CompletedPart>>>,
    /// The part being written, kept in memory for its upload: the bytes
    /// from `frontier` on (the staging file has them too).
    pub(super) fill: Option<PartBuf>,
    /// The metadata was changed (chmod, chown, utimens) after the upload
    /// was created with it: the completed object gets it by a copy.
    pub(super) metadata_changed: bool,
}

impl Stream {
    pub(super) fn new() -> Self {
        Stream {
            upload_id: None,
            next_index: 0,
            frontier: 0,
            tasks: Vec::new(),
            fill: None,
            metadata_changed: false,
        }
    }
}

impl DirtyFile {
    /// Give up streaming: the multipart upload so far is aborted in the
    /// background; the data is all in the staging file anyway.
    pub(super) fn abandon_stream(&mut self, ctx: &WriteContext) {
        if let Some(stream) = self.stream.take() {
            for task in &stream.tasks {
                task.abort();
            }
            if let Some(upload_id) = stream.upload_id {
                let store = ctx.store.clone();
                let journal = ctx.journal.clone();
                let key = self.key.clone();
                tokio::spawn(async move {
                    match store.abort_multipart_upload(&key, &upload_id).await {
                        Ok(()) => journal.ended(&upload_id),
                        Err(e) => tracing::warn!("cannot abort an abandoned upload of {key}: {e}"),
                    }
                });
            }
        }
    }

    /// Write what falls in the streamed part being filled in memory (or
    /// starts one at the frontier) to memory and the staging file, handing
    /// each whole part to its upload. Returns how many bytes of `data` it
    /// took: the rest is for the staging file alone. An error only if it
    /// took none.
    pub(super) async fn write_to_memory(
        &mut self,
        ctx: &WriteContext,
        offset: u64,
        data: &[u8],
    ) -> WriteResult<usize> {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let Some(stream) = self.stream.as_mut() else {
                break;
            };
            if stream.fill.is_none() {
                // Only a part that starts at the frontier, with nothing
                // written past it yet, and of the pool's size (parts grow
                // after the first 1,000), for a writer of big blocks (a
                // small appender would hold a part's memory for long).
                let part = ctx.layout.part(stream.next_index);
                if at != stream.frontier
                    || self.size > stream.frontier
                    || part.end - part.start != ctx.pool.part_size()
                    || data.len() < DIRECT_MIN
                {
                    break;
                }
                // Only if a fill slot is free: waiting for one could wait
                // for another file that is never written again.
                stream.fill = ctx.pool.try_fill();
            }
            let Some(fill) = stream.fill.as_mut() else {
                break;
            };
            let pos = at - stream.frontier;
            let room = fill.capacity() as u64;
            if pos >= room {
                break;
            }
            let n = (data.len() - done).min((room - pos) as usize);
            fill.write_at(pos as usize, &data[done..done + n]);
            // The staging copy, from the aligned buffer: O_DIRECT for the
            // whole blocks a sequential writer sends.
            let copy = &fill.as_slice()[pos as usize..pos as usize + n];
            if let Err(e) = self.staging.write_part_at(at, copy) {
                // The buffer may now differ from the staging file: the
                // part streams from the staging file instead.
                stream.fill = None;
                if done == 0 {
                    return Err(e);
                }
                tracing::warn!("{e}");
                break;
            }
            done += n;
            // `written` and `size` are the caller's to update; a gap left
            // by a write past the end is zeros in the buffer too.
            if fill.len() as u64 == room {
                self.hand_off(ctx).await;
            }
        }
        Ok(done)
    }

    /// Upload the full part in memory. Its buffer moves from the fill slot
    /// to the write budget, which bounds the memory of uploads in flight.
    async fn hand_off(&mut self, ctx: &WriteContext) {
        let Some(mut fill) = self.stream.as_mut().and_then(|s| s.fill.take()) else {
            return;
        };
        let Some(upload_id) = self.ensure_upload(ctx).await else {
            return;
        };
        let Ok(permit) = ctx.permit(fill.len() as u64).await else {
            self.abandon_stream(ctx);
            return;
        };
        fill.recharge(permit);
        tracing::debug!(key = self.key, "a whole part goes up from memory");
        self.spawn_part(ctx, upload_id, PartBody::Memory(fill.freeze()));
    }

    /// The stream's multipart upload, started if it was not. None if it
    /// cannot start: the stream is given up (not fatal: the flush uploads
    /// from staging).
    async fn ensure_upload(&mut self, ctx: &WriteContext) -> Option<UploadId> {
        let stream = self.stream.as_mut()?;
        if let Some(id) = &stream.upload_id {
            return Some(id.clone());
        }
        let options = PutOptions {
            user_metadata: self.metadata.clone(),
            ..Default::default()
        };
        match ctx.start_upload(&self.key, &options).await {
            Ok(id) => {
                stream.upload_id = Some(id.clone());
                Some(id)
            }
            Err(e) => {
                tracing::warn!("cannot start streaming {}: {e}", self.key);
                self.abandon_stream(ctx);
                None
            }
        }
    }

    /// Start uploads of every whole part the written prefix now covers
    /// (a file streaming from its staging file).
    pub(super) async fn pump(&mut self, ctx: &WriteContext) -> WriteResult<()> {
        loop {
            let Some(stream) = self.stream.as_ref() else {
                return Ok(());
            };
            let range = ctx.layout.part(stream.next_index);
            if stream.fill.is_some()
                || !self.written.covers(&(stream.frontier..range.end))
                || self.size < range.end
            {
                return Ok(());
            }
            let Some(upload_id) = self.ensure_upload(ctx).await else {
                return Ok(());
            };
            let len = range.end - range.start;
            let permit = ctx.permit(len).await?;
            let staging = self.staging.clone();
            let body = if len <= ctx.pool.part_size() {
                PartBody::Staged(staging, range, ctx.pool.with_permit(permit))
            } else {
                PartBody::StagedLarge(staging, range, permit)
            };
            self.spawn_part(ctx, upload_id, body);
        }
    }

    /// Upload the next part of the stream in the background, and move the
    /// frontier past it.
    fn spawn_part(&mut self, ctx: &WriteContext, upload_id: UploadId, body: PartBody) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let store = ctx.store.clone();
        let key = self.key.clone();
        let part_number = stream.next_index as u32 + 1;
        stream.frontier += body.len();
        stream.next_index += 1;
        stream.tasks.push(tokio::spawn(async move {
            // What pays for the body's memory lives until the upload ends.
            let (bytes, _permit) = match body {
                PartBody::Memory(bytes) => (bytes, None),
                PartBody::Staged(staging, range, buf) => {
                    (read_staged_into(staging, range, buf).await?, None)
                }
                PartBody::StagedLarge(staging, range, permit) => {
                    (read_staged(&staging, range).await?, Some(permit))
                }
            };
            Ok(store
                .upload_part(&key, &upload_id, part_number, bytes)
                .await?)
        }));
    }

    pub(super) async fn finish_stream(
        &mut self,
        ctx: &WriteContext,
    ) -> WriteResult<PutObjectOutput> {
        let Some(stream) = self.stream.take() else {
            return self.upload_staged(ctx).await;
        };
        let Some(upload_id) = stream.upload_id.clone() else {
            return self.upload_staged(ctx).await;
        };
        let metadata_changed = stream.metadata_changed;
        let result = self.complete_stream(ctx, stream, &upload_id).await;
        if result.is_err() {
            // Leave no unfinished upload behind; the data is still staged.
            ctx.abort_upload(&self.key, &upload_id).await;
        }
        match result {
            Ok(out) if metadata_changed => self.restamp_metadata(ctx, &out).await,
            other => other,
        }
    }

    /// Give the object just stored (`stored`) the file's metadata as it is
    /// now, by copying it onto itself (server-side; S3 has no other way to
    /// change it).
    async fn restamp_metadata(
        &self,
        ctx: &WriteContext,
        stored: &PutObjectOutput,
    ) -> WriteResult<PutObjectOutput> {
        let options = PutOptions {
            user_metadata: self.metadata.clone(),
            ..Default::default()
        };
        let source = CopySource::pinned(self.key.clone(), stored.version_id.clone(), &stored.etag);
        let copied = ctx
            .store
            .copy(
                &source,
                &self.key,
                self.size,
                &MetadataDirective::Replace(options),
            )
            .await?;
        Ok(PutObjectOutput {
            etag: copied.etag,
            version_id: copied.version_id,
        })
    }

    async fn complete_stream(
        &self,
        ctx: &WriteContext,
        mut stream: Stream,
        upload_id: &UploadId,
    ) -> WriteResult<PutObjectOutput> {
        let mut parts = Vec::new();
        let mut tasks = std::mem::take(&mut stream.tasks);
        for i in 0..tasks.len() {
            let part = match (&mut tasks[i]).await {
                Ok(result) => result,
                Err(e) => Err(WriteError::Internal(format!(
                    "part upload task failed: {e}"
                ))),
            };
            match part {
                Ok(part) => parts.push(part),
                Err(e) => {
                    // The upload is aborted: the parts still going are
                    // wasted work, and hold memory.
                    for task in &tasks[i + 1..] {
                        task.abort();
                    }
                    return Err(e);
                }
            }
        }
        // The rest, from the frontier to the end. A file that ends exactly
        // on a part boundary has nothing left: no empty part is sent (some
        // servers refuse them).
        let mut index = stream.next_index;
        while ctx.layout.part(index).start < self.size || parts.is_empty() {
            let full = ctx.layout.part(index);
            let range = full.start..full.end.min(self.size);
            let (body, _permit) = self.part_body(ctx, range).await?;
            parts.push(
                ctx.store
                    .upload_part(&self.key, upload_id, index as u32 + 1, body)
                    .await?,
            );
            index += 1;
        }
        ctx.finish_upload(&self.key, upload_id, &parts, self.exclusive)
            .await
    }
}

/// Where a streamed part's bytes come from, and what pays for their
/// memory.
enum PartBody {
    /// A filled pool buffer (its permit is inside).
    Memory(Bytes),
    /// To be read from the staging file into a pool buffer.
    Staged(StagingFile, Range<u64>, PartBuf),
    /// To be read from the staging file into new memory: a part bigger
    /// than the pool's (after the first 1,000 parts).
    StagedLarge(StagingFile, Range<u64>, tokio::sync::OwnedSemaphorePermit),
}

impl PartBody {
    fn len(&self) -> u64 {
        match self {
            PartBody::Memory(bytes) => bytes.len() as u64,
            PartBody::Staged(_, range, _) | PartBody::StagedLarge(_, range, _) => {
                range.end - range.start
            }
        }
    }
}

/// Read a range of a staging file into a pool buffer, off the async
/// workers.
async fn read_staged_into(
    staging: StagingFile,
    range: Range<u64>,
    mut buf: PartBuf,
) -> WriteResult<Bytes> {
    tokio::task::spawn_blocking(move || {
        staging.read_into(range.start, buf.space((range.end - range.start) as usize))?;
        Ok(buf.freeze())
    })
    .await
    .map_err(|e| WriteError::Internal(format!("staging read task failed: {e}")))?
}
