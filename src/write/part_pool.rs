//! Reused memory for the parts of files written front to back.
//!
//! A streamed part is filled in memory, written to the staging file from
//! there with `O_DIRECT`, and uploaded from that memory once whole; a part
//! streamed from the staging file is read into the same kind of buffer.
//! The buffers are kept and reused instead of freed: memory the process
//! gives back and asks for again costs a page fault per 4 KiB, and on a VM
//! whose guest reports free pages to the host (virtio-balloon free page
//! reporting) each of those is a host fault too. Writing through the page
//! cache of a staging file paid that for every byte: measured at 1.7-2.5
//! CPU-seconds per GiB on the bench VM, against 0.2 for the same bytes
//! written with `O_DIRECT` from reused memory.
//!
//! What a buffer holds is paid for by a permit it carries: one of a few
//! *fill* slots while a file fills it (taken only if one is free: nothing
//! ever waits for a file that is slow to fill its part), then the write
//! budget's permit while it uploads. So the buffers in use never exceed
//! `write_buffer` plus the fill slots, and the pool never holds more
//! buffers than that. A free buffer is let go after a few seconds unused.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `O_DIRECT` wants the memory, offset and length aligned to the logical
/// block size; 4 KiB covers every disk in use.
pub const DIRECT_ALIGN: usize = 4096;

/// How long a free buffer is kept unused.
const IDLE_TRIM: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct PoolInner {
    part_size: usize,
    /// Free buffers, each with the moment it came back.
    free: Mutex<Vec<(Instant, Vec<u8>)>>,
    fill_slots: Arc<Semaphore>,
    trimmer_started: std::sync::atomic::AtomicBool,
}

/// The pool, shared by every file of the mount.
#[derive(Debug, Clone)]
pub struct PartPool {
    inner: Arc<PoolInner>,
}

impl PartPool {
    /// A pool of `part_size` buffers with `fill_slots` files filling one at
    /// once.
    pub fn new(part_size: u64, fill_slots: usize) -> Self {
        PartPool {
            inner: Arc::new(PoolInner {
                part_size: part_size as usize,
                free: Mutex::new(Vec::new()),
                fill_slots: Arc::new(Semaphore::new(fill_slots)),
                trimmer_started: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn part_size(&self) -> u64 {
        self.inner.part_size as u64
    }

    /// A buffer for a file to fill, if a fill slot is free now.
    pub fn try_fill(&self) -> Option<PartBuf> {
        let permit = self.inner.fill_slots.clone().try_acquire_owned().ok()?;
        Some(self.buffer(permit))
    }

    /// A buffer paid for by `permit` (from the write budget).
    pub fn with_permit(&self, permit: OwnedSemaphorePermit) -> PartBuf {
        self.buffer(permit)
    }

    fn buffer(&self, permit: OwnedSemaphorePermit) -> PartBuf {
        self.start_trimmer();
        let reused = self.inner.free.lock().pop().map(|(_, vec)| vec);
        let vec = reused.unwrap_or_else(|| vec![0u8; self.inner.part_size + DIRECT_ALIGN]);
        let start = vec.as_ptr().align_offset(DIRECT_ALIGN);
        PartBuf {
            vec,
            start,
            len: 0,
            pool: self.inner.clone(),
            permit,
        }
    }

    /// Let the memory of the free buffers go, before memory is taken for
    /// upload bodies that are not pool buffers.
    pub fn trim(&self) {
        self.inner.free.lock().clear();
    }

    /// A task that lets go of buffers free for `IDLE_TRIM`; it ends with
    /// the pool.
    fn start_trimmer(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.trimmer_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime (unit tests): try again next time.
            self.inner.trimmer_started.store(false, Ordering::Relaxed);
            return;
        };
        let weak: Weak<PoolInner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TRIM / 2).await;
                let Some(inner) = weak.upgrade() else { return };
                trim_idle(&inner, Instant::now());
            }
        });
    }
}

fn trim_idle(inner: &PoolInner, now: Instant) {
    inner
        .free
        .lock()
        .retain(|(since, _)| now.duration_since(*since) < IDLE_TRIM);
}

/// One part's bytes, filled from the front. Goes back to the pool when
/// dropped (or when the last `Bytes` made by `freeze` is).
#[derive(Debug)]
pub struct PartBuf {
    vec: Vec<u8>,
    /// Where the 4 KiB-aligned data begins in `vec`.
    start: usize,
    len: usize,
    pool: Arc<PoolInner>,
    /// What pays for the buffer while it is out of the pool.
    permit: OwnedSemaphorePermit,
}

impl PartBuf {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.pool.part_size
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }

    /// Write `data` at `at` (at most `capacity`), zero-filling any gap after
    /// the current end: a reused buffer holds an earlier part's bytes.
    pub fn write_at(&mut self, at: usize, data: &[u8]) {
        let end = at + data.len();
        assert!(end <= self.capacity(), "part buffer overrun");
        let base = self.start;
        if at > self.len {
            self.vec[base + self.len..base + at].fill(0);
        }
        self.vec[base + at..base + end].copy_from_slice(data);
        self.len = self.len.max(end);
    }

    /// Room for `len` bytes from the front, to be read into (the bytes are
    /// what the buffer held before).
    pub fn space(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.capacity(), "part buffer overrun");
        self.len = len;
        &mut self.vec[self.start..self.start + len]
    }

    /// Pay for the buffer with `permit` from now on (a filled part moving
    /// to the write budget for its upload); the old permit is given back.
    pub fn recharge(&mut self, permit: OwnedSemaphorePermit) {
        self.permit = permit;
    }

    /// The bytes as shared `Bytes`, without a copy.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PartBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for PartBuf {
    fn drop(&mut self) {
        let vec = std::mem::take(&mut self.vec);
        self.pool.free.lock().push((Instant::now(), vec));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_reused_and_bounded() {
        let pool = PartPool::new(64 * 1024, 2);
        let mut a = pool.try_fill().unwrap();
        assert_eq!(a.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
        a.write_at(0, b"hello");
        let b = pool.try_fill().unwrap();
        assert!(pool.try_fill().is_none(), "two fill slots only");
        let ptr = a.as_slice().as_ptr();
        // Moving to another permit frees the fill slot.
        let budget = Arc::new(Semaphore::new(1));
        a.recharge(budget.clone().try_acquire_owned().unwrap());
        let c = pool.try_fill().expect("the slot came back");
        drop(c);
        let frozen = a.freeze();
        assert_eq!(&frozen[..], b"hello");
        let copy = frozen.clone();
        drop(frozen);
        assert_eq!(budget.available_permits(), 0, "still held by a clone");
        drop(copy);
        assert_eq!(budget.available_permits(), 1);
        // The freed buffers are reused (the newest first).
        let mut again = pool.try_fill().unwrap();
        assert_eq!(again.as_slice().as_ptr(), ptr, "the same memory again");
        assert_eq!(again.len(), 0);
        // The old bytes are not visible through a gap.
        again.write_at(3, b"x");
        assert_eq!(again.as_slice(), b"\0\0\0x");
        drop(b);
    }

    #[test]
    fn free_buffers_are_let_go_when_idle() {
        let pool = PartPool::new(4096, 1);
        drop(pool.try_fill().unwrap());
        assert_eq!(pool.inner.free.lock().len(), 1);
        trim_idle(&pool.inner, Instant::now());
        assert_eq!(pool.inner.free.lock().len(), 1, "recently used");
        trim_idle(&pool.inner, Instant::now() + IDLE_TRIM);
        assert!(pool.inner.free.lock().is_empty());
    }
}
