//! The reference test of the filesystem core: random sequences of POSIX
//! calls, another client's writes and injected faults, run straight
//! against `Fs` on the in-memory store (no kernel, no server, no root),
//! checked against a plain model of what the user and the bucket should
//! see.
//!
//! Invariants held after every step:
//! - every object in the bucket is wholly one writer's content: one that a
//!   successful (or possibly applied) save of this mount produced, or one
//!   the other client put, never a mix;
//! - a successful close or fsync means those bytes are in the bucket;
//! - reads see the mount's own writes; a file opened for reading shows the
//!   version it was opened on, or fails with ESTALE/EIO once it changed;
//! - an open after another client's write sees the new content (the
//!   attribute TTL is 0 here);
//! - refused calls return the errno SEMANTICS.md names (ENOENT, EEXIST);
//! - nothing acknowledged is lost under faults.
//!
//! `BUCKETFS_MODEL_CASES` sets the number of random cases (default 256; a
//! long run: `BUCKETFS_MODEL_CASES=5000 cargo test --test reference_model`).
//! proptest shrinks a failing case and records its seed in
//! `tests/reference_model.proptest-regressions`, which is replayed first on
//! every run; the bugs found so far also have their own tests at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bucketfs::fs::attr::{AttrDefaults, Kind};
use bucketfs::fs::{Caller, Fs, FsConfig, FsError, Ino, SetAttr, VersionsMode, ROOT_INO};
use bucketfs::read::ReadTuning;
use bucketfs::s3::PutOptions;
use bucketfs::store::{Fault, FaultyStore, MemoryStore, MemoryStoreConfig, ObjectStore, Op};
use bytes::Bytes;
use proptest::prelude::*;

const ROOT: Caller = Caller { uid: 0, gid: 0 };
/// The paths the random operations use: two in the root, and one name in
/// each of the two directories, so that a directory rename moves a
/// tracked file onto a tracked path.
const PATHS: [&str; 4] = ["a", "b", "d/e", "f/e"];
/// The directories (`d` exists at the start, as a marker).
const DIRS: [&str; 2] = ["d", "f"];
const MIB: usize = 1024 * 1024;

struct Setup {
    fs: Arc<Fs>,
    bucket: Arc<MemoryStore>,
    faults: Arc<FaultyStore>,
    _staging: tempfile::TempDir,
}

fn setup(store: MemoryStoreConfig) -> Setup {
    setup_with_ttl(store, Duration::ZERO)
}

/// A core whose attributes, listings and misses are trusted for `ttl`.
fn setup_with_ttl(store: MemoryStoreConfig, ttl: Duration) -> Setup {
    setup_with_parts(store, ttl, 5 * MIB as u64)
}

/// The same, saving files in parts of `part_size` (the smallest S3
/// allows by default: more parts per test file).
fn setup_with_parts(store: MemoryStoreConfig, ttl: Duration, part_size: u64) -> Setup {
    let bucket = Arc::new(MemoryStore::new(store));
    let faults = Arc::new(FaultyStore::new(bucket.clone()));
    let staging = tempfile::tempdir().expect("a temporary directory");
    let config = FsConfig {
        prefix: String::new(),
        attrs: AttrDefaults {
            uid: 0,
            gid: 0,
            file_perm: 0o644,
            dir_perm: 0o755,
            mount_time: SystemTime::now(),
        },
        metadata_ttl: ttl,
        negative_ttl: ttl,
        trust_listings: false,
        read_only: false,
        read: ReadTuning {
            part_size: 8 * MIB as u64,
            read_ahead_max: 16 * MIB as u64,
            initial_window: MIB as u64,
            cache_size: 64 * MIB as u64,
            max_concurrency: 8,
        },
        cache_dir: staging.path().to_owned(),
        disk_cache: None,
        write_buffer: 64 * MIB as u64,
        part_size,
        versions: VersionsMode::Off,
    };
    let fs = Fs::new(faults.clone(), config).expect("the core starts");
    Setup {
        fs: Arc::new(fs),
        bucket,
        faults,
        _staging: staging,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The inode of a path, by lookups from the root, as the kernel does.
async fn resolve(fs: &Fs, path: &str) -> Result<Ino, FsError> {
    let mut ino = ROOT_INO;
    for name in path.split('/') {
        ino = fs.lookup(ino, name).await?.ino;
    }
    Ok(ino)
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

async fn parent_ino(fs: &Fs, path: &str) -> Result<Ino, FsError> {
    match split(path).0 {
        "" => Ok(ROOT_INO),
        dir => resolve(fs, dir).await,
    }
}

// ---------------------------------------------------------------------
// The operations and the model.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    /// O_RDONLY.
    Read,
    /// O_RDWR on an existing file.
    ReadWrite,
    /// O_WRONLY|O_TRUNC on an existing file (the kernel sends the
    /// truncation as a setattr after the open).
    Truncate,
    /// O_CREAT|O_EXCL.
    CreateExclusive,
}

#[derive(Debug, Clone)]
enum Step {
    Open {
        path: usize,
        mode: OpenMode,
    },
    Write {
        handle: usize,
        offset: u64,
        len: usize,
    },
    Read {
        handle: usize,
        offset: u64,
        len: u32,
    },
    Truncate {
        handle: usize,
        len: u64,
    },
    Fsync {
        handle: usize,
    },
    Close {
        handle: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Unlink {
        path: usize,
    },
    Chmod {
        path: usize,
        mode: u32,
    },
    ChmodDir {
        dir: usize,
        mode: u32,
    },
    Touch {
        path: usize,
        secs: u64,
    },
    Mkdir {
        dir: usize,
    },
    Rmdir {
        dir: usize,
    },
    RenameDir {
        from: usize,
    },
    OtherPut {
        path: usize,
        len: usize,
    },
    OtherDelete {
        path: usize,
    },
    Fault {
        op: Op,
        lost_answer: bool,
    },
}

/// With `big`, another client's object is sometimes 11 MiB: three parts,
/// so that saves copy the unchanged ones server-side from the base.
fn step(big: bool) -> impl Strategy<Value = Step> {
    let path = 0..PATHS.len();
    let handle = 0usize..4;
    prop_oneof![
        3 => (path.clone(), prop_oneof![
            Just(OpenMode::Read),
            Just(OpenMode::ReadWrite),
            Just(OpenMode::Truncate),
            Just(OpenMode::CreateExclusive),
        ]).prop_map(|(path, mode)| Step::Open { path, mode }),
        4 => (handle.clone(), 0u64..48, 1usize..24)
            .prop_map(|(handle, offset, len)| Step::Write { handle, offset, len }),
        2 => (handle.clone(), 0u64..64, 1u32..40)
            .prop_map(|(handle, offset, len)| Step::Read { handle, offset, len }),
        1 => (handle.clone(), 0u64..40).prop_map(|(handle, len)| Step::Truncate { handle, len }),
        1 => handle.clone().prop_map(|handle| Step::Fsync { handle }),
        3 => handle.prop_map(|handle| Step::Close { handle }),
        1 => (path.clone(), path.clone()).prop_map(|(from, to)| Step::Rename { from, to }),
        1 => path.clone().prop_map(|path| Step::Unlink { path }),
        1 => (path.clone(), prop_oneof![Just(0o600u32), Just(0o640), Just(0o755)])
            .prop_map(|(path, mode)| Step::Chmod { path, mode }),
        1 => (0..DIRS.len(), prop_oneof![Just(0o700u32), Just(0o750)])
            .prop_map(|(dir, mode)| Step::ChmodDir { dir, mode }),
        1 => (path.clone(), 1_000_000_000u64..1_700_000_000)
            .prop_map(|(path, secs)| Step::Touch { path, secs }),
        1 => (0..DIRS.len()).prop_map(|dir| Step::Mkdir { dir }),
        1 => (0..DIRS.len()).prop_map(|dir| Step::Rmdir { dir }),
        1 => (0..DIRS.len()).prop_map(|from| Step::RenameDir { from }),
        2 => (path.clone(), 0usize..40).prop_map(move |(path, len)| Step::OtherPut {
            path,
            len: if big && len >= 20 { 11 * MIB + len } else { len },
        }),
        1 => path.prop_map(|path| Step::OtherDelete { path }),
        1 => (prop_oneof![
            Just(Op::Put), Just(Op::Get), Just(Op::Head), Just(Op::Copy),
            Just(Op::Delete), Just(Op::List), Just(Op::Any),
        ], any::<bool>()).prop_map(|(op, lost_answer)| Step::Fault { op, lost_answer }),
    ]
}

/// What the user should see of a file with local changes (open for
/// writing, or not yet stored).
#[derive(Debug, Clone)]
struct Local {
    content: Vec<u8>,
    /// Changed since the bucket last got it.
    unsaved: bool,
    /// Emptied and not written since: a flush stores nothing yet.
    awaiting_first_write: bool,
    /// An O_EXCL create not stored yet: its store fails with EEXIST if
    /// the key appeared meanwhile.
    exclusive: bool,
    writers: u32,
}

#[derive(Debug)]
struct Handle {
    fh: u64,
    ino: Ino,
    path: String,
    writable: bool,
    /// For a read-only handle opened on the bucket's object: its content
    /// then.
    snapshot: Option<Vec<u8>>,
}

struct Model {
    /// Contents each key may hold in the bucket (`None`: absent). One
    /// entry when the outcome is known; more after a fault left it open
    /// whether a request was applied.
    bucket: BTreeMap<String, Vec<Option<Vec<u8>>>>,
    local: BTreeMap<String, Local>,
    handles: Vec<Handle>,
    /// Directories this mount unlinked or moved a file out of, and has not
    /// removed or moved since: they stay directories on the mount even
    /// when nothing is left below them in the bucket (as for `rm -r`).
    kept: BTreeSet<String>,
    /// Distinct bytes for every write, so that any mix shows.
    stamp: u8,
}

impl Model {
    fn new() -> Self {
        Model {
            bucket: PATHS
                .iter()
                .map(|p| p.to_string())
                .chain(DIRS.iter().map(|d| format!("{d}/")))
                .map(|k| (k, vec![None]))
                .collect(),
            local: BTreeMap::new(),
            handles: Vec::new(),
            kept: BTreeSet::new(),
            stamp: 0,
        }
    }

    fn data(&mut self, len: usize) -> Vec<u8> {
        self.stamp = self.stamp.wrapping_add(1).max(1);
        let s = self.stamp;
        (0..len)
            .map(|i| s.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }

    fn set(&mut self, key: &str, content: Option<Vec<u8>>) {
        self.bucket.insert(key.to_owned(), vec![content]);
    }

    fn maybe(&mut self, key: &str, content: Option<Vec<u8>>) {
        let entry = self.bucket.entry(key.to_owned()).or_default();
        if !entry.contains(&content) {
            entry.push(content);
        }
    }

    fn open_on(&self, path: &str) -> bool {
        self.handles.iter().any(|h| h.path == path)
    }

    /// Whether anything under `dir/` is open or has local changes.
    fn busy_under(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.handles.iter().any(|h| h.path.starts_with(&prefix))
            || self.local.keys().any(|p| p.starts_with(&prefix))
    }
}

/// A directory exists if its marker or any key below it does (or a file
/// made on this mount and not stored yet is in it, or this mount emptied
/// it and has not removed it).
fn dir_exists(bucket: &MemoryStore, m: &Model, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    bucket.contents().keys().any(|k| k.starts_with(&prefix))
        || m.local.keys().any(|p| p.starts_with(&prefix))
        || m.kept.contains(dir)
}

/// The directory a path is in, if not the root.
fn dir_of(path: &str) -> Option<String> {
    Some(split(path).0)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
}

fn parent_exists(bucket: &MemoryStore, m: &Model, path: &str) -> bool {
    match split(path).0 {
        "" => true,
        dir => dir_exists(bucket, m, dir),
    }
}

/// A local file with no writer left was stored (or lost its O_EXCL race):
/// what the bucket holds now, and what readers still open read.
fn settle(bucket: &MemoryStore, m: &mut Model, path: &str, local: Local) {
    for h in m.handles.iter_mut().filter(|h| h.path == path) {
        h.snapshot.get_or_insert_with(|| local.content.clone());
    }
    let there = actual(bucket, path);
    let lost_race = local.exclusive && there.is_some() && there.as_ref() != Some(&local.content);
    if local.unsaved && !lost_race {
        m.set(path, Some(local.content));
    }
}

fn actual(bucket: &MemoryStore, key: &str) -> Option<Vec<u8>> {
    bucket.content(key).map(|b| b.to_vec())
}

/// Every key holds one of the contents the model allows; from then on
/// the model knows which (a fault's open question is answered).
fn check_bucket(model: &mut Model, bucket: &MemoryStore, what: &str) -> Result<(), TestCaseError> {
    for (key, allowed) in model.bucket.iter_mut() {
        let there = actual(bucket, key);
        prop_assert!(
            allowed.contains(&there),
            "after {what}: {key} holds {there:?}, expected one of {allowed:?}"
        );
        *allowed = vec![there];
    }
    for key in bucket.contents().keys() {
        prop_assert!(
            model.bucket.contains_key(key),
            "after {what}: an object nobody wrote: {key}"
        );
    }
    Ok(())
}

/// Run one step on the core and on the model, and check what the user
/// saw. `fired` says whether an injected fault fired during it: then a
/// failure is allowed and its outcome is open.
async fn run_step(s: &Setup, m: &mut Model, step: &Step) -> Result<(), TestCaseError> {
    let before = s.faults.pending();
    let fired = || s.faults.pending() < before;
    match step.clone() {
        Step::Fault { op, lost_answer } => {
            // One fault at a time, so that a close's retry at release
            // settles what the fault left open.
            if before == 0 {
                let fault = if lost_answer {
                    Fault::LostAnswer
                } else {
                    Fault::Error {
                        status: 503,
                        code: "SlowDown",
                    }
                };
                s.faults.arm(op, fault);
            }
        }
        Step::OtherPut { path, len } => {
            let key = PATHS[path];
            let data = m.data(len);
            s.bucket
                .put_object(key, Bytes::from(data.clone()), &PutOptions::default())
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            m.set(key, Some(data));
        }
        Step::OtherDelete { path } => {
            let key = PATHS[path];
            s.bucket
                .delete_object(key, None)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            m.set(key, None);
        }
        Step::Open { path, mode } => {
            let path = PATHS[path];
            if m.handles.len() >= 4 {
                return Ok(());
            }
            let exists_before = actual(&s.bucket, path).is_some() || m.local.contains_key(path);
            match mode {
                OpenMode::CreateExclusive => {
                    if m.local.contains_key(path) || m.open_on(path) {
                        return Ok(());
                    }
                    let result = async {
                        let parent = parent_ino(&s.fs, path).await?;
                        s.fs.create(parent, split(path).1, 0o644, ROOT, true).await
                    }
                    .await;
                    match result {
                        Ok((inode, opened)) => {
                            prop_assert!(
                                !exists_before || fired(),
                                "O_EXCL create of existing {path} succeeded"
                            );
                            prop_assert!(
                                parent_exists(&s.bucket, m, path) || fired(),
                                "create in a missing directory: {path}"
                            );
                            m.local.insert(
                                path.to_owned(),
                                Local {
                                    content: Vec::new(),
                                    unsaved: true,
                                    awaiting_first_write: false,
                                    exclusive: true,
                                    writers: 1,
                                },
                            );
                            m.handles.push(Handle {
                                fh: opened.fh,
                                ino: inode.ino,
                                path: path.to_owned(),
                                writable: true,
                                snapshot: None,
                            });
                        }
                        Err(e) => prop_assert!(
                            fired()
                                || (exists_before && e.errno == libc::EEXIST)
                                || (!parent_exists(&s.bucket, m, path) && e.errno == libc::ENOENT),
                            "O_EXCL create of {path} (exists: {exists_before}): {e:?}"
                        ),
                    }
                }
                OpenMode::Read | OpenMode::ReadWrite | OpenMode::Truncate => {
                    let bucket_now = actual(&s.bucket, path);
                    let write = mode != OpenMode::Read;
                    let result = async {
                        let ino = resolve(&s.fs, path).await?;
                        let opened = s.fs.open(ino, write, false).await?;
                        let opened = (ino, opened);
                        if mode == OpenMode::Truncate {
                            let change = SetAttr {
                                size: Some(0),
                                ..Default::default()
                            };
                            if let Err(e) = s.fs.setattr(ino, change, ROOT).await {
                                s.fs.flush(opened.1.fh).await.ok();
                                s.fs.release(opened.1.fh).await;
                                return Err(e);
                            }
                        }
                        Ok(opened)
                    }
                    .await;
                    let (ino, opened) = match result {
                        Ok(opened) => opened,
                        Err(e) => {
                            prop_assert!(
                                fired() || (!exists_before && e.errno == libc::ENOENT),
                                "open {mode:?} of {path} (exists: {exists_before}): {e:?}"
                            );
                            // A failed truncating open may have begun a
                            // local file and given it up: what it left is
                            // settled by the release above.
                            return Ok(());
                        }
                    };
                    prop_assert!(exists_before || fired(), "open of missing {path} succeeded");
                    let local_before = m.local.get(path).cloned();
                    let snapshot = match (&local_before, write) {
                        (None, false) => bucket_now.clone(),
                        _ => None,
                    };
                    if write {
                        let base = local_before
                            .map(|l| l.content)
                            .or(bucket_now)
                            .unwrap_or_default();
                        let local = m.local.entry(path.to_owned()).or_insert(Local {
                            content: base,
                            unsaved: false,
                            awaiting_first_write: false,
                            exclusive: false,
                            writers: 0,
                        });
                        local.writers += 1;
                        if mode == OpenMode::Truncate {
                            local.content.clear();
                            local.unsaved = true;
                            local.awaiting_first_write = true;
                        }
                    }
                    m.handles.push(Handle {
                        fh: opened.fh,
                        ino,
                        path: path.to_owned(),
                        writable: write,
                        snapshot,
                    });
                }
            }
        }
        Step::Write {
            handle,
            offset,
            len,
        } => {
            let Some(h) = m.handles.get(handle).filter(|h| h.writable) else {
                return Ok(());
            };
            let (fh, path) = (h.fh, h.path.clone());
            let data = m.data(len);
            let n = s.fs.write(fh, offset, &data).await;
            prop_assert_eq!(n.as_ref().ok(), Some(&(len as u32)), "write: {:?}", n);
            let local = m
                .local
                .get_mut(&path)
                .expect("a writable handle has a local file");
            let end = offset as usize + len;
            if local.content.len() < end {
                local.content.resize(end, 0);
            }
            local.content[offset as usize..end].copy_from_slice(&data);
            local.unsaved = true;
            local.awaiting_first_write = false;
        }
        Step::Truncate { handle, len } => {
            let Some(h) = m.handles.get(handle).filter(|h| h.writable) else {
                return Ok(());
            };
            let (path, ino) = (h.path.clone(), h.ino);
            let change = SetAttr {
                size: Some(len),
                ..Default::default()
            };
            // ftruncate: on the open file's inode, no lookup.
            let result = s.fs.setattr(ino, change, ROOT).await;
            match result {
                Ok(inode) => {
                    prop_assert_eq!(inode.attr.size, len);
                    let local = m.local.get_mut(&path).expect("local");
                    local.content.resize(len as usize, 0);
                    local.unsaved = true;
                    local.awaiting_first_write = len == 0;
                }
                Err(e) => prop_assert!(fired(), "truncate of {path}: {e:?}"),
            }
        }
        Step::Read {
            handle,
            offset,
            len,
        } => {
            let Some(h) = m.handles.get(handle) else {
                return Ok(());
            };
            let got = s.fs.read(h.fh, offset, len).await;
            let expect = |content: &[u8]| {
                let start = (offset as usize).min(content.len());
                let end = (offset as usize + len as usize).min(content.len());
                content[start..end].to_vec()
            };
            match (m.local.get(&h.path), &h.snapshot, got) {
                (Some(local), _, Ok(bytes)) => prop_assert_eq!(
                    bytes,
                    expect(&local.content),
                    "read of {} sees its own writes",
                    h.path
                ),
                (None, Some(snapshot), Ok(bytes)) => prop_assert_eq!(
                    bytes,
                    expect(snapshot),
                    "read of {} shows the version opened",
                    h.path
                ),
                (None, None, Ok(bytes)) => {
                    prop_assert!(false, "read of a handle without a model: {bytes:?}")
                }
                (local, snapshot, Err(e)) => {
                    let changed =
                        local.is_none() && snapshot.as_ref() != actual(&s.bucket, &h.path).as_ref();
                    prop_assert!(
                        fired() || (changed && matches!(e.errno, libc::ESTALE | libc::EIO)),
                        "read of {}: {e:?}",
                        h.path
                    );
                }
            }
        }
        Step::Fsync { handle } | Step::Close { handle } => {
            let Some(h) = m.handles.get(handle) else {
                return Ok(());
            };
            let (fh, path, writable) = (h.fh, h.path.clone(), h.writable);
            let closing = matches!(step, Step::Close { .. });
            // Another writer's object under the name (a lost answer may
            // have stored this very file already: that one is its own).
            let there = actual(&s.bucket, &path);
            let taken = there.is_some() && m.local.get(&path).map(|l| &l.content) != there.as_ref();
            let result = if closing {
                s.fs.flush(fh).await
            } else {
                s.fs.fsync(fh).await
            };
            let flush_fired = fired();
            if let Some(local) = m.local.get_mut(&path).filter(|_| writable) {
                let stores = local.unsaved
                    && (!closing || !local.awaiting_first_write || !local.content.is_empty());
                match &result {
                    Err(e) if stores && local.exclusive && taken && e.errno == libc::EEXIST => {}
                    Ok(()) if stores => {
                        prop_assert!(
                            !(local.exclusive && taken),
                            "O_EXCL store over {path} worked"
                        );
                        let content = local.content.clone();
                        local.unsaved = false;
                        local.awaiting_first_write = false;
                        local.exclusive = false;
                        m.set(&path, Some(content));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        prop_assert!(flush_fired, "close of {path}: {e:?}");
                        let content = local.content.clone();
                        m.maybe(&path, Some(content));
                    }
                }
            } else {
                prop_assert!(result.is_ok() || flush_fired, "close of {path}: {result:?}");
            }
            if closing {
                let h = m.handles.remove(handle);
                let before_release = s.faults.pending();
                s.fs.release(h.fh).await;
                let release_failed = s.faults.pending() < before_release;
                if writable {
                    let local = m.local.get_mut(&path).expect("local");
                    local.writers -= 1;
                    if local.writers == 0 {
                        let content = local.content.clone();
                        if release_failed {
                            // The last close's store met the fault: the
                            // file stays local (and shown) until stored.
                            m.maybe(&path, Some(content));
                        } else {
                            let local = m.local.remove(&path).expect("local");
                            settle(&s.bucket, m, &path, local);
                        }
                    }
                }
            }
        }
        Step::Rename { from, to } => {
            let (from, to) = (PATHS[from], PATHS[to]);
            if m.open_on(from)
                || m.open_on(to)
                || m.local.contains_key(from)
                || m.local.contains_key(to)
            {
                return Ok(());
            }
            let content = actual(&s.bucket, from);
            let to_parent = parent_exists(&s.bucket, m, to);
            let result = async {
                // The kernel looks the source up before it asks.
                resolve(&s.fs, from).await?;
                let (fp, tp) = (parent_ino(&s.fs, from).await?, parent_ino(&s.fs, to).await?);
                s.fs.rename(fp, split(from).1, tp, split(to).1, false).await
            }
            .await;
            match result {
                Ok(()) => {
                    prop_assert!(
                        (content.is_some() && to_parent) || fired(),
                        "rename of missing {from}, or into a missing directory, worked"
                    );
                    // A rename onto itself changes nothing.
                    if from != to {
                        m.kept.extend(dir_of(from));
                    }
                    if from != to {
                        m.set(to, content);
                        m.set(from, None);
                    }
                }
                Err(e) if fired() => {
                    let _ = e;
                    m.maybe(to, content);
                    m.maybe(from, None);
                }
                Err(e) => prop_assert!(
                    (content.is_none() || !to_parent) && e.errno == libc::ENOENT,
                    "rename {from} -> {to}: {e:?}"
                ),
            }
        }
        Step::Unlink { path } => {
            let path = PATHS[path];
            if m.open_on(path) || m.local.contains_key(path) {
                return Ok(());
            }
            let exists = actual(&s.bucket, path).is_some();
            let result = async {
                resolve(&s.fs, path).await?;
                let parent = parent_ino(&s.fs, path).await?;
                s.fs.unlink(parent, split(path).1).await
            }
            .await;
            match result {
                Ok(()) => {
                    m.set(path, None);
                    m.kept.extend(dir_of(path));
                }
                Err(_) if fired() => m.maybe(path, None),
                Err(e) => prop_assert!(
                    !exists && e.errno == libc::ENOENT,
                    "unlink of {path} (exists: {exists}): {e:?}"
                ),
            }
        }
        Step::Chmod { path, mode } => {
            let path = PATHS[path];
            if m.open_on(path) || m.local.contains_key(path) {
                return Ok(());
            }
            let exists = actual(&s.bucket, path).is_some();
            let change = SetAttr {
                mode: Some(mode),
                ..Default::default()
            };
            let result = async {
                let ino = resolve(&s.fs, path).await?;
                s.fs.setattr(ino, change, ROOT).await
            }
            .await;
            match result {
                Ok(inode) => {
                    prop_assert_eq!(inode.attr.perm as u32, mode);
                    let stored = s.bucket.metadata(path).and_then(|m| m.get("mode").cloned());
                    prop_assert_eq!(stored, Some((libc::S_IFREG | mode).to_string()));
                }
                Err(e) => prop_assert!(
                    fired() || (!exists && e.errno == libc::ENOENT),
                    "chmod of {path} (exists: {exists}): {e:?}"
                ),
            }
        }
        Step::ChmodDir { dir, mode } => {
            let dir = DIRS[dir];
            let exists = dir_exists(&s.bucket, m, dir);
            let marker = format!("{dir}/");
            let change = SetAttr {
                mode: Some(mode),
                ..Default::default()
            };
            let result = async {
                let ino = resolve(&s.fs, dir).await?;
                s.fs.setattr(ino, change, ROOT).await
            }
            .await;
            match result {
                Ok(inode) => {
                    prop_assert!(exists || fired(), "chmod of missing {dir} worked");
                    prop_assert_eq!(inode.attr.kind, Kind::Dir);
                    prop_assert_eq!(inode.attr.perm as u32, mode);
                    // A directory's mode lives in its marker, put now.
                    m.set(&marker, Some(Vec::new()));
                    // And it is still a directory to the next lookup.
                    let again = resolve(&s.fs, dir).await;
                    prop_assert!(again.is_ok(), "{dir} after its chmod: {again:?}");
                }
                Err(_) if fired() => m.maybe(&marker, Some(Vec::new())),
                Err(e) => prop_assert!(
                    !exists && e.errno == libc::ENOENT,
                    "chmod of {dir} (exists: {exists}): {e:?}"
                ),
            }
        }
        Step::Touch { path, secs } => {
            let path = PATHS[path];
            if m.open_on(path) || m.local.contains_key(path) {
                return Ok(());
            }
            let exists = actual(&s.bucket, path).is_some();
            let when = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let change = SetAttr {
                mtime: Some(when),
                ..Default::default()
            };
            let result = async {
                let ino = resolve(&s.fs, path).await?;
                s.fs.setattr(ino, change, ROOT).await
            }
            .await;
            match result {
                Ok(inode) => {
                    prop_assert_eq!(inode.attr.mtime, when);
                    let stored = s
                        .bucket
                        .metadata(path)
                        .and_then(|m| m.get("mtime").cloned());
                    prop_assert_eq!(stored, Some(secs.to_string()));
                }
                Err(e) => prop_assert!(
                    fired() || (!exists && e.errno == libc::ENOENT),
                    "utimens of {path} (exists: {exists}): {e:?}"
                ),
            }
        }
        Step::Mkdir { dir } => {
            let dir = DIRS[dir];
            let exists = dir_exists(&s.bucket, m, dir);
            let marker = format!("{dir}/");
            // A directory whose files another client removed while one is
            // open here is gone from the bucket's view.
            let only_local = !s.bucket.contents().keys().any(|k| k.starts_with(&marker));
            match s.fs.mkdir(ROOT_INO, dir, 0o755, ROOT).await {
                Ok(_) => {
                    prop_assert!(
                        !exists || only_local || fired(),
                        "mkdir of existing {dir} worked"
                    );
                    m.set(&marker, Some(Vec::new()));
                }
                Err(_) if fired() => m.maybe(&marker, Some(Vec::new())),
                Err(e) => prop_assert!(
                    exists && e.errno == libc::EEXIST,
                    "mkdir {dir} (exists: {exists}): {e:?}"
                ),
            }
        }
        Step::Rmdir { dir } => {
            let dir = DIRS[dir];
            if m.busy_under(dir) {
                return Ok(());
            }
            let marker = format!("{dir}/");
            let exists = dir_exists(&s.bucket, m, dir);
            let empty = !PATHS
                .iter()
                .any(|p| p.starts_with(&marker) && actual(&s.bucket, p).is_some());
            let result = async {
                resolve(&s.fs, dir).await?;
                s.fs.rmdir(ROOT_INO, dir).await
            }
            .await;
            match result {
                Ok(()) => {
                    prop_assert!(
                        (exists && empty) || fired(),
                        "rmdir {dir} (exists: {exists}, empty: {empty}) worked"
                    );
                    m.set(&marker, None);
                    m.kept.remove(dir);
                }
                Err(_) if fired() => m.maybe(&marker, None),
                Err(e) => prop_assert!(
                    (!exists && e.errno == libc::ENOENT)
                        || (exists && !empty && e.errno == libc::ENOTEMPTY),
                    "rmdir {dir} (exists: {exists}, empty: {empty}): {e:?}"
                ),
            }
        }
        Step::RenameDir { from } => {
            let (from, to) = (DIRS[from], DIRS[1 - from]);
            if m.busy_under(from) || m.busy_under(to) || dir_exists(&s.bucket, m, to) {
                return Ok(());
            }
            let exists = dir_exists(&s.bucket, m, from);
            let prefix = format!("{from}/");
            let moves: Vec<(String, String, Option<Vec<u8>>)> = m
                .bucket
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .map(|k| {
                    let new = format!("{to}/{}", &k[prefix.len()..]);
                    (k.clone(), new, actual(&s.bucket, k))
                })
                .collect();
            let result = async {
                resolve(&s.fs, from).await?;
                s.fs.rename(ROOT_INO, from, ROOT_INO, to, false).await
            }
            .await;
            match result {
                Ok(()) => {
                    prop_assert!(exists || fired(), "rename of missing {from} worked");
                    m.kept.remove(from);
                    // An empty directory (one this mount emptied) needs a
                    // marker to exist at its new name.
                    let empty = moves.iter().all(|(_, _, content)| content.is_none());
                    for (old, new, content) in moves {
                        m.set(&new, content);
                        m.set(&old, None);
                    }
                    if empty {
                        m.set(&format!("{to}/"), Some(Vec::new()));
                    }
                }
                Err(_) if fired() => {
                    let empty = moves.iter().all(|(_, _, content)| content.is_none());
                    for (old, new, content) in moves {
                        m.maybe(&new, content);
                        m.maybe(&old, None);
                    }
                    if empty {
                        m.maybe(&format!("{to}/"), Some(Vec::new()));
                    }
                }
                Err(e) => prop_assert!(
                    !exists && e.errno == libc::ENOENT,
                    "rename {from} -> {to} (exists: {exists}): {e:?}"
                ),
            }
        }
    }
    check_bucket(m, &s.bucket, &format!("{step:?}"))
}

async fn run_case(steps: &[Step], store: MemoryStoreConfig) -> Result<(), TestCaseError> {
    let s = setup(store);
    s.fs.mkdir(ROOT_INO, "d", 0o755, ROOT)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut m = Model::new();
    m.set("d/", Some(Vec::new()));
    for step in steps {
        run_step(&s, &mut m, step).await?;
    }
    // Close what is open: every handle's close succeeds once faults stop.
    s.faults.disarm();
    while !m.handles.is_empty() {
        run_step(&s, &mut m, &Step::Close { handle: 0 }).await?;
    }
    // What the last closes could not store, the unmount path does.
    s.fs.flush_all().await;
    for (path, local) in std::mem::take(&mut m.local) {
        settle(&s.bucket, &mut m, &path, local);
    }
    check_bucket(&mut m, &s.bucket, "the final flush")?;
    prop_assert_eq!(
        s.bucket.open_uploads(),
        0,
        "no multipart upload is left behind"
    );
    Ok(())
}

fn cases() -> u32 {
    std::env::var("BUCKETFS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    /// LastModified in whole seconds, as listings show it: versions made
    /// within one second look alike but for their ETags.
    #[test]
    fn random_sequences_with_coarse_times(steps in prop::collection::vec(step(false), 1..40)) {
        rt().block_on(run_case(&steps, MemoryStoreConfig {
            time_granularity: Duration::from_secs(1),
            ..Default::default()
        }))?;
    }

    /// LastModified in milliseconds.
    #[test]
    fn random_sequences_with_fine_times(steps in prop::collection::vec(step(false), 1..40)) {
        rt().block_on(run_case(&steps, MemoryStoreConfig::default()))?;
    }

    /// B2's prices: small objects copied (rename, chmod) by a GET and a
    /// PUT. (B2's refusal of conditional PUTs is met above the seam, in
    /// `S3Client::put_object`, and tested against a server.)
    #[test]
    fn random_sequences_with_b2_prices(steps in prop::collection::vec(step(false), 1..40)) {
        rt().block_on(run_case(&steps, MemoryStoreConfig {
            reupload_up_to: 360_000,
            time_granularity: Duration::from_secs(1),
            ..Default::default()
        }))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases() / 4,
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    })]

    /// Multipart files: the unchanged parts of a save are copies of the
    /// version the file was opened on, whatever another client does.
    #[test]
    fn random_sequences_with_multipart_files(steps in prop::collection::vec(step(true), 1..30)) {
        rt().block_on(run_case(&steps, MemoryStoreConfig::default()))?;
    }
}

// ---------------------------------------------------------------------
// The bugs this model and issue 14 found, each as its own case.

fn bytes_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

async fn put(bucket: &MemoryStore, key: &str, data: &[u8]) {
    bucket
        .put_object(key, Bytes::from(data.to_vec()), &PutOptions::default())
        .await
        .expect("the other client's PUT");
}

/// The scenario of issue 14: a 20 MiB file, its first 10 MiB (two whole
/// 5 MiB parts) rewritten through an open descriptor while another client
/// replaces the object: the save's last two parts are server-side copies
/// alone, with no read of the base that could notice the change.
async fn two_writers(config: MemoryStoreConfig) -> (Setup, Result<(), FsError>, Vec<u8>, Vec<u8>) {
    let s = setup(config);
    let original = bytes_of(20 * MIB, 1);
    let theirs = bytes_of(20 * MIB, 2);
    put(&s.bucket, "x", &original).await;
    let ino = resolve(&s.fs, "x").await.expect("x");
    let fh = s.fs.open(ino, true, false).await.expect("open r+").fh;
    let ours = bytes_of(10 * MIB, 3);
    for (i, chunk) in ours.chunks(MIB).enumerate() {
        s.fs.write(fh, (i * MIB) as u64, chunk)
            .await
            .expect("write");
    }
    put(&s.bucket, "x", &theirs).await;
    let closed = s.fs.flush(fh).await;
    s.fs.release(fh).await;
    let mut expected = ours;
    expected.extend_from_slice(&original[10 * MIB..]);
    (s, closed, expected, theirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_over_another_writers_object_is_wholly_this_writers_on_a_versioned_bucket() {
    let (s, closed, expected, theirs) = two_writers(MemoryStoreConfig::default()).await;
    closed.expect("the last closer wins");
    let stored = s.bucket.content("x").expect("x");
    assert!(stored[..] == expected[..], "x is this writer's whole file");
    // The other writer's object is a version, not lost.
    assert!(s.bucket.versions("x").iter().any(|v| v[..] == theirs[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_whose_base_is_gone_fails_with_estale_and_leaves_the_other_writers_object() {
    // With `x-amz-copy-source-if-match` honoured, and ignored (moto): the
    // mount learns that it is ignored and reads the unchanged parts with
    // If-Match GETs instead of copying them.
    for copy_if_match in [true, false] {
        let (s, closed, _, theirs) = two_writers(MemoryStoreConfig {
            versioned: false,
            copy_if_match,
            ..Default::default()
        })
        .await;
        let e = closed.expect_err("the unchanged bytes are gone");
        assert_eq!(
            e.errno,
            libc::ESTALE,
            "copy_if_match {copy_if_match}: {e:?}"
        );
        let stored = s.bucket.content("x").expect("x");
        assert!(
            stored[..] == theirs[..],
            "copy_if_match {copy_if_match}: x is the other writer's whole file"
        );
        assert_eq!(s.bucket.open_uploads(), 0);
    }
}

/// On a bucket without versions whose server ignores the copy condition,
/// saves still work: the unchanged parts are read and uploaded. The probe
/// is made once per mount, and a server that honours the condition keeps
/// its server-side copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_copy_parts_only_where_the_copy_condition_pins_them() {
    for copy_if_match in [true, false] {
        let s = setup(MemoryStoreConfig {
            versioned: false,
            copy_if_match,
            ..Default::default()
        });
        let original = bytes_of(20 * MIB, 1);
        put(&s.bucket, "x", &original).await;
        let ino = resolve(&s.fs, "x").await.expect("x");
        let mut expected = original.clone();
        for round in 0..2u8 {
            let fh = s.fs.open(ino, true, false).await.expect("open r+").fh;
            let at = usize::from(round) * MIB;
            s.fs.write(fh, at as u64, &[round + 10; 100])
                .await
                .expect("write");
            expected[at..at + 100].fill(round + 10);
            s.fs.flush(fh).await.expect("save");
            s.fs.release(fh).await;
            assert!(
                s.bucket.content("x").expect("x")[..] == expected[..],
                "copy_if_match {copy_if_match}: round {round} stored whole"
            );
        }
        let copies = s.bucket.requests("UploadPartCopy");
        if copy_if_match {
            // The probe, then one copy of the three unchanged 5 MiB parts
            // per save.
            assert_eq!(copies, 1 + 2, "copy_if_match {copy_if_match}");
        } else {
            // The probe alone: nothing is copied after it.
            assert_eq!(copies, 1, "copy_if_match {copy_if_match}");
        }
    }
}

/// 4 KiB changed in the middle of a 64 MiB file: the save copies the
/// unchanged bytes before and after the change in one copy each (a copy
/// costs a class C request on B2 whatever its size), uploads 5 MiB around
/// the change (reading the rest of them from the base, billed as egress
/// on B2), and stores the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_change_in_a_big_file_costs_two_copies() {
    // The default part size: the changed part is bigger than 5 MiB.
    let s = setup_with_parts(MemoryStoreConfig::default(), Duration::ZERO, 8 * MIB as u64);
    let original = bytes_of(64 * MIB, 3);
    put(&s.bucket, "big", &original).await;
    let ino = resolve(&s.fs, "big").await.expect("big");
    let fh = s.fs.open(ino, true, false).await.expect("open r+").fh;
    let at = 30 * MIB + 123;
    s.fs.write(fh, at as u64, &[7; 4096]).await.expect("write");
    s.fs.flush(fh).await.expect("save");
    s.fs.release(fh).await;
    let mut expected = original;
    expected[at..at + 4096].fill(7);
    assert!(s.bucket.content("big").expect("big")[..] == expected[..]);
    assert_eq!(s.bucket.requests("UploadPartCopy"), 2);
    assert_eq!(s.bucket.requests("UploadPart"), 1);
    let downloaded = s.bucket.downloaded();
    assert!(
        downloaded <= 5 * MIB as u64,
        "read {downloaded} bytes of the base to save a 4 KiB change"
    );
}

/// Saves of small changes anywhere in a file of several 8 MiB parts, and
/// of growth past its end, each checked whole: copies of unchanged runs and
/// changed parts shrunk next to them must tile the file exactly, whether
/// the change is in the first part, the last, across two, or near a part's
/// edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_of_changes_anywhere_store_the_whole_file() {
    let s = setup_with_parts(MemoryStoreConfig::default(), Duration::ZERO, 8 * MIB as u64);
    let mut expected = bytes_of(41 * MIB + 777, 5);
    put(&s.bucket, "f", &expected).await;
    let ino = resolve(&s.fs, "f").await.expect("f");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below as u64) as usize
    };
    // Near the edges first (with a copy on one side only: the changed
    // part after a copy and before another changed part, and the other
    // way round), then anywhere.
    let mut saves = vec![
        vec![(6 * MIB, 100)],
        vec![(8 * MIB - 10, 20)],
        vec![(MIB, 10)],
        vec![(25 * MIB, 10), (33 * MIB, 10)],
        vec![(30 * MIB, 10), (38 * MIB, 10)],
        vec![(40 * MIB + 5, 10)],
        vec![(expected.len() - 3, 3 * MIB)],
    ];
    for _ in 0..24 {
        let writes = (0..1 + next(2))
            .map(|_| (next(expected.len() + MIB), 1 + next(2 * MIB)))
            .collect();
        saves.push(writes);
    }
    for (round, writes) in saves.into_iter().enumerate() {
        let fill = round as u8 + 1;
        let fh = s.fs.open(ino, true, false).await.expect("open r+").fh;
        for &(at, len) in &writes {
            s.fs.write(fh, at as u64, &vec![fill; len])
                .await
                .expect("write");
            if expected.len() < at + len {
                expected.resize(at + len, 0);
            }
            expected[at..at + len].fill(fill);
        }
        s.fs.flush(fh).await.expect("save");
        s.fs.release(fh).await;
        assert!(
            s.bucket.content("f").expect("f")[..] == expected[..],
            "round {round}: {writes:?}"
        );
    }
}

/// Directories a fresh listing of their parent shows cost one HEAD of
/// their marker each to look up, not a HEAD and a one-key listing (a class
/// C request on B2): a walk returning to directories past the attribute
/// TTL pays that at every return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_a_fresh_listing_shows_cost_no_listing_each() {
    let s = setup_with_ttl(MemoryStoreConfig::default(), Duration::from_secs(60));
    for dir in ["a", "b", "c", "d"] {
        put(&s.bucket, &format!("top/{dir}/file"), b"x").await;
    }
    let top = resolve(&s.fs, "top").await.expect("top");
    // The first miss in `top` is asked of the bucket; the second lists
    // `top` once (its name index), which shows every directory in it.
    s.fs.lookup(top, "a").await.expect("a");
    let listings = s.bucket.requests("ListObjectsV2");
    for dir in ["b", "c", "d"] {
        let inode = s.fs.lookup(top, dir).await.expect("dir");
        assert_eq!(inode.attr.kind, Kind::Dir, "{dir}");
    }
    assert_eq!(
        s.bucket.requests("ListObjectsV2"),
        listings + 1,
        "one listing of top, none per directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_redirect_over_a_file_adds_one_version() {
    let s = setup(MemoryStoreConfig::default());
    put(&s.bucket, "f", b"v1\n").await;
    let ino = resolve(&s.fs, "f").await.expect("f");
    // `echo v2 > f`: open, O_TRUNC (a setattr from the kernel), the dup2'd
    // descriptor's close (a flush), the write, the last close.
    let fh = s.fs.open(ino, true, false).await.expect("open").fh;
    let empty = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    s.fs.setattr(ino, empty.clone(), ROOT)
        .await
        .expect("truncate");
    s.fs.flush(fh).await.expect("first close");
    assert_eq!(
        &s.bucket.content("f").expect("f")[..],
        b"v1\n",
        "nothing stored yet"
    );
    s.fs.write(fh, 0, b"v2\n").await.expect("write");
    s.fs.flush(fh).await.expect("last close");
    s.fs.release(fh).await;
    assert_eq!(
        s.bucket.versions("f").len(),
        2,
        "v1 and v2, no empty one between"
    );
    assert_eq!(&s.bucket.content("f").expect("f")[..], b"v2\n");
    // `: > f` stores the empty file at its last close.
    let fh = s.fs.open(ino, true, false).await.expect("open").fh;
    s.fs.setattr(ino, empty, ROOT).await.expect("truncate");
    s.fs.flush(fh).await.expect("close");
    s.fs.release(fh).await;
    assert_eq!(s.bucket.content("f").expect("f").len(), 0);
    assert_eq!(s.bucket.versions("f").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_create_whose_answer_was_lost_is_not_eexist() {
    let s = setup(MemoryStoreConfig::default());
    let (_, opened) =
        s.fs.create(ROOT_INO, "lock", 0o644, ROOT, true)
            .await
            .expect("create");
    s.fs.write(opened.fh, 0, b"pid 42\n").await.expect("write");
    s.faults.arm(Op::Put, Fault::LostAnswer);
    let first = s.fs.flush(opened.fh).await;
    assert!(first.is_err(), "the answer was lost: {first:?}");
    assert_eq!(&s.bucket.content("lock").expect("stored")[..], b"pid 42\n");
    // The retry meets its own object: not EEXIST.
    s.fs.flush(opened.fh)
        .await
        .expect("the retry sees its own object");
    s.fs.release(opened.fh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_create_that_lost_its_name_shows_the_winner() {
    let s = setup(MemoryStoreConfig::default());
    let (_, opened) =
        s.fs.create(ROOT_INO, "a", 0o644, ROOT, true)
            .await
            .expect("create");
    s.fs.write(opened.fh, 0, b"mine").await.expect("write");
    put(&s.bucket, "a", b"theirs").await;
    let e = s.fs.flush(opened.fh).await.expect_err("the name was taken");
    assert_eq!(e.errno, libc::EEXIST);
    s.fs.release(opened.fh).await;
    let ino = resolve(&s.fs, "a").await.expect("a");
    let fh = s.fs.open(ino, false, false).await.expect("open").fh;
    assert_eq!(s.fs.read(fh, 0, 100).await.expect("read"), b"theirs");
    s.fs.release(fh).await;
}

/// An O_EXCL create bigger than one part is a multipart upload, which
/// cannot be conditional everywhere: the name is HEADed just before the
/// upload completes. Taken by another client meanwhile: EEXIST, their
/// object kept, no upload left. Stored by an earlier attempt whose answer
/// was lost: that is this very file, not EEXIST, and no second version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_multipart_create_checks_its_name_before_completing() {
    for conditional_put in [true, false] {
        let s = setup(MemoryStoreConfig {
            conditional_put,
            ..Default::default()
        });
        let big = bytes_of(12 * MIB, 4);
        let (_, opened) =
            s.fs.create(ROOT_INO, "taken", 0o644, ROOT, true)
                .await
                .expect("create");
        s.fs.write(opened.fh, 0, &big).await.expect("write");
        put(&s.bucket, "taken", b"theirs").await;
        let e = s.fs.flush(opened.fh).await.expect_err("the name was taken");
        assert_eq!(e.errno, libc::EEXIST, "conditional_put {conditional_put}");
        s.fs.release(opened.fh).await;
        assert_eq!(&s.bucket.content("taken").expect("theirs")[..], b"theirs");
        assert_eq!(s.bucket.open_uploads(), 0, "the upload is aborted");

        let (_, opened) =
            s.fs.create(ROOT_INO, "lost", 0o644, ROOT, true)
                .await
                .expect("create");
        s.fs.write(opened.fh, 0, &big).await.expect("write");
        s.faults.arm(Op::CompleteUpload, Fault::LostAnswer);
        let first = s.fs.flush(opened.fh).await;
        assert!(first.is_err(), "the answer was lost: {first:?}");
        s.fs.flush(opened.fh)
            .await
            .expect("the retry finds its own object");
        s.fs.release(opened.fh).await;
        assert!(s.bucket.content("lost").expect("stored")[..] == big[..]);
        assert_eq!(s.bucket.versions("lost").len(), 1, "stored once");
        assert_eq!(s.bucket.open_uploads(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_a_truncation_made_through_a_later_open() {
    let s = setup(MemoryStoreConfig::default());
    let (inode, w) =
        s.fs.create(ROOT_INO, "b", 0o644, ROOT, true)
            .await
            .expect("create");
    s.fs.write(w.fh, 0, b"abc").await.expect("write");
    let r =
        s.fs.open(inode.ino, false, false)
            .await
            .expect("open for reading")
            .fh;
    s.fs.flush(w.fh).await.expect("close");
    s.fs.release(w.fh).await;
    let t =
        s.fs.open(inode.ino, true, false)
            .await
            .expect("open again")
            .fh;
    let empty = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    s.fs.setattr(inode.ino, empty, ROOT)
        .await
        .expect("truncate");
    assert_eq!(
        s.fs.read(r, 0, 10).await.expect("read"),
        b"",
        "the reader sees the truncation"
    );
    for fh in [t, r] {
        s.fs.flush(fh).await.expect("close");
        s.fs.release(fh).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_file_removed_elsewhere_is_estale() {
    let s = setup(MemoryStoreConfig::default());
    put(&s.bucket, "b", &bytes_of(26, 9)).await;
    let ino = resolve(&s.fs, "b").await.expect("b");
    let fh = s.fs.open(ino, false, false).await.expect("open").fh;
    s.bucket.delete_object("b", None).await.expect("delete");
    let e = s.fs.read(fh, 0, 1).await.expect_err("gone");
    assert_eq!(e.errno, libc::ESTALE, "{e:?}");
    s.fs.release(fh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_emptied_elsewhere_stays_while_a_file_in_it_has_changes_here() {
    let s = setup(MemoryStoreConfig::default());
    put(&s.bucket, "f/e", b"old").await;
    let ino = resolve(&s.fs, "f/e").await.expect("f/e");
    let fh = s.fs.open(ino, true, false).await.expect("open").fh;
    s.fs.write(fh, 0, b"new").await.expect("write");
    s.bucket.delete_object("f/e", None).await.expect("delete");
    // The kernel's next lookups by path: the directory and the file are
    // still there on this mount, and the close stores the file.
    resolve(&s.fs, "f/e").await.expect("f/e is still reachable");
    s.fs.flush(fh).await.expect("close");
    s.fs.release(fh).await;
    assert_eq!(&s.bucket.content("f/e").expect("stored")[..], b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_stat_do_not_wait_for_the_files_upload() {
    let s = setup(MemoryStoreConfig::default());
    let (inode, w) =
        s.fs.create(ROOT_INO, "big", 0o644, ROOT, false)
            .await
            .expect("create");
    let data = bytes_of(3 * MIB, 5);
    s.fs.write(w.fh, 0, &data).await.expect("write");
    let r =
        s.fs.open(inode.ino, false, false)
            .await
            .expect("open for reading")
            .fh;
    // The upload stalls at its PUT until the gate opens.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    s.faults.arm(Op::Put, Fault::Pause(gate.clone()));
    let fs = s.fs.clone();
    let closing = tokio::spawn(async move { fs.flush(w.fh).await });
    while s.faults.pending() > 0 {
        tokio::task::yield_now().await;
    }
    let read = tokio::time::timeout(Duration::from_secs(5), s.fs.read(r, MIB as u64, 4096)).await;
    let stat = tokio::time::timeout(Duration::from_secs(5), s.fs.getattr(inode.ino)).await;
    gate.add_permits(1);
    closing.await.expect("the close task").expect("the close");
    let read = read
        .expect("the read does not wait for the upload")
        .expect("read");
    assert_eq!(read, &data[MIB..MIB + 4096]);
    let stat = stat
        .expect("stat does not wait for the upload")
        .expect("stat");
    assert_eq!(stat.attr.size, data.len() as u64);
    // After the upload the staging file is emptied; reads come from the
    // bucket, whole.
    assert_eq!(s.fs.read(r, 0, 16).await.expect("read"), &data[..16]);
    s.fs.release(w.fh).await;
    s.fs.release(r).await;
    assert_eq!(s.bucket.content("big").expect("stored").len(), data.len());
}

/// A big directory is listed only a few pages ahead of its reader, which
/// holds only what it has not read yet; a reader that goes back (rewinddir,
/// seekdir) gets a fresh listing from where it went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_directory_is_listed_as_its_reader_goes() {
    let s = setup(MemoryStoreConfig::default());
    const FILES: usize = 20_000;
    for i in 0..FILES {
        put(&s.bucket, &format!("big/f{i:05}"), b"x").await;
    }
    let dir = resolve(&s.fs, "big").await.expect("big");
    let fh = s.fs.opendir(dir).await.expect("opendir");
    let lists_before = s.bucket.requests("ListObjectsV2");
    let (_, first) = s.fs.readdir_entries(fh, 0).await.expect("first entries");
    assert_eq!(first[0].name, "f00000");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pages = s.bucket.requests("ListObjectsV2") - lists_before;
    assert!(
        pages <= 10,
        "the listing waits for its reader: {pages} of 20 pages listed after the first read"
    );
    // Read it all, as `ls` does: every name once, in order.
    let mut names = Vec::new();
    loop {
        let (_, batch) =
            s.fs.readdir_entries(fh, names.len())
                .await
                .expect("readdir");
        if batch.is_empty() {
            break;
        }
        names.extend(batch.into_iter().map(|e| e.name));
    }
    let expected: Vec<String> = (0..FILES).map(|i| format!("f{i:05}")).collect();
    assert!(
        names == expected,
        "{} names, not the 20,000 in order",
        names.len()
    );
    // Back to the start, and to the middle: listed afresh from there.
    let (_, again) = s.fs.readdir_entries(fh, 0).await.expect("rewind");
    assert_eq!(again[0].name, "f00000");
    let (_, middle) = s.fs.readdir_entries(fh, 15_000).await.expect("seek");
    assert_eq!(middle[0].name, "f15000");
    s.fs.releasedir(fh);
}

/// What changes through the mount keeps its kind in its directory's name
/// index: a chmod of a directory, then lookups that the index answers,
/// still find a directory (it once showed as a file there, and vanished).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_directory_stays_a_directory_in_the_name_index() {
    let s = setup_with_ttl(MemoryStoreConfig::default(), Duration::from_secs(60));
    s.fs.mkdir(ROOT_INO, "d", 0o755, ROOT).await.expect("mkdir");
    put(&s.bucket, "f", b"x").await;
    // Two lookups that miss: the root gets a name index.
    for name in ["missing1", "missing2"] {
        assert!(s.fs.lookup(ROOT_INO, name).await.is_err());
    }
    let d = resolve(&s.fs, "d").await.expect("d");
    let change = SetAttr {
        mode: Some(0o700),
        ..Default::default()
    };
    s.fs.setattr(d, change, ROOT).await.expect("chmod d");
    let f = resolve(&s.fs, "f").await.expect("f");
    s.fs.setattr(
        f,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        ROOT,
    )
    .await
    .expect("chmod f");
    let again = s.fs.lookup(ROOT_INO, "d").await.expect("d after its chmod");
    assert_eq!(again.attr.kind, Kind::Dir);
    assert_eq!(again.attr.perm, 0o700);
    let f = s.fs.lookup(ROOT_INO, "f").await.expect("f after its chmod");
    assert_eq!(f.attr.kind, Kind::File);
    assert_eq!(f.attr.perm, 0o600);
}
