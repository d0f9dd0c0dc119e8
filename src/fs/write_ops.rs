//! Operations that change the bucket: create, write, flush, setattr,
//! unlink, mkdir, rmdir, symlink, mknod, copy_file_range (rename is in
//! `rename.rs`).
//!
//! File content goes through `crate::write::DirtyFile` (staging file,
//! streaming or staged upload). Until a file's upload succeeds, the mount
//! shows it from local state (`Fs::local`): it exists, with its size, from
//! the moment `create` returns. Namespace changes (mkdir, symlink, rename,
//! unlink) go to S3 at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::attr::{Attr, Kind};
use super::error::{FsError, FsResult};
use super::file::Opened;
use super::inode::{Ino, Inode};
use super::lookup::{Listed, Want};
use super::names::KEY_MAX;
use super::{DirtyCell, Fs, Handle, LocalFile, SharedDirty};
use crate::s3::{CopySource, MetadataDirective, ObjectMeta, PutOptions};
use crate::store::Copied;
use crate::write::{mtime_value, BaseObject, DirtyFile, WriteContext};

/// Attribute changes asked for by setattr.
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

/// Who is asking (from the FUSE request).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

pub(super) fn parent_of(path: &str) -> &str {
    split_path(path).0
}

/// A path's directory and name.
pub(super) fn split_path(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Fs {
    pub(crate) fn writer(&self) -> FsResult<Arc<WriteContext>> {
        self.write_ctx
            .clone()
            .ok_or_else(|| FsError::new(libc::EROFS, "mounted read-only"))
    }

    pub(super) fn local_map(
        &self,
    ) -> parking_lot::MutexGuard<'_, std::collections::HashMap<String, LocalFile>> {
        self.local.lock()
    }

    pub(crate) fn local_dirty(&self, path: &str) -> Option<SharedDirty> {
        self.local_map().get(path).map(|l| l.dirty.clone())
    }

    pub(crate) fn local_attr(&self, path: &str) -> Option<Attr> {
        self.local_map().get(path).map(|l| l.attr.clone())
    }

    /// Whether a file with local content lies anywhere below `dir_path`:
    /// then the directory exists on this mount, whatever the bucket says
    /// (another client may have removed the last object under it).
    pub(crate) fn has_local_below(&self, dir_path: &str) -> bool {
        let prefix = format!("{dir_path}/");
        self.local_map().keys().any(|p| p.starts_with(&prefix))
    }

    /// Local files directly inside `dir_path`, with their attributes.
    pub(crate) fn local_children(&self, dir_path: &str) -> Vec<(String, Attr)> {
        self.local_map()
            .iter()
            .filter(|(path, _)| parent_of(path) == dir_path)
            .map(|(path, l)| {
                (
                    path.rsplit('/').next().unwrap_or(path).to_owned(),
                    l.attr.clone(),
                )
            })
            .collect()
    }

    fn attr_of_dirty(&self, dirty: &DirtyFile) -> Attr {
        self.config
            .attrs
            .object(dirty.size, SystemTime::now(), Some(&dirty.metadata))
    }

    /// Record what a dirty file looks like now, in the local map and the
    /// inode table.
    pub(super) fn publish(
        &self,
        ino: Option<Ino>,
        path: &str,
        dirty_arc: &SharedDirty,
        dirty: &DirtyFile,
    ) {
        let attr = self.attr_of_dirty(dirty);
        self.local_map().insert(
            path.to_owned(),
            LocalFile {
                dirty: dirty_arc.clone(),
                attr: attr.clone(),
            },
        );
        if let Some(ino) = ino {
            self.inodes.update(ino, |i| {
                i.attr = attr;
                i.valid_until = Instant::now() + self.config.metadata_ttl;
            });
        }
    }

    /// The metadata s3fs stores for a new object.
    fn new_metadata(&self, mode: u32, caller: Caller) -> BTreeMap<String, String> {
        let now = mtime_value(SystemTime::now());
        BTreeMap::from([
            ("mode".to_owned(), mode.to_string()),
            ("uid".to_owned(), caller.uid.to_string()),
            ("gid".to_owned(), caller.gid.to_string()),
            ("mtime".to_owned(), now.clone()),
            ("ctime".to_owned(), now),
        ])
    }

    /// Make (or find) the dirty state of an existing file, based on its
    /// current object unless `truncate`.
    async fn dirty_for(&self, inode: &Inode, truncate: bool) -> FsResult<SharedDirty> {
        if let Some(dirty) = self.local_dirty(&inode.path) {
            return Ok(dirty);
        }
        let ctx = self.writer()?;
        let key = self.key(&inode.path);
        let (base, metadata) = match self.store.head_object(&key, None).await {
            Ok(meta) => (
                Some(BaseObject {
                    etag: meta.etag,
                    size: meta.size,
                    version_id: meta.version_id,
                }),
                meta.user_metadata,
            ),
            Err(e) if e.is_not_found() => (None, BTreeMap::new()),
            Err(e) => return Err(e.into()),
        };
        let mut metadata = metadata;
        metadata
            .entry("mode".into())
            .or_insert_with(|| (libc::S_IFREG | inode.attr.perm as u32).to_string());
        let base = if truncate { None } else { base };
        let mut dirty = DirtyFile::new(&ctx, key, base, metadata)?;
        if truncate {
            dirty.truncate(&ctx, 0)?;
        }
        let attr = self.attr_of_dirty(&dirty);
        let arc = Arc::new(DirtyCell::new(dirty));
        // Another task may have made one meanwhile: keep the first.
        let existing = {
            let mut local = self.local_map();
            match local.get(&*inode.path) {
                Some(existing) => Some(existing.dirty.clone()),
                None => {
                    local.insert(
                        inode.path.to_string(),
                        LocalFile {
                            dirty: arc.clone(),
                            attr,
                        },
                    );
                    None
                }
            }
        };
        match existing {
            Some(existing) => {
                if let Ok(unused) = Arc::try_unwrap(arc) {
                    unused.into_inner().discard();
                }
                Ok(existing)
            }
            None => Ok(arc),
        }
    }

    pub(crate) async fn open_for_write(&self, ino: Ino, truncate: bool) -> FsResult<Opened> {
        self.writer()?;
        let inode = self.getattr(ino).await?;
        self.refuse_virtual(&inode.path)?;
        if inode.attr.kind == Kind::Dir {
            return Err(FsError::new(libc::EISDIR, "is a directory"));
        }
        if inode.attr.kind != Kind::File {
            return Err(FsError::new(
                libc::EINVAL,
                "only regular files can be written",
            ));
        }
        let dirty_arc = self.dirty_for(&inode, truncate).await?;
        {
            let ctx = self.writer()?;
            let mut dirty = dirty_arc.lock().await;
            if truncate && dirty.size != 0 {
                dirty.truncate(&ctx, 0)?;
            }
            dirty.open_handles += 1;
            self.publish(Some(ino), &inode.path, &dirty_arc, &dirty);
        }
        let fh = self.add_handle(Handle::Local {
            ino,
            dirty: dirty_arc,
            writable: true,
        });
        Ok(Opened {
            fh,
            keep_cache: false,
        })
    }

    /// create: a new, empty file that exists (locally) at once and is
    /// stored as an empty object at the latest when it is closed.
    pub async fn create(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        caller: Caller,
        exclusive: bool,
    ) -> FsResult<(Inode, Opened)> {
        let ctx = self.writer()?;
        let parent_inode = self.inode(parent)?;
        let path = self.checked_child_path(&parent_inode, name)?;
        self.refuse_virtual(&path)?;
        if exclusive && self.resolve(&parent_inode.path, name).await?.is_some() {
            return Err(FsError::new(libc::EEXIST, "file exists"));
        }
        let metadata = self.new_metadata(libc::S_IFREG | (mode & 0o7777), caller);
        let mut dirty = DirtyFile::new(&ctx, self.key(&path), None, metadata)?;
        dirty.needs_upload = true;
        dirty.open_handles = 1;
        dirty.exclusive = exclusive;
        let attr = self.attr_of_dirty(&dirty);
        let arc = Arc::new(DirtyCell::new(dirty));
        let replaced = self.local_map().insert(
            path.clone(),
            LocalFile {
                dirty: arc.clone(),
                attr: attr.clone(),
            },
        );
        if let Some(old) = replaced {
            // Replacing an unsaved file of the same name: its data goes.
            let mut old = old.dirty.lock().await;
            old.unlinked = true;
        }
        self.forget_missing(&path);
        self.child_changed(&parent_inode.path, name, Some(Self::listed_file()));
        self.touch_dir(&parent_inode.path);
        let inode = self.inodes.remember(
            parent,
            &path,
            attr,
            None,
            Instant::now() + self.config.metadata_ttl,
            true,
        );
        let fh = self.add_handle(Handle::Local {
            ino: inode.ino,
            dirty: arc,
            writable: true,
        });
        Ok((
            inode,
            Opened {
                fh,
                keep_cache: false,
            },
        ))
    }

    fn writable_handle(&self, fh: u64) -> FsResult<(Ino, SharedDirty)> {
        match self.handles.lock().get(&fh) {
            Some(Handle::Local {
                ino,
                dirty,
                writable: true,
            }) => Ok((*ino, dirty.clone())),
            Some(_) => Err(FsError::new(libc::EBADF, "not open for writing")),
            None => Err(FsError::new(libc::EBADF, "no such handle")),
        }
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let ctx = self.writer()?;
        let (ino, dirty_arc) = self.writable_handle(fh)?;
        let mut dirty = dirty_arc.lock().await;
        if offset + data.len() as u64 > 5 * 1024 * 1024 * 1024 * 1024 {
            return Err(FsError::new(libc::EFBIG, "beyond S3's 5 TiB object limit"));
        }
        let written = dirty.write(&ctx, offset, data).await?;
        if !dirty.unlinked {
            if let Some(inode) = self.inodes.get(ino) {
                self.publish(Some(ino), &inode.path, &dirty_arc, &dirty);
            }
        }
        Ok(written as u32)
    }

    /// Upload a dirty file and record the result. Called with its lock held.
    pub(super) async fn save(
        &self,
        ino: Option<Ino>,
        dirty_arc: &SharedDirty,
        dirty: &mut DirtyFile,
    ) -> FsResult<()> {
        let ctx = self.writer()?;
        let Some(out) = dirty.upload(&ctx).await? else {
            return Ok(());
        };
        let path = self.path_of(dirty.key());
        let attr = self.attr_of_dirty(dirty);
        // A listing of the new version shows these attributes, no HEAD.
        self.known
            .learn_file(dirty.key(), &out.etag, dirty.size, None, attr.clone());
        if let Some(ino) = ino {
            self.inodes.update(ino, |i| {
                i.attr = attr.clone();
                i.etag = Some(Arc::from(out.etag.as_str()));
                i.valid_until = Instant::now() + self.config.metadata_ttl;
            });
        }
        let (dir, name) = split_path(&path);
        self.child_changed(dir, name, Some(Self::listed_file()));
        if dirty.open_handles == 0 {
            self.drop_local(&path, dirty_arc, dirty);
        } else {
            self.publish(ino, &path, dirty_arc, dirty);
        }
        Ok(())
    }

    /// Forget a clean, closed dirty file.
    fn drop_local(&self, path: &str, dirty_arc: &SharedDirty, dirty: &DirtyFile) {
        let mut local = self.local_map();
        if local
            .get(path)
            .is_some_and(|l| Arc::ptr_eq(&l.dirty, dirty_arc))
        {
            local.remove(path);
        }
        drop(local);
        dirty.discard();
    }

    /// flush (every close): the data is in the bucket when this returns
    /// Ok; an upload failure is the caller's error. A file emptied or
    /// created and not written since waits for its last close (see
    /// `DirtyFile::awaiting_first_write`).
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        self.flush_or_sync(fh, false).await
    }

    /// fsync: as flush, and an empty file is stored too.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        self.flush_or_sync(fh, true).await
    }

    async fn flush_or_sync(&self, fh: u64, sync: bool) -> FsResult<()> {
        let (ino, dirty_arc) = match self.writable_handle(fh) {
            Ok(found) => found,
            Err(_) => return Ok(()), // read-only handles have nothing to flush
        };
        let mut dirty = dirty_arc.lock().await;
        if !sync && dirty.awaiting_first_write && dirty.size == 0 {
            return Ok(());
        }
        self.save(Some(ino), &dirty_arc, &mut dirty).await
    }

    pub async fn release(&self, fh: u64) {
        let Some(handle) = self.remove_handle(fh) else {
            return;
        };
        let Handle::Local {
            ino,
            dirty: dirty_arc,
            writable: true,
        } = handle
        else {
            return;
        };
        let mut dirty = dirty_arc.lock().await;
        dirty.open_handles = dirty.open_handles.saturating_sub(1);
        if dirty.open_handles > 0 {
            return;
        }
        let path = self.path_of(dirty.key());
        if dirty.unlinked {
            dirty.discard();
            return;
        }
        // Normally the close's flush already saved it; try once more.
        match self.save(Some(ino), &dirty_arc, &mut dirty).await {
            Ok(()) => self.drop_local(&path, &dirty_arc, &dirty),
            Err(e) if e.errno == libc::EEXIST => {
                // An O_EXCL file lost the race for its name to another
                // writer, whose file the name shows from now on. The bytes
                // written here stay on disk, and the log says where.
                tracing::error!(
                    "{path} was created elsewhere before this mount stored its O_EXCL create ({e}); what was written to it here is kept in {}",
                    dirty.staging_path().display()
                );
                let mut local = self.local_map();
                if local
                    .get(path.as_str())
                    .is_some_and(|l| Arc::ptr_eq(&l.dirty, &dirty_arc))
                {
                    local.remove(path.as_str());
                }
                drop(local);
                self.entry_changed(&path, Kind::File);
                self.inodes.update(ino, |i| i.valid_until = Instant::now());
            }
            Err(e) => tracing::error!(
                "{path} was closed with changes not in the bucket ({e}); they are kept in {}",
                dirty.staging_path().display()
            ),
        }
    }

    /// setattr: truncate, chmod, chown, utimens.
    pub async fn setattr(&self, ino: Ino, change: SetAttr, caller: Caller) -> FsResult<Inode> {
        let inode = self.getattr(ino).await?;
        self.refuse_virtual(&inode.path)?;
        if change.size.is_none()
            && change.mode.is_none()
            && change.uid.is_none()
            && change.gid.is_none()
            && change.mtime.is_none()
            && change.atime.is_none()
        {
            return Ok(inode);
        }
        let ctx = self.writer()?;
        // POSIX: only root may give a file away; the owner may change the group.
        if let Some(uid) = change.uid {
            if caller.uid != 0 && uid != inode.attr.uid {
                return Err(FsError::new(
                    libc::EPERM,
                    "only root may change a file's owner",
                ));
            }
        }
        if change.gid.is_some() && caller.uid != 0 && caller.uid != inode.attr.uid {
            return Err(FsError::new(
                libc::EPERM,
                "only the owner may change a file's group",
            ));
        }
        if change.size.is_some() && inode.attr.kind != Kind::File {
            return Err(FsError::new(
                if inode.attr.kind == Kind::Dir {
                    libc::EISDIR
                } else {
                    libc::EINVAL
                },
                "only regular files can be truncated",
            ));
        }
        let local = self.local_dirty(&inode.path);
        if inode.attr.kind == Kind::File && (local.is_some() || change.size.is_some()) {
            let dirty_arc = match local {
                Some(d) => d,
                None => self.dirty_for(&inode, change.size == Some(0)).await?,
            };
            let mut dirty = dirty_arc.lock().await;
            if let Some(size) = change.size {
                dirty.truncate(&ctx, size)?;
            }
            apply_metadata(&mut dirty.metadata, &change, libc::S_IFREG);
            if change.mode.is_some()
                || change.uid.is_some()
                || change.gid.is_some()
                || change.mtime.is_some()
                || change.atime.is_some()
            {
                dirty.metadata_changed();
            }
            dirty.needs_upload = true;
            self.publish(Some(ino), &inode.path, &dirty_arc, &dirty);
            if dirty.open_handles == 0 {
                // truncate(2) or chmod on a file nobody has open: save now.
                self.save(Some(ino), &dirty_arc, &mut dirty).await?;
            }
            drop(dirty);
            return self.inode(ino);
        }
        // Metadata only, on an object that is in the bucket.
        match inode.attr.kind {
            Kind::Dir => {
                let key = format!("{}/", self.key(&inode.path));
                self.known.forget(&key);
                if change.mtime.is_some() {
                    // A time set explicitly (cp -a, rsync, tar x set it
                    // after filling the directory) wins over the time of
                    // the last change made here.
                    self.dir_times.lock().pop(inode.path.as_ref());
                }
                let mut metadata = self.dir_metadata(&inode).await?;
                apply_metadata(&mut metadata, &change, libc::S_IFDIR);
                let options = PutOptions {
                    user_metadata: metadata,
                    ..Default::default()
                };
                self.store.put_object(&key, Bytes::new(), &options).await?;
            }
            _ => {
                let key = self.key(&inode.path);
                self.known.forget(&key);
                // A FIFO, socket or device node keeps its type: a changed
                // type makes the kernel fail every later call on the inode
                // with EIO.
                let type_bits = inode.attr.kind.type_bits();
                let restamp = |meta: &ObjectMeta| {
                    let mut metadata = meta.user_metadata.clone();
                    metadata
                        .entry("mode".into())
                        .or_insert_with(|| (type_bits | inode.attr.perm as u32).to_string());
                    apply_metadata(&mut metadata, &change, type_bits);
                    MetadataDirective::Replace(PutOptions {
                        content_type: meta.content_type.clone(),
                        user_metadata: metadata,
                        content_headers: meta.content_headers.clone(),
                        if_none_match_any: false,
                    })
                };
                if self.copy_current(&key, &key, restamp).await?.is_none() {
                    return Err(FsError::new(libc::ENOENT, "no longer in the bucket"));
                }
            }
        }
        self.entry_changed(&inode.path, inode.attr.kind);
        self.inodes.update(ino, |i| i.valid_until = Instant::now());
        self.getattr(ino).await
    }

    /// A directory's stored metadata: its marker's, or, for an implicit
    /// directory (no marker), the mode it shows.
    pub(super) async fn dir_metadata(&self, inode: &Inode) -> FsResult<BTreeMap<String, String>> {
        let marker = format!("{}/", self.key(&inode.path));
        match self.store.head_object(&marker, None).await {
            Ok(meta) => Ok(meta.user_metadata),
            Err(e) if e.is_not_found() => Ok(BTreeMap::from([(
                "mode".to_owned(),
                (libc::S_IFDIR | inode.attr.perm as u32).to_string(),
            )])),
            Err(e) => Err(e.into()),
        }
    }

    /// Copy the latest version of `from` to `to` server-side, pinned to the
    /// version a HEAD just saw, so that the size and metadata read are
    /// those of the bytes copied. Another writer replacing `from` between
    /// the two is a 412, and the pair is tried again. `None` when `from`
    /// does not exist; else the HEAD of what was copied.
    pub(super) async fn copy_current(
        &self,
        from: &str,
        to: &str,
        directive: impl Fn(&ObjectMeta) -> MetadataDirective,
    ) -> FsResult<Option<ObjectMeta>> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            let meta = match self.store.head_object(from, None).await {
                Ok(meta) => meta,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let source = CopySource::pinned(from, meta.version_id.clone(), &meta.etag);
            match self
                .store
                .copy(&source, to, meta.size, &directive(&meta))
                .await
            {
                Ok(_) => return Ok(Some(meta)),
                Err(e) if e.is_precondition_failed() && attempt < ATTEMPTS => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Copy `source` (a key, or one version of it) to `to`, the cheapest
    /// way for the price list (`ObjectStore::copy`).
    pub(super) async fn copy_object(
        &self,
        source: &CopySource,
        to: &str,
        size: u64,
        directive: MetadataDirective,
    ) -> FsResult<Copied> {
        Ok(self.store.copy(source, to, size, &directive).await?)
    }

    pub(crate) fn forget_missing(&self, path: &str) {
        self.negative.lock().pop(path);
    }

    /// A new object that stands for a node (directory marker, symlink,
    /// special file), put at once.
    async fn put_node(
        &self,
        parent: Ino,
        name: &str,
        key_suffix: &str,
        body: Bytes,
        metadata: BTreeMap<String, String>,
    ) -> FsResult<Inode> {
        self.writer()?;
        let parent_inode = self.inode(parent)?;
        let path = self.checked_child_path(&parent_inode, name)?;
        self.refuse_virtual(&path)?;
        if self.resolve(&parent_inode.path, name).await?.is_some()
            || self.local_attr(&path).is_some()
        {
            return Err(FsError::new(libc::EEXIST, "file exists"));
        }
        let key = format!("{}{key_suffix}", self.key(&path));
        if key.len() > KEY_MAX {
            // A directory's marker is its path and a `/`: one byte longer
            // than the path checked above.
            return Err(FsError::new(
                libc::ENAMETOOLONG,
                "path longer than the 1024-byte S3 key limit",
            ));
        }
        let size = body.len() as u64;
        let options = PutOptions {
            user_metadata: metadata.clone(),
            ..Default::default()
        };
        let out = self.store.put_object(&key, body, &options).await?;
        self.forget_missing(&path);
        let attr = if key_suffix == "/" {
            let attr = self
                .config
                .attrs
                .dir(Some((SystemTime::now(), Some(&metadata))));
            self.known.learn_dir(
                &key,
                attr.clone(),
                Instant::now() + self.config.metadata_ttl,
            );
            attr
        } else {
            let attr = self
                .config
                .attrs
                .object(size, SystemTime::now(), Some(&metadata));
            self.known
                .learn_file(&key, &out.etag, size, None, attr.clone());
            attr
        };
        let listed = if key_suffix == "/" {
            self.new_empty_dir(&path);
            Listed::Dir {
                marker_time: Some(SystemTime::now()),
            }
        } else {
            Self::listed_file()
        };
        self.child_changed(&parent_inode.path, name, Some(listed));
        self.touch_dir(&parent_inode.path);
        Ok(self.inodes.remember(
            parent,
            &path,
            attr,
            (key_suffix.is_empty()).then(|| Arc::from(out.etag.as_str())),
            Instant::now() + self.config.metadata_ttl,
            true,
        ))
    }

    pub async fn mkdir(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<Inode> {
        let metadata = self.new_metadata(libc::S_IFDIR | (mode & 0o7777), caller);
        self.put_node(parent, name, "/", Bytes::new(), metadata)
            .await
    }

    pub async fn symlink(
        &self,
        parent: Ino,
        name: &str,
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Inode> {
        if target.len() > 4096 {
            return Err(FsError::new(
                libc::ENAMETOOLONG,
                "symlink target longer than 4096 bytes",
            ));
        }
        let metadata = self.new_metadata(libc::S_IFLNK | 0o777, caller);
        self.put_node(parent, name, "", Bytes::copy_from_slice(target), metadata)
            .await
    }

    /// mknod: regular files become empty objects; FIFOs, sockets and
    /// device nodes are empty objects with their mode (and rdev), as s3fs
    /// stores them.
    pub async fn mknod(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Inode> {
        if Kind::from_mode(mode).is_none() {
            return Err(FsError::new(libc::EINVAL, "unknown file type"));
        }
        let mut metadata = self.new_metadata(mode, caller);
        if rdev != 0 {
            metadata.insert("rdev".into(), rdev.to_string());
        }
        self.put_node(parent, name, "", Bytes::new(), metadata)
            .await
    }

    pub async fn unlink(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.writer()?;
        let parent_inode = self.inode(parent)?;
        let path = self.checked_child_path(&parent_inode, name)?;
        self.refuse_virtual(&path)?;
        let local = self.local_map().remove(&path);
        // What it is, not its metadata: a listed file of certain kind is
        // deleted with no HEAD (`rm -r` after its listing).
        let remote = self
            .resolve_for(&parent_inode.path, name, Want::Kind)
            .await?;
        if local.is_none() && remote.is_none() {
            return Err(FsError::not_found());
        }
        if remote.as_ref().is_some_and(|r| r.attr.kind == Kind::Dir) && local.is_none() {
            return Err(FsError::new(libc::EISDIR, "is a directory"));
        }
        if let Some(local) = local {
            // Open handles keep reading and writing it; it is never saved.
            let mut dirty = local.dirty.lock().await;
            dirty.unlinked = true;
            if dirty.open_handles == 0 {
                dirty.discard();
            }
        }
        if remote.is_some() {
            self.pin_open_readers(&path).await;
            self.store.delete_object(&self.key(&path), None).await?;
            self.known.forget(&self.key(&path));
        }
        self.inodes.unlinked(&path);
        self.child_changed(&parent_inode.path, name, None);
        self.touch_dir(&parent_inode.path);
        self.keep_dir(&parent_inode.path);
        self.remember_missing(&path);
        Ok(())
    }

    /// Before a key is deleted (unlink, rename): files open for reading
    /// on it keep reading the same data. In a versioned bucket (B2 always
    /// is) the deleted version stays, so their readers switch to reading it
    /// by version id. In an unversioned bucket the data is gone; reads of
    /// blocks not yet cached will fail, and this is logged.
    pub(super) async fn pin_open_readers(&self, path: &str) {
        let Some(ino) = self.inodes.find(path) else {
            return;
        };
        let open: Vec<(u64, Arc<crate::read::Reader>)> = self
            .handles
            .lock()
            .iter()
            .filter_map(|(fh, h)| match h {
                Handle::File { ino: i, reader }
                    if *i == ino && reader.object().version_id.is_none() =>
                {
                    Some((*fh, reader.clone()))
                }
                _ => None,
            })
            .collect();
        if open.is_empty() {
            return;
        }
        let key = self.key(path);
        let version = match self.store.head_object(&key, None).await {
            Ok(meta) => meta.version_id.map(|v| (v, meta.etag)),
            Err(e) => {
                tracing::warn!("{path} is open for reading and about to go: {e}");
                return;
            }
        };
        let Some((version_id, etag)) = version else {
            tracing::warn!(
                "{path} is open for reading and the bucket keeps no versions: reads of it may fail"
            );
            return;
        };
        let mut handles = self.handles.lock();
        for (fh, reader) in open {
            if *reader.object().etag != *etag {
                continue; // the reader has an older version than the one deleted
            }
            let mut object = reader.object().clone();
            object.version_id = Some(version_id.clone());
            handles.insert(
                fh,
                Handle::File {
                    ino,
                    reader: Arc::new(crate::read::Reader::new(self.read_ctx.clone(), object)),
                },
            );
        }
    }

    /// Whether a directory has any child, in the bucket or local. A
    /// listing of it less than `metadata_ttl` old (kept true to this
    /// mount's changes since) that shows it empty answers: `rm -r` has
    /// just listed it and removed what it showed. Anything else is asked
    /// with a listing of two keys, so that `ENOTEMPTY` is never told from
    /// a cache (a child removed elsewhere meanwhile; moto, and perhaps
    /// other servers, list a directory whose keys are all deleted in a
    /// versioned bucket as a common prefix, but not its keys).
    pub(super) async fn dir_is_empty(&self, path: &str) -> FsResult<bool> {
        let remote_child = match self.cached_listing(path) {
            Some(listing) if listing.entries.is_empty() => false,
            _ => {
                let prefix = format!("{}/", self.key(path));
                let page = self
                    .store
                    .list_objects(&crate::s3::ListRequest {
                        prefix: prefix.clone(),
                        max_keys: Some(2),
                        ..Default::default()
                    })
                    .await?;
                page.objects.iter().any(|o| o.key != prefix) || !page.common_prefixes.is_empty()
            }
        };
        let local_child = self
            .local_map()
            .keys()
            .any(|k| k.starts_with(&format!("{path}/")));
        Ok(!remote_child && !local_child)
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.writer()?;
        let parent_inode = self.inode(parent)?;
        let path = self.checked_child_path(&parent_inode, name)?;
        self.refuse_virtual(&path)?;
        match self
            .resolve_for(&parent_inode.path, name, Want::Kind)
            .await?
        {
            // A directory with no marker exists only while keys are below
            // it. One this mount emptied still resolves (`emptied_here`);
            // one emptied by another client is gone from the bucket, yet
            // the kernel still knows it as a directory: its rmdir, the
            // directory's last step, succeeds rather than fail `rm -r`.
            None if self.known_dir(&path) => {}
            None => return Err(FsError::not_found()),
            Some(r) if r.attr.kind != Kind::Dir => {
                return Err(FsError::new(libc::ENOTDIR, "not a directory"))
            }
            Some(_) => {}
        }
        if !self.dir_is_empty(&path).await? {
            return Err(FsError::new(libc::ENOTEMPTY, "directory not empty"));
        }
        self.store
            .delete_object(&format!("{}/", self.key(&path)), None)
            .await?;
        self.child_changed(&parent_inode.path, name, None);
        self.invalidate_listing(&path);
        self.touch_dir(&parent_inode.path);
        self.remember_missing(&path);
        // Gone, even while the kernel still holds its inode: a new mkdir
        // of the name is a new directory.
        self.inodes.unlinked(&path);
        self.unkeep_dir(&path);
        // Its parent may be empty now, as after an unlink.
        self.keep_dir(&parent_inode.path);
        Ok(())
    }

    /// copy_file_range: a whole file copied into a new, empty file is a
    /// server-side copy (CopyObject; multipart copy above 5 GiB), so `cp`
    /// inside the mount moves no data through this machine. Anything else
    /// is EOPNOTSUPP, on which the kernel copies through read and write.
    pub async fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        let unsupported = || {
            FsError::new(
                libc::EOPNOTSUPP,
                "only whole-file copies into an empty file are server-side",
            )
        };
        let source = match self.handles.lock().get(&fh_in) {
            Some(Handle::File { reader, .. }) => reader.object().clone(),
            _ => return Err(unsupported()),
        };
        if off_in >= source.size {
            return Ok(0);
        }
        let ctx = self.writer()?;
        let (ino, dirty_arc) = self.writable_handle(fh_out)?;
        let mut dirty = dirty_arc.lock().await;
        // The reply counts bytes in 32 bits.
        if off_in != 0
            || off_out != 0
            || len < source.size
            || source.size > u32::MAX as u64
            || dirty.size != 0
            || dirty.unlinked
        {
            return Err(unsupported());
        }
        let metadata = dirty.metadata.clone();
        let options = PutOptions {
            user_metadata: metadata.clone(),
            ..Default::default()
        };
        let to = dirty.key().to_owned();
        // The very version the reader has open, not whatever is latest:
        // so the copy has its size, and the metadata given here.
        let from = CopySource::pinned(
            source.key.to_string(),
            source.version_id.clone(),
            &source.etag,
        );
        let copied = self
            .copy_object(&from, &to, source.size, MetadataDirective::Replace(options))
            .await?;
        // Known from here on, with no HEAD: a later lookup or listing of
        // the copy (`cp -r` stats what it made once the attributes expire)
        // needs no listing to tell it is a file, and a listing showing this
        // version no HEAD. (An upload's answer has no LastModified: such a
        // version is known by ETag and size, as this mount's own uploads.)
        let shown_time = copied.last_modified.unwrap_or_else(SystemTime::now);
        let attr = self
            .config
            .attrs
            .object(source.size, shown_time, Some(&metadata));
        self.known
            .learn_file(&to, &copied.etag, source.size, copied.last_modified, attr);
        dirty
            .adopt(
                &ctx,
                BaseObject {
                    etag: copied.etag.clone(),
                    size: source.size,
                    version_id: copied.version_id.clone(),
                },
            )
            .await?;
        let path = self.path_of(&to);
        self.publish(Some(ino), &path, &dirty_arc, &dirty);
        self.inodes
            .update(ino, |i| i.etag = Some(Arc::from(copied.etag.as_str())));
        self.entry_changed(&path, Kind::File);
        Ok(source.size)
    }

    /// Save every dirty file (at unmount).
    pub async fn flush_all(&self) {
        let all: Vec<(String, SharedDirty)> = self
            .local_map()
            .iter()
            .map(|(p, l)| (p.clone(), l.dirty.clone()))
            .collect();
        for (path, dirty_arc) in all {
            let mut dirty = dirty_arc.lock().await;
            if let Err(e) = self
                .save(self.inodes.find(&path), &dirty_arc, &mut dirty)
                .await
            {
                tracing::error!(
                    "{path}: not saved at unmount ({e}); data kept in {}",
                    dirty.staging_path().display()
                );
            }
        }
    }
}

/// Fold a setattr's changes into s3fs metadata.
fn apply_metadata(metadata: &mut BTreeMap<String, String>, change: &SetAttr, type_bits: u32) {
    if let Some(mode) = change.mode {
        metadata.insert("mode".into(), (type_bits | (mode & 0o7777)).to_string());
    }
    if let Some(uid) = change.uid {
        metadata.insert("uid".into(), uid.to_string());
    }
    if let Some(gid) = change.gid {
        metadata.insert("gid".into(), gid.to_string());
    }
    if let Some(mtime) = change.mtime {
        metadata.insert("mtime".into(), mtime_value(mtime));
    }
    if let Some(atime) = change.atime {
        metadata.insert("atime".into(), mtime_value(atime));
    }
    metadata.insert("ctime".into(), mtime_value(SystemTime::now()));
}
