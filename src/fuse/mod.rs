//! The FUSE adapter: `fuser::Filesystem` over the async filesystem core.
//!
//! Each callback unpacks its arguments, spawns one task on the tokio runtime
//! that calls one `Fs` method, and replies from that task, so no FUSE
//! session thread ever waits on the network. Errors become errnos here and
//! nowhere else in this layer; the mapping itself is `fs::error`. Calls we
//! do not support go through `unsupported!`, so what is refused can be read
//! in one place. `passthrough` decides which read opens the kernel serves
//! from the disk cache's files itself.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use std::path::Path;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::fs::{Attr, Caller, DirEntry, DirSnapshot, Fs, FsError, FsResult, Inode, Kind, SetAttr};

mod inode_limit;
mod passthrough;

pub use inode_limit::InodeLimit;
use passthrough::{Conflict, Passthrough};

/// Largest read and write the kernel sends in one request.
const MAX_IO: u32 = 1024 * 1024;
/// `st_blksize`: large, so that cp and friends move data in big chunks.
const BLKSIZE: u32 = 1024 * 1024;

pub struct FuseAdapter {
    fs: Arc<Fs>,
    rt: Handle,
    /// Try passthrough for files wholly in the disk cache.
    want_passthrough: bool,
    /// Set at init when the kernel agreed to passthrough: from then on
    /// every file open and release is counted there (see its module).
    passthrough: Option<Arc<Passthrough>>,
}

impl FuseAdapter {
    /// `passthrough`: serve reads of files the disk cache holds whole by
    /// FUSE passthrough, where the kernel and privileges allow.
    pub fn new(fs: Arc<Fs>, rt: Handle, passthrough: bool) -> Self {
        FuseAdapter {
            fs,
            rt,
            want_passthrough: passthrough,
            passthrough: None,
        }
    }

    /// Negotiate passthrough at init if the mount has a disk cache, and say
    /// which path reads of the disk cache take.
    fn negotiate_passthrough(&mut self, config: &mut KernelConfig) {
        let Some(disk) = self.fs.read_context().disk_cache() else {
            return;
        };
        let refused = if !self.want_passthrough {
            Some("--no-passthrough")
        } else if !config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH) {
            Some("this kernel has no FUSE passthrough (Linux 6.9+)")
        } else if !passthrough::has_cap_sys_admin() {
            Some("it needs CAP_SYS_ADMIN (root)")
        } else {
            None
        };
        if let Some(why) = refused {
            tracing::info!(
                "disk cache: reads go through bucketfs, without FUSE passthrough: {why}"
            );
            return;
        }
        let depth = passthrough::stack_depth_for(disk.dir());
        if config
            .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
            .is_err()
            || config.set_max_stack_depth(depth).is_err()
        {
            tracing::info!("disk cache: reads go through bucketfs: passthrough not negotiated");
            return;
        }
        self.passthrough = Some(Arc::new(Passthrough::new()));
        tracing::info!(
            "disk cache: files it holds whole are read by the kernel from {} (FUSE passthrough)",
            disk.dir().display()
        );
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(ino: u64, attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.atime(),
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: if attr.kind == Kind::Dir { 2 } else { 1 },
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// Answer a getxattr or listxattr: the size when asked for it (`size`
/// 0), else the bytes, or ERANGE if they do not fit.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

fn inode_attr(inode: &Inode) -> FileAttr {
    let mut attr = file_attr(inode.ino, &inode.attr);
    if inode.unlinked {
        attr.nlink = 0;
    }
    attr
}

/// An open or truncate the passthrough rules refuse: logged with the path.
fn refused(fs: &Fs, op: &str, ino: u64, conflict: &Conflict) -> Errno {
    let path = fs
        .path_of_inode(ino)
        .unwrap_or_else(|| format!("inode {ino}"));
    tracing::info!("{op} of {path}: refused ({})", conflict.why);
    conflict.errno
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno)
}

/// Log a failure worth knowing about, then turn it into an errno.
fn failed(op: &str, e: &FsError) -> Errno {
    if e.is_noteworthy() {
        tracing::warn!("{op}: {e}");
    } else {
        tracing::debug!("{op}: {e}");
    }
    errno(e)
}

/// A name from the kernel as UTF-8. S3 keys are UTF-8, so a name that is
/// not cannot exist in the bucket.
fn utf8(name: &OsStr) -> Result<String, Errno> {
    std::str::from_utf8(name.as_bytes())
        .map(str::to_owned)
        .map_err(|_| Errno::from_i32(libc::ENOENT))
}

/// A name for a new entry: S3 keys are UTF-8, so a name that is not cannot
/// be stored without mangling it. EILSEQ says so.
fn utf8_new(name: &OsStr) -> Result<String, Errno> {
    std::str::from_utf8(name.as_bytes())
        .map(str::to_owned)
        .map_err(|_| Errno::from_i32(libc::EILSEQ))
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

macro_rules! unsupported {
    ($op:literal, $reply:expr, $errno:expr) => {{
        tracing::debug!(concat!($op, ": not supported"));
        $reply.error(Errno::from_i32($errno));
    }};
}

impl FuseAdapter {
    /// Do `work` on the runtime and answer with the inode it yields.
    fn reply_entry(
        &self,
        op: &'static str,
        reply: ReplyEntry,
        work: impl std::future::Future<Output = crate::fs::FsResult<Inode>> + Send + 'static,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match work.await {
                // The name for `metadata_ttl` (a directory's for a second
                // at least); the attributes for as long as the daemon
                // trusts them (not at all when they are a listing's
                // alone: the next stat asks).
                Ok(inode) => reply.entry_with_ttls(
                    &fs.attr_ttl(&inode),
                    &fs.entry_ttl(&inode),
                    &inode_attr(&inode),
                    Generation(0),
                ),
                Err(e) => reply.error(failed(op, &e)),
            }
        });
    }

    /// Do `work` on the runtime and answer ok or its error.
    fn reply_empty(
        &self,
        op: &'static str,
        reply: ReplyEmpty,
        work: impl std::future::Future<Output = crate::fs::FsResult<()>> + Send + 'static,
    ) {
        self.rt.spawn(async move {
            match work.await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(op, &e)),
            }
        });
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ASYNC_READ;
        let available = config.capabilities() & wanted;
        if let Err(unsupported) = config.add_capabilities(available) {
            tracing::debug!("kernel lacks FUSE capabilities {unsupported:?}");
        }
        // Ask for large requests; take what the kernel allows.
        let readahead = config.set_max_readahead(MAX_IO).unwrap_or_else(|max| {
            let _ = config.set_max_readahead(max);
            max
        });
        let _ = config.set_max_write(MAX_IO);
        self.negotiate_passthrough(config);
        tracing::debug!(readahead, "FUSE session initialised");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.reply_entry(
            "lookup",
            reply,
            async move { fs.lookup(parent.0, &name).await },
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.fs.forget(ino.0, nlookup) {
            if let Some(pt) = &self.passthrough {
                pt.forgotten(ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.getattr(ino.0).await {
                Ok(inode) => reply.attr(&fs.ttl(), &inode_attr(&inode)),
                Err(e) => reply.error(failed("getattr", &e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(failed("readlink", &e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY
            || flags.0 & (libc::O_TRUNC | libc::O_APPEND) != 0;
        let pt = self.passthrough.clone();
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            if let (Some(pt), true) = (&pt, write) {
                if let Err(conflict) = pt.begin_write(ino.0).await {
                    return reply.error(refused(&fs, "open for writing", ino.0, &conflict));
                }
            }
            let opened = match fs.open(ino.0, write, flags.0 & libc::O_TRUNC != 0).await {
                Ok(opened) => opened,
                Err(e) => {
                    if let (Some(pt), true) = (&pt, write) {
                        pt.release(ino.0);
                    }
                    return reply.error(failed("open", &e));
                }
            };
            let flags = if opened.keep_cache {
                FopenFlags::FOPEN_KEEP_CACHE
            } else {
                FopenFlags::empty()
            };
            match pt {
                Some(pt) if !write => {
                    let backing = match pt.enabled() {
                        true => fs.disk_backing(opened.fh).await,
                        false => None,
                    };
                    let answer = pt.answer_read(ino.0, opened.fh, flags, backing, reply);
                    if let Err((conflict, reply)) = answer.await {
                        fs.release(opened.fh).await;
                        reply.error(refused(&fs, "open", ino.0, &conflict));
                    }
                }
                _ => reply.opened(FileHandle(opened.fh), flags),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(failed("read", &e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.reply_empty("flush", reply, async move { fs.flush(fh.0).await });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.reply_empty("fsync", reply, async move { fs.fsync(fh.0).await });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        let data = data.to_vec();
        self.rt.spawn(async move {
            match fs.write(fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(failed("write", &e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match utf8_new(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        let fs = self.fs.clone();
        let pt = self.passthrough.clone();
        self.rt.spawn(async move {
            match fs
                .create(
                    parent.0,
                    &name,
                    mode & !umask,
                    caller,
                    flags & libc::O_EXCL != 0,
                )
                .await
            {
                Ok((inode, opened)) => {
                    if let Some(pt) = &pt {
                        pt.count_normal(inode.ino);
                    }
                    reply.created(
                        &fs.ttl(),
                        &inode_attr(&inode),
                        Generation(0),
                        FileHandle(opened.fh),
                        FopenFlags::empty(),
                    )
                }
                Err(e) => reply.error(failed("create", &e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match utf8_new(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        let fs = self.fs.clone();
        self.reply_entry("mknod", reply, async move {
            fs.mknod(parent.0, &name, mode & !umask, rdev, caller).await
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match utf8_new(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        let fs = self.fs.clone();
        self.reply_entry("mkdir", reply, async move {
            fs.mkdir(parent.0, &name, mode & !umask, caller).await
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = match utf8_new(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let target = target.as_os_str().as_bytes().to_vec();
        let caller = caller(req);
        let fs = self.fs.clone();
        self.reply_entry("symlink", reply, async move {
            fs.symlink(parent.0, &name, &target, caller).await
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.reply_empty(
            "unlink",
            reply,
            async move { fs.unlink(parent.0, &name).await },
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.reply_empty(
            "rmdir",
            reply,
            async move { fs.rmdir(parent.0, &name).await },
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            // Swapping two keys cannot be done atomically with S3 copies.
            return unsupported!("rename(RENAME_EXCHANGE)", reply, libc::EINVAL);
        }
        let (name, newname) = match (utf8(name), utf8_new(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs
                .rename(parent.0, &name, newparent.0, &newname, noreplace)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed("rename", &e)),
            }
        });
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs
                .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
                .await
            {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(failed("copy_file_range", &e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime: mtime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            }),
            atime: atime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            }),
        };
        if let (Some(pt), Some(_)) = (&self.passthrough, size) {
            if let Err(conflict) = pt.check_change(ino.0) {
                return reply.error(refused(&self.fs, "truncate", ino.0, &conflict));
            }
        }
        let caller = caller(req);
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.setattr(ino.0, change, caller).await {
                Ok(inode) => reply.attr(&fs.ttl(), &inode_attr(&inode)),
                Err(e) => reply.error(failed("setattr", &e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // close(2) has its answer from flush already; release saves what a
        // failed flush left and frees the handle.
        reply.ok();
        if let Some(pt) = &self.passthrough {
            pt.release(ino.0);
        }
        let fs = self.fs.clone();
        let pending = fs.release_started();
        self.rt.spawn(async move {
            fs.release(fh.0).await;
            drop(pending);
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(failed("opendir", &e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let snapshot = match self.fs.dir_snapshot(fh.0) {
            Ok(s) => s,
            Err(e) => return reply.error(errno(&e)),
        };
        // Offsets: 1 is ".", 2 is "..", 3.. are the entries.
        let from = offset.saturating_sub(2) as usize;
        // Answered here when the snapshot has the entries (or has ended),
        // on the runtime when they are still being listed.
        if let Some(entries) = snapshot.ready(from) {
            return fill_readdir(&self.fs, &snapshot, offset, entries, reply);
        }
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            // The snapshot may be replaced by a fresh listing (a reader
            // that went back): fill from the one the entries come from.
            match fs.readdir_entries(fh.0, from).await {
                Ok((snapshot, entries)) => fill_readdir(&fs, &snapshot, offset, Ok(entries), reply),
                Err(e) => fill_readdir(&fs, &snapshot, offset, Err(e), reply),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let snapshot = match self.fs.dir_snapshot(fh.0) {
            Ok(s) => s,
            Err(e) => return reply.error(errno(&e)),
        };
        let from = offset.saturating_sub(2) as usize;
        if let Some(entries) = snapshot.ready(from) {
            return fill_readdirplus(&self.fs, &snapshot, offset, entries, reply);
        }
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            // The snapshot may be replaced by a fresh listing (a reader
            // that went back): fill from the one the entries come from.
            match fs.readdir_entries(fh.0, from).await {
                Ok((snapshot, entries)) => {
                    fill_readdirplus(&fs, &snapshot, offset, Ok(entries), reply)
                }
                Err(e) => fill_readdirplus(&fs, &snapshot, offset, Err(e), reply),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str().filter(|n| n.starts_with("user.")) else {
            // ACLs (which `ls -l` asks of every file), security labels and
            // capabilities (asked at writes) are never kept: answered here,
            // without a task or a request.
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.rt.spawn(async move {
            match fs.getxattr(ino.0, &name).await {
                Ok(value) => reply_xattr(reply, size, &value),
                Err(e) => reply.error(failed("getxattr", &e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.listxattr(ino.0).await {
                Ok(names) => reply_xattr(reply, size, &names),
                Err(e) => reply.error(failed("listxattr", &e)),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mode = match crate::fs::xattr::SetMode::from_flags(flags) {
            Ok(mode) => mode,
            Err(e) => return reply.error(failed("setxattr", &e)),
        };
        let (fs, value) = (self.fs.clone(), value.to_vec());
        self.reply_empty("setxattr", reply, async move {
            fs.setxattr(ino.0, &name, &value, mode).await
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.reply_empty("removexattr", reply, async move {
            fs.removexattr(ino.0, &name).await
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions) or none.
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        unsupported!("link", reply, libc::EPERM);
    }
}

/// Answer a readdir at `offset` with `entries` (the snapshot's from that
/// offset): "." and ".." first, then as many entries as the reply holds.
fn fill_readdir(
    fs: &Fs,
    snapshot: &DirSnapshot,
    offset: u64,
    entries: FsResult<Vec<DirEntry>>,
    mut reply: ReplyDirectory,
) {
    let entries = match entries {
        Ok(entries) => entries,
        // "." and ".." can still be given; the error comes with the next
        // call, where no entry is left to give.
        Err(_) if offset < 2 => Vec::new(),
        Err(e) => return reply.error(failed("readdir", &e)),
    };
    let mut next = offset;
    for special in offset..2 {
        let (ino, name) = if special == 0 {
            (snapshot.dir(), ".")
        } else {
            (snapshot.parent(), "..")
        };
        if reply.add(INodeNo(ino), special + 1, FileType::Directory, name) {
            return reply.ok();
        }
        next += 1;
    }
    for entry in &entries {
        let ino = fs.entry_ino(snapshot, entry);
        if reply.add(
            INodeNo(ino),
            next + 1,
            file_type(entry.attr.kind),
            &entry.name,
        ) {
            break;
        }
        next += 1;
    }
    reply.ok();
}

/// `fill_readdir` for readdirplus: each entry with its attributes, and a
/// lookup reference the kernel now holds.
fn fill_readdirplus(
    fs: &Fs,
    snapshot: &DirSnapshot,
    offset: u64,
    entries: FsResult<Vec<DirEntry>>,
    mut reply: ReplyDirectoryPlus,
) {
    let entries = match entries {
        Ok(entries) => entries,
        Err(_) if offset < 2 => Vec::new(),
        Err(e) => return reply.error(failed("readdirplus", &e)),
    };
    let mut next = offset;
    // "." and ".." carry no attributes and take no reference.
    for special in offset..2 {
        let (ino, name) = if special == 0 {
            (snapshot.dir(), ".")
        } else {
            (snapshot.parent(), "..")
        };
        let mut attr = file_attr(ino, &fs.config().attrs.dir(None));
        attr.ino = INodeNo(ino);
        if reply.add(
            INodeNo(ino),
            special + 1,
            name,
            &Duration::ZERO,
            &attr,
            Generation(0),
        ) {
            return reply.ok();
        }
        next += 1;
    }
    for entry in &entries {
        let inode = fs.entry_inode(snapshot, entry);
        // One TTL serves the name and the attributes here: an entry whose
        // attributes are a listing's alone gets 0 for both, so that the
        // next use of the name looks it up again (answered from the
        // listing, with no request) and a stat asks for the attributes.
        let full = reply.add(
            INodeNo(inode.ino),
            next + 1,
            &entry.name,
            &fs.attr_ttl(&inode),
            &inode_attr(&inode),
            Generation(0),
        );
        if full {
            // Not sent: give back the reference just counted.
            fs.forget(inode.ino, 1);
            break;
        }
        next += 1;
    }
    reply.ok();
}
