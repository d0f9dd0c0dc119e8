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
//! `Fs::head_batch` starts HEADs here too: the next files of a readdir's
//! listing whose metadata is unknown, when one of them is stat'ed.
//!
//! Each answer is learnt into `known_attrs` as it comes (so a walk in any
//! order, `du` by inode number, finds it there however late), unless this
//! mount changed that key since the HEAD was sent
//! (`KnownAttrs::learn_head_sent_at`). It is also kept for the lookup
//! that asks while it is on its way: used at most once, and dropped when
//! `metadata_ttl` passes or when this mount changes anything (a changed
//! file must not be answered from a HEAD taken before the change). At
//! most `MAX_IN_FLIGHT` HEADs started here are out at once, for the whole
//! mount.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::{oneshot, Semaphore};

use super::attr::AttrDefaults;
use super::known_attrs::KnownAttrs;
use super::lookup::Listed;
use crate::s3::{ObjectMeta, S3Error};
use crate::store::Store;

const FIRST_WINDOW: usize = 4;
const MAX_WINDOW: usize = 32;
/// Directories whose walk is followed at once.
const WALKS: usize = 64;
/// Prefetched answers kept at most (unused ones are dropped first).
const MAX_PREFETCHED: usize = 1024;
/// HEADs started ahead and not answered yet, at most, for the whole
/// mount: lookups in no order (`du` sorts a directory by inode number)
/// each start a batch, and must not add up to thousands of requests at
/// once.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

pub(crate) type HeadResult = Result<ObjectMeta, S3Error>;

struct Prefetched {
    at: Instant,
    answer: oneshot::Receiver<HeadResult>,
}

impl Prefetched {
    fn young(&self, ttl: Duration) -> bool {
        self.at.elapsed() < ttl
    }
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
    /// Where each answer is learnt as it comes, whether or not a lookup
    /// takes it: a batch's answers serve lookups in any order, later than
    /// `ttl` too (`known` holds a version's metadata, checked against the
    /// listing that shows the version).
    known: Arc<KnownAttrs>,
    attrs: Arc<AttrDefaults>,
    in_flight: Arc<Semaphore>,
}

struct State {
    walks: LruCache<String, Walk>,
    prefetched: HashMap<String, Prefetched>,
}

impl StatAhead {
    pub(crate) fn new(ttl: Duration, known: Arc<KnownAttrs>, attrs: AttrDefaults) -> Self {
        StatAhead {
            ttl,
            state: Mutex::new(State {
                walks: LruCache::new(NonZeroUsize::new(WALKS).unwrap_or(NonZeroUsize::MIN)),
                prefetched: HashMap::new(),
            }),
            known,
            attrs: Arc::new(attrs),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The prefetched HEAD of `key`, if one was started and is still
    /// young; it is handed out once.
    pub(crate) fn take(&self, key: &str) -> Option<oneshot::Receiver<HeadResult>> {
        let found = self.lock().prefetched.remove(key)?;
        found.young(self.ttl).then_some(found.answer)
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
        let keys = ahead.iter().map(|n| key_of(n)).collect();
        let started = self.start_locked(&mut state, store, keys);
        if let Some(walk) = state.walks.get_mut(dir) {
            // Those not started (too many in flight) are asked by their
            // own lookups.
            if started < ahead.len() {
                walk.ahead_until = started
                    .checked_sub(1)
                    .and_then(|i| ahead.get(i))
                    .cloned()
                    .unwrap_or_else(|| name.to_owned());
            }
        }
    }

    /// Start HEADs of `keys` (those not started already), as many as
    /// `MAX_IN_FLIGHT` allows: each answer is learnt into `known` when it
    /// comes and kept for the lookup that asks (`take`). How many of
    /// `keys`, in order, are on their way.
    pub(crate) fn start(&self, store: &Store, keys: impl IntoIterator<Item = String>) -> usize {
        let keys: Vec<String> = keys.into_iter().collect();
        let mut state = self.lock();
        self.start_locked(&mut state, store, keys)
    }

    /// `start`, under the lock; how many of `keys`, in order, are
    /// started or were already.
    fn start_locked(&self, state: &mut State, store: &Store, keys: Vec<String>) -> usize {
        if state.prefetched.len() + keys.len() > MAX_PREFETCHED {
            let ttl = self.ttl;
            state.prefetched.retain(|_, p| p.young(ttl));
            if state.prefetched.len() + keys.len() > MAX_PREFETCHED {
                state.prefetched.clear();
            }
        }
        let now = Instant::now();
        let mut started = 0;
        for key in keys {
            if state
                .prefetched
                .get(&key)
                .is_some_and(|p| p.young(self.ttl))
            {
                started += 1;
                continue;
            }
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                break;
            };
            let (tx, rx) = oneshot::channel();
            let store = store.clone();
            let known = self.known.clone();
            let attrs = self.attrs.clone();
            // An answer about a key this mount changes meanwhile is not
            // learnt (a change to another key, as `cp -r` makes one per
            // file it reads, does not stop the others).
            let sent_at = known.changes();
            let task_key = key.clone();
            tokio::spawn(async move {
                let answer = store.head_object(&task_key, None).await;
                drop(permit);
                if let Ok(meta) = &answer {
                    known.learn_head_sent_at(&task_key, meta, &attrs.of_head(meta), sent_at);
                }
                let _ = tx.send(answer);
            });
            state.prefetched.insert(
                key,
                Prefetched {
                    at: now,
                    answer: rx,
                },
            );
            started += 1;
        }
        started
    }

    /// Something changed through this mount: no answer taken before may be
    /// used.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.prefetched.clear();
        state.walks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::PutOptions;
    use crate::store::faults::{Fault, FaultyStore, Op};
    use crate::store::memory::{MemoryStore, MemoryStoreConfig};
    use crate::store::ObjectStore;
    use bytes::Bytes;
    use std::time::UNIX_EPOCH;

    fn defaults() -> AttrDefaults {
        AttrDefaults {
            uid: 0,
            gid: 0,
            file_perm: 0o644,
            dir_perm: 0o755,
            mount_time: UNIX_EPOCH,
        }
    }

    async fn bucket(keys: usize) -> Arc<MemoryStore> {
        let memory = Arc::new(MemoryStore::new(MemoryStoreConfig::default()));
        for i in 0..keys {
            memory
                .put_object(
                    &format!("f{i:03}"),
                    Bytes::from_static(b"x"),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
        }
        memory
    }

    /// Whether `known` holds `key`'s current version as carrying nothing
    /// a listing does not show (what a HEAD of it teaches).
    async fn learnt(memory: &MemoryStore, known: &KnownAttrs, key: &str) -> bool {
        let meta = memory.head_object(key, None).await.unwrap();
        known.is_bare(key, &meta.etag, meta.size, meta.last_modified)
    }

    async fn until_heads(memory: &MemoryStore, heads: u64) {
        for _ in 0..500 {
            if memory.requests("HeadObject") >= heads {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{heads} HEADs never came");
    }

    #[tokio::test]
    async fn answers_are_learnt_whether_or_not_a_lookup_takes_them() {
        let memory = bucket(3).await;
        let known = Arc::new(KnownAttrs::new(100, 100));
        let ahead = StatAhead::new(Duration::from_secs(60), known.clone(), defaults());
        let store: Store = memory.clone();
        let keys = || (0..3).map(|i| format!("f{i:03}"));
        assert_eq!(ahead.start(&store, keys()), 3);
        until_heads(&memory, 3).await;
        // What a lookup takes is the answer of the HEAD already sent.
        let taken = ahead.take("f000").expect("started").await.unwrap();
        assert_eq!(taken.unwrap().size, 1);
        // Started again while young: nothing new is sent.
        assert_eq!(ahead.start(&store, keys().skip(1)), 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(memory.requests("HeadObject"), 3);
        for key in keys() {
            assert!(learnt(&memory, &known, &key).await, "{key} learnt");
        }
    }

    #[tokio::test]
    async fn an_answer_sent_before_this_mount_changed_its_key_is_not_learnt() {
        let memory = bucket(2).await;
        // With s3fs metadata: its answer would be learnt whole.
        let with_mode = PutOptions {
            user_metadata: [("mode".to_owned(), "33152".to_owned())].into(),
            ..Default::default()
        };
        memory
            .put_object("f000", Bytes::from_static(b"x"), &with_mode)
            .await
            .unwrap();
        let faulty = Arc::new(FaultyStore::new(memory.clone()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        faulty.arm(Op::Head, Fault::Pause(gate.clone()));
        faulty.arm(Op::Head, Fault::Pause(gate.clone()));
        let known = Arc::new(KnownAttrs::new(100, 100));
        let ahead = StatAhead::new(Duration::from_secs(60), known.clone(), defaults());
        let store: Store = faulty.clone();
        assert_eq!(
            ahead.start(&store, ["f000".to_owned(), "f001".to_owned()]),
            2
        );
        // While the HEADs are out, the mount changes f000 (a chmod), and
        // something elsewhere (as `cp -r` writes a copy per file it reads).
        known.forget("f000");
        ahead.clear();
        gate.add_permits(2);
        until_heads(&memory, 2).await;
        for _ in 0..500 {
            if learnt(&memory, &known, "f001").await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            learnt(&memory, &known, "f001").await,
            "another key's answer is learnt"
        );
        let meta = memory.head_object("f000", None).await.unwrap();
        assert!(known
            .file("f000", &meta.etag, meta.size, meta.last_modified)
            .is_none());
    }

    #[tokio::test]
    async fn heads_in_flight_are_bounded_for_the_whole_mount() {
        let memory = bucket(MAX_IN_FLIGHT + 10).await;
        let faulty = Arc::new(FaultyStore::new(memory.clone()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        for _ in 0..MAX_IN_FLIGHT + 10 {
            faulty.arm(Op::Head, Fault::Pause(gate.clone()));
        }
        let known = Arc::new(KnownAttrs::new(1000, 1000));
        let ahead = StatAhead::new(Duration::from_secs(60), known, defaults());
        let store: Store = faulty.clone();
        let keys = |from: usize| (from..MAX_IN_FLIGHT + 10).map(|i| format!("f{i:03}"));
        // Two walks (`du` in inode order starts a batch at each lookup).
        assert_eq!(ahead.start(&store, keys(0).take(40)), 40);
        assert_eq!(ahead.start(&store, keys(40)), MAX_IN_FLIGHT - 40);
        gate.add_permits(MAX_IN_FLIGHT + 10);
        until_heads(&memory, MAX_IN_FLIGHT as u64).await;
        // Answered, the permits are back: the rest can go.
        let mut started = 0;
        for _ in 0..500 {
            started = ahead.start(&store, keys(MAX_IN_FLIGHT));
            if started == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(started, 10);
    }
}
