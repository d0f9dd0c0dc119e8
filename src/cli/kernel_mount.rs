//! Making the FUSE mount (Linux): mount(2) for root, fusermount3 for users.
//!
//! fuser's own mount passes the type `fuse` to the kernel, so the mount
//! table would say `fuse` where users, `findmnt -t`, `umount -t` and
//! systemd expect `fuse.bucketfs` (what libfuse writes for a subtype). It
//! also opens the mount point, which on an `x-systemd.automount` point asks
//! systemd for the very mount being made, and opens /dev/fuse even for a
//! user, who may not be allowed to (fusermount3, setuid root, opens it for
//! them). So the mount is made here, the way libfuse makes it, and the
//! descriptor handed to fuser:
//! - root: open /dev/fuse, mount(2) with type `fuse.bucketfs`;
//! - a user (or root without CAP_SYS_ADMIN): run `fusermount3 -o OPTS --
//!   MOUNTPOINT`, which mounts and passes the /dev/fuse descriptor back
//!   over a socket (`_FUSE_COMMFD`, SCM_RIGHTS).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the kernel is told about the mount, besides where it is.
pub struct KernelOptions<'a> {
    /// Shown as the source in the mount table (`bucket:/prefix`).
    pub fsname: &'a str,
    pub read_only: bool,
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
    /// Let users other than the owner through (`allow_other`; fuser
    /// narrows it to root for `allow_root`).
    pub allow_other: bool,
    pub default_permissions: bool,
}

/// A mount made here: unmounted by `unmount`, or by the user.
#[cfg(target_os = "linux")]
pub struct KernelMount {
    path: PathBuf,
    /// Made by fusermount3, so only fusermount3 may undo it.
    by_fusermount: bool,
}

/// Mount a FUSE file system of type `fuse.bucketfs` on `mountpoint`;
/// returns the /dev/fuse descriptor to serve it on.
#[cfg(target_os = "linux")]
pub fn mount(mountpoint: &Path, options: &KernelOptions<'_>) -> io::Result<(OwnedFd, KernelMount)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        if let Some(device) = mount_syscall(mountpoint, options)? {
            let mount = KernelMount {
                path: mountpoint.to_owned(),
                by_fusermount: false,
            };
            return Ok((device, mount));
        }
    }
    let device = mount_fusermount(mountpoint, options)?;
    let mount = KernelMount {
        path: mountpoint.to_owned(),
        by_fusermount: true,
    };
    Ok((device, mount))
}

#[cfg(target_os = "linux")]
fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains NUL")))
}

/// mount(2) directly; `None` when the kernel says EPERM (no
/// CAP_SYS_ADMIN), so that fusermount3 can try.
#[cfg(target_os = "linux")]
fn mount_syscall(mountpoint: &Path, options: &KernelOptions<'_>) -> io::Result<Option<OwnedFd>> {
    // stat, not open: opening an automount point would trigger it.
    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    // SAFETY: a NUL-terminated path and valid flags; the result is checked.
    let raw = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open succeeded, so `raw` is an open descriptor owned by no
    // one else.
    let device = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid}",
        device.as_raw_fd(),
        root_mode
    );
    if options.default_permissions {
        data.push_str(",default_permissions");
    }
    if options.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags: libc::c_ulong = libc::MS_NOATIME;
    if options.read_only {
        flags |= libc::MS_RDONLY;
    }
    if !options.dev {
        flags |= libc::MS_NODEV;
    }
    if !options.suid {
        flags |= libc::MS_NOSUID;
    }
    if !options.exec {
        flags |= libc::MS_NOEXEC;
    }

    let path = cstring(mountpoint.as_os_str().as_bytes(), "mount point")?;
    let source = cstring(options.fsname.as_bytes(), "source")?;
    let data = cstring(data.as_bytes(), "mount data")?;
    // SAFETY: every pointer is a valid NUL-terminated string that lives
    // until the call returns.
    let result = unsafe {
        libc::mount(
            source.as_ptr(),
            path.as_ptr(),
            c"fuse.bucketfs".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if result != 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EPERM) => Ok(None),
            _ => Err(error),
        };
    }
    Ok(Some(device))
}

/// fusermount3 from the usual places: an fstab mount may run with no PATH.
#[cfg(target_os = "linux")]
fn fusermount_program() -> PathBuf {
    ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("fusermount3"))
}

/// fusermount3's `-o` list; it splits on commas, so the source escapes them.
#[cfg(target_os = "linux")]
fn fusermount_options(options: &KernelOptions<'_>) -> String {
    let fsname = options.fsname.replace('\\', "\\\\").replace(',', "\\,");
    let mut list = vec![
        format!("fsname={fsname}"),
        "subtype=bucketfs".to_owned(),
        "noatime".to_owned(),
    ];
    list.push(if options.read_only { "ro" } else { "rw" }.to_owned());
    list.push(if options.dev { "dev" } else { "nodev" }.to_owned());
    list.push(if options.suid { "suid" } else { "nosuid" }.to_owned());
    list.push(if options.exec { "exec" } else { "noexec" }.to_owned());
    if options.default_permissions {
        list.push("default_permissions".to_owned());
    }
    if options.allow_other {
        list.push("allow_other".to_owned());
    }
    list.join(",")
}

#[cfg(target_os = "linux")]
fn mount_fusermount(mountpoint: &Path, options: &KernelOptions<'_>) -> io::Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    let their_fd = theirs.as_raw_fd();
    let mut command = Command::new(fusermount_program());
    command
        .arg("-o")
        .arg(fusermount_options(options))
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", their_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only fcntl, which is async-signal-safe, runs between fork
    // and exec: the socket is created close-on-exec, and fusermount3 must
    // inherit it.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(their_fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run fusermount3: {e}")))?;
    drop(theirs);
    let received = receive_fd(&ours);
    drop(ours);
    let output = child.wait_with_output()?;
    match received {
        Ok(device) if output.status.success() => Ok(device),
        _ => {
            let said = String::from_utf8_lossy(&output.stderr);
            let said = said.trim();
            Err(io::Error::other(if said.is_empty() {
                format!("fusermount3 failed ({})", output.status)
            } else {
                said.to_owned()
            }))
        }
    }
}

/// The one descriptor fusermount3 sends with its one-byte message.
#[cfg(target_os = "linux")]
fn receive_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(std::os::fd::RawFd);
    let message = loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            let mut fds = fds.into_iter().filter(|fd| *fd >= 0);
            if let Some(fd) = fds.next() {
                // SAFETY: the kernel just installed this descriptor in our
                // table for us; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "fusermount3 sent no /dev/fuse descriptor",
    ))
}

#[cfg(target_os = "linux")]
impl KernelMount {
    /// Unmount; fails with EBUSY while files are open on the mount.
    pub fn unmount(&self) -> io::Result<()> {
        self.umount(false)
    }

    /// Detach the mount if it is still there (after the session died):
    /// a dead FUSE mount answers every call with ENOTCONN until someone
    /// unmounts it. Only ours is detached: once the user has unmounted,
    /// what is left at the path (an automount point, say) is not ours.
    pub fn detach(&self) {
        if top_mount(&self.path).is_some_and(|m| m.fstype == "fuse.bucketfs") {
            let _ = self.umount(true);
        }
    }

    fn umount(&self, lazy: bool) -> io::Result<()> {
        if self.by_fusermount {
            let mut command = Command::new(fusermount_program());
            command.arg("-u").arg("-q");
            if lazy {
                command.arg("-z");
            }
            let output = command
                .arg("--")
                .arg(&self.path)
                .stdin(Stdio::null())
                .output()?;
            if !output.status.success() {
                let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
                return Err(io::Error::other(said));
            }
            return Ok(());
        }
        let path = cstring(self.path.as_os_str().as_bytes(), "mount point")?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// One line of /proc/self/mountinfo, the parts we use.
pub struct MountEntry {
    /// `major:minor` of the mount's device.
    pub device: String,
    pub fstype: String,
}

/// The mount on top at `path`, if `path` is a mount point.
pub fn top_mount(path: &Path) -> Option<MountEntry> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.as_os_str().as_bytes();
    // Later lines are mounted on top of earlier ones.
    mountinfo.lines().rev().find_map(|line| {
        // id parent major:minor root mountpoint options... - fstype source
        let (head, tail) = line.split_once(" - ")?;
        let fields: Vec<&str> = head.split(' ').collect();
        (unescape(fields.get(4)?) == wanted).then(|| MountEntry {
            device: fields.get(2).copied().unwrap_or_default().to_owned(),
            fstype: tail.split(' ').next().unwrap_or_default().to_owned(),
        })
    })
}

/// Undo mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')));
        match octal.and_then(|v| u8::try_from(v).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/mnt/a\\040b"), b"/mnt/a b");
        assert_eq!(unescape("/mnt/x\\134y\\011"), b"/mnt/x\\y\t");
        assert_eq!(unescape("/plain\\9"), b"/plain\\9");
    }

    #[test]
    fn the_root_is_a_mount_point() {
        assert!(top_mount(Path::new("/")).is_some());
        assert!(top_mount(Path::new("/surely/not/a/mount/point")).is_none());
    }
}
