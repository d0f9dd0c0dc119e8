//! A file with local changes not yet in the bucket, and how they get there.
//!
//! Every byte written is in the file's staging file before the write
//! returns (a streamed part also in memory, for its upload), so reads of a
//! file being written see the written bytes, and a failed upload or a
//! killed daemon loses nothing. Which bytes are local is tracked as a
//! `RangeSet`; the rest of the file is the *base* object it was opened
//! from, if any.
//!
//! Two ways up:
//! - **Streaming**, for a new or truncated file written front to back:
//!   written in big blocks, the part being written is also kept in memory
//!   from a pool (`part_pool`), and its staging copy written from there
//!   with O_DIRECT; once whole, the part is uploaded from that memory while
//!   the application keeps writing, and so is the last, partial part at
//!   close. Otherwise (small writes, no fill slot free) the file streams
//!   from the staging file: each whole part is read back from it and
//!   uploaded. A file flushed while still empty (`> file`) streams too.
//!   A write behind the upload frontier abandons the stream (the multipart
//!   upload is aborted) and the file falls back to staged upload.
//! - **Staged**, for everything else: at flush, each part is either copied
//!   server-side from the base object (UploadPartCopy, when none of its
//!   bytes changed) or assembled from staged bytes and base bytes. Files up
//!   to one part are a single PutObject.
//!
//! Uploads take permits from a write budget shared by all files, so many
//! writers at once cannot exhaust memory.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::journal::UploadJournal;
use super::layout::{PartLayout, MIN_PART};
use super::part_pool::{PartBuf, PartPool};
use super::ranges::RangeSet;
use super::staging::{StagingDir, StagingFile, DIRECT_MIN};
use crate::fs::error::{FsError, FsResult};
use crate::s3::{
    CompletedPart, CopySource, GetRequest, MetadataDirective, PutObjectOutput, PutOptions, UploadId,
};
use crate::store::Store;

/// Parts uploaded at once by one flush.
const PARTS_IN_FLIGHT: usize = 4;

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
    pool: PartPool,
    /// Unfinished multipart uploads, for the cleanup after a crash.
    pub journal: Arc<UploadJournal>,
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
            store,
            layout,
            staging,
            budget: Arc::new(Semaphore::new(kib as usize)),
            budget_kib: kib,
            pool: PartPool::new(layout.first_part(), FILLING_IN_MEMORY),
            journal: Arc::new(journal),
        }
    }

    async fn start_upload(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> Result<UploadId, crate::s3::S3Error> {
        let id = self.store.create_multipart_upload(key, options).await?;
        self.journal.started(key, &id);
        Ok(id)
    }

    async fn finish_upload(
        &self,
        key: &str,
        id: &UploadId,
        parts: &[CompletedPart],
    ) -> Result<PutObjectOutput, crate::s3::S3Error> {
        let out = self.store.complete_multipart_upload(key, id, parts).await?;
        self.journal.ended(id);
        Ok(out)
    }

    async fn abort_upload(&self, key: &str, id: &UploadId) {
        match self.store.abort_multipart_upload(key, id).await {
            Ok(()) => self.journal.ended(id),
            Err(e) => tracing::warn!("cannot abort an unfinished upload of {key}: {e}"),
        }
    }

    async fn permit(&self, len: u64) -> FsResult<tokio::sync::OwnedSemaphorePermit> {
        // Never ask for more than the whole budget, or it could never be
        // granted.
        let kib = len.div_ceil(1024).clamp(1, self.budget_kib) as u32;
        self.budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| FsError::new(libc::EIO, "shutting down"))
    }

    /// A permit for a body assembled in new memory. For a big one the
    /// pool's free buffers are let go first, so the two do not add up.
    async fn permit_for_copy(&self, len: u64) -> FsResult<tokio::sync::OwnedSemaphorePermit> {
        if len >= DIRECT_MIN as u64 {
            self.pool.trim();
        }
        self.permit(len).await
    }
}

/// The object version a dirty file's unchanged bytes come from. Every
/// read and server-side copy of them names this version (by version id
/// where the bucket keeps versions, and by ETag always), so another
/// writer's object replacing it meanwhile can never leak into this file:
/// see `BaseObject::source`.
#[derive(Debug, Clone)]
pub struct BaseObject {
    pub etag: String,
    pub size: u64,
    pub version_id: Option<String>,
}

impl BaseObject {
    /// The copy source of this version of `key`.
    fn source(&self, key: &str) -> CopySource {
        CopySource::pinned(key, self.version_id.clone(), &self.etag)
    }
}

struct Stream {
    upload_id: Option<UploadId>,
    next_index: u64,
    /// Bytes before this are handed to part uploads.
    frontier: u64,
    tasks: Vec<JoinHandle<FsResult<CompletedPart>>>,
    /// The part being written, kept in memory for its upload: the bytes
    /// from `frontier` on (the staging file has them too).
    fill: Option<PartBuf>,
    /// The metadata was changed (chmod, chown, utimens) after the upload
    /// was created with it: the completed object gets it by a copy.
    metadata_changed: bool,
}

impl Stream {
    fn new() -> Self {
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

pub struct DirtyFile {
    pub key: String,
    staging: StagingFile,
    pub size: u64,
    base: Option<BaseObject>,
    written: RangeSet,
    /// The last part of a streamed file, from memory, while it uploads.
    tail: Option<(u64, Bytes)>,
    /// s3fs-style user metadata stored with the object (mode, uid, gid,
    /// mtime) plus any other metadata the base object had.
    pub metadata: BTreeMap<String, String>,
    pub needs_upload: bool,
    stream: Option<Stream>,
    /// Removed from the namespace while open: never uploaded again.
    pub unlinked: bool,
    /// Write handles open on it.
    pub open_handles: u32,
    /// Created with O_EXCL and not stored yet: the first single PUT asks
    /// the server to refuse it if the key appeared meanwhile.
    pub exclusive: bool,
    /// Emptied (O_TRUNC, truncate to 0) and not written since. A flush
    /// then stores nothing yet: a shell's `cmd > file` closes its first
    /// descriptor after the dup2, before `cmd` writes, and storing the
    /// empty file there would add an empty version per redirect (and show
    /// other mounts an empty file meanwhile). The last close (release) or
    /// an fsync stores it. A new file is still stored at its first flush,
    /// so that it exists for others as soon as `close` returns.
    pub awaiting_first_write: bool,
}

pub fn mtime_value(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
    }
}

impl DirtyFile {
    /// A file whose content starts as `base` (or empty), staged locally.
    pub fn new(
        ctx: &WriteContext,
        key: String,
        base: Option<BaseObject>,
        metadata: BTreeMap<String, String>,
    ) -> FsResult<Self> {
        let staging = ctx.staging.create(&key)?;
        let size = base.as_ref().map_or(0, |b| b.size);
        let stream = base.is_none().then(Stream::new);
        Ok(DirtyFile {
            key,
            staging,
            size,
            base,
            written: RangeSet::new(),
            tail: None,
            metadata,
            needs_upload: false,
            stream,
            unlinked: false,
            open_handles: 0,
            exclusive: false,
            awaiting_first_write: false,
        })
    }

    pub fn staging_path(&self) -> &std::path::Path {
        &self.staging.path
    }

    fn touch(&mut self) {
        self.needs_upload = true;
        self.metadata
            .insert("mtime".into(), mtime_value(SystemTime::now()));
    }

    /// Give up streaming: the multipart upload so far is aborted in the
    /// background; the data is all in the staging file anyway.
    fn abandon_stream(&mut self, ctx: &WriteContext) {
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

    /// Write `data` at `offset`; returns how many bytes were written (all
    /// unless the staging disk failed part-way).
    pub async fn write(&mut self, ctx: &WriteContext, offset: u64, data: &[u8]) -> FsResult<usize> {
        if self.stream.as_ref().is_some_and(|s| offset < s.frontier) {
            self.abandon_stream(ctx);
        }
        let mut done = self.write_to_memory(ctx, offset, data).await?;
        if done < data.len() {
            // Not for memory: the part being filled there (if any) will not
            // be whole, so it is streamed from the staging file instead.
            if let Some(stream) = self.stream.as_mut() {
                stream.fill = None;
            }
            match self.staging.write_at(offset + done as u64, &data[done..]) {
                Ok(()) => done = data.len(),
                Err(e) if done == 0 => return Err(e),
                // A short write: the part before is done.
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let end = offset + done as u64;
        self.awaiting_first_write = false;
        if offset > self.size {
            // The gap reads as zeros, which the staging file's hole holds.
            self.written.insert(self.size..offset);
        }
        self.written.insert(offset..end);
        self.size = self.size.max(end);
        self.touch();
        self.pump(ctx).await?;
        Ok(done)
    }

    /// Write what falls in the streamed part being filled in memory (or
    /// starts one at the frontier) to memory and the staging file, handing
    /// each whole part to its upload. Returns how many bytes of `data` it
    /// took: the rest is for the staging file alone. An error only if it
    /// took none.
    async fn write_to_memory(
        &mut self,
        ctx: &WriteContext,
        offset: u64,
        data: &[u8],
    ) -> FsResult<usize> {
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

    /// The file is empty: nothing of an old content is left, and a
    /// front-to-back write streams like a new file's.
    fn new_again(&mut self) {
        self.base = None;
        self.stream.get_or_insert_with(Stream::new);
    }

    pub fn truncate(&mut self, ctx: &WriteContext, len: u64) -> FsResult<()> {
        if self.stream.as_ref().is_some_and(|s| len < s.frontier) {
            self.abandon_stream(ctx);
        }
        if let Some(stream) = self.stream.as_mut() {
            // Its bytes are in the staging file too, which is what is cut
            // or grown; the part streams from there.
            stream.fill = None;
        }
        if len == 0 {
            // `O_TRUNC`, which the kernel sends as a truncate before the
            // writes.
            self.new_again();
        }
        self.awaiting_first_write = len == 0;
        self.staging.set_len(len)?;
        self.written.truncate(len);
        if len > self.size {
            self.written.insert(self.size..len);
        }
        if let Some(base) = &mut self.base {
            base.size = base.size.min(len);
        }
        self.size = len;
        self.touch();
        Ok(())
    }

    /// Start uploads of every whole part the written prefix now covers
    /// (a file streaming from its staging file).
    async fn pump(&mut self, ctx: &WriteContext) -> FsResult<()> {
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

    /// The file's content was replaced server-side by `base` (a copy):
    /// nothing local is left to upload.
    pub fn adopt(&mut self, ctx: &WriteContext, base: BaseObject) -> FsResult<()> {
        self.abandon_stream(ctx);
        self.staging.set_len(0)?;
        self.size = base.size;
        self.base = Some(base);
        self.written = RangeSet::new();
        self.needs_upload = false;
        self.exclusive = false;
        Ok(())
    }

    /// The base object was copied to a new key (rename): its bytes are
    /// the same, its ETag and version id may not be.
    pub fn rebase(&mut self, etag: String, version_id: Option<String>) {
        if let Some(base) = &mut self.base {
            base.etag = etag;
            base.version_id = version_id;
        }
    }

    /// Read `len` bytes at `offset` as the file is now.
    pub async fn read(&self, ctx: &WriteContext, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        let end = (offset + len as u64).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bytes = self.assemble(ctx, offset..end).await?;
        Ok(bytes.to_vec())
    }

    /// The file's bytes in `range`: staged where written, else the base
    /// object's (fetched), else zeros.
    async fn assemble(&self, ctx: &WriteContext, range: Range<u64>) -> FsResult<Bytes> {
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

    /// The bytes of a part to upload, with the permit that pays for their
    /// memory if it is new: straight from memory when the tail kept there
    /// is exactly the part (a streamed file's last part), else assembled.
    async fn part_body(
        &self,
        ctx: &WriteContext,
        range: Range<u64>,
    ) -> FsResult<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>)> {
        match &self.tail {
            Some((start, bytes))
                if *start == range.start && start + bytes.len() as u64 == range.end =>
            {
                Ok((bytes.clone(), None))
            }
            _ => {
                let permit = ctx.permit_for_copy(range.end - range.start).await?;
                Ok((self.assemble(ctx, range).await?, Some(permit)))
            }
        }
    }

    /// chmod, chown or utimens changed the metadata: a multipart upload
    /// already created carries the old one, so the object is given the new
    /// one when the upload completes.
    pub fn metadata_changed(&mut self) {
        if let Some(stream) = self.stream.as_mut().filter(|s| s.upload_id.is_some()) {
            stream.metadata_changed = true;
        }
    }

    /// Upload the file if it changed: the flush/fsync/close path. On
    /// failure nothing is dropped: the staging file and state stay, and the
    /// next flush tries again.
    pub async fn upload(&mut self, ctx: &WriteContext) -> FsResult<Option<PutObjectOutput>> {
        if !self.needs_upload || self.unlinked {
            return Ok(None);
        }
        // The part being filled goes up from memory.
        if let Some(stream) = self.stream.as_mut() {
            if let Some(fill) = stream.fill.take() {
                self.tail = Some((stream.frontier, fill.freeze()));
            }
        }
        let streaming = self.stream.as_ref().is_some_and(|s| s.upload_id.is_some());
        let result = if streaming {
            self.finish_stream(ctx).await
        } else {
            self.abandon_stream(ctx);
            self.upload_staged(ctx).await
        };
        self.tail = None;
        match result {
            Ok(out) => {
                if self.size == 0 {
                    // Still empty (a shell's `> file` and GNU dd flush the
                    // new file when they close the descriptor they dup2'd).
                    self.new_again();
                } else {
                    self.base = Some(BaseObject {
                        etag: out.etag.clone(),
                        size: self.size,
                        version_id: out.version_id.clone(),
                    });
                }
                self.written = RangeSet::new();
                self.needs_upload = false;
                self.exclusive = false;
                self.awaiting_first_write = false;
                // The bytes are in the bucket now; free the disk.
                let _ = self.staging.set_len(0);
                Ok(Some(out))
            }
            Err(e) => {
                self.abandon_stream(ctx);
                if self.size == 0 {
                    self.new_again();
                }
                // Until now the staged bytes only needed to outlive this
                // process, which the page cache does; from here they are
                // the only copy for longer, so they go to disk. (Syncing
                // before every upload cost ~1.7 s per GiB for nothing.)
                if let Err(sync) = self.staging.sync() {
                    tracing::error!("{sync}");
                }
                if self.base.is_some() && matches!(e.errno, libc::ESTALE | libc::ENOENT) {
                    tracing::error!(
                        "upload of {} failed: {e}; the object it was opened from was replaced or removed in the bucket, and that version, which its unchanged bytes come from, is gone (the bucket keeps no versions); the bytes written here are kept in {} (the ranges not written are holes)",
                        self.key,
                        self.staging.path.display()
                    );
                    return Err(e);
                }
                tracing::error!(
                    "upload of {} failed: {e}; the data is kept in {} and will be uploaded on the next flush",
                    self.key,
                    self.staging.path.display()
                );
                Err(e)
            }
        }
    }

    fn put_options(&self) -> PutOptions {
        PutOptions {
            user_metadata: self.metadata.clone(),
            if_none_match_any: self.exclusive,
            ..Default::default()
        }
    }

    async fn finish_stream(&mut self, ctx: &WriteContext) -> FsResult<PutObjectOutput> {
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
    ) -> FsResult<PutObjectOutput> {
        let options = PutOptions {
            user_metadata: self.metadata.clone(),
            ..Default::default()
        };
        let source = CopySource::pinned(self.key.clone(), stored.version_id.clone(), &stored.etag);
        ctx.store
            .copy(
                &source,
                &self.key,
                self.size,
                &MetadataDirective::Replace(options),
            )
            .await?;
        let head = ctx.store.head_object(&self.key, None).await?;
        Ok(PutObjectOutput {
            etag: head.etag,
            version_id: head.version_id,
        })
    }

    async fn complete_stream(
        &self,
        ctx: &WriteContext,
        mut stream: Stream,
        upload_id: &UploadId,
    ) -> FsResult<PutObjectOutput> {
        let mut parts = Vec::new();
        let mut tasks = std::mem::take(&mut stream.tasks);
        for i in 0..tasks.len() {
            let part = match (&mut tasks[i]).await {
                Ok(result) => result,
                Err(e) => Err(FsError::new(
                    libc::EIO,
                    format!("part upload task failed: {e}"),
                )),
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
        Ok(ctx.finish_upload(&self.key, upload_id, &parts).await?)
    }

    async fn upload_staged(&self, ctx: &WriteContext) -> FsResult<PutObjectOutput> {
        let parts = ctx
            .layout
            .parts(self.size)
            .ok_or_else(|| FsError::new(libc::EFBIG, "file too large for 10,000 parts"))?;
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
        let uploads = futures::stream::iter(parts.into_iter().enumerate())
            .map(|(index, range)| {
                let upload_id = upload_id.clone();
                async move {
                    let number = index as u32 + 1;
                    if let Some(base) = self.copyable(&range, index == last) {
                        let source = base.source(&self.key);
                        return Ok::<_, FsError>(
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
            Ok(parts) => ctx
                .finish_upload(&self.key, &upload_id, &parts)
                .await
                .map_err(FsError::from),
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
    ) -> FsResult<PutObjectOutput> {
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
        Err(FsError::new(
            libc::EEXIST,
            format!("{} was created elsewhere meanwhile (O_EXCL)", self.key),
        ))
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

    /// Remove the staging file (after a successful upload or an unlink).
    pub fn discard(&self) {
        self.staging.remove();
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
) -> FsResult<Bytes> {
    tokio::task::spawn_blocking(move || {
        staging.read_into(range.start, buf.space((range.end - range.start) as usize))?;
        Ok(buf.freeze())
    })
    .await
    .map_err(|e| FsError::new(libc::EIO, format!("staging read task failed: {e}")))?
}

/// Read a range of a staging file off the async workers.
async fn read_staged(staging: &StagingFile, range: Range<u64>) -> FsResult<Bytes> {
    let staging = staging.clone();
    tokio::task::spawn_blocking(move || {
        staging.read_at(range.start, (range.end - range.start) as usize)
    })
    .await
    .map_err(|e| FsError::new(libc::EIO, format!("staging read task failed: {e}")))?
    .map(Bytes::from)
}
