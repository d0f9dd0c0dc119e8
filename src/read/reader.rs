//! Reading one open object: sequential detection, a prefetch window that
//! starts small and doubles, and fetches of aligned blocks for random reads.
//!
//! A read is *sequential* when it starts where the previous one ended or
//! inside the range already being prefetched, or, once a run is under
//! way, near it: the kernel sends its readahead as several requests at
//! once, and they arrive in any order. Sequential reads, and any read at
//! offset 0, keep `window` bytes in flight ahead of the reader as ranged
//! GETs ("parts") of at most `part_size`; the window doubles with every
//! sequential read up to `read_ahead_max`, so the first bytes arrive fast
//! and a long read reaches full speed. A random read fetches only the
//! aligned blocks it covers and resets the window.
//!
//! Memory: parts take permits from one budget shared by every reader
//! (`cache_size`); when it is spent, readers prefetch less rather than
//! allocate more. Blocks go into the shared LRU as they arrive, so a re-read
//! is served from memory, and to the disk cache when the mount has one
//! (`disk_cache.rs`): a read looks in memory, then on disk, then asks the
//! server, and no prefetch is started for a range the disk holds whole. Every GET carries `If-Match` with the ETag seen at
//! open: if the object is replaced, reads fail with ESTALE instead of mixing
//! two versions.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::cache::{BlockCache, ObjectVersionKey, BLOCK_SIZE};
use super::disk_cache::{DiskCache, DiskObject};
use super::error::{ReadError, ReadResult};
use crate::s3::{GetObjectOutput, GetRequest};
use crate::store::Store;

/// Knobs of the read path.
#[derive(Debug, Clone)]
pub struct ReadTuning {
    /// Largest single ranged GET of a prefetch.
    pub part_size: u64,
    /// Largest prefetch window per open file.
    pub read_ahead_max: u64,
    /// Window of a sequential read's first prefetch.
    pub initial_window: u64,
    /// Memory for blocks, shared by all files.
    pub cache_size: u64,
    /// GETs in flight at once, across all files.
    pub max_concurrency: usize,
}

/// What is shared by every reader.
pub struct ReadContext {
    store: Store,
    pub cache: BlockCache,
    tuning: ReadTuning,
    /// Bytes of prefetch in flight or unread, in KiB permits.
    prefetch_budget: Arc<Semaphore>,
    /// GET requests in flight.
    requests: Arc<Semaphore>,
    /// The second tier, if the mount has one.
    disk: Option<Arc<DiskCache>>,
}

impl ReadContext {
    pub fn new(store: Store, tuning: ReadTuning) -> Self {
        let budget_kib = (tuning.cache_size / 1024).clamp(1, u32::MAX as u64 / 2) as usize;
        ReadContext {
            store,
            cache: BlockCache::new(tuning.cache_size),
            prefetch_budget: Arc::new(Semaphore::new(budget_kib)),
            requests: Arc::new(Semaphore::new(tuning.max_concurrency.max(1))),
            tuning,
            disk: None,
        }
    }

    /// Keep blocks on disk too, and look there before the server.
    pub fn with_disk_cache(mut self, disk: Arc<DiskCache>) -> Self {
        self.disk = Some(disk);
        self
    }

    pub fn disk_cache(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }
}

/// The object version an open file reads.
#[derive(Debug, Clone)]
pub struct ObjectToRead {
    pub key: Arc<str>,
    pub etag: Arc<str>,
    pub version_id: Option<String>,
    pub size: u64,
}

#[derive(Clone, Default)]
struct Progress {
    /// Bytes of the part received so far, as an absolute offset.
    done_until: u64,
    failed: Option<ReadError>,
}

/// One prefetch GET in flight (or finished and not yet read past).
struct Part {
    range: Range<u64>,
    /// Blocks received so far, in order from `range.start`.
    blocks: Arc<Mutex<Vec<Bytes>>>,
    progress: watch::Receiver<Progress>,
    task: tokio::task::AbortHandle,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Part {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Part {
    /// Every block has arrived (or the GET failed).
    fn complete(&self) -> bool {
        let p = self.progress.borrow();
        p.done_until >= self.range.end || p.failed.is_some()
    }

    /// Wait until block `b` has arrived and return it; `None` if the part
    /// was abandoned (its data must then be fetched another way).
    async fn block(&self, b: u64) -> Option<ReadResult<Bytes>> {
        let block_end = ((b + 1) * BLOCK_SIZE).min(self.range.end);
        let mut rx = self.progress.clone();
        let progress = rx
            .wait_for(|p| p.done_until >= block_end || p.failed.is_some())
            .await
            .ok()?
            .clone();
        if progress.done_until < block_end {
            return progress.failed.map(Err);
        }
        let index = (b - self.range.start / BLOCK_SIZE) as usize;
        let blocks = self.blocks.lock();
        blocks.get(index).cloned().map(Ok)
    }
}

struct State {
    /// End of the previous read.
    last_end: u64,
    /// Start of the current sequential run.
    run_start: u64,
    /// Reads in the current sequential run.
    run_reads: u32,
    /// Everything before this has been asked for by a part.
    prefetched_until: u64,
    window: u64,
    parts: VecDeque<Arc<Part>>,
}

pub struct Reader {
    ctx: Arc<ReadContext>,
    object: ObjectToRead,
    version: ObjectVersionKey,
    state: Mutex<State>,
    /// What the disk cache holds of this version, read at the first read.
    disk: tokio::sync::OnceCell<Option<Arc<DiskObject>>>,
}

/// How far from a sequential run a reordered read of it may land: the
/// kernel's readahead of a FUSE file (16 MiB by default here) with room.
const REORDER_SLACK: u64 = 32 * 1024 * 1024;

fn align_down(x: u64) -> u64 {
    x / BLOCK_SIZE * BLOCK_SIZE
}

impl Reader {
    pub fn new(ctx: Arc<ReadContext>, object: ObjectToRead) -> Self {
        let window = ctx.tuning.initial_window;
        Reader {
            version: ObjectVersionKey {
                key: object.key.clone(),
                etag: object.etag.clone(),
            },
            ctx,
            object,
            state: Mutex::new(State {
                last_end: 0,
                run_reads: 0,
                run_start: 0,
                prefetched_until: 0,
                window,
                parts: VecDeque::new(),
            }),
            disk: tokio::sync::OnceCell::new(),
        }
    }

    /// The disk cache's view of this version (blocking I/O, so off the
    /// async workers), once per reader.
    async fn disk_object(&self) -> Option<Arc<DiskObject>> {
        let disk = self.ctx.disk.clone()?;
        self.disk
            .get_or_init(|| async {
                let version = self.version.clone();
                let size = self.object.size;
                tokio::task::spawn_blocking(move || disk.object(&version, size))
                    .await
                    .ok()
            })
            .await
            .clone()
    }

    /// The disk cache's data file of this version, if it holds the whole
    /// version and has checked it: what a passthrough open can read from.
    pub async fn whole_disk_file(&self) -> Option<std::fs::File> {
        let object = self.disk_object().await?;
        let disk = self.ctx.disk.clone()?;
        tokio::task::spawn_blocking(move || disk.whole_file(&object))
            .await
            .ok()
            .flatten()
    }

    /// The object version this reader reads.
    pub fn object(&self) -> &ObjectToRead {
        &self.object
    }

    /// Read up to `len` bytes at `offset`; fewer only at the end of the object.
    pub async fn read(&self, offset: u64, len: u32) -> ReadResult<Vec<u8>> {
        let size = self.object.size;
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + len as u64).min(size);
        let disk = self.disk_object().await;
        let parts = self.plan(offset, end, disk.as_deref());
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let mut blocks: Vec<Option<Bytes>> = (first..=last)
            .map(|b| self.ctx.cache.get(&self.version, b))
            .collect();
        // The disk tier, for what memory lacks: one blocking task for all
        // of this read's blocks.
        if let (Some(cache), Some(object)) = (&self.ctx.disk, &disk) {
            let wanted: Vec<u64> = (first..=last)
                .filter(|b| blocks[(b - first) as usize].is_none() && object.holds(*b..b + 1))
                .collect();
            if !wanted.is_empty() {
                let (cache, object) = (cache.clone(), object.clone());
                let found = tokio::task::spawn_blocking(move || {
                    wanted
                        .into_iter()
                        .map(|b| (b, cache.read_block(&object, b)))
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                for (b, block) in found {
                    if let Some(block) = block {
                        self.ctx.cache.insert(&self.version, b, block.clone());
                        blocks[(b - first) as usize] = Some(block);
                    }
                }
            }
        }
        for b in first..=last {
            let mut found = blocks[(b - first) as usize].take();
            if found.is_none() {
                let part = parts
                    .iter()
                    .find(|p| p.range.start <= b * BLOCK_SIZE && b * BLOCK_SIZE < p.range.end);
                if let Some(part) = part {
                    found = part.block(b).await.transpose()?;
                }
            }
            blocks[(b - first) as usize] = found;
        }
        // Whatever is still missing is fetched now, one GET per run of
        // consecutive missing blocks.
        let mut b = first;
        while b <= last {
            if blocks[(b - first) as usize].is_some() {
                b += 1;
                continue;
            }
            let run_start = b;
            while b <= last && blocks[(b - first) as usize].is_none() {
                b += 1;
            }
            let range = run_start * BLOCK_SIZE..(b * BLOCK_SIZE).min(size);
            let fetched = self.fetch(range).await?;
            for (i, block) in fetched.into_iter().enumerate() {
                blocks[(run_start - first) as usize + i] = Some(block);
            }
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, block) in blocks.into_iter().enumerate() {
            let block =
                block.ok_or_else(|| ReadError::Internal("block missing after fetch".into()))?;
            let block_start = (first + i as u64) * BLOCK_SIZE;
            let from = offset.saturating_sub(block_start) as usize;
            let to = ((end - block_start) as usize).min(block.len());
            if from > to {
                return Err(ReadError::Malformed("object shorter than its size".into()));
            }
            out.extend_from_slice(&block[from..to]);
        }
        if out.len() as u64 != end - offset {
            return Err(ReadError::Malformed("object shorter than its size".into()));
        }
        Ok(out)
    }

    /// Classify the read, adjust the window, start prefetch parts, and
    /// return the parts that may hold the data.
    fn plan(&self, offset: u64, end: u64, disk: Option<&DiskObject>) -> Vec<Arc<Part>> {
        let tuning = &self.ctx.tuning;
        let size = self.object.size;
        let mut st = self.state.lock();
        // The kernel reads ahead of a sequential reader with several
        // requests at once, which reach us in any order: once a run is
        // under way (two reads in a row; a random reader rarely makes
        // them), a read a little ahead of what is prefetched or a little
        // before the run's start belongs to it too, rather than starting a
        // new run that drops the parts still arriving (and fetches them
        // again). So does a first read near the start of the file.
        let fresh = st.run_reads == 0 && st.last_end == 0 && st.prefetched_until == 0;
        let reordered = (fresh && offset < REORDER_SLACK)
            || (st.run_reads >= 2
                && offset + REORDER_SLACK >= st.run_start
                && offset <= st.prefetched_until.max(st.last_end) + REORDER_SLACK);
        let sequential = offset == st.last_end
            || reordered
            || (offset >= st.run_start
                && offset <= st.prefetched_until
                && st.prefetched_until > st.run_start);
        if sequential {
            st.run_reads = st.run_reads.saturating_add(1);
        } else {
            st.parts.clear();
            st.run_start = align_down(offset);
            st.prefetched_until = st.run_start;
            st.window = tuning.initial_window;
            st.run_reads = 0;
        }
        // Parts wholly behind this read and complete are dropped (their
        // blocks are in the cache). One still arriving is kept: the kernel
        // sends a sequential reader's reads several at once and out of
        // order, so an earlier read may still wait on it, and dropping it
        // would cancel its GET and make that read fetch its blocks again.
        let behind = align_down(offset);
        while st
            .parts
            .front()
            .is_some_and(|p| p.range.end <= behind && p.complete())
        {
            st.parts.pop_front();
        }
        if sequential || offset == 0 {
            // A read past what is prefetched (the budget ran out, or it
            // came early) skips ahead; reads of the gap fetch for
            // themselves.
            if st.prefetched_until < align_down(offset) {
                st.prefetched_until = align_down(offset);
            }
            // Top up only once half the window is used, so that parts are
            // whole `part_size` GETs rather than one small GET per read.
            let target = (end + st.window).min(size);
            let low_water = end + st.window / 2;
            let top_up = st.prefetched_until < low_water.min(size);
            while top_up && st.prefetched_until < target {
                let start = st.prefetched_until;
                let len = tuning.part_size.min(target - start);
                // Once the window holds whole parts, only whole parts are
                // asked for: a fraction at the window's end would be one
                // more, smaller GET each time (a fifth more GETs for a
                // long read). It waits for the next top-up.
                if len < tuning.part_size && start + len < size && st.window >= tuning.part_size {
                    break;
                }
                let stop = (align_down(start + len + BLOCK_SIZE - 1)).min(size);
                // What the disk cache holds whole is not fetched again.
                if disk.is_some_and(|d| d.holds(start / BLOCK_SIZE..stop.div_ceil(BLOCK_SIZE))) {
                    st.prefetched_until = stop;
                    continue;
                }
                let kib = (stop - start).div_ceil(1024).max(1) as u32;
                let Ok(permit) = self.ctx.prefetch_budget.clone().try_acquire_many_owned(kib)
                else {
                    break;
                };
                st.parts.push_back(self.start_part(start..stop, permit));
                st.prefetched_until = stop;
            }
            st.window = (st.window * 2).min(tuning.read_ahead_max.max(tuning.initial_window));
        }
        tracing::trace!(
            key = &*self.object.key,
            offset,
            end,
            sequential,
            prefetched_until = st.prefetched_until,
            window = st.window,
            parts = st.parts.len(),
            "read planned"
        );
        st.last_end = end;
        st.parts.iter().cloned().collect()
    }

    fn start_part(&self, range: Range<u64>, permit: OwnedSemaphorePermit) -> Arc<Part> {
        let (tx, rx) = watch::channel(Progress {
            done_until: range.start,
            failed: None,
        });
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let ctx = self.ctx.clone();
        let object = self.object.clone();
        let version = self.version.clone();
        let disk = self.disk.get().cloned().flatten();
        let task_range = range.clone();
        let task_blocks = blocks.clone();
        let task = tokio::spawn(async move {
            let target = Target {
                object: &object,
                version: &version,
                disk: disk.as_ref(),
            };
            let result = fetch_range(&ctx, target, task_range, |offset_end, block| {
                task_blocks.lock().push(block);
                tx.send_modify(|p| p.done_until = offset_end);
            })
            .await;
            if let Err(e) = result {
                tx.send_modify(|p| p.failed = Some(e));
            }
        });
        Arc::new(Part {
            range,
            blocks,
            progress: rx,
            task: task.abort_handle(),
            _permit: permit,
        })
    }

    /// Fetch `range` (block-aligned) now and return its blocks.
    async fn fetch(&self, range: Range<u64>) -> ReadResult<Vec<Bytes>> {
        let mut blocks = Vec::new();
        let disk = self.disk.get().cloned().flatten();
        let target = Target {
            object: &self.object,
            version: &self.version,
            disk: disk.as_ref(),
        };
        fetch_range(&self.ctx, target, range, |_, block| blocks.push(block)).await?;
        Ok(blocks)
    }
}

/// The object version a GET is for, and where its blocks are kept.
struct Target<'a> {
    object: &'a ObjectToRead,
    version: &'a ObjectVersionKey,
    disk: Option<&'a Arc<DiskObject>>,
}

impl Target<'_> {
    /// Keep a block that arrived: in memory, and on disk if there is one.
    async fn keep(&self, ctx: &ReadContext, block_no: u64, block: &Bytes) {
        ctx.cache.insert(self.version, block_no, block.clone());
        if let (Some(cache), Some(object)) = (&ctx.disk, self.disk) {
            cache.store(object, block_no, block.clone()).await;
        }
    }
}

/// GET `range` of the object and hand it over block by block (each block
/// also goes into the caches), with the absolute offset reached.
async fn fetch_range(
    ctx: &ReadContext,
    target: Target<'_>,
    range: Range<u64>,
    mut on_block: impl FnMut(u64, Bytes),
) -> ReadResult<()> {
    let object = target.object;
    let _slot = ctx
        .requests
        .acquire()
        .await
        .map_err(|_| ReadError::Internal("shutting down".into()))?;
    let request = GetRequest {
        range: Some(range.clone()),
        version_id: object.version_id.clone(),
        if_match: (!object.etag.is_empty()).then(|| object.etag.to_string()),
        if_none_match: None,
    };
    let body = match ctx.store.get_object(&object.key, request).await {
        Ok(GetObjectOutput::Body { body, .. }) => body,
        Ok(GetObjectOutput::NotModified) => {
            return Err(ReadError::Malformed("unexpected 304".into()))
        }
        Err(e) => {
            if e.is_precondition_failed() {
                tracing::warn!(
                    key = &*object.key,
                    "object changed while open; the open file is stale"
                );
            }
            if e.is_not_found() {
                tracing::warn!(
                    key = &*object.key,
                    "object removed while open; the open file is stale"
                );
                return Err(ReadError::Removed {
                    key: object.key.to_string(),
                });
            }
            return Err(e.into());
        }
    };
    let mut body = body;
    let mut block_no = range.start / BLOCK_SIZE;
    let mut offset = range.start;
    let mut buf = BytesMut::with_capacity(BLOCK_SIZE as usize);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk?;
        while !chunk.is_empty() {
            let room = BLOCK_SIZE as usize - buf.len();
            let take = room.min(chunk.len());
            buf.extend_from_slice(&chunk.split_to(take));
            if buf.len() == BLOCK_SIZE as usize {
                let block = buf.split().freeze();
                offset += block.len() as u64;
                target.keep(ctx, block_no, &block).await;
                on_block(offset, block);
                block_no += 1;
                buf.reserve(BLOCK_SIZE as usize);
            }
        }
    }
    if !buf.is_empty() {
        let block = buf.split().freeze();
        offset += block.len() as u64;
        target.keep(ctx, block_no, &block).await;
        on_block(offset, block);
    }
    if offset != range.end {
        return Err(ReadError::Malformed(format!(
            "short read of {}: got {} of {} bytes",
            object.key,
            offset - range.start,
            range.end - range.start
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::{Credentials, Endpoint, RetryPolicy, S3Config};

    const MIB: u64 = 1024 * 1024;

    /// A reader over an unreachable endpoint: its parts fail, but planning
    /// (which reads become which GETs) can be watched.
    fn reader(size: u64) -> Reader {
        let endpoint = Endpoint::resolve(Some("http://127.0.0.1:9"), None, "bkt", true).unwrap();
        let mut config = S3Config::new("bkt", endpoint, Credentials::new("k", "s", None, "test"));
        config.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let store: Store = Arc::new(crate::s3::S3Client::new(config).unwrap());
        let ctx = Arc::new(ReadContext::new(
            store,
            ReadTuning {
                part_size: 8 * MIB,
                read_ahead_max: 64 * MIB,
                initial_window: MIB,
                cache_size: 256 * MIB,
                max_concurrency: 4,
            },
        ));
        Reader::new(
            ctx,
            ObjectToRead {
                key: Arc::from("k"),
                etag: Arc::from("e"),
                version_id: None,
                size,
            },
        )
    }

    fn ranges(r: &Reader) -> Vec<Range<u64>> {
        r.state
            .lock()
            .parts
            .iter()
            .map(|p| p.range.clone())
            .collect()
    }

    #[tokio::test]
    async fn sequential_reads_become_few_large_gets() {
        let r = reader(1024 * MIB);
        let mut started = Vec::new();
        for i in 0..512u64 {
            let offset = i * 128 * 1024;
            r.plan(offset, offset + 128 * 1024, None);
            for range in ranges(&r) {
                if !started.contains(&range) {
                    started.push(range);
                }
            }
        }
        // 64 MiB read plus at most a 64 MiB window ahead, in parts that
        // grow from 1 MiB to 8 MiB: a couple of dozen GETs, not one per read.
        assert!(started.len() <= 24, "{} GETs: {started:?}", started.len());
        assert!(started
            .iter()
            .all(|p| p.end - p.start <= 8 * MIB + BLOCK_SIZE));
        assert!(
            started
                .iter()
                .filter(|p| p.end - p.start >= 4 * MIB)
                .count()
                >= 8
        );
        assert_eq!(started[0].start, 0);
    }

    #[tokio::test]
    async fn random_reads_fetch_only_their_blocks() {
        let r = reader(1024 * MIB);
        r.plan(500 * MIB, 500 * MIB + 4096, None);
        r.plan(10 * MIB, 10 * MIB + 4096, None);
        r.plan(700 * MIB, 700 * MIB + 4096, None);
        assert!(ranges(&r).is_empty(), "no prefetch for random reads");
        // A read at offset 0 starts the window at once (time to first byte).
        r.plan(0, 4096, None);
        assert_eq!(ranges(&r), vec![0..(MIB + BLOCK_SIZE)]);
    }
}
