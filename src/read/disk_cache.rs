//! The disk cache: a second tier under the memory LRU, in a directory that
//! outlives the mount and may be shared by several mounts at once.
//!
//! Layout (`DIR/v1/`), one object version per pair of files, named by the
//! SHA-256 of bucket, key and ETag, so a changed object never serves old
//! blocks and one object can later be one backing file:
//! - `xx/HASH.data`: the object's bytes at their own offsets, a sparse file
//!   holding the blocks fetched so far;
//! - `xx/HASH.meta`: a 4 KiB header (magic, size, bucket/key/ETag, and
//!   in its last 64 bytes the stamp below) and then, for block `b`, 8
//!   bytes at `4096 + 8b`: its CRC32C and length (length 0: not cached);
//! - `ledger`: the bytes of blocks cached, 8 bytes, under `flock`.
//!
//! A block is written data first, then its entry; it is served only if its
//! bytes match the entry's CRC32C. A torn or half-written block (a crash,
//! a `kill -9`, a damaged disk) therefore reads as absent, never as data,
//! and is fetched again. Nothing is scanned at mount time: the ledger is
//! checked against the files by a background thread.
//!
//! Whole objects: once every block of an object is cached, the writer
//! reads the data file back, checks every block, and stamps the `.meta`
//! with the data file's inode, size and mtime and the boot id. A stamp
//! that still matches says the file is whole and intact without reading
//! it again (any write changes the mtime; a reboot, which may have lost
//! unsynced pages, changes the boot id), so the file can be handed to the
//! kernel as the backing file of a FUSE passthrough open (`fuse::
//! passthrough`), whose reads never reach the daemon.
//!
//! Bound: every block is accounted for in the ledger, under its lock, before
//! it is written, so the directory never holds more than the bound plus the
//! block being written, whatever number of mounts share it. When a block
//! does not fit, whole objects are evicted, least recently opened first
//! (a `.meta` file's mtime is touched at each open), down to 90% of the
//! bound. Privacy: the directory is 0700 and files 0600; a directory owned
//! by someone else or writable by others is refused.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use bytes::Bytes;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::cache::{ObjectVersionKey, BLOCK_SIZE};

const MAGIC: &[u8; 8] = b"BFSDC001";
const HEADER: u64 = 4096;
const ENTRY: u64 = 8;
/// Where the whole-object stamp sits in the header, and its length.
const STAMP_AT: u64 = HEADER - STAMP_LEN as u64;
const STAMP_LEN: usize = 64;
/// Blocks queued for the writer (32 MiB, held by the memory cache too):
/// past that, a fetch waits for the disk, so that a read of a big file
/// is all on disk after it.
const QUEUE: usize = 1024;

/// One object version's files.
#[derive(Debug, Clone)]
struct Paths {
    data: PathBuf,
    meta: PathBuf,
}

/// What this process knows of one object version's cached blocks.
pub struct DiskObject {
    paths: Paths,
    identity: Vec<u8>,
    size: u64,
    /// (CRC32C, length) per block; length 0: not cached.
    entries: Mutex<Vec<(u32, u32)>>,
}

impl DiskObject {
    /// Whether every block of `range` (block numbers) is cached.
    pub fn holds(&self, blocks: std::ops::Range<u64>) -> bool {
        let entries = self.entries.lock();
        blocks
            .clone()
            .all(|b| entries.get(b as usize).is_some_and(|e| e.1 > 0))
    }

    /// Whether the whole object is cached.
    pub fn complete(&self) -> bool {
        self.holds(0..self.size.div_ceil(BLOCK_SIZE))
    }
}

enum Job {
    Store {
        object: Arc<DiskObject>,
        block: u64,
        data: Bytes,
    },
    /// A block found damaged: drop it and its bytes from the ledger.
    Forget { object: Arc<DiskObject>, block: u64 },
    /// A file just uploaded: its blocks, read from `file` (a hard link to
    /// its staging file, removed when done).
    Adopt {
        object: Arc<DiskObject>,
        file: PathBuf,
    },
    /// An object whose blocks all seem cached: check them all and stamp it.
    Verify(Arc<DiskObject>),
    /// Answered once every job before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

pub struct DiskCache {
    root: PathBuf,
    bucket: String,
    queue: mpsc::Sender<Job>,
    /// Blocks served from disk, and found damaged.
    pub hits: AtomicU64,
    pub damaged: AtomicU64,
    adopted: AtomicU64,
}

fn private_dir(dir: &Path) -> io::Result<()> {
    crate::local_dir::ensure_private_dir(dir, "disk cache directory")
}

fn open_private(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .open(path)
}

/// The ledger file, locked for as long as this lives.
struct Ledger {
    file: File,
}

impl Ledger {
    fn lock(path: &Path) -> io::Result<Ledger> {
        let file = open_private(path, true)?;
        // SAFETY: flock on a descriptor we own; released when it closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Ledger { file })
    }

    fn total(&self) -> u64 {
        let mut buf = [0u8; 8];
        match self.file.read_at(&mut buf, 0) {
            Ok(8) => u64::from_le_bytes(buf),
            _ => 0,
        }
    }

    fn set(&self, total: u64) -> io::Result<()> {
        self.file.write_all_at(&total.to_le_bytes(), 0)
    }
}

impl DiskCache {
    /// Open (or create) the cache in `dir` for objects of `bucket`, bounded
    /// to `bound` bytes of blocks. Returns at once: the check of the ledger
    /// against the files runs in the background.
    pub fn open(dir: &Path, bound: u64, bucket: &str) -> io::Result<Arc<DiskCache>> {
        private_dir(dir)?;
        let root = dir.join("v1");
        private_dir(&root)?;
        drop(Ledger::lock(&root.join("ledger"))?);
        let (queue, jobs) = mpsc::channel(QUEUE);
        let cache = Arc::new(DiskCache {
            root: root.clone(),
            bucket: bucket.to_owned(),
            queue,
            hits: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
            adopted: AtomicU64::new(0),
        });
        let writer_root = root.clone();
        std::thread::Builder::new()
            .name("bucketfs-disk-cache".into())
            .spawn(move || {
                if let Err(e) = reconcile(&writer_root) {
                    tracing::warn!("cannot check the disk cache {}: {e}", writer_root.display());
                }
                write_loop(&writer_root, bound, jobs);
            })?;
        Ok(cache)
    }

    fn paths(&self, version: &ObjectVersionKey) -> (Paths, Vec<u8>) {
        let mut identity = Vec::new();
        for part in [
            self.bucket.as_bytes(),
            version.key.as_bytes(),
            version.etag.as_bytes(),
        ] {
            identity.extend_from_slice(&(part.len() as u32).to_le_bytes());
            identity.extend_from_slice(part);
        }
        let hash = crate::s3::hex_digest(&Sha256::digest(&identity));
        let dir = self.root.join(&hash[..2]);
        (
            Paths {
                data: dir.join(format!("{hash}.data")),
                meta: dir.join(format!("{hash}.meta")),
            },
            identity,
        )
    }

    /// The directory the cache's files are in.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Keep the content of a file just uploaded as `version`, from its
    /// staging file: reading it back then costs no GET. The staging file is
    /// copied first (in the kernel, `copy_file_range`; at once where the
    /// filesystem shares extents), since it is freed as soon as this
    /// returns; the writer then takes the copy's blocks in the background.
    pub async fn adopt(&self, version: &ObjectVersionKey, size: u64, staging: &Path) {
        let (paths, identity) = self.paths(version);
        let object = Arc::new(DiskObject {
            paths,
            identity,
            size,
            entries: Mutex::new(vec![(0, 0); size.div_ceil(BLOCK_SIZE) as usize]),
        });
        let n = self.adopted.fetch_add(1, Ordering::Relaxed);
        let file = self
            .root
            .join(format!("incoming-{}-{n}", std::process::id()));
        let (from, to) = (staging.to_owned(), file.clone());
        let copied = tokio::task::spawn_blocking(move || {
            std::fs::copy(&from, &to).and_then(|_| {
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            })
        })
        .await;
        if !matches!(copied, Ok(Ok(()))) {
            tracing::debug!("disk cache: cannot copy {}", staging.display());
            let _ = std::fs::remove_file(&file);
            return;
        }
        if self
            .queue
            .send(Job::Adopt {
                object,
                file: file.clone(),
            })
            .await
            .is_err()
        {
            let _ = std::fs::remove_file(&file);
        }
    }

    /// What is cached of `version` (of `size` bytes), read from its
    /// `.meta` file, which is touched as recently used. Blocking I/O.
    pub fn object(&self, version: &ObjectVersionKey, size: u64) -> Arc<DiskObject> {
        let (paths, identity) = self.paths(version);
        let blocks = size.div_ceil(BLOCK_SIZE) as usize;
        let mut entries = vec![(0u32, 0u32); blocks];
        if let Ok(meta) = File::open(&paths.meta) {
            if header_matches(&meta, &identity, size) {
                if let Ok(recorded) = read_entries(&meta, blocks as u64) {
                    entries = recorded;
                }
                // Recency for eviction: this object was opened now.
                let _ = meta.set_modified(std::time::SystemTime::now());
            }
        }
        Arc::new(DiskObject {
            paths,
            identity,
            size,
            entries: Mutex::new(entries),
        })
    }

    /// Block `b` of `object`, if it is cached and intact. Blocking I/O.
    pub fn read_block(&self, object: &Arc<DiskObject>, b: u64) -> Option<Bytes> {
        let (crc, len) = *object.entries.lock().get(b as usize)?;
        if len == 0 {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        let read =
            File::open(&object.paths.data).and_then(|f| f.read_exact_at(&mut buf, b * BLOCK_SIZE));
        if read.is_ok() && crc32c::crc32c(&buf) == crc {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(Bytes::from(buf));
        }
        // Evicted by another mount meanwhile, or damaged: either way it
        // is fetched again.
        object.entries.lock()[b as usize] = (0, 0);
        if read.is_ok() {
            if self.damaged.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "a block in the disk cache ({}) does not match its checksum: it is \
                     dropped and fetched again",
                    object.paths.data.display()
                );
            }
            let _ = self.queue.try_send(Job::Forget {
                object: object.clone(),
                block: b,
            });
        }
        None
    }

    /// The data file of `object`, opened for reading, if the object is
    /// cached whole and its stamp (see the module's comment) says so now.
    /// An object complete but not stamped (filled by another mount, or
    /// from before a reboot) is queued for a check: a later open gets it.
    /// Blocking I/O.
    pub fn whole_file(&self, object: &Arc<DiskObject>) -> Option<File> {
        if object.size == 0 || !object.complete() {
            return None;
        }
        let stamped = (|| {
            let meta = File::open(&object.paths.meta).ok()?;
            if !header_matches(&meta, &object.identity, object.size) {
                return None;
            }
            let mut stamp = [0u8; STAMP_LEN];
            meta.read_exact_at(&mut stamp, STAMP_AT).ok()?;
            // The descriptor's own metadata: the file handed on is the one
            // the stamp describes, whatever replaced the name meanwhile.
            let data = File::open(&object.paths.data).ok()?;
            let now = stamp_of(&data.metadata().ok()?)?;
            (now == stamp).then_some(data)
        })();
        if stamped.is_none() {
            let _ = self.queue.try_send(Job::Verify(object.clone()));
        }
        stamped
    }

    /// Keep block `b` of `object` on disk, in the background; waits only
    /// if the writer is `QUEUE` blocks behind.
    pub async fn store(&self, object: &Arc<DiskObject>, b: u64, data: Bytes) {
        if object
            .entries
            .lock()
            .get(b as usize)
            .is_none_or(|e| e.1 > 0)
        {
            return;
        }
        let job = Job::Store {
            object: object.clone(),
            block: b,
            data,
        };
        let _ = self.queue.send(job).await;
    }

    /// Wait (at most `limit`) until every block stored so far is on disk:
    /// at unmount, so that what was read is there for the next mount.
    pub async fn drain(&self, limit: Duration) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.queue.send(Job::Barrier(done)).await.is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

fn header_matches(meta: &File, identity: &[u8], size: u64) -> bool {
    let mut head = vec![0u8; 20 + identity.len()];
    if meta.read_exact_at(&mut head, 0).is_err() {
        return false;
    }
    &head[..8] == MAGIC
        && head[8..16] == size.to_le_bytes()
        && head[16..20] == (identity.len() as u32).to_le_bytes()
        && head[20..] == *identity
}

/// The writer: one thread per mount, taking the ledger's lock per block.
fn write_loop(root: &Path, bound: u64, mut jobs: mpsc::Receiver<Job>) {
    let ledger_path = root.join("ledger");
    while let Some(job) = jobs.blocking_recv() {
        let result = match job {
            Job::Store {
                object,
                block,
                data,
            } => store_block(root, &ledger_path, bound, &object, block, &data),
            Job::Forget { object, block } => forget_block(&ledger_path, &object, block),
            Job::Adopt { object, file } => {
                let result = adopt_file(root, &ledger_path, bound, &object, &file);
                let _ = std::fs::remove_file(&file);
                result
            }
            Job::Verify(object) => verify(&object),
            Job::Barrier(done) => {
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::debug!("disk cache: {e}");
        }
    }
}

/// A block's entry: its CRC32C and length (0: not cached).
fn decode_entry(e: &[u8]) -> (u32, u32) {
    (
        u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
        u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
    )
}

/// The entries of an object's `blocks` blocks, as its `.meta` holds them.
fn read_entries(meta: &File, blocks: u64) -> io::Result<Vec<(u32, u32)>> {
    let mut raw = vec![0u8; (blocks * ENTRY) as usize];
    meta.read_exact_at(&mut raw, HEADER)?;
    Ok(raw.chunks_exact(ENTRY as usize).map(decode_entry).collect())
}

fn entry_at(meta: &File, b: u64) -> (u32, u32) {
    let mut e = [0u8; ENTRY as usize];
    if meta.read_exact_at(&mut e, HEADER + b * ENTRY).is_err() {
        return (0, 0);
    }
    decode_entry(&e)
}

fn store_block(
    root: &Path,
    ledger_path: &Path,
    bound: u64,
    object: &Arc<DiskObject>,
    b: u64,
    data: &[u8],
) -> io::Result<()> {
    let len = data.len() as u64;
    if len > bound {
        return Ok(());
    }
    let ledger = Ledger::lock(ledger_path)?;
    let mut total = ledger.total();
    if total + len > bound {
        total = evict(root, &ledger, bound - bound / 10, len, &object.paths.meta)?;
        if total + len > bound {
            return Ok(()); // this object alone fills the cache
        }
    }
    let meta = match open_private(&object.paths.meta, true) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = object.paths.meta.parent() {
                private_dir(parent)?;
            }
            open_private(&object.paths.meta, true)?
        }
        other => other?,
    };
    if !header_matches(&meta, &object.identity, object.size) {
        // New (or of another object that hashed alike): start it afresh.
        meta.set_len(0)?;
        let mut head = Vec::with_capacity(HEADER as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&object.size.to_le_bytes());
        head.extend_from_slice(&(object.identity.len() as u32).to_le_bytes());
        head.extend_from_slice(&object.identity);
        if head.len() as u64 > STAMP_AT {
            return Ok(()); // a key too long for the header is not cached
        }
        meta.write_all_at(&head, 0)?;
        // Every entry exists from the start, zero (not cached) until set.
        meta.set_len(HEADER + object.size.div_ceil(BLOCK_SIZE) * ENTRY)?;
        let data_file = open_private(&object.paths.data, true)?;
        data_file.set_len(0)?;
    }
    let had = entry_at(&meta, b);
    if had.1 > 0 {
        object.entries.lock()[b as usize] = had;
        return Ok(()); // another mount stored it meanwhile
    }
    ledger.set(total + len)?;
    let data_file = open_private(&object.paths.data, true)?;
    data_file.write_all_at(data, b * BLOCK_SIZE)?;
    let crc = crc32c::crc32c(data);
    let mut e = [0u8; 8];
    e[..4].copy_from_slice(&crc.to_le_bytes());
    e[4..].copy_from_slice(&(len as u32).to_le_bytes());
    meta.write_all_at(&e, HEADER + b * ENTRY)?;
    object.entries.lock()[b as usize] = (crc, len as u32);
    drop(ledger);
    if object.complete() {
        // The last block this mount lacked. (Where another mount stored
        // the last one, it checks; failing that, the next open asks.)
        verify(object)?;
    }
    Ok(())
}

/// The stamp of a data file whose blocks were all checked: its inode,
/// size and mtime, and the boot id. `None` where there is no boot id
/// (not Linux): nothing is ever stamped there.
fn stamp_of(data: &std::fs::Metadata) -> Option<[u8; STAMP_LEN]> {
    use std::os::unix::fs::MetadataExt;
    static BOOT_ID: std::sync::OnceLock<Option<[u8; 32]>> = std::sync::OnceLock::new();
    let boot = BOOT_ID.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        hex.try_into().ok()
    });
    let boot = (*boot)?;
    let mut stamp = [0u8; STAMP_LEN];
    stamp[..8].copy_from_slice(&data.ino().to_le_bytes());
    stamp[8..16].copy_from_slice(&data.size().to_le_bytes());
    stamp[16..24].copy_from_slice(&data.mtime().to_le_bytes());
    stamp[24..32].copy_from_slice(&data.mtime_nsec().to_le_bytes());
    stamp[32..].copy_from_slice(&boot);
    Some(stamp)
}

/// Check every block of an object that seems whole, as the files hold it
/// now (other mounts may have written some), and stamp it if all match.
/// The data file's metadata is taken before it is read: a write after
/// that changes its mtime, so a stamp never covers bytes not checked.
fn verify(object: &DiskObject) -> io::Result<()> {
    let Ok(meta) = open_private(&object.paths.meta, false) else {
        return Ok(());
    };
    if !header_matches(&meta, &object.identity, object.size) {
        return Ok(());
    }
    let entries = read_entries(&meta, object.size.div_ceil(BLOCK_SIZE))?;
    let data = File::open(&object.paths.data)?;
    let Some(stamp) = stamp_of(&data.metadata()?) else {
        return Ok(());
    };
    let mut had = [0u8; STAMP_LEN];
    if meta.read_exact_at(&mut had, STAMP_AT).is_ok() && had == stamp {
        return Ok(()); // checked already (several opens asked)
    }
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for (b, (crc, len)) in entries.into_iter().enumerate() {
        let expected = (object.size - b as u64 * BLOCK_SIZE).min(BLOCK_SIZE);
        if len as u64 != expected {
            return Ok(()); // not whole (yet)
        }
        let buf = &mut buf[..len as usize];
        data.read_exact_at(buf, b as u64 * BLOCK_SIZE)?;
        if crc32c::crc32c(buf) != crc {
            return Ok(()); // a read of that block finds it and drops it
        }
    }
    meta.write_all_at(&stamp, STAMP_AT)
}

fn adopt_file(
    root: &Path,
    ledger_path: &Path,
    bound: u64,
    object: &Arc<DiskObject>,
    file: &Path,
) -> io::Result<()> {
    let source = File::open(file)?;
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for b in 0..object.size.div_ceil(BLOCK_SIZE) {
        let len = (object.size - b * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
        // A hole (or a short staging file) reads as zeros, as the object does.
        buf[..len].fill(0);
        let mut got = 0;
        while got < len {
            match source.read_at(&mut buf[got..len], b * BLOCK_SIZE + got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        store_block(root, ledger_path, bound, object, b, &buf[..len])?;
    }
    Ok(())
}

fn forget_block(ledger_path: &Path, object: &Arc<DiskObject>, b: u64) -> io::Result<()> {
    let ledger = Ledger::lock(ledger_path)?;
    let Ok(meta) = open_private(&object.paths.meta, false) else {
        return Ok(());
    };
    let (_, len) = entry_at(&meta, b);
    if len == 0 {
        return Ok(());
    }
    meta.write_all_at(&[0u8; 8], HEADER + b * ENTRY)?;
    // No longer whole: a passthrough open must not be given it.
    meta.write_all_at(&[0u8; STAMP_LEN], STAMP_AT)?;
    ledger.set(ledger.total().saturating_sub(len as u64))
}

/// Bytes of blocks an object's `.meta` file records.
fn recorded_bytes(meta: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(meta) else {
        return 0;
    };
    bytes
        .get(HEADER as usize..)
        .unwrap_or_default()
        .chunks_exact(ENTRY as usize)
        .map(|e| decode_entry(e).1 as u64)
        .sum()
}

/// Every `.meta` file with its mtime.
fn all_objects(root: &Path) -> Vec<(std::time::SystemTime, PathBuf)> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root) else {
        return out;
    };
    for dir in dirs.flatten() {
        if !dir.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            if path.extension().is_some_and(|e| e == "meta") {
                let mtime = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                out.push((mtime, path));
            }
        }
    }
    out
}

fn remove_object(meta: &Path) {
    let _ = std::fs::remove_file(meta.with_extension("data"));
    let _ = std::fs::remove_file(meta);
}

/// Evict whole objects, least recently opened first, until `len` more
/// bytes fit under `target`; returns the new total. `keep` is the object
/// being written, evicted last.
fn evict(root: &Path, ledger: &Ledger, target: u64, len: u64, keep: &Path) -> io::Result<u64> {
    let mut objects = all_objects(root);
    objects.sort_by_key(|(mtime, path)| (path == keep, *mtime));
    let mut total = ledger.total();
    for (_, meta) in objects {
        if total + len <= target || meta == keep {
            break;
        }
        let bytes = recorded_bytes(&meta);
        remove_object(&meta);
        total = total.saturating_sub(bytes);
    }
    ledger.set(total)?;
    Ok(total)
}

/// Make the ledger agree with the files (after a crash between a block's
/// accounting and its write, or an object removed by hand), and remove
/// data files whose `.meta` is gone.
fn reconcile(root: &Path) -> io::Result<()> {
    let ledger = Ledger::lock(&root.join("ledger"))?;
    let mut total = 0;
    for (_, meta) in all_objects(root) {
        total += recorded_bytes(&meta);
    }
    if let Ok(dirs) = std::fs::read_dir(root) {
        for dir in dirs.flatten() {
            // Staging files a killed mount was adopting.
            if dir.file_name().to_string_lossy().starts_with("incoming-")
                && !process_alive(&dir.file_name().to_string_lossy())
            {
                let _ = std::fs::remove_file(dir.path());
                continue;
            }
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                if path.extension().is_some_and(|e| e == "data")
                    && !path.with_extension("meta").exists()
                {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    ledger.set(total)
}

/// Whether the process that named `incoming-PID-N` still runs.
fn process_alive(name: &str) -> bool {
    name.split('-')
        .nth(1)
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(crate::local_dir::process_running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn version(key: &str, etag: &str) -> ObjectVersionKey {
        ObjectVersionKey {
            key: Arc::from(key),
            etag: Arc::from(etag),
        }
    }

    fn block(fill: u8) -> Bytes {
        Bytes::from(vec![fill; BLOCK_SIZE as usize])
    }

    fn put(cache: &DiskCache, obj: &Arc<DiskObject>, b: u64, data: Bytes) {
        futures::executor::block_on(cache.store(obj, b, data));
    }

    /// Wait for the writer to catch up: every queued block is on disk.
    fn settle(cache: &DiskCache, v: &ObjectVersionKey, size: u64, blocks: u64) {
        for _ in 0..500 {
            if cache.object(v, size).holds(0..blocks) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("blocks never reached the disk");
    }

    #[test]
    fn blocks_survive_a_new_cache_and_a_new_etag_misses() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * BLOCK_SIZE;
        {
            let cache = DiskCache::open(dir.path(), 1 << 20, "bkt").unwrap();
            let obj = cache.object(&version("k", "e1"), size);
            for b in 0..3 {
                put(&cache, &obj, b, block(b as u8));
            }
            settle(&cache, &version("k", "e1"), size, 3);
        }
        let cache = DiskCache::open(dir.path(), 1 << 20, "bkt").unwrap();
        let obj = cache.object(&version("k", "e1"), size);
        assert!(obj.complete());
        assert_eq!(cache.read_block(&obj, 2).unwrap(), block(2));
        assert!(!cache.object(&version("k", "e2"), size).holds(0..1));
        assert!(!DiskCache::open(dir.path(), 1 << 20, "other")
            .unwrap()
            .object(&version("k", "e1"), size)
            .holds(0..1));
    }

    #[test]
    fn a_damaged_block_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20, "bkt").unwrap();
        let v = version("k", "e");
        let obj = cache.object(&v, BLOCK_SIZE);
        put(&cache, &obj, 0, block(7));
        settle(&cache, &v, BLOCK_SIZE, 1);
        let data = obj.paths.data.clone();
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        f.write_all_at(&[8], 100).unwrap();
        let obj = cache.object(&v, BLOCK_SIZE);
        assert!(cache.read_block(&obj, 0).is_none());
        assert_eq!(cache.damaged.load(Ordering::Relaxed), 1);
    }

    fn drained(cache: &DiskCache) {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(cache.drain(Duration::from_secs(10)));
    }

    #[test]
    fn a_whole_object_is_stamped_and_any_change_to_its_file_drops_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20, "bkt").unwrap();
        let v = version("k", "e");
        let size = 2 * BLOCK_SIZE + 10;
        let obj = cache.object(&v, size);
        put(&cache, &obj, 0, block(1));
        put(&cache, &obj, 1, block(2));
        drained(&cache);
        assert!(
            cache.whole_file(&cache.object(&v, size)).is_none(),
            "not whole yet"
        );
        put(&cache, &obj, 2, Bytes::from(vec![3u8; 10]));
        drained(&cache);
        let file = cache.whole_file(&cache.object(&v, size)).expect("stamped");
        let mut head = [0u8; 4];
        file.read_exact_at(&mut head, BLOCK_SIZE).unwrap();
        assert_eq!(head, [2; 4]);

        // A write to the data file (its mtime moves on): not whole until
        // checked again, and a damaged block is not stamped again.
        std::thread::sleep(Duration::from_millis(20));
        let f = OpenOptions::new()
            .write(true)
            .open(&obj.paths.data)
            .unwrap();
        f.write_all_at(&[9], 5).unwrap();
        assert!(cache.whole_file(&cache.object(&v, size)).is_none());
        drained(&cache); // the check it queued
        assert!(cache.whole_file(&cache.object(&v, size)).is_none());

        // Repaired by the same bytes: checked (by the open's request) and
        // stamped again.
        f.write_all_at(&[1], 5).unwrap();
        assert!(cache.whole_file(&cache.object(&v, size)).is_none());
        drained(&cache);
        assert!(cache.whole_file(&cache.object(&v, size)).is_some());
    }

    #[test]
    fn the_bound_holds_and_the_oldest_objects_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let bound = 10 * BLOCK_SIZE;
        let cache = DiskCache::open(dir.path(), bound, "bkt").unwrap();
        for i in 0..6 {
            let v = version(&format!("k{i}"), "e");
            let obj = cache.object(&v, 4 * BLOCK_SIZE);
            for b in 0..4 {
                put(&cache, &obj, b, block(i));
            }
            settle(&cache, &v, 4 * BLOCK_SIZE, 4);
            let ledger = Ledger::lock(&dir.path().join("v1/ledger")).unwrap();
            assert!(ledger.total() <= bound, "ledger {}", ledger.total());
            drop(ledger);
            let on_disk: u64 = all_objects(&dir.path().join("v1"))
                .iter()
                .map(|(_, m)| {
                    std::fs::metadata(m.with_extension("data")).map_or(0, |d| d.blocks() * 512)
                })
                .sum();
            assert!(on_disk <= bound + BLOCK_SIZE, "{on_disk} bytes on disk");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The newest object is whole; the first is gone.
        assert!(cache.object(&version("k5", "e"), 4 * BLOCK_SIZE).complete());
        assert!(!cache
            .object(&version("k0", "e"), 4 * BLOCK_SIZE)
            .holds(0..1));
    }
}
