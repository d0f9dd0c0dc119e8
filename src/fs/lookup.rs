//! Names to inodes: lookup, getattr, and the caches that keep them cheap.
//!
//! A directory listing (ListObjectsV2 with `/` as delimiter, every page) is
//! cached for `metadata_ttl`; while it is fresh, lookups of its children are
//! answered from it with no request at all, which is what makes `ls -l` and
//! `find` cost one listing per directory instead of one HEAD per file. A
//! name not covered by a fresh listing is resolved with a HEAD of the key
//! and a one-key listing of `key/` at once: the first finds a file, the
//! second a directory (which wins when both exist). Misses are remembered
//! for `negative_ttl`. A directory where such lookups keep happening (the
//! second within `metadata_ttl`) is listed once, if one page holds it, and
//! from then on its names answer misses for free and files with one HEAD.
//!
//! A lookup (and an unlink, an rmdir) needs a name's type, not all its
//! attributes (`Want::Kind`). A listing tells the type of a directory and
//! of an object of 4,096 bytes or more (too big for an s3fs symlink or
//! special file): those are answered from it with no HEAD, and the kernel
//! gets their attributes with a TTL of 0, so that the next `stat` asks
//! (`getattr`, `Want::Attrs`, whose HEAD takes the next unknown files of
//! the listing along: `head_batch`). `rm -r` and `find` by name then cost
//! the listings alone.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::attr::{Attr, Kind, KIND_CERTAIN_SIZE};
use super::dir::READDIR_HEADS;
use super::error::{FsError, FsResult};
use super::inode::{child_path, Ino, Inode, ROOT_INO};
use super::names::{is_valid_name, KEY_MAX, NAME_MAX};
use super::{versions, Fs, LISTING_CACHE_ENTRIES};
use crate::s3::listing::MarkerGuard;
use crate::s3::{ListPage, ListRequest};

/// One child in a directory listing.
#[derive(Debug, Clone)]
pub(crate) enum Listed {
    File {
        size: u64,
        mtime: SystemTime,
        etag: Arc<str>,
    },
    Dir {
        /// The `dir/` marker object's time, if there is a marker.
        marker_time: Option<SystemTime>,
    },
}

/// A directory's children as one listing showed them.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub entries: BTreeMap<String, Listed>,
    pub fetched_at: Instant,
    /// Fetched to answer lookups (see `name_index`), not by a readdir, or
    /// changed by this mount since (`child_changed`): it says which names
    /// exist, but a file's attributes still come from a HEAD, so that s3fs
    /// metadata (mode, owner, mtime, symlinks) is right.
    pub names_only: bool,
}

/// A directory listing being fetched page by page.
pub(crate) struct DirPages {
    pub prefix: String,
    request: ListRequest,
    guard: MarkerGuard,
    /// The last page has been fetched.
    pub done: bool,
}

/// One page of a directory listing: its files and directories (by name,
/// each in key order), and the greatest key it reached.
pub(crate) struct DirPage {
    pub files: Vec<(String, Listed)>,
    pub dirs: Vec<String>,
    pub last_key: String,
}

/// How long a directory found too big to index by name is not listed for
/// that again. Only the cost of lookups depends on it: a walk through a
/// big directory (`du`, `stat` of each file) would otherwise list its
/// first page, a class C request on B2, every `metadata_ttl`. Changes made
/// through this mount forget it at once.
const TOO_BIG_REMEMBERED: std::time::Duration = std::time::Duration::from_secs(60);

/// What uncached lookups have found out about a directory lately.
pub(crate) enum ColdDir {
    /// A lookup missed every cache here at this instant.
    Missed(Instant),
    /// Its listing took more than one page at this instant.
    TooBig(Instant),
}

/// What a name resolved to.
pub(crate) struct Resolved {
    pub attr: Attr,
    pub etag: Option<Arc<str>>,
    /// The attributes are the listing's alone (see `Want::Kind`): the
    /// kind and size are right, the mode, owner and times may not be.
    pub listed_only: bool,
}

impl Resolved {
    fn of(attr: Attr, etag: Option<Arc<str>>) -> Self {
        Resolved {
            attr,
            etag,
            listed_only: false,
        }
    }
}

/// What a caller needs to know of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Attributes as true as a `stat`: a listed file's s3fs metadata
    /// (mode, owner, times) needs a HEAD unless this mount knows that
    /// version.
    Attrs,
    /// Whether it exists and what kind it is (and its size). A listed
    /// entry of certain kind (`kind_certain`) is answered from the listing
    /// with no HEAD: `rm -r`, `find` by name and plain `ls` need no more,
    /// and the kernel is told to ask for the rest when someone looks
    /// (an attribute TTL of 0).
    Kind,
}

/// Whether a listing alone tells what kind of entry this is: a directory,
/// or a file too big to be a symlink or a special file (a name this mount
/// put in an index itself has no ETag, and is not known this way).
fn kind_certain(listed: &Listed) -> bool {
    match listed {
        Listed::Dir { .. } => true,
        Listed::File { size, etag, .. } => *size >= KIND_CERTAIN_SIZE && !etag.is_empty(),
    }
}

impl Fs {
    /// What a name index needs to know of a file made through the mount.
    pub(crate) fn listed_file() -> Listed {
        Listed::File {
            size: 0,
            mtime: SystemTime::now(),
            etag: Arc::from(""),
        }
    }

    pub(crate) fn listed_attr(&self, listed: &Listed) -> (Attr, Option<Arc<str>>) {
        match listed {
            Listed::File { size, mtime, etag } => (
                self.config.attrs.object(*size, *mtime, None),
                Some(etag.clone()),
            ),
            Listed::Dir { marker_time } => {
                (self.config.attrs.dir(marker_time.map(|t| (t, None))), None)
            }
        }
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.config.metadata_ttl
    }

    /// The cached listing of a directory, if still fresh.
    pub(crate) fn cached_listing(&self, dir_path: &str) -> Option<Arc<Listing>> {
        let mut listings = self.listings.lock();
        let listing = listings.get(dir_path)?.clone();
        if self.fresh(listing.fetched_at) {
            Some(listing)
        } else {
            listings.pop(dir_path);
            None
        }
    }

    /// ListObjectsV2 of a directory, every page, or `None` if it takes more
    /// than `max_pages`.
    async fn fetch_listing(
        &self,
        dir_path: &str,
        max_pages: Option<usize>,
    ) -> FsResult<Option<BTreeMap<String, Listed>>> {
        let mut pages = self.dir_pages(dir_path);
        let mut files = BTreeMap::new();
        let mut dirs = Vec::new();
        let mut count = 0;
        loop {
            if max_pages.is_some_and(|max| count >= max) {
                return Ok(None);
            }
            count += 1;
            let Some(page) = self.next_dir_page(&mut pages).await? else {
                break;
            };
            files.extend(page.files);
            dirs.extend(page.dirs);
            if pages.done {
                break;
            }
        }
        Ok(Some(self.listed_entries(
            dir_path,
            &pages.prefix,
            files,
            dirs,
        )))
    }

    /// A directory's listed files and directories as one map: a directory
    /// wins over a file of its name, and the name the versions view takes
    /// is left out (each logged).
    pub(crate) fn listed_entries(
        &self,
        dir_path: &str,
        prefix: &str,
        mut files: BTreeMap<String, Listed>,
        dirs: Vec<String>,
    ) -> BTreeMap<String, Listed> {
        for name in dirs {
            if files.remove(&name).is_some() {
                self.shadowed_by_dir(prefix, &name);
            }
            files.insert(name, Listed::Dir { marker_time: None });
        }
        if let Some(name) = self.hidden_by_versions(dir_path) {
            if files.remove(name).is_some() {
                self.taken_by_versions(prefix);
            }
        }
        files
    }

    /// The pages of a directory's listing, to be fetched one by one.
    pub(crate) fn dir_pages(&self, dir_path: &str) -> DirPages {
        let prefix = self.dir_prefix(dir_path);
        DirPages {
            request: ListRequest {
                prefix: prefix.clone(),
                delimiter: Some("/".into()),
                ..Default::default()
            },
            prefix,
            guard: MarkerGuard::default(),
            done: false,
        }
    }

    /// The pages of a directory's listing from the first key after `after`.
    pub(crate) fn dir_pages_after(&self, dir_path: &str, after: &str) -> DirPages {
        let mut pages = self.dir_pages(dir_path);
        pages.request.start_after = Some(after.to_owned());
        pages
    }

    /// The next page of a directory's listing, its names checked (odd
    /// ones hidden and logged); `None` once the last was fetched.
    pub(crate) async fn next_dir_page(&self, pages: &mut DirPages) -> FsResult<Option<DirPage>> {
        if pages.done {
            return Ok(None);
        }
        let page = self.store.list_objects(&pages.request).await?;
        let more = pages
            .guard
            .next_page(&mut pages.request, page.next_continuation_token.clone())?;
        pages.done = !more;
        Ok(Some(self.dir_page(&pages.prefix, page)))
    }

    /// A listing page of the directory at `prefix` as its children, names
    /// checked (odd ones hidden and logged).
    fn dir_page(&self, prefix: &str, page: ListPage) -> DirPage {
        for raw in &page.undecodable_keys {
            self.odd_keys.hidden(
                raw,
                "its listed name does not decode (bad URL encoding or UTF-8)",
            );
        }
        let mut last_key = String::new();
        let mut files = Vec::with_capacity(page.objects.len());
        for object in page.objects {
            if object.key > last_key {
                last_key.clone_from(&object.key);
            }
            let Some(name) = object.key.strip_prefix(prefix) else {
                continue;
            };
            if name.is_empty() {
                // The directory's own marker object.
                continue;
            }
            if !is_valid_name(name) {
                self.odd_keys.hidden(&object.key, "not a valid file name");
                continue;
            }
            files.push((
                name.to_owned(),
                Listed::File {
                    size: object.size,
                    mtime: object.last_modified,
                    etag: Arc::from(object.etag),
                },
            ));
        }
        let mut dirs = Vec::with_capacity(page.common_prefixes.len());
        for common in page.common_prefixes {
            if common > last_key {
                last_key.clone_from(&common);
            }
            let name = common
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix('/'))
                .unwrap_or("");
            if !is_valid_name(name) {
                self.odd_keys.hidden(&common, "not a valid directory name");
                continue;
            }
            dirs.push(name.to_owned());
        }
        DirPage {
            files,
            dirs,
            last_key,
        }
    }

    /// Keep the mount's first listing of its root (the one that checked
    /// the credentials and the bucket) as the root's name index, if one
    /// page held it all: the first lookups at the root after a mount
    /// (`cp x /mnt/`, `cat /mnt/x`) then cost no listing of their own,
    /// and a name it does not show costs nothing. Kept `metadata_ttl`,
    /// as any index.
    pub fn seed_root_index(&self, page: ListPage) {
        if page.next_continuation_token.is_some() {
            return;
        }
        let prefix = self.dir_prefix("");
        let page = self.dir_page(&prefix, page);
        let entries = self.listed_entries("", &prefix, page.files.into_iter().collect(), page.dirs);
        self.cache_listing("", entries, true);
    }

    /// A file hidden because a directory has its name (the directory wins).
    pub(crate) fn shadowed_by_dir(&self, prefix: &str, name: &str) {
        self.odd_keys.hidden(
            &format!("{prefix}{name}"),
            "a directory of the same name exists, and the directory wins",
        );
    }

    /// The name in `dir_path` the versions view takes, if any.
    pub(crate) fn hidden_by_versions(&self, dir_path: &str) -> Option<&'static str> {
        (dir_path.is_empty() && self.versions_enabled()).then_some(versions::VERSIONS_DIR)
    }

    pub(crate) fn taken_by_versions(&self, prefix: &str) {
        self.odd_keys.hidden(
            &format!("{prefix}{}", versions::VERSIONS_DIR),
            "the name is taken by the versions view (-o versions=off shows it)",
        );
    }

    /// Where listings stand: pass it to `cache_listing_since`.
    pub(crate) fn listing_epoch(&self) -> u64 {
        self.listing_epoch.load(Ordering::SeqCst)
    }

    fn cache_listing(
        &self,
        dir_path: &str,
        entries: BTreeMap<String, Listed>,
        names_only: bool,
    ) -> Arc<Listing> {
        self.cache_listing_since(dir_path, entries, names_only, self.listing_epoch())
    }

    /// Cache a listing whose fetch began at `epoch`, unless this mount
    /// changed something since (the listing may not show it; the next
    /// lookup lists again). Returned either way, for the caller's use.
    pub(crate) fn cache_listing_since(
        &self,
        dir_path: &str,
        entries: BTreeMap<String, Listed>,
        names_only: bool,
        epoch: u64,
    ) -> Arc<Listing> {
        let listing = Arc::new(Listing {
            entries,
            fetched_at: Instant::now(),
            names_only,
        });
        let mut listings = self.listings.lock();
        // Checked under the lock that changes take too.
        if self.listing_epoch() == epoch && listing.entries.len() <= LISTING_CACHE_ENTRIES {
            listings.put(dir_path.to_owned(), listing.clone());
            let mut total: usize = listings.iter().map(|(_, l)| l.entries.len()).sum();
            while total > LISTING_CACHE_ENTRIES {
                match listings.pop_lru() {
                    Some((_, oldest)) => total -= oldest.entries.len(),
                    None => break,
                }
            }
        }
        listing
    }

    /// The names of a directory that lookups keep missing in, so that
    /// each further lookup there costs one HEAD instead of a HEAD and a
    /// listing (and a miss costs nothing). Fetched on the second uncached
    /// lookup in a directory within `metadata_ttl`, only if the directory
    /// lists in one page; a bigger one is remembered as such and left to
    /// per-name lookups.
    async fn name_index(&self, dir_path: &str) -> FsResult<Option<Arc<Listing>>> {
        {
            let mut cold = self.cold_dirs.lock();
            match cold.get(dir_path) {
                Some(ColdDir::TooBig(at)) if at.elapsed() < TOO_BIG_REMEMBERED => return Ok(None),
                Some(ColdDir::Missed(at)) if self.fresh(*at) => {}
                _ => {
                    cold.put(dir_path.to_owned(), ColdDir::Missed(Instant::now()));
                    return Ok(None);
                }
            }
        }
        let epoch = self.listing_epoch();
        match self.fetch_listing(dir_path, Some(1)).await? {
            Some(entries) => Ok(Some(
                self.cache_listing_since(dir_path, entries, true, epoch),
            )),
            None => {
                self.cold_dirs
                    .lock()
                    .put(dir_path.to_owned(), ColdDir::TooBig(Instant::now()));
                Ok(None)
            }
        }
    }

    /// Whether `dir_path` was found too big to index by name lately.
    fn too_big(&self, dir_path: &str) -> bool {
        matches!(
            self.cold_dirs.lock().peek(dir_path),
            Some(ColdDir::TooBig(at)) if at.elapsed() < TOO_BIG_REMEMBERED
        )
    }

    /// Forget cached knowledge about a directory's children (and the cached
    /// history, which every change extends).
    pub(crate) fn invalidate_listing(&self, dir_path: &str) {
        self.invalidate_versions();
        self.stat_ahead.clear();
        self.range_pages.forget_dir(dir_path);
        let mut listings = self.listings.lock();
        self.listing_epoch.fetch_add(1, Ordering::SeqCst);
        listings.pop(dir_path);
        drop(listings);
        self.cold_dirs.lock().pop(dir_path);
    }

    /// A child of `dir_path` was made, changed (`Some`, with its kind) or
    /// removed (`None`) through this mount. The directory's cached listing
    /// is kept true by adding or removing the name, so that lookups in a
    /// directory being filled (`cp -r`, `tar x`, a build) or emptied
    /// (`rm -r`, which lists it first) keep costing nothing. A full listing
    /// becomes a name index: the changed name's attributes are no longer
    /// the listing's (file attributes then come from a HEAD, or from what
    /// this mount learnt when it saved the file).
    pub(crate) fn child_changed(&self, dir_path: &str, name: &str, now: Option<Listed>) {
        self.invalidate_versions();
        self.stat_ahead.clear();
        self.range_pages.forget_dir(dir_path);
        let mut listings = self.listings.lock();
        self.listing_epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(listing) = listings.get_mut(dir_path) {
            // Cloned only if a lookup holds it right now.
            let listing = Arc::make_mut(listing);
            listing.names_only = true;
            match now {
                Some(listed) => listing.entries.insert(name.to_owned(), listed),
                None => listing.entries.remove(name),
            };
        }
    }

    /// The entry at `path` (of `kind`) changed through this mount (a save,
    /// chmod, a copy into it), keeping its name: listings showing its old
    /// attributes go, and a name index of its directory stays (the name is
    /// still there, as what it was), so that the next new name there costs
    /// no request (`cp -r` copies and closes a file between two lookups).
    pub(crate) fn entry_changed(&self, path: &str, kind: Kind) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let listed = match kind {
            Kind::Dir => Listed::Dir { marker_time: None },
            _ => Self::listed_file(),
        };
        self.child_changed(dir, name, Some(listed));
    }

    /// A directory this mount just made: it has no children, which
    /// lookups may know without asking until `metadata_ttl` passes.
    pub(crate) fn new_empty_dir(&self, dir_path: &str) {
        self.cache_listing(dir_path, BTreeMap::new(), true);
    }

    fn negative_hit(&self, path: &str) -> bool {
        let mut negative = self.negative.lock();
        match negative.get(path) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                negative.pop(path);
                false
            }
            None => false,
        }
    }

    pub(crate) fn remember_missing(&self, path: &str) {
        if self.config.negative_ttl.is_zero() {
            return;
        }
        self.negative
            .lock()
            .put(path.to_owned(), Instant::now() + self.config.negative_ttl);
    }

    /// Find what `name` in directory `dir_path` is, with attributes as
    /// true as a `stat`, asking S3 only when no fresh cache knows.
    pub(crate) async fn resolve(&self, dir_path: &str, name: &str) -> FsResult<Option<Resolved>> {
        self.resolve_for(dir_path, name, Want::Attrs).await
    }

    /// Find what `name` in directory `dir_path` is, knowing `want`.
    pub(crate) async fn resolve_for(
        &self,
        dir_path: &str,
        name: &str,
        want: Want,
    ) -> FsResult<Option<Resolved>> {
        let mut resolved = self.resolve_uncorrected(dir_path, name, want).await?;
        let path = child_path(dir_path, name);
        if resolved.is_none() && self.has_local_below(&path) {
            resolved = Some(Resolved::of(self.config.attrs.dir(None), None));
        }
        if resolved.is_none() {
            resolved = self
                .emptied_here(&path)
                .map(|attr| Resolved::of(attr, None));
        }
        if let Some(r) = &mut resolved {
            self.dir_time(&path, &mut r.attr);
        }
        Ok(resolved)
    }

    async fn resolve_uncorrected(
        &self,
        dir_path: &str,
        name: &str,
        want: Want,
    ) -> FsResult<Option<Resolved>> {
        // A file with local changes is what this mount shows, whatever the
        // bucket has (or does not have yet).
        if let Some(attr) = self.local_attr(&child_path(dir_path, name)) {
            return Ok(Some(Resolved::of(attr, None)));
        }
        let path = child_path(dir_path, name);
        let mut listing = self.cached_listing(dir_path);
        if self.negative_hit(&path) {
            return Ok(None);
        }
        if listing.is_none() {
            listing = self.name_index(dir_path).await?;
        }
        if listing.is_none() && self.too_big(dir_path) {
            listing = self
                .range_page(dir_path, name)
                .await?
                .map(|page| page.listing.clone());
        }
        // The index is fresh: a file version whose metadata this mount
        // knows needs no HEAD (a `du` or `stat` walk after an `ls -l`).
        let known = match listing.as_ref().and_then(|l| l.entries.get(name)) {
            Some(listed @ Listed::File { etag, .. }) => self
                .known_listed(&path, listed)
                .map(|attr| Resolved::of(attr, Some(etag.clone()))),
            _ => None,
        };
        if known.is_some() {
            return Ok(known);
        }
        let resolved = match listing.as_ref().map(|l| l.entries.get(name)) {
            // The directory's names are known: a missing one costs nothing,
            // a file one HEAD for its metadata.
            Some(None) => None,
            Some(Some(listed @ Listed::File { etag, .. })) => {
                // A real listing's entry (not one this mount put in a name
                // index for a file it made, which has no ETag), shown as
                // listed when that is asked for, or when only its kind is
                // and the listing tells it.
                if want == Want::Kind && kind_certain(listed) {
                    return Ok(Some(self.listed_only(listed)));
                }
                if self.config.trust_listings && !etag.is_empty() {
                    let (attr, etag) = self.listed_attr(listed);
                    return Ok(Some(Resolved::of(attr, etag)));
                }
                match &listing {
                    Some(listing) if !listing.names_only => {
                        return self.head_batch(dir_path, name, listing).await;
                    }
                    Some(listing) => self.stat_ahead.follow(
                        &self.store,
                        dir_path,
                        name,
                        &listing.entries,
                        |n| self.key(&child_path(dir_path, n)),
                        |n, listed| {
                            self.known_listed(&child_path(dir_path, n), listed)
                                .is_none()
                        },
                    ),
                    None => {}
                }
                self.resolve_file(&path).await?
            }
            // Listed as a directory moments ago: it is one (a directory
            // wins over a file of the same name), and only its marker's
            // metadata is missing. One HEAD of the marker (or none, while
            // `known` holds it) instead of a HEAD and a one-key listing,
            // which B2 bills at ten times a HEAD: a walk that comes back to
            // a directory past the attribute TTL (`cp -r`, `find`) pays it
            // at every return.
            Some(Some(listed @ Listed::Dir { .. })) => {
                self.listed_resolved(&path, listed, want).await?
            }
            None => self.resolve_remote(&path).await?,
        };
        if resolved.is_none() {
            self.remember_missing(&path);
        }
        Ok(resolved)
    }

    /// HEAD `key`, known not to be a directory (or take the answer of a
    /// HEAD stat-ahead started).
    async fn resolve_file(&self, path: &str) -> FsResult<Option<Resolved>> {
        let key = self.key(path);
        let answer = match self.stat_ahead.take(&key) {
            Some(prefetched) => match prefetched.await {
                Ok(answer) => answer,
                // Its task was dropped (shutting down): ask now.
                Err(_) => self.store.head_object(&key, None).await,
            },
            None => self.store.head_object(&key, None).await,
        };
        match answer {
            Ok(meta) => Ok(Some(self.head_resolved(&key, meta))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The attributes of `name`, a file of a directory a readdir listed
    /// (so entries of certain kind were handed out with the listing's
    /// attributes alone, and someone now looks: `ls -l`, `du`, `cp -r`
    /// after their readdir): its HEAD, with those of the next files of the
    /// listing whose metadata this mount does not know started alongside
    /// (`READDIR_HEADS` in all, those not started already). Their answers
    /// are learnt (`known`) as they come, so that their own stats need no
    /// request, or wait for the HEAD already sent. In whatever order the
    /// walk goes (`ls` sorts by locale, `du` by inode number), each file is
    /// asked once, and a walk in name order keeps a window of HEADs in
    /// flight instead of waiting for the slowest of each batch.
    async fn head_batch(
        &self,
        dir_path: &str,
        name: &str,
        listing: &Listing,
    ) -> FsResult<Option<Resolved>> {
        let others = listing
            .entries
            .range::<str, _>((Bound::Excluded(name), Bound::Unbounded))
            .filter(|(other, listed)| {
                matches!(listed, Listed::File { .. })
                    && self
                        .known_listed(&child_path(dir_path, other), listed)
                        .is_none()
            })
            .take(READDIR_HEADS - 1)
            .map(|(other, _)| self.key(&child_path(dir_path, other)));
        self.stat_ahead.start(&self.store, others);
        self.resolve_file(&child_path(dir_path, name)).await
    }

    /// A listed file's attributes, if this mount knows the metadata of
    /// that very version (or knows it has none): no HEAD needed.
    pub(crate) fn known_listed(&self, path: &str, listed: &Listed) -> Option<Attr> {
        let Listed::File { size, mtime, etag } = listed else {
            return None;
        };
        let key = self.key(path);
        self.known.file(&key, etag, *size, *mtime).or_else(|| {
            // Known to carry no metadata: what a HEAD of it would show,
            // whose time has whole seconds only.
            self.known
                .is_bare(&key, etag, *size, *mtime)
                .then(|| self.attr_of_head(&bare_head(*size, *mtime)))
        })
    }

    /// What a listed child is, as true as a `stat` of it: from what this
    /// mount knows of that very version, else asked (a HEAD of the file,
    /// or of the directory's marker). With `trust_listings`, unknown
    /// entries show what the listing says and the default modes instead.
    /// `None`: a listed file that is gone now.
    pub(crate) async fn listed_resolved(
        &self,
        path: &str,
        listed: &Listed,
        want: Want,
    ) -> FsResult<Option<Resolved>> {
        match listed {
            Listed::File { etag, .. } => {
                if let Some(attr) = self.known_listed(path, listed) {
                    return Ok(Some(Resolved::of(attr, Some(etag.clone()))));
                }
            }
            Listed::Dir { .. } => {
                if let Some(attr) = self.known_marker(path) {
                    return Ok(Some(Resolved::of(attr, None)));
                }
            }
        }
        if self.config.trust_listings {
            let (attr, etag) = self.listed_attr(listed);
            return Ok(Some(Resolved::of(attr, etag)));
        }
        if want == Want::Kind && kind_certain(listed) {
            return Ok(Some(self.listed_only(listed)));
        }
        match listed {
            Listed::File { .. } => self.resolve_file(path).await,
            Listed::Dir { .. } => Ok(Some(Resolved::of(self.marker_attr(path).await?, None))),
        }
    }

    /// A listed entry as the listing shows it, marked so.
    pub(crate) fn listed_only(&self, listed: &Listed) -> Resolved {
        let (attr, etag) = self.listed_attr(listed);
        Resolved {
            attr,
            etag,
            listed_only: true,
        }
    }

    /// A directory's attributes as its marker said them lately (kept
    /// `metadata_ttl`), with no request.
    fn known_marker(&self, path: &str) -> Option<Attr> {
        self.known.dir(&format!("{}/", self.key(path)))
    }

    /// A directory's attributes: its marker object's metadata, or the
    /// defaults where it has none. Kept `metadata_ttl`.
    async fn marker_attr(&self, path: &str) -> FsResult<Attr> {
        if let Some(attr) = self.known_marker(path) {
            return Ok(attr);
        }
        let marker = format!("{}/", self.key(path));
        let head = self.store.head_object(&marker, None).await;
        match self.marker_head_attr(&marker, head)? {
            Some(attr) => Ok(attr),
            // A key without listBuckets gets 403 for a missing object
            // (B2, AWS without s3:ListBucket): an implicit directory.
            None => Ok(self.config.attrs.dir(None)),
        }
    }

    /// What a HEAD of the marker object `marker` answered, remembered:
    /// the directory's attributes, or `None` when there is no marker (or
    /// the key may not say).
    fn marker_head_attr(
        &self,
        marker: &str,
        head: Result<crate::s3::ObjectMeta, crate::s3::S3Error>,
    ) -> FsResult<Option<Attr>> {
        let attr = match head {
            Ok(meta) => Some(
                self.config
                    .attrs
                    .dir(Some((meta.last_modified, Some(&meta.user_metadata)))),
            ),
            Err(e) if e.is_not_found() || e.is_access_denied() => None,
            Err(e) => return Err(e.into()),
        };
        self.known.note_marker(marker, attr.is_some());
        self.known.learn_dir(
            marker,
            attr.clone().unwrap_or_else(|| self.config.attrs.dir(None)),
            Instant::now() + self.config.metadata_ttl,
        );
        Ok(attr)
    }

    /// A file's attributes as a HEAD of it tells them (see `bare_head` for
    /// one that need not be sent).
    pub(crate) fn attr_of_head(&self, meta: &crate::s3::ObjectMeta) -> Attr {
        self.config.attrs.of_head(meta)
    }

    fn head_resolved(&self, key: &str, meta: crate::s3::ObjectMeta) -> Resolved {
        let attr = self.attr_of_head(&meta);
        self.known.learn_head(key, &meta, &attr);
        Resolved::of(attr, Some(Arc::from(meta.etag)))
    }

    /// HEAD `key` and list `key/` together; a key known as a file is
    /// HEADed alone.
    async fn resolve_remote(&self, path: &str) -> FsResult<Option<Resolved>> {
        let key = self.key(path);
        let dir_path = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut asked = None;
        if !self.config.trust_listings && !self.known.is_file(&key) && self.too_big(dir_path) {
            // A directory too big to index, walked out of name order (`du`
            // sorts a big directory's entries by inode number): nearly all
            // its names are files, and one whose version this mount saw
            // listed as a file (here: without metadata) needs no listing
            // to rule out a directory twin. So the HEAD goes first, alone.
            // (Trusting listings, this mount learns no versions from HEADs:
            // both are asked at once below.)
            let head = self.store.head_object(&key, None).await;
            if let Ok(meta) = &head {
                if self
                    .known
                    .is_bare(&key, &meta.etag, meta.size, meta.last_modified)
                {
                    return Ok(Some(self.head_resolved(&key, meta.clone())));
                }
            }
            asked = Some(head);
        }
        let held = self.inodes.kind_at(path);
        if asked.is_none()
            && (self.known.is_file(&key) || held.is_some_and(|kind| kind != Kind::Dir))
        {
            // Known as a file from a listing or a HEAD of this mount, or
            // held by the kernel as one: the one-key listing that would
            // find a directory of the same name doubles the requests of
            // every walk past the attribute TTL (`du`, `stat` of each file
            // of a directory too big to index; with `metadata_ttl=0`,
            // every LOOKUP and GETATTR), and on B2 costs ten times the
            // HEAD. A directory another client makes under a known file's
            // name shows at the next listing of the parent instead.
            match self.store.head_object(&key, None).await {
                Ok(meta) => return Ok(Some(self.head_resolved(&key, meta))),
                // Gone, or a directory now: ask both.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let dir_request = ListRequest {
            prefix: format!("{key}/"),
            max_keys: Some(1),
            ..Default::default()
        };
        let (head, dir) = match asked {
            Some(head) => (head, self.store.list_objects(&dir_request).await?),
            None if held == Some(Kind::Dir) => {
                // A directory the kernel holds, asked again (past the TTL,
                // or at each path walk with `metadata_ttl=0`): a directory
                // wins over a file of its name, so its marker object, if
                // it had one, or else anything the listing shows below
                // it, is enough: one request, not two or three.
                if self.known.had_marker(&dir_request.prefix) {
                    let head = self.store.head_object(&dir_request.prefix, None).await;
                    if let Some(attr) = self.marker_head_attr(&dir_request.prefix, head)? {
                        return Ok(Some(Resolved::of(attr, None)));
                    }
                }
                let dir = self.store.list_objects(&dir_request).await?;
                if shows_a_dir(&dir) {
                    return Ok(Some(
                        self.dir_resolved(path, &dir_request.prefix, &dir, false)
                            .await?,
                    ));
                }
                (self.store.head_object(&key, None).await, dir)
            }
            None => {
                let (head, dir) = tokio::join!(
                    self.store.head_object(&key, None),
                    self.store.list_objects(&dir_request)
                );
                (head, dir?)
            }
        };
        if shows_a_dir(&dir) {
            return Ok(Some(
                self.dir_resolved(path, &dir_request.prefix, &dir, head.is_ok())
                    .await?,
            ));
        }
        match head {
            Ok(meta) => Ok(Some(self.head_resolved(&key, meta))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `path` as the directory a one-key listing of `prefix` (its key and
    /// `/`) shows; `file_too`: a HEAD found an object of its name, which
    /// the directory hides.
    async fn dir_resolved(
        &self,
        path: &str,
        prefix: &str,
        dir: &ListPage,
        file_too: bool,
    ) -> FsResult<Resolved> {
        if file_too {
            self.odd_keys.hidden(
                &self.key(path),
                "a directory of the same name exists, and the directory wins",
            );
        }
        // A marker object may carry the directory's mode and owner.
        let attr = match dir.objects.first() {
            Some(first) if first.key == prefix => self.marker_attr(path).await?,
            _ => self.config.attrs.dir(None),
        };
        Ok(Resolved::of(attr, None))
    }

    /// Check a name from the kernel and build the child's path.
    pub(crate) fn checked_child_path(&self, parent: &Inode, name: &str) -> FsResult<String> {
        if parent.attr.kind != Kind::Dir {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        if name.len() > NAME_MAX {
            return Err(FsError::new(
                libc::ENAMETOOLONG,
                "name longer than 255 bytes",
            ));
        }
        if !is_valid_name(name) {
            return Err(FsError::not_found());
        }
        let path = child_path(&parent.path, name);
        if self.key(&path).len() > KEY_MAX {
            return Err(FsError::new(
                libc::ENAMETOOLONG,
                "path longer than the 1024-byte S3 key limit",
            ));
        }
        Ok(path)
    }

    /// lookup: the inode of `name` in `parent`, counted as one kernel lookup.
    pub async fn lookup(&self, parent: Ino, name: &str) -> FsResult<Inode> {
        let parent = self.inode(parent)?;
        let path = self.checked_child_path(&parent, name)?;
        if self.versions_enabled()
            && (versions::is_virtual(&parent.path)
                || (parent.ino == ROOT_INO && name == versions::VERSIONS_DIR))
        {
            return self.versions_lookup(&parent, name).await;
        }
        match self.resolve_for(&parent.path, name, Want::Kind).await? {
            Some(resolved) => Ok(self.inodes.remember(
                parent.ino,
                &path,
                resolved.attr,
                resolved.etag,
                self.valid_until(resolved.listed_only),
                true,
            )),
            None => Err(FsError::not_found()),
        }
    }

    /// Until when attributes just resolved may be served without asking:
    /// `metadata_ttl`, or not at all for the listing's alone (the next
    /// getattr asks; the FUSE adapter gives the kernel an attribute TTL of
    /// what is left, see `Fs::attr_ttl`).
    pub(crate) fn valid_until(&self, listed_only: bool) -> Instant {
        match listed_only {
            true => Instant::now(),
            false => Instant::now() + self.config.metadata_ttl,
        }
    }

    /// getattr: attributes, from the inode while fresh, else from S3.
    pub async fn getattr(&self, ino: Ino) -> FsResult<Inode> {
        let inode = self.inode(ino)?;
        if self.versions_enabled() && versions::is_virtual(&inode.path) {
            // History does not change under a name: attributes stay valid.
            return self
                .inodes
                .update(ino, |i| {
                    i.valid_until = Instant::now() + self.config.metadata_ttl
                })
                .ok_or_else(FsError::not_found);
        }
        if inode.unlinked {
            // Open here, gone from the bucket: what it was.
            return Ok(inode);
        }
        if let Some(attr) = self.local_attr(&inode.path) {
            return self
                .inodes
                .update(ino, |i| i.attr = attr)
                .ok_or_else(FsError::not_found);
        }
        if ino == ROOT_INO || inode.valid_until > Instant::now() {
            let mut inode = inode;
            self.dir_time(&inode.path, &mut inode.attr);
            return Ok(inode);
        }
        let (dir_path, name) = match inode.path.rsplit_once('/') {
            Some((dir, name)) => (dir.to_owned(), name.to_owned()),
            None => (String::new(), inode.path.to_string()),
        };
        match self.resolve(&dir_path, &name).await? {
            Some(resolved) => self
                .inodes
                .update(ino, |i| {
                    i.attr = resolved.attr;
                    if resolved.etag.is_some() {
                        i.etag = resolved.etag;
                    }
                    i.valid_until = Instant::now() + self.config.metadata_ttl;
                })
                .ok_or_else(FsError::not_found),
            None => Err(FsError::not_found()),
        }
    }
}

/// What a HEAD of a listed version known to carry no user metadata would
/// answer, as far as attributes go: its size, and its LastModified in whole
/// seconds (HTTP dates have no more).
/// Whether a one-key listing of `name/` shows a directory.
fn shows_a_dir(page: &ListPage) -> bool {
    !page.objects.is_empty() || !page.common_prefixes.is_empty()
}

fn bare_head(size: u64, listed_time: SystemTime) -> crate::s3::ObjectMeta {
    crate::s3::ObjectMeta {
        size,
        etag: String::new(),
        last_modified: UNIX_EPOCH + Duration::from_secs(super::known_attrs::seconds(listed_time)),
        content_type: None,
        version_id: None,
        user_metadata: BTreeMap::new(),
        content_headers: Vec::new(),
    }
}
