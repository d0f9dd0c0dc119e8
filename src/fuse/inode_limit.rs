//! A bound on the inodes the kernel holds, and so on the daemon's memory.
//!
//! The kernel keeps the dentry of every name it looked up (and of every
//! entry of a readdirplus) until memory runs short, and the daemon must
//! remember each inode the kernel holds: after `find` or `du` of a million
//! files, a million of them, whatever the daemon's own caches let go of.
//! The kernel forgets an inode as soon as its last dentry goes (FUSE deletes
//! inodes that nothing references), so asking it to drop a dentry with
//! `FUSE_NOTIFY_INVAL_ENTRY` is enough to have the FORGET come back.
//!
//! So a thread watches the table. Past `limit` inodes it asks the kernel to
//! drop the names of the files it asked about least recently, down to nine
//! tenths of the limit; open files and directories are never among them
//! (see `InodeTable::least_recent_files`). A file let go of is looked up
//! again when next used, under the same inode number (numbers are a hash
//! of the path), from the same caches: the cost is a round trip to the
//! daemon where the kernel's dentry would still have been valid, which it
//! is for one `metadata_ttl` only.
//!
//! The notifications go from this thread alone: the kernel takes the
//! directory's lock to handle one, so a request handler must never wait on
//! it.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fuser::{INodeNo, Notifier};

use crate::fs::Fs;

/// How often the table is looked at: a walk adds tens of thousands of
/// inodes a second, so this bounds the overshoot too.
const PERIOD: Duration = Duration::from_millis(100);

/// The running watcher; `stop` ends it.
pub struct InodeLimit {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl InodeLimit {
    /// Watch `fs`'s inodes; `limit` 0 turns the bound off (the kernel
    /// keeps what it likes).
    pub fn start(fs: Arc<Fs>, notifier: Notifier, limit: usize) -> std::io::Result<Option<Self>> {
        if limit == 0 {
            return Ok(None);
        }
        let keep = limit - limit / 10;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("inode-limit".into())
            .spawn(move || {
                let mut over = false;
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD) {
                    // The clock moves on below the limit too, so that ages
                    // are known when it is reached.
                    fs.age_inodes();
                    let held = fs.inode_count();
                    if held > limit {
                        over = true;
                        if !release(&fs, &notifier, held, keep) {
                            return;
                        }
                    } else if over {
                        over = false;
                        tracing::debug!(
                            held,
                            limit,
                            "inode limit: the kernel holds no more than the limit again"
                        );
                    }
                }
            })?;
        Ok(Some(InodeLimit { stop, thread }))
    }

    /// End the watcher (at unmount) and wait for it.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Ask the kernel to drop the least recent files' names; false when the
/// session is gone.
fn release(fs: &Fs, notifier: &Notifier, held: usize, keep: usize) -> bool {
    let victims = fs.inodes_to_release(keep);
    let mut sent = 0usize;
    for (parent, name) in &victims {
        // A name the kernel no longer has (dropped on its own, or its
        // directory is gone) is not an error: fuser passes over ENOENT.
        match notifier.inval_entry(INodeNo(*parent), std::ffi::OsStr::new(name)) {
            Ok(()) => sent += 1,
            // The mount has ended.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::EBADF)) => {
                return false;
            }
            Err(e) => {
                tracing::debug!("inode limit: cannot invalidate {name}: {e}");
            }
        }
    }
    tracing::debug!(
        held,
        asked = victims.len(),
        sent,
        "inode limit: asked the kernel to forget the least recently used files"
    );
    true
}
