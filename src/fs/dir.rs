//! Directory handles: opendir takes a snapshot of the listing, so that
//! readdir offsets stay valid however the directory changes meanwhile.
//!
//! The snapshot fills as the listing's pages arrive: opendir returns once
//! the first page is in, and readdir hands out entries as they come, waiting
//! only when it has caught up. `ls -l` of a large directory then works
//! through the first thousand entries while the server is still listing the
//! rest, instead of after it. Entries keep the server's order (names sorted
//! by key), not one global sort: readdir promises no order, only stable
//! offsets, which an append-only snapshot gives.
//!
//! Two rules of the complete listing hold for the streamed one. A file and
//! a directory of the same name (`x` and `x/...`) show the directory only:
//! the key `x` always lists before the prefix `x/`, so a file is held back
//! until the listing has gone past where its twin would be. And files with
//! unsaved local changes are shown as they are locally, first.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;

use super::attr::{Attr, Kind};
use super::error::{FsError, FsResult};
use super::inode::{child_path, Ino, Inode};
use super::lookup::{DirPage, DirPages, Listed};
use super::{Fs, Handle};

/// One entry of a directory snapshot.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
    pub etag: Option<Arc<str>>,
}

/// How far a snapshot has filled.
#[derive(Debug, Clone, Default)]
struct Fill {
    len: usize,
    done: bool,
    failed: Option<FsError>,
}

/// A directory as opendir saw it: `.`, `..`, then the children.
pub struct DirSnapshot {
    pub dir: Ino,
    pub parent: Ino,
    pub path: Arc<str>,
    entries: Mutex<Vec<DirEntry>>,
    fill: watch::Sender<Fill>,
    /// The task fetching the remaining pages, stopped when the handle is
    /// released early.
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for DirSnapshot {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

/// Entries handed to one readdir call at most; its reply buffer holds far
/// fewer anyway.
const BATCH: usize = 512;

/// HEADs in flight for one directory listing's entries. Against B2's
/// ~50 ms round trips, 64 at once list ~1,000 unknown files a second.
const READDIR_HEADS: usize = 64;

impl DirSnapshot {
    fn new(inode: &Inode) -> Self {
        DirSnapshot {
            dir: inode.ino,
            parent: inode.parent,
            path: inode.path.clone(),
            entries: Mutex::new(Vec::new()),
            fill: watch::channel(Fill::default()).0,
            task: Mutex::new(None),
        }
    }

    fn push(&self, new: impl IntoIterator<Item = DirEntry>) {
        let mut entries = self.entries.lock();
        entries.extend(new);
        let len = entries.len();
        drop(entries);
        self.fill.send_modify(|f| f.len = len);
    }

    fn finish(&self, result: FsResult<()>) {
        self.fill.send_modify(|f| {
            f.done = true;
            f.failed = result.err();
        });
    }

    /// Entries from index `from` on, if the snapshot can answer now:
    /// `Some(empty)` at the end, `None` if they are still being listed.
    pub fn ready(&self, from: usize) -> Option<FsResult<Vec<DirEntry>>> {
        let fill = self.fill.borrow().clone();
        if from < fill.len {
            let entries = self.entries.lock();
            let end = entries.len().min(from + BATCH);
            return Some(Ok(entries[from..end].to_vec()));
        }
        if fill.done {
            return Some(match fill.failed {
                Some(e) => Err(e),
                None => Ok(Vec::new()),
            });
        }
        None
    }

    /// Entries from index `from` on, waiting for the listing if needed.
    pub async fn entries_from(&self, from: usize) -> FsResult<Vec<DirEntry>> {
        let mut fill = self.fill.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = fill.wait_for(|f| f.done || f.len > from).await;
        self.ready(from).unwrap_or_else(|| Ok(Vec::new()))
    }
}

/// Turns listing pages into snapshot entries, holding back files whose
/// directory twin may still come.
struct Filler {
    dir_path: String,
    /// Names already shown (local files, and every name listed so far:
    /// a server whose listing changes between pages may repeat some).
    shown: HashSet<String>,
    /// Files waiting until the listing passes their `name/` prefix.
    held: BTreeMap<String, Listed>,
    /// Everything listed, for the listing cache once complete.
    all: BTreeMap<String, Listed>,
    /// `Fs::listing_epoch` when the listing began.
    epoch: u64,
}

impl Fs {
    pub async fn opendir(self: &Arc<Self>, ino: Ino) -> FsResult<u64> {
        let inode = self.getattr(ino).await?;
        if inode.attr.kind != Kind::Dir {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        let snapshot = Arc::new(DirSnapshot::new(&inode));
        if self.versions_enabled() && super::versions::is_virtual(&inode.path) {
            let entries = self.versions_entries(&inode).await?;
            snapshot.push(entries.into_iter().map(|(name, attr)| DirEntry {
                name,
                attr,
                etag: None,
            }));
            snapshot.finish(Ok(()));
            return Ok(self.add_handle(Handle::Dir(snapshot)));
        }
        // A new opendir lists afresh: `ls` after a change made elsewhere
        // shows it, as close-to-open consistency would.
        self.invalidate_listing(&inode.path);
        let epoch = self.listing_epoch();
        // Files created or changed here and not saved yet are shown as
        // they are locally.
        let mut local = self.local_children(&inode.path);
        if inode.path.is_empty() && self.config.versions == super::VersionsMode::Visible {
            local.push((
                super::versions::VERSIONS_DIR.to_owned(),
                self.versions_root_attr(),
            ));
        }
        local.sort_by(|a, b| a.0.cmp(&b.0));
        let mut filler = Filler {
            dir_path: inode.path.to_string(),
            shown: local.iter().map(|(name, _)| name.clone()).collect(),
            held: BTreeMap::new(),
            all: BTreeMap::new(),
            epoch,
        };
        snapshot.push(local.into_iter().map(|(name, attr)| DirEntry {
            name,
            attr,
            etag: None,
        }));
        // The first page before opendir answers, so that a directory that
        // cannot be listed fails here, where `ls` reports it.
        let mut pages = self.dir_pages(&inode.path);
        let first = self.next_dir_page(&mut pages).await?;
        let mut listed = self.fill_from(&mut filler, first, &pages);
        // Each page's entries have their attributes made true (HEADs of
        // what this mount does not know) while the next page is listed.
        let fs = self.clone();
        let task_snapshot = Arc::downgrade(&snapshot);
        let task = tokio::spawn(async move {
            loop {
                let more = !pages.done;
                let (page, entries) = tokio::join!(
                    async {
                        match more {
                            true => fs.next_dir_page(&mut pages).await,
                            false => Ok(None),
                        }
                    },
                    fs.complete_entries(&filler.dir_path, std::mem::take(&mut listed))
                );
                // Nobody reads the listing any more: stop.
                let Some(snapshot) = task_snapshot.upgrade() else {
                    return;
                };
                match entries {
                    Ok(entries) => snapshot.push(entries),
                    Err(e) => return fs.finish_filling(&snapshot, filler, Err(e)),
                }
                match page {
                    Ok(page) => listed = fs.fill_from(&mut filler, page, &pages),
                    Err(e) => return fs.finish_filling(&snapshot, filler, Err(e)),
                }
                if !more {
                    return fs.finish_filling(&snapshot, filler, Ok(()));
                }
            }
        });
        *snapshot.task.lock() = Some(task.abort_handle());
        Ok(self.add_handle(Handle::Dir(snapshot)))
    }

    /// A page's entries, in order: directories at once, files once the
    /// listing is past where their directory twin would be.
    fn fill_from(
        &self,
        filler: &mut Filler,
        page: Option<DirPage>,
        pages: &DirPages,
    ) -> Vec<(String, Listed)> {
        let Some(page) = page else {
            return Vec::new();
        };
        let hidden = self.hidden_by_versions(&filler.dir_path);
        let mut out = Vec::new();
        for (name, listed) in page.files {
            filler.held.insert(name, listed);
        }
        for name in page.dirs {
            if filler.held.remove(&name).is_some() {
                self.shadowed_by_dir(&pages.prefix, &name);
            }
            let listed = Listed::Dir { marker_time: None };
            self.admit(filler, &mut out, name, listed, hidden, &pages.prefix);
        }
        // A file `name` is safe once the listing reached `name/`.
        let safe: Vec<String> = filler
            .held
            .keys()
            .filter(|name| pages.done || format!("{}{name}/", pages.prefix) <= page.last_key)
            .cloned()
            .collect();
        for name in safe {
            if let Some(listed) = filler.held.remove(&name) {
                self.admit(filler, &mut out, name, listed, hidden, &pages.prefix);
            }
        }
        out
    }

    /// One listed child: remembered for the cache, shown unless a local
    /// entry, the versions view or an earlier page has its name.
    fn admit(
        &self,
        filler: &mut Filler,
        out: &mut Vec<(String, Listed)>,
        name: String,
        listed: Listed,
        hidden: Option<&str>,
        prefix: &str,
    ) {
        if hidden == Some(name.as_str()) {
            self.taken_by_versions(prefix);
            return;
        }
        if filler.shown.insert(name.clone()) {
            out.push((name.clone(), listed.clone()));
        }
        filler.all.insert(name, listed);
    }

    /// Listed entries with attributes as true as a `stat` of each (see
    /// `listed_resolved`), asked for many at once, in listing order. A
    /// file deleted since it was listed is left out.
    async fn complete_entries(
        &self,
        dir_path: &str,
        listed: Vec<(String, Listed)>,
    ) -> FsResult<Vec<DirEntry>> {
        let entries = futures::stream::iter(listed)
            .map(|(name, listed)| async move {
                let path = child_path(dir_path, &name);
                let resolved = self.listed_resolved(&path, &listed).await?;
                Ok::<_, FsError>(resolved.map(|mut r| {
                    self.dir_time(&path, &mut r.attr);
                    DirEntry {
                        name,
                        attr: r.attr,
                        etag: r.etag,
                    }
                }))
            })
            .buffered(READDIR_HEADS)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(entries.into_iter().flatten().collect())
    }

    /// The listing ended (or failed): the snapshot is complete, and a
    /// complete listing answers lookups in the directory for a while.
    fn finish_filling(&self, snapshot: &DirSnapshot, filler: Filler, result: FsResult<()>) {
        if result.is_ok() {
            self.cache_listing_since(&filler.dir_path, filler.all, false, filler.epoch);
        }
        snapshot.finish(result);
    }

    pub fn dir_snapshot(&self, fh: u64) -> FsResult<Arc<DirSnapshot>> {
        match self.handles.lock().get(&fh) {
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
