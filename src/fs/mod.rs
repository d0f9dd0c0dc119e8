//! The filesystem core: POSIX semantics over S3, with no knowledge of the
//! kernel interface (that is `crate::fuse`) and no HTTP (that is `crate::s3`).
//!
//! Every operation is an async method returning `FsResult`; the FUSE adapter
//! calls one of them per request, from a task, and turns the result into a
//! reply. Submodules: `lookup` (names to inodes, attributes, the listing and
//! negative caches), `dir` (directory handles and their entries), `file`
//! (open files and reads), `write_ops` (everything that changes the
//! bucket but renames), `rename` (of files and directories), `versions`
//! (the read-only `.versions` view), `inode` (the inode table), `attr`
//! (attributes from metadata), `names` (which keys can be files), `error`
//! (the errno table).

pub mod attr;
mod dir;
pub mod error;
mod file;
pub mod inode;
mod known_attrs;
mod lookup;
pub mod names;
mod range_pages;
mod rename;
mod stat_ahead;
mod versions;
mod write_ops;
pub mod xattr;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::read::{DiskCache, ReadContext, ReadTuning, Reader};
use crate::store::Store;
use crate::write::journal::{self, UploadJournal};
use crate::write::{DirtyFile, PartLayout, ReadAccess, StagingDir, WriteContext};
use attr::AttrDefaults;
pub use attr::{Attr, Kind};
pub use dir::{DirEntry, DirSnapshot};
pub use error::{FsError, FsResult};
pub use inode::{Ino, Inode, ROOT_INO};
use lookup::Listing;
use names::OddKeyLog;

/// How the filesystem behaves, from the mount options.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Key prefix that is the mount's root: empty or ending in `/`.
    pub prefix: String,
    pub attrs: AttrDefaults,
    /// How long attributes and listings are trusted without asking S3.
    pub metadata_ttl: Duration,
    /// How long "no such file" is trusted.
    pub negative_ttl: Duration,
    /// Show listed objects this mount knows nothing of with the listing's
    /// size and time and default modes, instead of a HEAD of each.
    pub trust_listings: bool,
    pub read_only: bool,
    pub read: ReadTuning,
    /// Where staging files live (a per-mount directory is made inside).
    pub cache_dir: std::path::PathBuf,
    /// The disk cache's directory and bound in bytes, if it is on.
    pub disk_cache: Option<(std::path::PathBuf, u64)>,
    /// Memory for part uploads in flight, shared by all files.
    pub write_buffer: u64,
    /// First multipart part size (parts grow beyond 1,000 parts).
    pub part_size: u64,
    /// Whether and how `.versions` appears.
    pub versions: VersionsMode,
}

/// The shortest time the kernel keeps a directory's name (see
/// `Fs::entry_ttl`): as mountpoint-s3's minimal TTL for directories.
const DIR_NAME_TTL: Duration = Duration::from_secs(1);

/// Directory listings kept at once (each lives `metadata_ttl`).
const LISTING_CACHE_DIRS: usize = 64;

/// Entries of all cached listings together (about 120 bytes each): a
/// listing bigger than this is not kept at all, and older listings go
/// to make room. A directory of a million objects would otherwise hold
/// a hundred megabytes to answer lookups for one second.
pub(crate) const LISTING_CACHE_ENTRIES: usize = 200_000;

/// Directories whose recent uncached lookups are remembered.
const COLD_DIRS: usize = 1024;

/// Names known missing at once (each lives `negative_ttl`).
const NEGATIVE_ENTRIES: usize = 10_000;

/// Directories whose last change through this mount is remembered.
const DIR_TIMES: usize = 100_000;

/// Directories kept while this mount may have emptied them.
const KEPT_DIRS: usize = 10_000;

/// Paths under `.versions` whose meaning is remembered.
const VNODES: usize = 100_000;

/// History listings kept at once (each lives `metadata_ttl`).
const VERSION_LISTINGS: usize = 256;

/// Every cache here is bounded by entries and lets the least recently used
/// go, so a big walk never wipes a whole map (and repays it in requests).
fn lru<K: std::hash::Hash + Eq, V>(entries: usize) -> LruCache<K, V> {
    LruCache::new(NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN))
}

type SharedDirty = Arc<DirtyCell>;

/// A dirty file behind its lock (held by writes and through a whole
/// upload), and what reads of it need without that lock.
pub(crate) struct DirtyCell {
    file: tokio::sync::Mutex<DirtyFile>,
    reads: ReadAccess,
}

impl DirtyCell {
    fn new(file: DirtyFile) -> Self {
        DirtyCell {
            reads: file.reads(),
            file: tokio::sync::Mutex::new(file),
        }
    }

    async fn lock(&self) -> tokio::sync::MutexGuard<'_, DirtyFile> {
        self.file.lock().await
    }

    fn into_inner(self) -> DirtyFile {
        self.file.into_inner()
    }
}

/// An open file or directory.
enum Handle {
    /// Opened for reading an object as it is in the bucket.
    File {
        ino: Ino,
        reader: Arc<Reader>,
    },
    /// A file with local changes (opened for writing, or for reading while
    /// it has unsaved changes).
    Local {
        ino: Ino,
        dirty: SharedDirty,
        writable: bool,
    },
    Dir(Arc<DirSnapshot>),
}

/// A file whose current content is local (being written, or not yet
/// uploaded), and the attributes to show for it meanwhile.
struct LocalFile {
    dirty: SharedDirty,
    attr: Attr,
}

pub struct Fs {
    store: Store,
    config: FsConfig,
    inodes: inode::InodeTable,
    listings: Mutex<LruCache<String, Arc<Listing>>>,
    /// Bumped by every change that makes cached listings wrong: a listing
    /// fetched across one is not cached (it may miss the change).
    listing_epoch: AtomicU64,
    /// Directories where lookups missed every cache lately (see
    /// `lookup::name_index`).
    cold_dirs: Mutex<LruCache<String, lookup::ColdDir>>,
    /// Paths known not to exist, until the instant given.
    negative: Mutex<LruCache<String, Instant>>,
    /// HEADs started ahead of a walk through a directory's files.
    stat_ahead: stat_ahead::StatAhead,
    /// Listing pages of directories too big to keep whole.
    range_pages: range_pages::RangePages,
    /// Metadata known for exact object versions (see `known_attrs`).
    known: Arc<known_attrs::KnownAttrs>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
    read_ctx: Arc<ReadContext>,
    /// `None` on a read-only mount.
    write_ctx: Option<Arc<WriteContext>>,
    /// Files with local content, by path.
    local: Mutex<HashMap<String, LocalFile>>,
    /// Directories whose entries changed through this mount, and when:
    /// their mtime and ctime as this mount shows them (S3 keeps none for
    /// implicit directories, and rewriting a marker per change would cost a
    /// request per file created).
    dir_times: Mutex<LruCache<String, std::time::SystemTime>>,
    /// Directories this mount removed or moved a file out of: one without
    /// a marker may be empty now, and stays a directory here until its
    /// rmdir (see `emptied_here`).
    kept_dirs: Mutex<LruCache<String, ()>>,
    /// What each path under `.versions` names.
    vnodes: Mutex<LruCache<String, versions::VNode>>,
    /// ListObjectVersions results by prefix.
    version_listings: Mutex<LruCache<String, Arc<versions::VersionListing>>>,
    odd_keys: OddKeyLog,
    /// Releases spawned and not finished: the last closes of files, which
    /// an unmount waits for (see `Fs::releases_done`).
    releases: Arc<PendingReleases>,
}

/// A count of releases in flight, and a wake-up when it reaches zero.
#[derive(Default)]
pub struct PendingReleases {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One release in flight; finished when dropped.
pub struct ReleaseGuard(Arc<PendingReleases>);

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

impl Fs {
    pub fn new(store: Store, config: FsConfig) -> std::io::Result<Self> {
        let root = config.attrs.dir(None);
        let mut read_ctx = ReadContext::new(store.clone(), config.read.clone());
        if let Some((dir, bound)) = &config.disk_cache {
            let disk = DiskCache::open(dir, *bound, &store.location())
                .map_err(|e| std::io::Error::other(format!("disk cache {}: {e}", dir.display())))?;
            read_ctx = read_ctx.with_disk_cache(disk);
        }
        let read_ctx = Arc::new(read_ctx);
        let write_ctx = if config.read_only {
            None
        } else {
            let staging = StagingDir::open(&config.cache_dir)?;
            let owner = store.location();
            let journal = UploadJournal::open(staging.path(), &owner)?;
            let mut write_ctx = WriteContext::new(
                store.clone(),
                PartLayout::new(config.part_size),
                staging,
                journal,
                config.write_buffer,
            );
            write_ctx.disk_cache = read_ctx.disk_cache().cloned();
            Some(Arc::new(write_ctx))
        };
        let known = Arc::new(known_attrs::KnownAttrs::new(
            known_attrs::KNOWN_OBJECTS,
            known_attrs::BARE_GENERATION,
        ));
        Ok(Fs {
            store,
            inodes: inode::InodeTable::new(root),
            listings: Mutex::new(LruCache::new(
                NonZeroUsize::new(LISTING_CACHE_DIRS).unwrap_or(NonZeroUsize::MIN),
            )),
            listing_epoch: AtomicU64::new(0),
            cold_dirs: Mutex::new(LruCache::new(
                NonZeroUsize::new(COLD_DIRS).unwrap_or(NonZeroUsize::MIN),
            )),
            negative: Mutex::new(lru(NEGATIVE_ENTRIES)),
            stat_ahead: stat_ahead::StatAhead::new(
                config.metadata_ttl,
                known.clone(),
                config.attrs.clone(),
            ),
            range_pages: range_pages::RangePages::default(),
            known,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            read_ctx,
            write_ctx,
            local: Mutex::new(HashMap::new()),
            dir_times: Mutex::new(lru(DIR_TIMES)),
            kept_dirs: Mutex::new(lru(KEPT_DIRS)),
            vnodes: Mutex::new(lru(VNODES)),
            version_listings: Mutex::new(lru(VERSION_LISTINGS)),
            odd_keys: OddKeyLog::default(),
            releases: Arc::default(),
            config,
        })
    }

    /// Count a release from the moment the kernel sends it (before its
    /// task runs), so that an unmount can wait for it.
    pub fn release_started(&self) -> ReleaseGuard {
        self.releases
            .count
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ReleaseGuard(self.releases.clone())
    }

    /// Wait (at most `limit`) for the releases in flight: at unmount, the
    /// last closes finish their work (the disk cache takes closed files
    /// there) before the process ends.
    pub async fn releases_done(&self, limit: std::time::Duration) {
        let wait = async {
            loop {
                let idle = self.releases.idle.notified();
                if self
                    .releases
                    .count
                    .load(std::sync::atomic::Ordering::Acquire)
                    == 0
                {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// What every reader shares (the caches).
    pub fn read_context(&self) -> &Arc<ReadContext> {
        &self.read_ctx
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// The TTL the kernel may cache entries and attributes for.
    pub fn ttl(&self) -> Duration {
        self.config.metadata_ttl
    }

    /// How long the kernel may keep the name of `inode`: `metadata_ttl`,
    /// but at least `DIR_NAME_TTL` for a directory. The kernel checks each
    /// directory of a path at every walk through it once its name has
    /// expired, and with `metadata_ttl=0` that is a listing (class C on
    /// B2) for each component of every path a program names, three per
    /// file of an `ls -l`; a `stat`, an open or a readdir of the
    /// directory itself still asks every time (its attributes' TTL is
    /// not raised), and each file's own name is checked at each walk.
    pub fn entry_ttl(&self, inode: &Inode) -> Duration {
        match inode.attr.kind {
            Kind::Dir => self.config.metadata_ttl.max(DIR_NAME_TTL),
            _ => self.config.metadata_ttl,
        }
    }

    /// How long the kernel may keep `inode`'s attributes: what is left of
    /// the daemon's own trust in them (none for attributes that are a
    /// listing's alone, see `Want::Kind`).
    pub fn attr_ttl(&self, inode: &Inode) -> Duration {
        inode
            .valid_until
            .saturating_duration_since(Instant::now())
            .min(self.config.metadata_ttl)
    }

    /// The S3 key of a file path.
    fn key(&self, path: &str) -> String {
        format!("{}{}", self.config.prefix, path)
    }

    /// The file path of an S3 key (the inverse of `key`).
    fn path_of(&self, key: &str) -> String {
        key.strip_prefix(&self.config.prefix)
            .unwrap_or(key)
            .to_owned()
    }

    /// The listing prefix of a directory path.
    fn dir_prefix(&self, path: &str) -> String {
        if path.is_empty() {
            self.config.prefix.clone()
        } else {
            format!("{}{}/", self.config.prefix, path)
        }
    }

    /// Record that entries of `dir_path` changed now.
    pub(crate) fn touch_dir(&self, dir_path: &str) {
        self.dir_times
            .lock()
            .put(dir_path.to_owned(), std::time::SystemTime::now());
    }

    /// Whether the kernel holds `path` as a directory inode.
    pub(crate) fn known_dir(&self, path: &str) -> bool {
        self.known_dir_attr(path).is_some()
    }

    fn known_dir_attr(&self, path: &str) -> Option<Attr> {
        let inode = self.inodes.get(self.inodes.find(path)?)?;
        (inode.attr.kind == Kind::Dir).then_some(inode.attr)
    }

    /// A directory with no marker exists in the bucket only while keys are
    /// below it: one this mount just emptied (`rm -r` removing its files)
    /// is gone from the bucket before its own rmdir comes, and the
    /// kernel's lookup before that rmdir must still find it. So a
    /// directory the kernel holds, that this mount removed or moved a file
    /// out of, stays an (empty) directory on this mount until its rmdir
    /// or rename.
    pub(crate) fn emptied_here(&self, path: &str) -> Option<Attr> {
        if !self.kept_dirs.lock().contains(path) {
            return None;
        }
        self.known_dir_attr(path)
    }

    /// A file left directory `dir_path` through this mount.
    pub(crate) fn keep_dir(&self, dir_path: &str) {
        if !dir_path.is_empty() {
            self.kept_dirs.lock().put(dir_path.to_owned(), ());
        }
    }

    /// Directory `dir_path` was removed or moved through this mount.
    pub(crate) fn unkeep_dir(&self, dir_path: &str) {
        self.kept_dirs.lock().pop(dir_path);
    }

    /// Show a directory's last change through this mount, if later than
    /// what S3 says.
    pub(crate) fn dir_time(&self, dir_path: &str, attr: &mut Attr) {
        if attr.kind != Kind::Dir {
            return;
        }
        let mut times = self.dir_times.lock();
        if let Some(t) = times.get(dir_path) {
            if *t > attr.mtime {
                attr.mtime = *t;
                attr.ctime = *t;
            }
        }
    }

    /// The path of `ino` in the mount, for log lines.
    pub fn path_of_inode(&self, ino: Ino) -> Option<String> {
        self.inodes.get(ino).map(|i| format!("/{}", i.path))
    }

    fn inode(&self, ino: Ino) -> FsResult<Inode> {
        self.inodes
            .get(ino)
            .ok_or_else(|| FsError::new(libc::ENOENT, format!("unknown inode {ino}")))
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, handle);
        fh
    }

    fn remove_handle(&self, fh: u64) -> Option<Handle> {
        self.handles.lock().remove(&fh)
    }

    /// The kernel dropped `n` lookups of `ino`.
    /// Whether that was the inode's last lookup (see `InodeTable::forget`).
    pub fn forget(&self, ino: Ino, n: u64) -> bool {
        self.inodes.forget(ino, n)
    }

    /// Inodes the kernel holds (each one looked up and not yet forgotten).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Move the inodes' clock on: what the kernel asks about from now on
    /// counts as more recent than all before (see `inodes_to_release`).
    pub fn age_inodes(&self) {
        self.inodes.tick();
    }

    /// Files the kernel should be asked to forget so that it holds at most
    /// `keep` inodes: (parent, name) of the files it asked about least
    /// recently (by the clock `age_inodes` moves), open ones excepted.
    pub fn inodes_to_release(&self, keep: usize) -> Vec<(Ino, String)> {
        let Some(excess) = self.inodes.len().checked_sub(keep).filter(|n| *n > 0) else {
            return Vec::new();
        };
        let busy: std::collections::HashSet<Ino> = self
            .handles
            .lock()
            .values()
            .filter_map(|h| match h {
                Handle::File { ino, .. } | Handle::Local { ino, .. } => Some(*ino),
                Handle::Dir(_) => None,
            })
            .collect();
        self.inodes.least_recent_files(excess, &busy)
    }

    /// statfs: S3 has no capacity to report; give large, stable numbers so
    /// that programs checking for free space proceed.
    pub fn statfs(&self) -> StatFs {
        const BLOCK: u64 = 4096;
        let blocks = (1u64 << 50) / BLOCK; // 1 PiB
        StatFs {
            blocks,
            bfree: blocks,
            bavail: blocks,
            files: 1 << 40,
            ffree: 1 << 40,
            bsize: BLOCK as u32,
            namelen: names::NAME_MAX as u32,
        }
    }
}

/// What statfs reports.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}
pub use file::Opened;
pub use versions::{parse_instant, version_at, VersionsMode, VERSIONS_DIR as VERSIONS_DIR_NAME};
pub use write_ops::{Caller, SetAttr};

impl Fs {
    /// At exit: remove this mount's staging directory if nothing is left
    /// in it (a failed upload's data stays, with its path logged).
    pub fn cleanup(&self) {
        if let Some(ctx) = &self.write_ctx {
            let _ = std::fs::remove_file(ctx.staging.path().join(journal::JOURNAL_NAME));
            ctx.staging.remove_if_empty();
        }
    }

    /// At mount: account for what earlier mounts that died left behind.
    /// Their unfinished multipart uploads are aborted (they are in their
    /// journals), and their staged data, which never reached the bucket, is
    /// reported with its key and path and kept. Returns whether it moved
    /// objects (finishing a rename), which listings taken before do not
    /// show.
    pub async fn recover(&self) -> bool {
        let Some(ctx) = &self.write_ctx else {
            return false;
        };
        let mut moved = false;
        let me = self.store.location();
        for dir in ctx.staging.leftovers() {
            // Another bucket's leftovers are for a mount of that bucket.
            if journal::owner(&dir.join(journal::JOURNAL_NAME)).as_deref() != Some(me.as_str()) {
                continue;
            }
            for (key, upload) in journal::unfinished(&dir.join(journal::JOURNAL_NAME)) {
                match self.store.abort_multipart_upload(&key, &upload).await {
                    Ok(()) => tracing::warn!(
                        "aborted an unfinished upload of {key} left by an earlier mount"
                    ),
                    Err(e) => {
                        tracing::warn!("cannot abort an unfinished upload of {key} left by an earlier mount: {e}");
                        continue;
                    }
                }
            }
            for (from, to) in journal::unfinished_renames(&dir.join(journal::JOURNAL_NAME)) {
                // Copies come before deletes, so the source is whole: moving
                // it again finishes the interrupted rename.
                tracing::warn!(
                    "finishing the rename of {from} to {to} that an earlier mount left half done"
                );
                moved = true;
                match self.move_prefix(&from, &to).await {
                    Ok(()) => tracing::warn!("finished the rename of {from} to {to}"),
                    Err(e) => tracing::error!(
                        "could not finish the rename of {from} to {to} ({e}); {from} is whole: remove {to} to roll back, or move it again"
                    ),
                }
            }
            let _ = std::fs::remove_file(dir.join(journal::JOURNAL_NAME));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                if path.extension().is_some_and(|x| x == "key") {
                    continue;
                }
                let key = std::fs::read_to_string(crate::write::staging::key_sidecar(&path))
                    .unwrap_or_default();
                tracing::warn!(
                    "data written to {key:?} by an earlier mount that ended abruptly never reached the bucket; it is kept in {} (copy it back into the mount to save it)",
                    path.display()
                );
            }
            // Empty of data: nothing to keep.
            let _ = std::fs::remove_dir(&dir);
        }
        moved
    }
}
