//! Directory handles: opendir takes a snapshot of the listing, so that
//! readdir offsets stay valid however the directory changes meanwhile.

use std::sync::Arc;
use std::time::Instant;

use super::attr::{Attr, Kind};
use super::error::{FsError, FsResult};
use super::inode::{child_path, Ino, Inode};
use super::{Fs, Handle};

/// One entry of a directory snapshot.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
    pub etag: Option<Arc<str>>,
}

/// A directory as opendir saw it: `.`, `..`, then the children by name.
#[derive(Debug)]
pub struct DirSnapshot {
    pub dir: Ino,
    pub parent: Ino,
    pub path: Arc<str>,
    pub entries: Vec<DirEntry>,
}

impl Fs {
    pub async fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let inode = self.getattr(ino).await?;
        if inode.attr.kind != Kind::Dir {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        if self.versions_enabled() && super::versions::is_virtual(&inode.path) {
            let entries = self
                .versions_entries(&inode)
                .await?
                .into_iter()
                .map(|(name, attr)| DirEntry {
                    name,
                    attr,
                    etag: None,
                })
                .collect();
            let snapshot = DirSnapshot {
                dir: inode.ino,
                parent: inode.parent,
                path: inode.path.clone(),
                entries,
            };
            return Ok(self.add_handle(Handle::Dir(Arc::new(snapshot))));
        }
        // A new opendir lists afresh: `ls` after a change made elsewhere
        // shows it, as close-to-open consistency would.
        self.invalidate_listing(&inode.path);
        let listing = self.list_dir(&inode.path).await?;
        let mut entries: std::collections::BTreeMap<String, DirEntry> = listing
            .entries
            .iter()
            .map(|(name, listed)| {
                let (mut attr, etag) = self.listed_attr(listed);
                self.dir_time(&child_path(&inode.path, name), &mut attr);
                (
                    name.clone(),
                    DirEntry {
                        name: name.clone(),
                        attr,
                        etag,
                    },
                )
            })
            .collect();
        // Files created or changed here and not saved yet are shown as
        // they are locally.
        let mut extra = self.local_children(&inode.path);
        if inode.path.is_empty() && self.config.versions == super::VersionsMode::Visible {
            extra.push((
                super::versions::VERSIONS_DIR.to_owned(),
                self.versions_root_attr(),
            ));
        }
        for (name, attr) in extra {
            let entry = DirEntry {
                name: name.clone(),
                attr,
                etag: None,
            };
            entries.insert(name, entry);
        }
        let entries = entries.into_values().collect();
        let snapshot = DirSnapshot {
            dir: inode.ino,
            parent: inode.parent,
            path: inode.path.clone(),
            entries,
        };
        Ok(self.add_handle(Handle::Dir(Arc::new(snapshot))))
    }

    pub fn dir_snapshot(&self, fh: u64) -> FsResult<Arc<DirSnapshot>> {
        match self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
        {
            Some(Handle::Dir(snapshot)) => Ok(snapshot.clone()),
            _ => Err(FsError::new(libc::EBADF, "not an open directory")),
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.remove_handle(fh);
    }

    /// The inode number `readdir` shows for an entry, without counting a
    /// lookup (plain readdir does not give the kernel a reference).
    pub fn entry_ino(&self, snapshot: &DirSnapshot, entry: &DirEntry) -> Ino {
        let path = child_path(&snapshot.path, &entry.name);
        self.inodes.peek_ino(&path)
    }

    /// Register an entry that readdirplus hands to the kernel (which counts
    /// it as a lookup). If the reply turns out to be full, the caller gives
    /// the reference back with `forget`.
    pub fn entry_inode(&self, snapshot: &DirSnapshot, entry: &DirEntry) -> Inode {
        let path = child_path(&snapshot.path, &entry.name);
        self.inodes.remember(
            snapshot.dir,
            &path,
            entry.attr.clone(),
            entry.etag.clone(),
            Instant::now() + self.config.metadata_ttl,
            true,
        )
    }
}
