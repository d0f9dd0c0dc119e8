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
//!   server-side from the base object (UploadPartCopy, pinned to the
//!   version the file was opened on, when none of its bytes changed) or
//!   assembled from staged bytes and base bytes. Files up
//!   to one part are a single PutObject.
//!
//! The two halves live in `stream.rs` and `staged.rs`; this file holds
//! the state, writes, truncation, reads and the flush that picks one.
//! Uploads take permits from the write budget (`context.rs`), shared by
//! all files, so many writers at once cannot exhaust memory.

mod staged;
mod stream;
mod view;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::context::WriteContext;
use super::error::{WriteError, WriteResult};
use super::ranges::RangeSet;
use super::staging::StagingFile;
use crate::s3::{CopySource, PutObjectOutput, PutOptions};
use stream::Stream;
pub use view::ReadAccess;
use view::ReadView;

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

pub struct DirtyFile {
    key: String,
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
    /// What reads see, published at every change (see `view.rs`).
    reads: ReadAccess,
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
    ) -> WriteResult<Self> {
        let staging = ctx.staging.create(&key)?;
        let size = base.as_ref().map_or(0, |b| b.size);
        let stream = base.is_none().then(Stream::new);
        let reads = ReadAccess::new(ReadView {
            key: key.clone(),
            staging: staging.clone(),
            size,
            base: base.clone(),
            written: RangeSet::new(),
        });
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
            reads,
        })
    }

    /// Reads of the file that need not wait for its lock.
    pub fn reads(&self) -> ReadAccess {
        self.reads.clone()
    }

    fn view_now(&self) -> ReadView {
        ReadView {
            key: self.key.clone(),
            staging: self.staging.clone(),
            size: self.size,
            base: self.base.clone(),
            written: self.written.clone(),
        }
    }

    /// Let reads see the file as it is now.
    fn publish_view(&self) {
        self.reads.publish(self.view_now());
    }

    /// The key the file is saved to.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The file moved to another key (rename).
    pub fn set_key(&mut self, key: String) {
        self.key = key;
        self.publish_view();
    }

    pub fn staging_path(&self) -> &std::path::Path {
        &self.staging.path
    }

    fn touch(&mut self) {
        self.needs_upload = true;
        self.metadata
            .insert("mtime".into(), mtime_value(SystemTime::now()));
    }

    /// Write `data` at `offset`; returns how many bytes were written (all
    /// unless the staging disk failed part-way).
    pub async fn write(
        &mut self,
        ctx: &WriteContext,
        offset: u64,
        data: &[u8],
    ) -> WriteResult<usize> {
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
        self.publish_view();
        self.pump(ctx).await?;
        Ok(done)
    }

    /// The file is empty: nothing of an old content is left, and a
    /// front-to-back write streams like a new file's.
    fn new_again(&mut self) {
        self.base = None;
        self.stream.get_or_insert_with(Stream::new);
    }

    pub fn truncate(&mut self, ctx: &WriteContext, len: u64) -> WriteResult<()> {
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
        self.publish_view();
        Ok(())
    }

    /// The file's content was replaced server-side by `base` (a copy):
    /// nothing local is left to upload.
    pub async fn adopt(&mut self, ctx: &WriteContext, base: BaseObject) -> WriteResult<()> {
        self.abandon_stream(ctx);
        self.size = base.size;
        self.base = Some(base);
        self.written = RangeSet::new();
        self.needs_upload = false;
        self.exclusive = false;
        self.publish_view();
        let _no_reads = self.reads.emptying().await;
        self.staging.set_len(0)
    }

    /// The base object was copied to a new key (rename): its bytes are
    /// the same, its ETag and version id may not be.
    pub fn rebase(&mut self, etag: String, version_id: Option<String>) {
        if let Some(base) = &mut self.base {
            base.etag = etag;
            base.version_id = version_id;
        }
        self.publish_view();
    }

    /// The file's bytes in `range` as it is now.
    async fn assemble(&self, ctx: &WriteContext, range: Range<u64>) -> WriteResult<Bytes> {
        self.view_now().assemble(ctx, range).await
    }

    /// The bytes of a part to upload, with the permit that pays for their
    /// memory if it is new: straight from memory when the tail kept there
    /// is exactly the part (a streamed file's last part), else assembled.
    async fn part_body(
        &self,
        ctx: &WriteContext,
        range: Range<u64>,
    ) -> WriteResult<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>)> {
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
    pub async fn upload(&mut self, ctx: &WriteContext) -> WriteResult<Option<PutObjectOutput>> {
        if !self.needs_upload || self.unlinked {
            return Ok(None);
        }
        // The part being filled goes up from memory.
        if let Some(stream) = self.stream.as_mut() {
            if let Some(fill) = stream.fill.take() {
                self.tail = Some((stream.frontier, fill.freeze()));
            }
        }
        // A new file (or one truncated to zero) has all its bytes in
        // staging: nothing comes from an earlier version.
        let whole_in_staging = self.base.is_none();
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
                // The bytes are in the bucket now: reads go there, and
                // the disk is freed once no read is using it.
                self.publish_view();
                let _no_reads = self.reads.emptying().await;
                // Reading it back need not cost a GET: the disk cache takes
                // a copy of the bytes just uploaded, before they are freed.
                if let (Some(disk), true) = (&ctx.disk_cache, whole_in_staging && self.size > 0) {
                    let version = crate::read::ObjectVersionKey {
                        key: Arc::from(self.key.as_str()),
                        etag: Arc::from(out.etag.as_str()),
                    };
                    disk.adopt(&version, self.size, &self.staging.path).await;
                }
                let _ = self.staging.set_len(0);
                Ok(Some(out))
            }
            Err(e) => {
                self.abandon_stream(ctx);
                if self.size == 0 {
                    self.new_again();
                    self.publish_view();
                }
                // Until now the staged bytes only needed to outlive this
                // process, which the page cache does; from here they are
                // the only copy for longer, so they go to disk. (Syncing
                // before every upload cost ~1.7 s per GiB for nothing.)
                if let Err(sync) = self.staging.sync() {
                    tracing::error!("{sync}");
                }
                if self.base.is_some() && e.is_base_gone() {
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

    /// Remove the staging file (after a successful upload or an unlink).
    pub fn discard(&self) {
        self.staging.remove();
    }
}

/// Read a range of a staging file off the async workers.
async fn read_staged(staging: &StagingFile, range: Range<u64>) -> WriteResult<Bytes> {
    let staging = staging.clone();
    tokio::task::spawn_blocking(move || {
        staging.read_at(range.start, (range.end - range.start) as usize)
    })
    .await
    .map_err(|e| WriteError::Internal(format!("staging read task failed: {e}")))?
    .map(Bytes::from)
}
