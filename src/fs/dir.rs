//! Directory handles: the first readdir takes a snapshot of the listing,
//! so that readdir offsets stay valid however the directory changes
//! meanwhile.
//!
//! The snapshot fills as the listing's pages arrive: the first readdir
//! returns once the first page is in (opendir lists nothing, see
//! `Fs::opendir`), and readdir hands out entries as they come, waiting
//! only when it has caught up. `ls -l` of a large directory then works
//! through the first thousand entries while the server is still listing the
//! rest, instead of after it. Entries keep the server's order (names sorted
//! by key), not one global sort: readdir promises no order, only stable
//! offsets, which an append-only snapshot gives.
//!
//! A snapshot holds only what the kernel has not read yet: entries before
//! the offset it asks for are let go, and the listing waits while it is
//! `AHEAD` entries past the reader. So `ls -l` of a million objects holds a
//! few thousand entries at a time, not a million. A reader that goes back
//! (`rewinddir`, `seekdir` to an earlier offset) gets a fresh listing of
//! the directory from that offset on, as after a new opendir.
//!
//! Two rules of the complete listing hold for the streamed one. A file and
//! a directory of the same name (`x` and `x/...`) show the directory only:
//! the key `x` always lists before the prefix `x/`, so a file is held back
//! until the listing has gone past where its twin would be. And files with
//! unsaved local changes are shown as they are locally, first.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;

use super::attr::{Attr, Kind};
use super::error::{FsError, FsResult};
use super::inode::{child_path, Ino, Inode};
use super::lookup::{DirPage, DirPages, Listed, Listing, Want};
use super::{Fs, Handle, LISTING_CACHE_ENTRIES};

/// One entry of a directory snapshot.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
    pub etag: Option<Arc<str>>,
    /// The attributes are the listing's alone (`Resolved::listed_only`).
    pub listed_only: bool,
}

impl DirEntry {
    /// An entry whose attributes this mount has (a file with unsaved
    /// changes, a version in the versions view).
    fn known(name: String, attr: Attr) -> Self {
        DirEntry {
            name,
            attr,
            etag: None,
            listed_only: false,
        }
    }
}

/// How far a snapshot has filled.
#[derive(Debug, Clone, Default)]
struct Fill {
    len: usize,
    done: bool,
    failed: Option<FsError>,
}

/// The part of a snapshot still held: entries from `total - entries.len()`
/// (the first one not yet let go) to `total` (all pushed so far).
#[derive(Default)]
struct Window {
    total: usize,
    entries: VecDeque<DirEntry>,
}

impl Window {
    fn base(&self) -> usize {
        self.total - self.entries.len()
    }
}

/// A directory as opendir saw it: `.`, `..`, then the children.
pub struct DirSnapshot {
    window: Mutex<Window>,
    fill: watch::Sender<Fill>,
    /// The first entry the reader may still ask for: what is before it is
    /// let go, and the listing runs at most `AHEAD` entries past it.
    reader_at: watch::Sender<usize>,
    /// The task fetching the remaining pages, stopped when the handle is
    /// released early.
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// The directory as opendir found it (its inode, parent and path),
    /// listed at the first readdir.
    opened: Inode,
    /// Set once the listing has begun (its first page is in).
    begun: tokio::sync::OnceCell<()>,
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

/// The largest listing a readdir takes from the cache (one page) rather
/// than listing again: a snapshot of it is held whole.
const REUSED_LISTING: usize = 1000;

/// Entries a listing may hold past the reader before it waits for it:
/// eight pages.
const AHEAD: usize = 8 * 1000;

/// HEADs in flight for one directory listing's entries (here, and in
/// `Fs::head_batch` for those handed out unverified). Against B2's ~50 ms
/// round trips, 64 at once list ~1,000 unknown files a second.
pub(crate) const READDIR_HEADS: usize = 64;

impl DirSnapshot {
    fn new(inode: &Inode) -> Self {
        DirSnapshot {
            window: Mutex::new(Window::default()),
            fill: watch::channel(Fill::default()).0,
            reader_at: watch::channel(0).0,
            task: Mutex::new(None),
            opened: inode.clone(),
            begun: tokio::sync::OnceCell::new(),
        }
    }

    /// The directory's inode number.
    pub fn dir(&self) -> Ino {
        self.opened.ino
    }

    /// Its parent's, for `..`.
    pub fn parent(&self) -> Ino {
        self.opened.parent
    }

    /// Its path as opendir found it.
    pub fn path(&self) -> &str {
        &self.opened.path
    }

    fn push(&self, new: impl IntoIterator<Item = DirEntry>) {
        let mut window = self.window.lock();
        for entry in new {
            window.total += 1;
            window.entries.push_back(entry);
        }
        self.let_go(&mut window);
        let len = window.total;
        drop(window);
        self.fill.send_modify(|f| f.len = len);
    }

    /// Let go of the entries before the reader.
    fn let_go(&self, window: &mut Window) {
        let at = *self.reader_at.borrow();
        while window.base() < at && window.entries.pop_front().is_some() {}
    }

    /// The reader asks for entries from `from` on: it will not ask for
    /// earlier ones (unless it goes back, see `released`).
    fn reader_moved(&self, from: usize) {
        self.reader_at.send_if_modified(|at| {
            let moved = from > *at;
            *at = (*at).max(from);
            moved
        });
    }

    /// Whether entry `from` was let go: the reader went back.
    pub fn released(&self, from: usize) -> bool {
        from < self.window.lock().base()
    }

    /// Wait until the listing may fetch more: the reader is less than
    /// `AHEAD` entries behind. `false` if the snapshot is gone.
    async fn room_ahead(reader_at: &mut watch::Receiver<usize>, len: usize) -> bool {
        reader_at
            .wait_for(|at| len.saturating_sub(*at) < AHEAD)
            .await
            .is_ok()
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
            self.reader_moved(from);
            let mut window = self.window.lock();
            let base = window.base();
            if from < base {
                // Gone: the caller lists afresh (`Fs::readdir_entries`).
                return None;
            }
            self.let_go(&mut window);
            let start = from - window.base();
            let end = window.entries.len().min(start + BATCH);
            return Some(Ok(window.entries.range(start..end).cloned().collect()));
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
        // The listing may be waiting for the reader to come this far.
        self.reader_moved(from);
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
    /// Names shown from local state (files with unsaved changes).
    local: HashSet<String>,
    /// Names shown from the listing's last two pages. A server whose
    /// listing changes between pages may repeat a name where one page
    /// ends and the next begins (S3 lists in key order, and a page starts
    /// after the key the last one ended with), never further back: so a
    /// million-entry listing needs no set of a million names.
    recent: [HashSet<String>; 2],
    /// Files waiting until the listing passes their `name/` prefix.
    held: BTreeMap<String, Listed>,
    /// Everything listed, for the listing cache once complete; `None`
    /// once more than the cache would keep.
    all: Option<BTreeMap<String, Listed>>,
    /// `Fs::listing_epoch` when the listing began.
    epoch: u64,
}

impl Fs {
    pub async fn opendir(self: &Arc<Self>, ino: Ino) -> FsResult<u64> {
        let inode = self.getattr(ino).await?;
        if inode.attr.kind != Kind::Dir {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        // Listed at the first readdir, not here: a directory opened but
        // never read (`find` opens its starting directory; git, editors
        // and databases open a directory to fsync it after a rename)
        // costs no listing, a class C request on B2. A directory that
        // cannot be listed fails that readdir instead, which `ls` reports
        // as well.
        Ok(self.add_handle(Handle::Dir(Arc::new(DirSnapshot::new(&inode)))))
    }

    /// Entries of open directory `fh` from index `from` on, with the
    /// snapshot they come from. A reader that went back before what the
    /// snapshot still holds gets a fresh listing, from `from` on.
    pub async fn readdir_entries(
        self: &Arc<Self>,
        fh: u64,
        from: usize,
    ) -> FsResult<(Arc<DirSnapshot>, Vec<DirEntry>)> {
        let mut snapshot = self.dir_snapshot(fh)?;
        if snapshot.released(from) {
            let inode = self.inode(snapshot.dir())?;
            snapshot = Arc::new(DirSnapshot::new(&inode));
            snapshot.reader_moved(from);
            if let Some(handle) = self.handles.lock().get_mut(&fh) {
                *handle = Handle::Dir(snapshot.clone());
            }
        }
        self.begin_listing(&snapshot).await?;
        let entries = snapshot.entries_from(from).await?;
        Ok((snapshot, entries))
    }

    /// List the snapshot's directory into it, once: returns when the first
    /// page is in (at once if it already was). A first page that fails
    /// fails this readdir, and the next one tries again.
    async fn begin_listing(self: &Arc<Self>, snapshot: &Arc<DirSnapshot>) -> FsResult<()> {
        snapshot
            .begun
            .get_or_try_init(|| self.start_listing(snapshot))
            .await?;
        Ok(())
    }

    async fn start_listing(self: &Arc<Self>, snapshot: &Arc<DirSnapshot>) -> FsResult<()> {
        let inode = &snapshot.opened;
        if self.versions_enabled() && super::versions::is_virtual(&inode.path) {
            let entries = self.versions_entries(inode).await?;
            snapshot.push(
                entries
                    .into_iter()
                    .map(|(name, attr)| DirEntry::known(name, attr)),
            );
            snapshot.finish(Ok(()));
            return Ok(());
        }
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
        if let Some(listing) = self
            .cached_listing(&inode.path)
            .filter(|l| l.entries.len() <= REUSED_LISTING)
        {
            return self.fill_from_cache(snapshot, local, &listing).await;
        }
        // Otherwise listed afresh: `ls` after a change made elsewhere
        // shows it, as close-to-open consistency would.
        self.invalidate_listing(&inode.path);
        let epoch = self.listing_epoch();
        let mut filler = Filler {
            dir_path: inode.path.to_string(),
            local: local.iter().map(|(name, _)| name.clone()).collect(),
            recent: Default::default(),
            held: BTreeMap::new(),
            all: Some(BTreeMap::new()),
            epoch,
        };
        // The first page before the first readdir answers, so that a
        // directory that cannot be listed fails it (and nothing is pushed
        // twice when the next one tries again).
        let mut pages = self.dir_pages(&inode.path);
        let first = self.next_dir_page(&mut pages).await?;
        snapshot.push(
            local
                .into_iter()
                .map(|(name, attr)| DirEntry::known(name, attr)),
        );
        let mut listed = self.fill_from(&mut filler, first, &pages);
        // Each page's entries have their attributes made true (HEADs of
        // what this mount does not know) while the next page is listed.
        let fs = self.clone();
        let task_snapshot = Arc::downgrade(snapshot);
        let mut reader_at = snapshot.reader_at.subscribe();
        let task = tokio::spawn(async move {
            loop {
                // Far enough ahead of the reader: wait for it (or for the
                // snapshot to go, which ends the wait).
                let len = match task_snapshot.upgrade() {
                    Some(snapshot) => snapshot.fill.borrow().len + listed.len(),
                    None => return,
                };
                if !DirSnapshot::room_ahead(&mut reader_at, len).await {
                    return;
                }
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
        Ok(())
    }

    /// A snapshot of a directory listed (all of it) less than
    /// `metadata_ttl` ago, and kept true to this mount's changes since:
    /// not listed again. `rm -r` reads each directory twice (once to see
    /// whether it is empty, then to walk it), and a listing is class C on
    /// B2.
    async fn fill_from_cache(
        &self,
        snapshot: &DirSnapshot,
        local: Vec<(String, Attr)>,
        listing: &Listing,
    ) -> FsResult<()> {
        let names: HashSet<&str> = local.iter().map(|(name, _)| name.as_str()).collect();
        let listed: Vec<(String, Listed)> = listing
            .entries
            .iter()
            .filter(|(name, _)| !names.contains(name.as_str()))
            .map(|(name, listed)| (name.clone(), listed.clone()))
            .collect();
        let entries = self.complete_entries(snapshot.path(), listed).await?;
        snapshot.push(
            local
                .into_iter()
                .map(|(name, attr)| DirEntry::known(name, attr)),
        );
        snapshot.push(entries);
        snapshot.finish(Ok(()));
        Ok(())
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
        filler.recent.swap(0, 1);
        filler.recent[1].clear();
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
        let repeated =
            filler.local.contains(&name) || filler.recent.iter().any(|r| r.contains(&name));
        if !repeated {
            filler.recent[1].insert(name.clone());
            out.push((name.clone(), listed.clone()));
        }
        if let Some(all) = &mut filler.all {
            all.insert(name, listed);
            if all.len() > LISTING_CACHE_ENTRIES {
                filler.all = None;
            }
        }
    }

    /// Listed entries with attributes as true as a `stat` of each (see
    /// `listed_resolved`), asked for many at once, in listing order, but
    /// for entries whose kind the listing tells (`Want::Kind`): those are
    /// handed to the kernel with their attributes unverified, to be asked
    /// when someone looks, so that `rm -r`, `find` by name and plain `ls`
    /// cost no HEAD for them. A file removed since it was listed is still
    /// shown, as listed and unverified (a stat of it finds it gone): a
    /// rename made elsewhere (a copy, then a delete) then shows under the
    /// old name, the new one or both, never under neither.
    async fn complete_entries(
        &self,
        dir_path: &str,
        listed: Vec<(String, Listed)>,
    ) -> FsResult<Vec<DirEntry>> {
        futures::stream::iter(listed)
            .map(|(name, listed)| async move {
                let path = child_path(dir_path, &name);
                let resolved = match self.listed_resolved(&path, &listed, Want::Kind).await? {
                    Some(resolved) => resolved,
                    None => self.listed_only(&listed),
                };
                let mut attr = resolved.attr;
                self.dir_time(&path, &mut attr);
                Ok::<_, FsError>(DirEntry {
                    name,
                    attr,
                    etag: resolved.etag,
                    listed_only: resolved.listed_only,
                })
            })
            .buffered(READDIR_HEADS)
            .try_collect::<Vec<_>>()
            .await
    }

    /// The listing ended (or failed): the snapshot is complete, and a
    /// complete listing answers lookups in the directory for a while.
    fn finish_filling(&self, snapshot: &DirSnapshot, filler: Filler, result: FsResult<()>) {
        if let (Ok(()), Some(all)) = (&result, filler.all) {
            self.cache_listing_since(&filler.dir_path, all, false, filler.epoch);
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
        let path = child_path(snapshot.path(), &entry.name);
        self.inodes.peek_ino(&path)
    }

    /// Register an entry that readdirplus hands to the kernel (which counts
    /// it as a lookup). If the reply turns out to be full, the caller gives
    /// the reference back with `forget`.
    pub fn entry_inode(&self, snapshot: &DirSnapshot, entry: &DirEntry) -> Inode {
        let path = child_path(snapshot.path(), &entry.name);
        self.inodes.remember(
            snapshot.dir(),
            &path,
            entry.attr.clone(),
            entry.etag.clone(),
            self.valid_until(entry.listed_only),
            true,
        )
    }
}
