//! Attributes known for exact versions of objects, so that a listing can
//! show them without asking again.
//!
//! A listing carries each object's size, ETag and LastModified but none of
//! its user metadata, where the mode, owner, mtime and file type (a
//! symlink, a FIFO) live. So an entry is shown from a listing only when
//! this mount already knows the metadata of that very version: from a HEAD
//! of it, or because this mount wrote it. Any change to an object, of its
//! bytes or of its metadata alone (a copy onto itself), gives it a new
//! LastModified, so (ETag, size, LastModified) names a version well enough
//! to trust what was learnt about it; a listed entry that does not match
//! is asked about again (see `dir.rs`).
//!
//! This mount's own uploads do not tell their LastModified (PutObject
//! answers without one), so they are recorded by ETag and size, and the
//! first listing that shows that ETag fixes the time. A metadata-only
//! change made elsewhere to such an object before this mount lists it
//! again goes unseen until the entry is evicted or the object changes.
//!
//! Directories have no version to check: what a marker object (`dir/`)
//! says, or that there is none, is kept `metadata_ttl` like any cached
//! attribute.
//!
//! Bounded by entries, least recently used first out.
//!
//! Most objects of a big bucket carry no user metadata at all (written by
//! other tools, or by programs that set no mode, owner or time): for those
//! the listing already says everything a HEAD would. Such versions are
//! remembered apart, as one 8-byte fingerprint of (key, ETag, size,
//! LastModified) each, in two generations of `BARE_GENERATION` (the older
//! one dropped whole when the newer fills, so what was used lately stays).
//! So after a walk of a million of them, a second walk (`du` after
//! `find`, `ls -l` again) costs no HEAD, for under 40 MiB, where full
//! entries would cost 250 MB. A key this mount changed itself is never
//! taken from there: its own chmod (a copy onto itself within the same
//! second) keeps all four the same.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lru::LruCache;

use super::attr::Attr;

/// Objects whose attributes are remembered at once. An entry holds the
/// key, the ETag and the attributes: about 250 bytes, so 25 MiB when full.
pub(crate) const KNOWN_OBJECTS: usize = 100_000;

/// Versions without metadata remembered per generation (two are kept): a
/// full generation of 1,000,000 fingerprints takes 2^21 slots of 9 bytes,
/// 18 MiB.
pub(crate) const BARE_GENERATION: usize = 1_000_000;

/// Keys this mount changed, whose bare fingerprints are not trusted.
const CHANGED_KEYS: usize = 10_000;

/// Directories remembered as having a marker object (8-byte hashes).
const MARKED_DIRS: usize = 50_000;

/// Keys whose last change through this mount is numbered, for answers
/// of HEADs sent earlier (see `learn_head_sent_at`).
const TOUCHED_KEYS: usize = 10_000;

/// The last change through this mount of recent keys, numbered.
struct Touched {
    last: LruCache<u64, u64>,
    /// The highest number let go of: an answer sent before it may be
    /// older than a change no longer remembered.
    forgotten: u64,
}

/// Fingerprints of versions known to carry no user metadata.
#[derive(Default)]
struct Bare {
    newer: HashSet<u64>,
    older: HashSet<u64>,
}

impl Bare {
    /// Into the newer generation; a full one becomes the older, and the
    /// older goes.
    fn insert(&mut self, print: u64, generation: usize) {
        if self.newer.len() >= generation {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(print);
    }
}

#[derive(Debug, Clone)]
struct Known {
    /// Empty for a directory.
    etag: Arc<str>,
    size: u64,
    /// Whole seconds since the epoch (HEAD answers carry no more); `None`
    /// until a listing shows this mount's own upload.
    last_modified: Option<u64>,
    attr: Attr,
    /// For directories: trusted until then.
    until: Option<Instant>,
}

pub(crate) struct KnownAttrs {
    entries: Mutex<LruCache<String, Known>>,
    bare: Mutex<Bare>,
    bare_generation: usize,
    /// Hashes of keys this mount changed (see the module's comment).
    changed: Mutex<LruCache<u64, ()>>,
    /// Hashes of marker keys (`dir/`) this mount last found there: such a
    /// directory is checked with a HEAD of its marker (class B on B2)
    /// rather than a listing (class C).
    marked: Mutex<LruCache<u64, ()>>,
    /// Numbers this mount's changes (`touch`).
    changes: AtomicU64,
    touched: Mutex<Touched>,
    /// Keyed per process: fingerprints cannot be made to collide by
    /// choosing names.
    hasher: RandomState,
}

/// Whole seconds since the epoch: all a HEAD's Last-Modified has.
pub(crate) fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl KnownAttrs {
    pub(crate) fn new(capacity: usize, bare_generation: usize) -> Self {
        KnownAttrs {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            bare: Mutex::new(Bare::default()),
            bare_generation: bare_generation.max(1),
            changed: Mutex::new(LruCache::new(
                NonZeroUsize::new(CHANGED_KEYS).unwrap_or(NonZeroUsize::MIN),
            )),
            marked: Mutex::new(LruCache::new(
                NonZeroUsize::new(MARKED_DIRS).unwrap_or(NonZeroUsize::MIN),
            )),
            changes: AtomicU64::new(0),
            touched: Mutex::new(Touched {
                last: LruCache::new(NonZeroUsize::new(TOUCHED_KEYS).unwrap_or(NonZeroUsize::MIN)),
                forgotten: 0,
            }),
            hasher: RandomState::new(),
        }
    }

    fn key_hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn fingerprint(&self, key: &str, etag: &str, size: u64, last_modified: SystemTime) -> u64 {
        self.hasher
            .hash_one((key, etag, size, seconds(last_modified)))
    }

    /// A HEAD of `key` found no user metadata on this version: its
    /// attributes are the listing's (see the module's comment).
    pub(crate) fn learn_bare(&self, key: &str, etag: &str, size: u64, last_modified: SystemTime) {
        if etag.is_empty() {
            return;
        }
        let print = self.fingerprint(key, etag, size, last_modified);
        self.lock().pop(key);
        self.bare.lock().insert(print, self.bare_generation);
    }

    /// The number of this mount's last change, to give `learn_head_sent_at`
    /// for a HEAD sent now.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// This mount changes `key`: what a HEAD sent before says of it is not
    /// learnt. Called before what is known of it is replaced.
    fn touch(&self, key: &str) {
        let number = self.changes.fetch_add(1, Ordering::AcqRel) + 1;
        let hash = self.key_hash(key);
        let mut touched = self.touched.lock();
        if let Some((other, before)) = touched.last.push(hash, number) {
            if other != hash {
                touched.forgotten = touched.forgotten.max(before);
            }
        }
    }

    /// `learn_head` for an answer that comes late (a HEAD sent ahead of
    /// lookups when this mount's changes were numbered up to `sent_at`):
    /// not learnt if this mount changed `key` since, whose answer may
    /// then describe it as it was (a chmod within the same second keeps
    /// the ETag, size and LastModified the same).
    pub(crate) fn learn_head_sent_at(
        &self,
        key: &str,
        meta: &crate::s3::ObjectMeta,
        attr: &Attr,
        sent_at: u64,
    ) {
        // Held while learning: a change numbered after the check replaces
        // what is learnt here.
        let touched = self.touched.lock();
        let changed_since = touched.forgotten > sent_at
            || touched
                .last
                .peek(&self.key_hash(key))
                .is_some_and(|&number| number > sent_at);
        if !changed_since {
            self.learn_head(key, meta, attr);
        }
    }

    /// What a HEAD of `key` answered (`attr`, as shown from it): a
    /// fingerprint when it carries nothing a listing does not show, else
    /// the attributes themselves.
    pub(crate) fn learn_head(&self, key: &str, meta: &crate::s3::ObjectMeta, attr: &Attr) {
        if meta.user_metadata.is_empty() {
            self.learn_bare(key, &meta.etag, meta.size, meta.last_modified);
        } else if !meta.etag.is_empty() {
            self.remember_file(
                key,
                &meta.etag,
                meta.size,
                Some(meta.last_modified),
                attr.clone(),
            );
        }
    }

    /// Whether this version of `key`, as a listing shows it, is known to
    /// carry no user metadata.
    pub(crate) fn is_bare(
        &self,
        key: &str,
        etag: &str,
        size: u64,
        last_modified: SystemTime,
    ) -> bool {
        if etag.is_empty() || self.changed.lock().contains(&self.key_hash(key)) {
            return false;
        }
        let print = self.fingerprint(key, etag, size, last_modified);
        let mut bare = self.bare.lock();
        if bare.newer.contains(&print) {
            return true;
        }
        if bare.older.remove(&print) {
            // Used again: into the generation that stays.
            bare.insert(print, self.bare_generation);
            return true;
        }
        false
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, LruCache<String, Known>> {
        self.entries.lock()
    }

    /// What this mount just stored at `key` (a save, a rename, a copy);
    /// `last_modified` when the store told it, else the first listing
    /// that shows the ETag fixes it.
    pub(crate) fn learn_file(
        &self,
        key: &str,
        etag: &str,
        size: u64,
        last_modified: Option<SystemTime>,
        attr: Attr,
    ) {
        if etag.is_empty() {
            return;
        }
        self.touch(key);
        self.remember_file(key, etag, size, last_modified, attr);
    }

    fn remember_file(
        &self,
        key: &str,
        etag: &str,
        size: u64,
        last_modified: Option<SystemTime>,
        attr: Attr,
    ) {
        self.lock().put(
            key.to_owned(),
            Known {
                etag: Arc::from(etag),
                size,
                last_modified: last_modified.map(seconds),
                attr,
                until: None,
            },
        );
    }

    /// The attributes of file `key` as a listing shows it, if they are
    /// known for exactly this version.
    pub(crate) fn file(
        &self,
        key: &str,
        etag: &str,
        size: u64,
        last_modified: SystemTime,
    ) -> Option<Attr> {
        let mut entries = self.lock();
        let known = entries.get_mut(key)?;
        if etag.is_empty() || *known.etag != *etag || known.size != size || known.until.is_some() {
            return None;
        }
        let listed = seconds(last_modified);
        match known.last_modified {
            Some(t) if t != listed => None,
            Some(_) => Some(known.attr.clone()),
            None => {
                known.last_modified = Some(listed);
                Some(known.attr.clone())
            }
        }
    }

    /// Whether `key` was last known as a file (some version of it).
    pub(crate) fn is_file(&self, key: &str) -> bool {
        self.lock().peek(key).is_some_and(|k| k.until.is_none())
    }

    /// A directory's attributes (from its marker object, or the defaults
    /// where it has none), trusted until `until`. `marker_key` ends in `/`.
    pub(crate) fn learn_dir(&self, marker_key: &str, attr: Attr, until: Instant) {
        self.lock().put(
            marker_key.to_owned(),
            Known {
                etag: Arc::from(""),
                size: 0,
                last_modified: None,
                attr,
                until: Some(until),
            },
        );
    }

    /// Whether a HEAD found the marker object `marker_key` there.
    pub(crate) fn note_marker(&self, marker_key: &str, there: bool) {
        let hash = self.key_hash(marker_key);
        let mut marked = self.marked.lock();
        if there {
            marked.put(hash, ());
        } else {
            marked.pop(&hash);
        }
    }

    /// Whether the marker `marker_key` was there when last asked.
    pub(crate) fn had_marker(&self, marker_key: &str) -> bool {
        self.marked.lock().contains(&self.key_hash(marker_key))
    }

    pub(crate) fn dir(&self, marker_key: &str) -> Option<Attr> {
        let mut entries = self.lock();
        let known = entries.get(marker_key)?;
        match known.until {
            Some(until) if until > Instant::now() => Some(known.attr.clone()),
            _ => {
                entries.pop(marker_key);
                None
            }
        }
    }

    /// This mount changed or removed `key` in a way the next listing
    /// might not tell apart.
    pub(crate) fn forget(&self, key: &str) {
        self.touch(key);
        self.lock().pop(key);
        self.changed.lock().put(self.key_hash(key), ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::attr::Kind;
    use std::time::Duration;

    fn attr(perm: u16) -> Attr {
        Attr {
            kind: Kind::File,
            size: 3,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            perm,
            uid: 0,
            gid: 0,
            atime: None,
            rdev: 0,
            xattrs: None,
        }
    }

    fn at(secs: u64, millis: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, millis * 1_000_000)
    }

    #[test]
    fn a_head_is_trusted_for_exactly_its_version() {
        let known = KnownAttrs::new(10, 10);
        known.learn_head("a", &head("e1", "33184"), &attr(0o640));
        // Listings keep milliseconds, HEAD answers whole seconds.
        assert_eq!(
            known.file("a", "e1", 3, at(100, 250)).map(|a| a.perm),
            Some(0o640)
        );
        // Another version, or the same bytes with new metadata.
        assert!(known.file("a", "e2", 3, at(100, 0)).is_none());
        assert!(known.file("a", "e1", 4, at(100, 0)).is_none());
        assert!(known.file("a", "e1", 3, at(101, 0)).is_none());
        assert!(known.file("b", "e1", 3, at(100, 0)).is_none());
    }

    #[test]
    fn an_own_upload_takes_the_first_listed_time() {
        let known = KnownAttrs::new(10, 10);
        known.learn_file("a", "e1", 3, None, attr(0o600));
        assert_eq!(
            known.file("a", "e1", 3, at(50, 0)).map(|a| a.perm),
            Some(0o600)
        );
        // From then on the time must match.
        assert!(known.file("a", "e1", 3, at(60, 0)).is_none());
        // An upload with no ETag to check against is not remembered.
        known.learn_file("b", "", 3, None, attr(0o600));
        assert!(known.file("b", "", 3, at(50, 0)).is_none());
    }

    #[test]
    fn directories_expire_and_entries_are_bounded() {
        let known = KnownAttrs::new(2, 2);
        known.learn_dir("d/", attr(0o750), Instant::now() + Duration::from_secs(60));
        known.learn_dir("old/", attr(0o750), Instant::now());
        assert_eq!(known.dir("d/").map(|a| a.perm), Some(0o750));
        assert!(known.dir("old/").is_none());
        known.learn_file("x", "e", 1, None, attr(0o644));
        known.learn_file("y", "e", 1, None, attr(0o644));
        assert!(known.dir("d/").is_none(), "the least recently used went");
        known.forget("x");
        assert!(known.file("x", "e", 1, at(1, 0)).is_none());
    }

    #[test]
    fn versions_without_metadata_are_remembered_in_two_generations() {
        let known = KnownAttrs::new(10, 2);
        known.learn_bare("a", "e1", 3, at(100, 0));
        // The listing's milliseconds are not in a HEAD's answer.
        assert!(known.is_bare("a", "e1", 3, at(100, 250)));
        assert!(!known.is_bare("a", "e2", 3, at(100, 0)));
        assert!(!known.is_bare("a", "e1", 4, at(100, 0)));
        assert!(!known.is_bare("a", "e1", 3, at(101, 0)));
        assert!(!known.is_bare("b", "e1", 3, at(100, 0)));
        known.learn_bare("b", "e", 1, at(1, 0));
        // "a" and "b" fill a generation; "c" starts the next, "a" is
        // still there (older), and asking for it brings it along.
        known.learn_bare("c", "e", 1, at(1, 0));
        assert!(known.is_bare("a", "e1", 3, at(100, 0)));
        known.learn_bare("d", "e", 1, at(1, 0));
        // {c, a} was full when "d" came: {b} went.
        assert!(!known.is_bare("b", "e", 1, at(1, 0)));
        assert!(known.is_bare("a", "e1", 3, at(100, 0)));
        assert!(known.is_bare("d", "e", 1, at(1, 0)));
        // Changed by this mount: asked again, whatever the fingerprint.
        known.forget("d");
        assert!(!known.is_bare("d", "e", 1, at(1, 0)));
    }

    fn head(etag: &str, mode: &str) -> crate::s3::ObjectMeta {
        crate::s3::ObjectMeta {
            size: 3,
            etag: etag.to_owned(),
            last_modified: at(100, 0),
            content_type: None,
            version_id: None,
            user_metadata: [("mode".to_owned(), mode.to_owned())].into(),
            content_headers: Vec::new(),
        }
    }

    #[test]
    fn a_late_answer_is_learnt_unless_its_key_changed_since_it_was_sent() {
        let known = KnownAttrs::new(100, 100);
        let sent = known.changes();
        known.learn_file("other", "e9", 3, None, attr(0o600));
        known.learn_head_sent_at("a", &head("e1", "33188"), &attr(0o644), sent);
        assert_eq!(known.file("a", "e1", 3, at(100, 0)), Some(attr(0o644)));

        let sent = known.changes();
        // This mount's chmod: forgotten, then its new version learnt.
        known.forget("a");
        known.learn_file("a", "e1", 3, None, attr(0o600));
        known.learn_head_sent_at("a", &head("e1", "33188"), &attr(0o644), sent);
        assert_eq!(known.file("a", "e1", 3, at(100, 0)), Some(attr(0o600)));

        // So many changes since that the key's own is no longer told
        // apart: refused too.
        let sent = known.changes();
        for i in 0..=TOUCHED_KEYS {
            known.forget(&format!("k{i}"));
        }
        known.learn_head_sent_at("b", &head("e2", "33188"), &attr(0o644), sent);
        assert_eq!(known.file("b", "e2", 3, at(100, 0)), None);
    }
}
