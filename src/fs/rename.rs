//! rename(2): of a file (its unsaved content saved first, then a copy
//! pinned to the version HEADed, then the delete), and of a directory
//! (every key below copied, then the old ones deleted, journaled so that
//! the next mount finishes a move this one died in). Not atomic for
//! directories; see SEMANTICS.md.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::attr::Kind;
use super::error::{FsError, FsResult};
use super::inode::Ino;
use super::{Fs, LocalFile, SharedDirty};
use crate::s3::{CopySource, MetadataDirective, ObjectIdentifier, PutOptions};

/// Objects copied at once by a directory rename.
const RENAME_CONCURRENCY: usize = 16;

impl Fs {
    /// rename. Files: saved if dirty, then CopyObject and DeleteObject.
    /// Directories: every key below is copied, then the old keys deleted;
    /// this is not atomic (see SEMANTICS.md).
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        noreplace: bool,
    ) -> FsResult<()> {
        self.writer()?;
        let from_dir = self.inode(parent)?;
        let to_dir = self.inode(new_parent)?;
        let from = self.checked_child_path(&from_dir, name)?;
        let to = self.checked_child_path(&to_dir, new_name)?;
        self.refuse_virtual(&from)?;
        self.refuse_virtual(&to)?;
        if from == to {
            return Ok(());
        }
        let source = match self.local_attr(&from) {
            Some(attr) => attr,
            None => {
                self.resolve(&from_dir.path, name)
                    .await?
                    .ok_or_else(FsError::not_found)?
                    .attr
            }
        };
        if source.kind == Kind::Dir && to.starts_with(&format!("{from}/")) {
            return Err(FsError::new(
                libc::EINVAL,
                "cannot move a directory into itself",
            ));
        }
        let target = match self.local_attr(&to) {
            Some(attr) => Some(attr),
            None => self.resolve(&to_dir.path, new_name).await?.map(|r| r.attr),
        };
        if let Some(target) = &target {
            if noreplace {
                return Err(FsError::new(
                    libc::EEXIST,
                    "target exists (RENAME_NOREPLACE)",
                ));
            }
            match (source.kind == Kind::Dir, target.kind == Kind::Dir) {
                (false, true) => return Err(FsError::new(libc::EISDIR, "target is a directory")),
                (true, false) => {
                    return Err(FsError::new(libc::ENOTDIR, "target is not a directory"))
                }
                (true, true) if !self.dir_is_empty(&to).await? => {
                    return Err(FsError::new(libc::ENOTEMPTY, "target directory not empty"))
                }
                _ => {}
            }
        }
        if source.kind == Kind::Dir {
            self.rename_dir(&from, &to).await?;
            self.unkeep_dir(&from);
        } else {
            self.rename_file(&from, &to).await?;
            self.keep_dir(&from_dir.path);
        }
        self.inodes.rename(&from, &to, new_parent);
        for dir in [&from_dir.path, &to_dir.path] {
            self.invalidate_listing(dir);
            self.touch_dir(dir);
        }
        self.invalidate_listing(&from);
        self.invalidate_listing(&to);
        self.forget_missing(&to);
        self.remember_missing(&from);
        Ok(())
    }

    async fn rename_file(&self, from: &str, to: &str) -> FsResult<()> {
        let (from_key, to_key) = (self.key(from), self.key(to));
        // Unsaved content moves with the name: save it under the old key
        // first so the copy carries it, then point the dirty state at the
        // new key.
        let local = self.local_map().remove(from);
        if let Some(local) = &local {
            let mut dirty = local.dirty.lock().await;
            let ino = self.inodes.find(from);
            self.save(ino, &local.dirty, &mut dirty)
                .await
                .inspect_err(|_| {
                    // Put it back: nothing moved.
                    self.local_map().insert(
                        from.to_owned(),
                        LocalFile {
                            dirty: local.dirty.clone(),
                            attr: local.attr.clone(),
                        },
                    );
                })?;
            dirty.set_key(to_key.clone());
        }
        self.pin_open_readers(from).await;
        let source = self
            .copy_current(&from_key, &to_key, |_| MetadataDirective::Copy)
            .await?;
        if source.is_none() && local.is_none() {
            return Err(FsError::new(libc::ENOENT, "no longer in the bucket"));
        }
        let size = source.as_ref().map(|meta| meta.size);
        if let Some(meta) = &source {
            self.store.delete_object(&from_key, None).await?;
            self.known.forget(&from_key);
            // The copy keeps the metadata; a one-part copy keeps the ETag
            // too, and a listing that shows it needs no HEAD (one that
            // shows another ETag asks).
            let attr = self.attr_of_head(meta);
            self.known
                .learn_file(&to_key, &meta.etag, meta.size, None, attr);
        }
        if let Some(local) = local {
            let mut dirty = local.dirty.lock().await;
            // Saving it re-published it under the old name: that name is gone.
            {
                let mut map = self.local_map();
                if map
                    .get(from)
                    .is_some_and(|l| Arc::ptr_eq(&l.dirty, &local.dirty))
                {
                    map.remove(from);
                }
            }
            if size.is_some() {
                // A copy may carry a new ETag (a multipart object's copy is
                // a single part): later partial uploads read from it.
                let copied = self.store.head_object(&to_key, None).await?;
                dirty.rebase(copied.etag, copied.version_id);
            }
            if dirty.open_handles > 0 {
                self.local_map().insert(
                    to.to_owned(),
                    LocalFile {
                        dirty: local.dirty.clone(),
                        attr: local.attr.clone(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Move every key below `from_prefix` to below `to_prefix`: all copies
    /// first (so a failure leaves the old tree whole), then the deletes.
    /// Running it again after an interruption finishes the move.
    pub(crate) async fn move_prefix(&self, from_prefix: &str, to_prefix: &str) -> FsResult<()> {
        let (from, to) = (from_prefix, to_prefix);
        let listing = self.store.list_all(from_prefix, None).await?;
        tracing::info!("moving {from} to {to}: {} objects", listing.objects.len());
        let jobs: Vec<(String, String, u64)> = listing
            .objects
            .iter()
            .map(|o| {
                (
                    o.key.clone(),
                    format!("{to_prefix}{}", &o.key[from_prefix.len()..]),
                    o.size,
                )
            })
            .collect();
        futures::stream::iter(jobs)
            .map(|(old_key, new_key, size)| async move {
                self.copy_object(&CopySource::latest(old_key.as_str()), &new_key, size, MetadataDirective::Copy).await
            })
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .inspect_err(|e| {
                tracing::error!("moving {from} to {to} stopped while copying ({e}): {from} is complete; remove the partial copy at {to}, or retry")
            })?;
        let old: Vec<ObjectIdentifier> = listing
            .objects
            .iter()
            .map(|o| ObjectIdentifier {
                key: o.key.clone(),
                version_id: None,
            })
            .collect();
        let failures = self.store.delete_objects(&old).await.inspect_err(|e| {
            tracing::error!("moving {from} to {to}: copied, but deleting the old keys failed ({e}); both copies exist")
        })?;
        if let Some(first) = failures.first() {
            return Err(FsError::new(
                libc::EIO,
                format!(
                    "moving {from} to {to}: {} old keys could not be deleted (first: {} {})",
                    failures.len(),
                    first.key,
                    first.code
                ),
            ));
        }
        // An implicit directory whose listing was empty still needs to exist
        // at the new name.
        if listing.objects.is_empty() {
            self.store
                .put_object(to_prefix, Bytes::new(), &PutOptions::default())
                .await?;
        }
        Ok(())
    }

    async fn rename_dir(&self, from: &str, to: &str) -> FsResult<()> {
        // Unsaved files inside are saved first, so the copy carries them.
        let inside: Vec<(String, SharedDirty)> = self
            .local_map()
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("{from}/")))
            .map(|(p, l)| (p.clone(), l.dirty.clone()))
            .collect();
        for (path, dirty_arc) in &inside {
            let mut dirty = dirty_arc.lock().await;
            self.save(self.inodes.find(path), dirty_arc, &mut dirty)
                .await?;
        }
        let from_prefix = format!("{}/", self.key(from));
        let to_prefix = format!("{}/", self.key(to));
        // Journaled: if this mount dies halfway, the next one finishes it.
        let journal = self.writer()?.journal.clone();
        journal.rename_started(&from_prefix, &to_prefix);
        self.move_prefix(&from_prefix, &to_prefix).await?;
        journal.rename_ended(&from_prefix, &to_prefix);
        // Files still open inside move with the directory: later writes go
        // to their new keys.
        for (path, dirty_arc) in inside {
            let new_path = format!("{to}{}", &path[from.len()..]);
            let mut dirty = dirty_arc.lock().await;
            dirty.set_key(self.key(&new_path));
            if let Ok(copied) = self.store.head_object(dirty.key(), None).await {
                dirty.rebase(copied.etag, copied.version_id);
            }
            let mut map = self.local_map();
            if let Some(local) = map.remove(&path) {
                if dirty.open_handles > 0 && !dirty.unlinked {
                    map.insert(new_path, local);
                }
            }
        }
        Ok(())
    }
}
