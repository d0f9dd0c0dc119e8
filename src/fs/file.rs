//! Open files: open, read, release, and readlink.
//!
//! open revalidates the object unless its attributes are fresh, and pins
//! the ETag it saw: every read of that handle is of that version. The
//! kernel's page cache is kept across opens while the ETag is unchanged.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use super::attr::Kind;
use super::error::{FsError, FsResult};
use super::inode::Ino;
use super::{Fs, Handle};
use crate::read::{ObjectToRead, Reader};
use crate::s3::{GetObjectOutput, GetRequest};

/// Longest symlink target read (PATH_MAX).
const SYMLINK_MAX: u64 = 4096;

/// What open hands back to the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub fh: u64,
    /// The page cache of this file is still valid (same ETag as last open).
    pub keep_cache: bool,
}

impl Fs {
    pub async fn open(&self, ino: Ino, write: bool, truncate: bool) -> FsResult<Opened> {
        if write {
            return self.open_for_write(ino, truncate).await;
        }
        let mut inode = self.getattr(ino).await?;
        if self.versions_enabled() && super::versions::is_virtual(&inode.path) {
            let object = self.versions_file(&inode).await?;
            let reader = Reader::new(self.read_ctx.clone(), object);
            let fh = self.add_handle(Handle::File {
                ino,
                reader: Arc::new(reader),
            });
            // A version never changes: its pages stay valid.
            return Ok(Opened {
                fh,
                keep_cache: true,
            });
        }
        if let Some(dirty) = self.local_dirty(&inode.path) {
            // Unsaved changes: read them, not the bucket's copy.
            let fh = self.add_handle(Handle::Local {
                ino,
                dirty,
                writable: false,
            });
            return Ok(Opened {
                fh,
                keep_cache: false,
            });
        }
        match inode.attr.kind {
            Kind::Dir => return Err(FsError::new(libc::EISDIR, "is a directory")),
            Kind::File | Kind::Symlink => {}
            _ => {
                return Err(FsError::new(
                    libc::ENXIO,
                    "special files cannot be opened here",
                ))
            }
        }
        if inode.etag.is_none() {
            // Listed without an ETag: fetch it, since reads are pinned to it.
            self.inodes.update(ino, |i| i.valid_until = Instant::now());
            inode = self.getattr(ino).await?;
        }
        let etag = inode.etag.clone().unwrap_or_else(|| Arc::from(""));
        let keep_cache = inode.cached_etag.as_deref() == Some(&*etag) && !etag.is_empty();
        self.inodes
            .update(ino, |i| i.cached_etag = Some(etag.clone()));
        let reader = Reader::new(
            self.read_ctx.clone(),
            ObjectToRead {
                key: Arc::from(self.key(&inode.path)),
                etag,
                version_id: None,
                size: inode.attr.size,
            },
        );
        let fh = self.add_handle(Handle::File {
            ino,
            reader: Arc::new(reader),
        });
        Ok(Opened { fh, keep_cache })
    }

    /// For a handle reading an object as the bucket has it: the version
    /// it is pinned to (its ETag), and the disk cache's file of it if that
    /// holds the whole version, checked (`DiskCache::whole_file`). The
    /// FUSE adapter answers such an open in passthrough mode on that file.
    /// `None` for other handles: a version under `.versions`, or a file
    /// with local changes, which are read through the daemon.
    pub async fn disk_backing(&self, fh: u64) -> Option<(Arc<str>, Option<std::fs::File>)> {
        let reader = match self.handles.lock().get(&fh) {
            Some(Handle::File { reader, .. }) if reader.object().version_id.is_none() => {
                reader.clone()
            }
            _ => return None,
        };
        let etag = reader.object().etag.clone();
        // An unknown version (no ETag) is never shared with another open.
        let file = match etag.is_empty() {
            true => None,
            false => reader.whole_disk_file().await,
        };
        Some((etag, file))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (ino, reader, own, writable) = {
            let handles = self.handles.lock();
            match handles.get(&fh) {
                Some(Handle::File { ino, reader }) => (*ino, Some(reader.clone()), None, false),
                Some(Handle::Local {
                    ino,
                    dirty,
                    writable,
                }) => (*ino, None, Some(dirty.clone()), *writable),
                _ => return Err(FsError::new(libc::EBADF, "not an open file")),
            }
        };
        // A writer reads its own file (even once unlinked or renamed). A
        // file opened for reading reads the changes made through this
        // mount since, whichever open made them: the path's local file if
        // it has one now, else what it was opened on.
        let current = || self.inodes.get(ino).and_then(|i| self.local_dirty(&i.path));
        let dirty = if writable { own } else { current().or(own) };
        match (dirty, reader) {
            (Some(dirty), _) => {
                // Not behind the file's lock: an upload in progress holds it.
                let ctx = self.writer()?;
                Ok(dirty.reads.read(&ctx, offset, size).await?)
            }
            (None, Some(reader)) => Ok(reader.read(offset, size).await?),
            (None, None) => Err(FsError::new(libc::EBADF, "not an open file")),
        }
    }

    /// readlink: the target is the object's body (s3fs's format).
    pub async fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let inode = self.getattr(ino).await?;
        if inode.attr.kind != Kind::Symlink {
            return Err(FsError::new(libc::EINVAL, "not a symbolic link"));
        }
        if inode.attr.size > SYMLINK_MAX {
            return Err(FsError::new(
                libc::ENAMETOOLONG,
                "symlink target longer than 4096 bytes",
            ));
        }
        let key = self.key(&inode.path);
        let output = self.store.get_object(&key, GetRequest::default()).await?;
        let GetObjectOutput::Body { mut body, .. } = output else {
            return Err(FsError::new(libc::EIO, "unexpected 304"));
        };
        let mut target = Vec::new();
        while let Some(chunk) = body.next().await {
            target.extend_from_slice(&chunk?);
            if target.len() as u64 > SYMLINK_MAX {
                return Err(FsError::new(libc::ENAMETOOLONG, "symlink target too long"));
            }
        }
        Ok(target)
    }
}
