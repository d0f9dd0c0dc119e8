//! The block cache: object data in fixed-size blocks, shared by every open
//! file, least recently used first out, bounded in bytes.
//!
//! Blocks are keyed by (key, ETag, block number), so a changed object never
//! serves old blocks: its new ETag names different blocks, and the old ones
//! age out.

use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::Bytes;
use lru::LruCache;

/// Size of one cache block. Random reads fetch whole blocks, so this bounds
/// how many bytes a small random read moves (32 KiB for a 4 KiB read).
pub const BLOCK_SIZE: u64 = 32 * 1024;

/// Which object version a block belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectVersionKey {
    pub key: Arc<str>,
    pub etag: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BlockKey {
    object: ObjectVersionKey,
    block: u64,
}

struct Inner {
    lru: LruCache<BlockKey, Bytes>,
    bytes: u64,
}

pub struct BlockCache {
    inner: Mutex<Inner>,
    capacity: u64,
}

impl BlockCache {
    pub fn new(capacity: u64) -> Self {
        BlockCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    pub fn get(&self, object: &ObjectVersionKey, block: u64) -> Option<Bytes> {
        let key = BlockKey {
            object: object.clone(),
            block,
        };
        self.lock().lru.get(&key).cloned()
    }

    pub fn insert(&self, object: &ObjectVersionKey, block: u64, data: Bytes) {
        if self.capacity == 0 {
            return;
        }
        let key = BlockKey {
            object: object.clone(),
            block,
        };
        let mut inner = self.lock();
        let len = data.len() as u64;
        if let Some(old) = inner.lru.put(key, data) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += len;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, evicted)) => inner.bytes -= evicted.len() as u64,
                None => break,
            }
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(etag: &str) -> ObjectVersionKey {
        ObjectVersionKey {
            key: Arc::from("k"),
            etag: Arc::from(etag),
        }
    }

    #[test]
    fn bounded_by_bytes_and_keyed_by_etag() {
        let cache = BlockCache::new(100);
        cache.insert(&obj("a"), 0, Bytes::from(vec![0; 60]));
        cache.insert(&obj("a"), 1, Bytes::from(vec![1; 30]));
        assert!(cache.get(&obj("a"), 0).is_some());
        assert!(
            cache.get(&obj("b"), 0).is_none(),
            "another ETag is another object"
        );
        // Block 1 is now least recently used and goes first.
        cache.insert(&obj("a"), 2, Bytes::from(vec![2; 30]));
        assert!(cache.get(&obj("a"), 1).is_none());
        assert!(cache.get(&obj("a"), 0).is_some());
        assert!(cache.used() <= 100);
    }
}
