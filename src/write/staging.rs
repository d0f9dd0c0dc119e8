//! Staging files: the local copy of data written through the mount until
//! it is in the bucket.
//!
//! They live in the cache directory (created 0700, refused if another user
//! owns it or others may write it), one file per dirty object, mode 0600.
//! A staging file is removed only once its data is durably uploaded; after
//! a failed upload it stays, and its path is logged.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blocking::off_worker;
use super::error::WriteError;
use super::part_pool::DIRECT_ALIGN;

/// The smallest write sent past the page cache: a sequential writer's
/// blocks (dd, cp) are bigger; small appends stay cheap in the cache.
pub const DIRECT_MIN: usize = 128 * 1024;

/// O_DIRECT waits for the disk, where the page cache does not (and the
/// staging copy of an uploaded file is usually dropped before it is ever
/// written back). On a disk slower than this, staging goes back to the page
/// cache for the rest of the mount.
const DIRECT_MIN_SPEED: u64 = 512 * 1024 * 1024;
/// Bytes of O_DIRECT writes over which that speed is measured.
const DIRECT_PROBE: u64 = 64 * 1024 * 1024;

/// How O_DIRECT staging writes fare on this mount's disk.
#[derive(Debug, Default)]
struct DirectDisk {
    slow: AtomicBool,
    bytes: AtomicU64,
    nanos: AtomicU64,
}

impl DirectDisk {
    fn record(&self, bytes: usize, took: Duration) {
        let total = self.bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        let nanos = self
            .nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed)
            + took.as_nanos() as u64;
        if total < DIRECT_PROBE {
            return;
        }
        self.bytes.store(0, Ordering::Relaxed);
        self.nanos.store(0, Ordering::Relaxed);
        let speed = total as u128 * 1_000_000_000 / nanos.max(1) as u128;
        if speed < DIRECT_MIN_SPEED as u128 && !self.slow.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "the staging disk writes {} MiB/s past the page cache; staging through the page cache from now on",
                speed / (1024 * 1024)
            );
        }
    }
}

/// The directory staging files are made in.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    seq: AtomicU64,
    direct_disk: Arc<DirectDisk>,
}

/// The default cache directory: `/var/cache/bucketfs` for root, else
/// `$XDG_CACHE_HOME/bucketfs` or `~/.cache/bucketfs`.
pub fn default_cache_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/bucketfs");
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("bucketfs");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/bucketfs"),
        None => std::env::temp_dir().join(format!("bucketfs-{}", unsafe { libc::geteuid() })),
    }
}

impl StagingDir {
    /// Create (or check) the cache directory and this mount's staging
    /// directory inside it.
    pub fn open(cache_dir: &Path) -> io::Result<Self> {
        crate::local_dir::ensure_private_dir(cache_dir, "cache directory")?;
        let path = cache_dir.join(format!("staging-{}", std::process::id()));
        let mkdir = || std::fs::DirBuilder::new().mode(0o700).create(&path);
        if let Err(e) = mkdir() {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            // Left by an earlier process with our PID (PIDs are reused,
            // after 32,768 by default): its files would collide with ours
            // and its journal would be lost. It goes aside, under a name
            // `leftovers` reports, and this mount starts afresh.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let aside = cache_dir.join(format!("staging-{}-{nanos}", std::process::id()));
            std::fs::rename(&path, &aside)?;
            mkdir()?;
        }
        Ok(StagingDir {
            path,
            seq: AtomicU64::new(0),
            direct_disk: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Staging directories of earlier mounts whose process is gone (it was
    /// killed, or the machine stopped): what they left must be accounted for.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let Some(cache_dir) = self.path.parent() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(cache_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rest = name.strip_prefix("staging-")?;
                // `staging-PID`, or `staging-PID-N`: one set aside by a
                // process that found its PID's directory taken (`open`),
                // whose process is gone by then.
                let (pid, set_aside) = match rest.split_once('-') {
                    Some((pid, _)) => (pid, true),
                    None => (rest, false),
                };
                let pid: u32 = pid.parse().ok()?;
                let alive = !set_aside
                    && (pid == std::process::id() || crate::local_dir::process_running(pid));
                (!alive).then(|| e.path())
            })
            .collect()
    }

    /// A new, empty staging file for `key` (recorded beside it, so that
    /// data left by a crash can be reported with the key it belongs to).
    pub fn create(&self, key: &str) -> Result<StagingFile, WriteError> {
        off_worker(|| self.create_now(key))
    }

    fn create_now(&self, key: &str) -> Result<StagingFile, WriteError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("{n:08}"));
        let mut sidecar = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_sidecar(&path))
            .map_err(|e| io_error("cannot create a staging file", &path, e))?;
        std::io::Write::write_all(&mut sidecar, key.as_bytes())
            .map_err(|e| io_error("cannot create a staging file", &path, e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("cannot create a staging file", &path, e))?;
        // A second descriptor for whole parts written from aligned memory,
        // past the page cache. Not every filesystem has O_DIRECT (tmpfs
        // before Linux 6.6): then everything goes through the first.
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .ok();
        Ok(StagingFile {
            file: Arc::new(file),
            direct: direct.map(|file| {
                Arc::new(Direct {
                    file,
                    refused: AtomicBool::new(false),
                    disk: self.direct_disk.clone(),
                })
            }),
            path,
        })
    }

    /// Remove the mount's staging directory if nothing is left in it.
    pub fn remove_if_empty(&self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Where the key of a staging file is written.
pub fn key_sidecar(data: &Path) -> PathBuf {
    data.with_extension("key")
}

/// A staging disk failure, with what was being done and where.
pub fn io_error(what: &'static str, path: &Path, source: io::Error) -> WriteError {
    WriteError::Staging {
        what,
        path: path.to_owned(),
        source,
    }
}

/// One staging file. Cheap to clone (the descriptor is shared), so part
/// uploads can read it without holding the file's lock.
#[derive(Debug, Clone)]
pub struct StagingFile {
    file: Arc<File>,
    /// The same file opened with O_DIRECT, where the filesystem allows it.
    direct: Option<Arc<Direct>>,
    pub path: PathBuf,
}

#[derive(Debug)]
struct Direct {
    file: File,
    /// The filesystem refused an aligned O_DIRECT write (EINVAL).
    refused: AtomicBool,
    disk: Arc<DirectDisk>,
}

impl StagingFile {
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        off_worker(|| self.file.write_all_at(data, offset))
            .map_err(|e| io_error("cannot write the staging file", &self.path, e))
    }

    /// Write bytes of a part held in memory. With O_DIRECT for big writes
    /// whose offset, length and memory are block-aligned, so the bytes
    /// (already in memory) do not take page-cache memory a second time;
    /// through the page cache for small ones (a direct write waits for the
    /// disk, a cached one does not), unaligned ones, or if the filesystem
    /// refuses this alignment (EINVAL).
    pub fn write_part_at(&self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        let align = DIRECT_ALIGN as u64;
        let aligned = data.len() >= DIRECT_MIN
            && offset % align == 0
            && data.len() as u64 % align == 0
            && (data.as_ptr() as usize) % DIRECT_ALIGN == 0;
        let direct = self.direct.as_ref().filter(|d| {
            aligned && !d.refused.load(Ordering::Relaxed) && !d.disk.slow.load(Ordering::Relaxed)
        });
        if let Some(direct) = direct {
            let started = Instant::now();
            match off_worker(|| direct.file.write_all_at(data, offset)) {
                Ok(()) => {
                    direct.disk.record(data.len(), started.elapsed());
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    direct.refused.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(io_error("cannot write the staging file", &self.path, e)),
            }
        }
        self.write_at(offset, data)
    }

    /// Read exactly `len` bytes at `offset` (holes read as zeros).
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, WriteError> {
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// Fill `buf` with the bytes at `offset` (beyond the end: zeros).
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), WriteError> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("cannot read the staging file", &self.path, e)),
            }
        }
        Ok(())
    }

    pub fn set_len(&self, len: u64) -> Result<(), WriteError> {
        off_worker(|| self.file.set_len(len))
            .map_err(|e| io_error("cannot resize the staging file", &self.path, e))
    }

    pub fn sync(&self) -> Result<(), WriteError> {
        off_worker(|| self.file.sync_data())
            .map_err(|e| io_error("cannot sync the staging file", &self.path, e))
    }

    pub fn remove(&self) {
        off_worker(|| {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(key_sidecar(&self.path));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_staging_directory_left_under_our_pid_is_set_aside_not_reused() {
        let cache = tempfile::tempdir().unwrap();
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        // What a dead process that had our PID left: a staged file.
        let old = cache.path().join(format!("staging-{}", std::process::id()));
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("00000000"), b"unsaved").unwrap();
        let staging = StagingDir::open(cache.path()).unwrap();
        let file = staging.create("k").expect("no collision with the old file");
        drop(file);
        let leftovers = staging.leftovers();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        assert_eq!(
            std::fs::read(leftovers[0].join("00000000")).unwrap(),
            b"unsaved",
            "the old data is kept for recovery"
        );
    }

    #[test]
    fn directories_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let staging = StagingDir::open(&cache).unwrap();
        assert_eq!(
            std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = staging.create("some/key").unwrap();
        assert_eq!(
            std::fs::read_to_string(key_sidecar(&f.path)).unwrap(),
            "some/key"
        );
        assert_eq!(
            std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        f.write_at(10, b"abc").unwrap();
        assert_eq!(f.read_at(8, 7).unwrap(), b"\0\0abc\0\0");
        // A whole aligned part (O_DIRECT where the filesystem has it) and an
        // unaligned one land alike.
        let part_size = 2 * DIRECT_MIN;
        let pool = super::super::part_pool::PartPool::new(part_size as u64, 1);
        let mut part = pool.try_fill().unwrap();
        part.write_at(0, &vec![7u8; part_size]);
        f.write_part_at(part_size as u64, part.as_slice()).unwrap();
        f.write_part_at(3, &part.as_slice()[..5]).unwrap();
        let at = part_size as u64 - 2;
        assert_eq!(f.read_at(at, 4).unwrap(), [0, 0, 7, 7]);
        assert_eq!(f.read_at(2, 7).unwrap(), [0, 7, 7, 7, 7, 7, 0]);
        f.remove();
        assert!(!key_sidecar(&f.path).exists());
        staging.remove_if_empty();
        assert!(!staging.path().exists());

        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StagingDir::open(&cache).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod direct_tests {
    use super::*;

    #[test]
    fn a_slow_disk_turns_direct_writes_off() {
        let fast = DirectDisk::default();
        for _ in 0..16 {
            // 8 MiB in 4 ms: 2 GiB/s.
            fast.record(8 << 20, Duration::from_millis(4));
        }
        assert!(!fast.slow.load(Ordering::Relaxed));
        let slow = DirectDisk::default();
        for _ in 0..8 {
            // 8 MiB in 64 ms: 125 MiB/s, a cloud disk's baseline.
            slow.record(8 << 20, Duration::from_millis(64));
        }
        assert!(slow.slow.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod process_tests {
    use crate::local_dir::process_running;

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            !process_running(pid),
            "an exited, unreaped child counts as gone"
        );
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "still a zombie"
        );
        child.wait().unwrap();
        assert!(process_running(std::process::id()));
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::*;
    use std::os::unix::fs::chown;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_cache_directory_owned_by_someone_else_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root to give a directory away");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown(&cache, Some(65534), Some(65534)).unwrap();
        let err = StagingDir::open(&cache).unwrap_err();
        assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
    }
}
