//! Stat-ahead: when lookups walk a directory's files in name order (`ls -l`
//! of a directory listed names-only, `stat` in a loop, `du`, `rsync`'s
//! scan), the HEADs of the next files are sent before they are asked for.
//!
//! A file's attributes need a HEAD (its s3fs metadata is not in listings),
//! and a walk that waits for each HEAD in turn is bound by their latency,
//! not by the server's capacity. Lustre's statahead answers the same
//! problem the same way. The walk is recognised only in a directory whose
//! names are known (a name index, see `lookup.rs`), when a lookup asks for
//! the file right after the previous one; the window then doubles from 4 to
//! 32 names. Random lookups start nothing.
//!
//! Each prefetched answer is used at most once and is dropped when
//! `metadata_ttl` passes or when this mount changes anything (a changed
//! file must not be answered from a HEAD taken before the change).

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::ops::Bound;
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::oneshot;

use super::lookup::Listed;
use crate::s3::{ObjectMeta, S3Error};
use crate::store::Store;

const FIRST_WINDOW: usize = 4;
const MAX_WINDOW: usize = 32;
/// Directories whose walk is followed at once.
const WALKS: usize = 64;
/// Prefetched answers kept at most (unused ones are dropped first).
const MAX_PREFETCHED: usize = 1024;

pub(crate) type HeadResult = Result<ObjectMeta, S3Error>;

struct Prefetched {
    at: Instant,
    answer: oneshot::Receiver<HeadResult>,
}

/// Where a walk through one directory stands.
struct Walk {
    last: String,
    window: usize,
    /// The name up to which HEADs have been started.
    ahead_until: String,
}

pub(crate) struct StatAhead {
    ttl: Duration,
    state: Mutex<State>,
}

struct State {
    walks: LruCache<String, Walk>,
    prefetched: HashMap<String, Prefetched>,
}

impl StatAhead {
    pub(crate) fn new(ttl: Duration) -> Self {
        StatAhead {
            ttl,
            state: Mutex::new(State {
                walks: LruCache::new(NonZeroUsize::new(WALKS).unwrap_or(NonZeroUsize::MIN)),
                prefetched: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The prefetched HEAD of `key`, if one was started and is still
    /// young; it is handed out once.
    pub(crate) fn take(&self, key: &str) -> Option<oneshot::Receiver<HeadResult>> {
        let found = self.lock().prefetched.remove(key)?;
        (found.at.elapsed() < self.ttl).then_some(found.answer)
    }

    /// Note a lookup of file `name` in `dir` (whose names are `entries`)
    /// and, if it continues a walk, start HEADs of the files that follow.
    /// `key_of` gives a name's object key; `needs_head` says which files a
    /// lookup would HEAD (not those whose metadata is known): the walk is
    /// through those.
    pub(crate) fn follow(
        &self,
        store: &Store,
        dir: &str,
        name: &str,
        entries: &BTreeMap<String, Listed>,
        key_of: impl Fn(&str) -> String,
        needs_head: impl Fn(&str, &Listed) -> bool,
    ) {
        let files_after = |from: &str| {
            entries
                .range::<str, _>((Bound::Excluded(from), Bound::Unbounded))
                .filter(|(n, listed)| {
                    matches!(listed, Listed::File { .. }) && needs_head(n, listed)
                })
                .map(|(n, _)| n.as_str())
        };
        let mut state = self.lock();
        let continues = state
            .walks
            .get(dir)
            .is_some_and(|walk| files_after(&walk.last).next() == Some(name));
        if !continues {
            state.walks.put(
                dir.to_owned(),
                Walk {
                    last: name.to_owned(),
                    window: 0,
                    ahead_until: name.to_owned(),
                },
            );
            return;
        }
        let Some(walk) = state.walks.get_mut(dir) else {
            return;
        };
        walk.last = name.to_owned();
        walk.window = (walk.window * 2).clamp(FIRST_WINDOW, MAX_WINDOW);
        // Start HEADs for the files up to `window` past this one that are
        // not started yet.
        let start_from = if walk.ahead_until.as_str() > name {
            walk.ahead_until.clone()
        } else {
            name.to_owned()
        };
        let ahead: Vec<String> = files_after(name)
            .take(walk.window)
            .filter(|n| *n > start_from.as_str())
            .map(str::to_owned)
            .collect();
        if let Some(last) = ahead.last() {
            walk.ahead_until = last.clone();
        }
        let now = Instant::now();
        if state.prefetched.len() + ahead.len() > MAX_PREFETCHED {
            let ttl = self.ttl;
            state.prefetched.retain(|_, p| p.at.elapsed() < ttl);
            if state.prefetched.len() + ahead.len() > MAX_PREFETCHED {
                state.prefetched.clear();
            }
        }
        for next in ahead {
            let key = key_of(&next);
            let (tx, rx) = oneshot::channel();
            let store = store.clone();
            let task_key = key.clone();
            tokio::spawn(async move {
                let _ = tx.send(store.head_object(&task_key, None).await);
            });
            state.prefetched.insert(
                key,
                Prefetched {
                    at: now,
                    answer: rx,
                },
            );
        }
    }

    /// Something changed through this mount: no answer taken before may be
    /// used.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.prefetched.clear();
        state.walks.clear();
    }
}
