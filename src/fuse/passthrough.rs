//! FUSE passthrough: a file the disk cache holds whole is opened on the
//! cache's own file, and the kernel reads it without asking the daemon.
//!
//! The kernel's rule (`fs/fuse/iomode.c`) shapes this module: at any
//! moment, every open of one inode is either a passthrough open on the same
//! backing file or a normal ("cached") open. An open that breaks the rule
//! fails in the kernel with EIO, after the daemon has answered it. So the
//! adapter keeps, per inode, which mode its opens are in and how many there
//! are, and decides each new open under that table's lock:
//! - a read open of the version the passthrough opens read joins them;
//! - a read open of another version (the object changed in the bucket)
//!   cannot be served while they last: ESTALE;
//! - an open for writing, or a truncate, while they last: ETXTBSY, as for
//!   a program being run;
//! - passthrough is chosen only for an inode with no open at all, and only
//!   when the core hands a checked whole file (`Fs::disk_backing`).
//!
//! The kernel decrements its count before it sends RELEASE, so this table
//! is never behind it in the unsafe direction: it may count an open the
//! kernel has closed, never miss one it holds. A conflict may therefore be
//! with a close still on its way (a program that closes a file and opens
//! it again for writing): it waits for that, up to `SETTLE`, before it is
//! refused.
//!
//! Registering a backing file needs CAP_SYS_ADMIN and a kernel built with
//! passthrough (6.9+); the first refusal turns passthrough off for the
//! mount, with one log line, and reads take the normal path.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{BackingId, Errno, FileHandle, FopenFlags, ReplyOpen};
use parking_lot::Mutex;

/// How the opens of one inode are served.
enum Mode {
    /// Through the daemon: this many opens.
    Cached(usize),
    /// On `backing`, the disk cache's file of version `etag`.
    Passthrough {
        opens: usize,
        etag: Arc<str>,
        backing: BackingId,
    },
}

pub struct Passthrough {
    /// Passthrough is negotiated and no registration failed yet.
    enabled: AtomicBool,
    inodes: Mutex<HashMap<u64, Mode>>,
    /// Told when an inode's last passthrough open is released.
    closed: tokio::sync::Notify,
}

/// How long a conflicting open waits for passthrough opens being closed.
const SETTLE: Duration = Duration::from_secs(1);

/// What the core says of a read open (`Fs::disk_backing`): the version it
/// reads and, if the disk cache holds it whole, its file.
pub type DiskBacking = Option<(Arc<str>, Option<File>)>;

/// What the kernel would refuse, refused by us first with a clear errno
/// and the reason, for the log.
pub struct Conflict {
    pub errno: Errno,
    pub why: &'static str,
}

impl Passthrough {
    /// For a session whose kernel agreed to passthrough.
    pub fn new() -> Self {
        Passthrough {
            enabled: AtomicBool::new(true),
            inodes: Mutex::new(HashMap::new()),
            closed: tokio::sync::Notify::new(),
        }
    }

    /// Whether backing files may still be registered (none was refused).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Wait until `ino` has no passthrough open, or until `SETTLE` has
    /// passed since `since`; whether it has none.
    async fn settled(&self, ino: u64, since: Instant) -> bool {
        loop {
            // Created before the check, so a release in between wakes it.
            let closed = self.closed.notified();
            if !matches!(self.inodes.lock().get(&ino), Some(Mode::Passthrough { .. })) {
                return true;
            }
            let left = SETTLE.saturating_sub(since.elapsed());
            if left.is_zero() || tokio::time::timeout(left, closed).await.is_err() {
                return false;
            }
        }
    }

    /// Before an open for writing: refused while passthrough opens of the
    /// inode last (past `SETTLE`), else counted as a normal open
    /// (`release` if it then fails).
    pub async fn begin_write(&self, ino: u64) -> Result<(), Conflict> {
        let since = Instant::now();
        loop {
            if let Mode::Cached(n) = self.inodes.lock().entry(ino).or_insert(Mode::Cached(0)) {
                *n += 1;
                return Ok(());
            }
            if !self.settled(ino, since).await {
                return Err(busy());
            }
        }
    }

    /// A size change without an open (truncate(1)) changes what the
    /// passthrough opens are reading from under them: refused as a write.
    pub fn check_change(&self, ino: u64) -> Result<(), Conflict> {
        match self.inodes.lock().get(&ino) {
            Some(Mode::Passthrough { .. }) => Err(busy()),
            _ => Ok(()),
        }
    }

    /// An open of `ino` released (either mode), or one counted by
    /// `begin_write` that failed.
    pub fn release(&self, ino: u64) {
        let mut inodes = self.inodes.lock();
        let last = match inodes.get_mut(&ino) {
            Some(Mode::Cached(n)) | Some(Mode::Passthrough { opens: n, .. }) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if last {
            // Dropping a BackingId unregisters the backing file.
            if let Some(Mode::Passthrough { .. }) = inodes.remove(&ino) {
                self.closed.notify_waiters();
            }
        }
    }

    /// The kernel holds the inode no more, so it has no open left: an
    /// open whose answer never reached the kernel (its caller was killed
    /// meanwhile) gets no release, and would otherwise be counted for
    /// ever, refusing writers of a passthrough file.
    pub fn forgotten(&self, ino: u64) {
        if let Some(Mode::Passthrough { .. }) = self.inodes.lock().remove(&ino) {
            self.closed.notify_waiters();
        }
    }

    /// A new open (already counted by the core as `fh`), counted here too:
    /// a normal one, unless passthrough is possible.
    pub fn count_normal(&self, ino: u64) {
        let mut inodes = self.inodes.lock();
        let (Mode::Cached(n) | Mode::Passthrough { opens: n, .. }) =
            inodes.entry(ino).or_insert(Mode::Cached(0));
        *n += 1;
    }

    /// Answer a read open of `ino` as handle `fh`. `backing` is what the
    /// core said of it (`Fs::disk_backing`): the version and, if the disk
    /// cache holds it whole, its file. Err: the open cannot be served now,
    /// even after `SETTLE` (the caller releases `fh` and answers the errno).
    pub async fn answer_read(
        &self,
        ino: u64,
        fh: u64,
        keep_cache: FopenFlags,
        backing: DiskBacking,
        reply: ReplyOpen,
    ) -> Result<(), (Conflict, ReplyOpen)> {
        let since = Instant::now();
        let mut answer = self.try_answer_read(ino, fh, keep_cache, backing, reply);
        while let Err((conflict, reply, backing)) = answer {
            if !self.settled(ino, since).await {
                return Err((conflict, reply));
            }
            answer = self.try_answer_read(ino, fh, keep_cache, backing, reply);
        }
        Ok(())
    }

    fn try_answer_read(
        &self,
        ino: u64,
        fh: u64,
        keep_cache: FopenFlags,
        backing: DiskBacking,
        reply: ReplyOpen,
    ) -> Result<(), (Conflict, ReplyOpen, DiskBacking)> {
        let mut inodes = self.inodes.lock();
        match inodes.get_mut(&ino) {
            Some(Mode::Cached(n)) => {
                *n += 1;
                reply.opened(FileHandle(fh), keep_cache);
            }
            Some(Mode::Passthrough {
                opens,
                etag,
                backing: id,
            }) => {
                if backing.as_ref().is_none_or(|(wanted, _)| wanted != etag) {
                    let stale = Conflict {
                        errno: Errno::from_i32(libc::ESTALE),
                        why: "ESTALE: the object changed in the bucket while its old version is \
                              open here by FUSE passthrough",
                    };
                    return Err((stale, reply, backing));
                }
                *opens += 1;
                tracing::debug!(ino, "open by FUSE passthrough, beside {} more", *opens - 1);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id);
            }
            None => {
                let registered = match (backing, self.enabled()) {
                    (Some((etag, Some(file))), true) => match reply.open_backing(&file) {
                        Ok(id) => Some((etag, id)),
                        Err(e) => {
                            self.refused(&e);
                            None
                        }
                    },
                    _ => None,
                };
                match registered {
                    Some((etag, id)) => {
                        tracing::debug!(ino, "open by FUSE passthrough");
                        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                        inodes.insert(
                            ino,
                            Mode::Passthrough {
                                opens: 1,
                                etag,
                                backing: id,
                            },
                        );
                    }
                    None => {
                        inodes.insert(ino, Mode::Cached(1));
                        reply.opened(FileHandle(fh), keep_cache);
                    }
                }
            }
        }
        Ok(())
    }

    /// The kernel refused a backing file: say why once, and stop trying.
    fn refused(&self, e: &std::io::Error) {
        if self.enabled.swap(false, Ordering::Relaxed) {
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => "registering a backing file needs CAP_SYS_ADMIN".to_owned(),
                Some(libc::ELOOP) => {
                    "the disk cache is on a stacked filesystem deeper than allowed".to_owned()
                }
                _ => e.to_string(),
            };
            tracing::warn!(
                "FUSE passthrough refused ({why}): reads of the disk cache go through \
                 bucketfs from now on"
            );
        }
    }
}

fn busy() -> Conflict {
    Conflict {
        errno: Errno::from_i32(libc::ETXTBSY),
        why: "ETXTBSY: it is open for reading by FUSE passthrough; --no-passthrough allows both",
    }
}

/// How deep the backing files' filesystem is stacked: passthrough must be
/// negotiated with one more than that (overlayfs, as in containers, is 1).
pub fn stack_depth_for(dir: &Path) -> u32 {
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    let Ok(path) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
    else {
        return 1;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs buffer we own.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return 1;
    }
    if st.f_type as i64 == OVERLAYFS_SUPER_MAGIC {
        2
    } else {
        1
    }
}

/// Whether this process may register backing files (CAP_SYS_ADMIN in its
/// effective set).
pub fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}
