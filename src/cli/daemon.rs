//! Becoming a daemon, and telling the process that started us how the
//! mount went.
//!
//! `bucketfs SOURCE MOUNTPOINT` must return only once the mount is live, or
//! print why it failed and exit non-zero. So the parent forks before any
//! thread exists, and waits on a pipe: the child sends `OK` once the kernel
//! has accepted the mount, or `ERR <reason>`; if the child dies first, the
//! pipe closes with nothing said and the parent reports that.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The child's end of the pipe.
pub struct Reporter {
    pipe: Option<File>,
}

impl Reporter {
    /// A reporter for a process that did not fork (foreground).
    pub fn foreground() -> Self {
        Reporter { pipe: None }
    }

    pub fn is_daemon(&self) -> bool {
        self.pipe.is_some()
    }

    /// The mount is live.
    pub fn ok(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"OK\n");
        }
    }

    /// Mounting failed; the parent prints `reason` and exits non-zero.
    pub fn fail(&mut self, reason: &str) {
        match self.pipe.take() {
            Some(mut pipe) => {
                let _ = pipe.write_all(format!("ERR {reason}\n").as_bytes());
            }
            None => eprintln!("bucketfs: {reason}"),
        }
    }
}

/// What `daemonize` returns in each process.
pub enum Forked {
    /// In the parent: exit with this code once the child has reported.
    Parent(i32),
    /// In the child, which carries on and must report through this.
    Child(Reporter),
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    #[cfg(target_os = "linux")]
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    // macOS has no pipe2; nothing else runs yet (we are about to fork from
    // a single thread), so setting close-on-exec afterwards cannot race.
    // SAFETY: as above, then fcntl on the two descriptors pipe returned.
    #[cfg(not(target_os = "linux"))]
    let rc = unsafe {
        let rc = libc::pipe(fds.as_mut_ptr());
        if rc == 0 {
            libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fds[1], libc::F_SETFD, libc::FD_CLOEXEC);
        }
        rc
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the pipe was created, so both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Fork. Must be called while the process has a single thread: no runtime,
/// no logging threads yet.
pub fn daemonize() -> std::io::Result<Forked> {
    let (read_end, write_end) = pipe()?;
    // SAFETY: the process is single-threaded here (checked by the caller's
    // structure: this runs before any runtime or thread is created), so the
    // child may continue to run arbitrary code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory-safety preconditions.
            unsafe { libc::setsid() };
            Ok(Forked::Child(Reporter {
                pipe: Some(File::from(write_end)),
            }))
        }
        _child => {
            drop(write_end);
            let mut message = String::new();
            let _ = File::from(read_end).read_to_string(&mut message);
            let message = message.trim_end();
            if message == "OK" {
                Ok(Forked::Parent(0))
            } else if let Some(reason) = message.strip_prefix("ERR ") {
                eprintln!("bucketfs: {reason}");
                Ok(Forked::Parent(1))
            } else {
                eprintln!("bucketfs: the daemon exited before the mount was ready (see its log)");
                Ok(Forked::Parent(1))
            }
        }
    }
}

/// Point stdin, stdout and stderr at /dev/null: a daemon has no terminal.
pub fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors; `null` stays open
            // for the duration of the call.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
