//! The inode table: which inode number names which path, with its cached
//! attributes and the kernel's lookup count.
//!
//! Inode numbers are a hash of the path, so a path keeps its number for the
//! life of the mount even after the kernel forgets it and looks it up again,
//! while memory holds only the inodes the kernel currently knows. A hash
//! collision (two live paths, one number) moves the newcomer to the next
//! free number. A rename keeps the numbers the kernel holds, so a renamed
//! file must be found under its new name, not given a second inode there.
//!
//! So a path is found at its hash's number, unless it is one of the few
//! "displaced" paths (a collision's newcomer, a renamed inode, a new file
//! under the name of an unlinked one still open), which a small map holds.
//! No second index of every path: after `ls -l` or `find` of a million
//! objects the kernel holds a million inodes, and each byte per inode is a
//! megabyte. For the same reason inodes are boxed: the map's slots are a
//! pointer wide, and the growth of the map (which doubles its slots) costs
//! 16 bytes a slot rather than the size of an inode.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Instant;

use super::attr::{Attr, Kind};

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// What the table knows about one inode.
#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: Ino,
    pub parent: Ino,
    /// Path below the mount root, without leading or trailing `/`; empty
    /// for the root.
    pub path: Arc<str>,
    pub attr: Attr,
    /// The attributes may be served without asking S3 until then.
    pub valid_until: Instant,
    /// ETag of the object (files and symlinks), when known.
    pub etag: Option<Arc<str>>,
    /// ETag the last open saw; the kernel's page cache holds that version.
    pub cached_etag: Option<Arc<str>>,
    /// Removed by unlink while the kernel still holds it (an open file):
    /// no longer found by its path, its attributes are the last known,
    /// with no link (`fstat` shows `nlink` 0).
    pub unlinked: bool,
    lookups: u32,
    /// The table's clock when the kernel last asked about this inode: the
    /// least recent are the first the kernel is asked to let go of.
    touched: u32,
}

impl Inode {
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

pub struct InodeTable {
    inner: Mutex<Table>,
    /// Moved on by `tick` (the pruner's passes): see `least_recent_files`.
    clock: AtomicU32,
}

struct Table {
    by_ino: HashMap<Ino, Box<Inode>>,
    /// The paths whose inode is not at their hash's number.
    displaced: HashMap<Arc<str>, Ino>,
}

impl Table {
    /// A number for a new inode of `path`: its hash, or the next free one.
    fn free_ino(&self, path: &str) -> Ino {
        let mut ino = hash_ino(path);
        while self.by_ino.contains_key(&ino) {
            ino = ino.wrapping_add(1).max(2);
        }
        ino
    }

    /// The inode that holds `path` now.
    fn find(&self, path: &str) -> Option<Ino> {
        if let Some(ino) = self.displaced.get(path) {
            return Some(*ino);
        }
        let ino = hash_ino(path);
        let inode = self.by_ino.get(&ino)?;
        (&*inode.path == path && !inode.unlinked).then_some(ino)
    }

    /// `ino` holds `path` now (taking it over from any other inode).
    fn holds(&mut self, path: Arc<str>, ino: Ino) {
        if hash_ino(&path) == ino {
            self.displaced.remove(&path);
        } else {
            self.displaced.insert(path, ino);
        }
    }

    /// `ino` no longer holds `path`, if it did.
    fn let_go(&mut self, path: &str, ino: Ino) {
        if self.displaced.get(path) == Some(&ino) {
            self.displaced.remove(path);
        }
    }
}

fn hash_ino(path: &str) -> Ino {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    // 0 is invalid and 1 is the root.
    h.finish().max(2)
}

/// Join a directory path and a name.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

impl InodeTable {
    pub fn new(root_attr: Attr) -> Self {
        let root = Inode {
            ino: ROOT_INO,
            parent: ROOT_INO,
            path: Arc::from(""),
            attr: root_attr,
            valid_until: Instant::now(),
            etag: None,
            cached_etag: None,
            unlinked: false,
            // The root is never forgotten.
            lookups: 1,
            touched: 0,
        };
        InodeTable {
            inner: Mutex::new(Table {
                // The root's path "" does not hash to 1.
                displaced: HashMap::from([(root.path.clone(), ROOT_INO)]),
                by_ino: HashMap::from([(ROOT_INO, Box::new(root))]),
            }),
            clock: AtomicU32::new(0),
        }
    }

    fn now(&self) -> u32 {
        self.clock.load(Ordering::Relaxed)
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Table> {
        self.inner.lock()
    }

    /// The inode `ino`, as the kernel asks about it (a getattr, an open).
    pub fn get(&self, ino: Ino) -> Option<Inode> {
        let now = self.now();
        let mut table = self.lock();
        let inode = table.by_ino.get_mut(&ino)?;
        inode.touched = now;
        Some(Inode::clone(inode))
    }

    /// Record what is known of `path` (a child of `parent`) and count one
    /// kernel lookup of it when `lookup` is set. Returns the inode.
    pub fn remember(
        &self,
        parent: Ino,
        path: &str,
        attr: Attr,
        etag: Option<Arc<str>>,
        valid_until: Instant,
        lookup: bool,
    ) -> Inode {
        let now = self.now();
        let mut table = self.lock();
        if let Some(ino) = table.find(path) {
            if let Some(existing) = table.by_ino.get_mut(&ino) {
                existing.touched = now;
                existing.attr = attr;
                existing.valid_until = valid_until;
                if etag.is_some() {
                    existing.etag = etag;
                }
                existing.parent = parent;
                if lookup {
                    existing.lookups = existing.lookups.saturating_add(1);
                }
                return Inode::clone(existing);
            }
        }
        let ino = table.free_ino(path);
        let path: Arc<str> = Arc::from(path);
        let inode = Inode {
            ino,
            parent,
            path: path.clone(),
            attr,
            valid_until,
            etag,
            cached_etag: None,
            unlinked: false,
            lookups: u32::from(lookup),
            touched: now,
        };
        table.by_ino.insert(ino, Box::new(inode.clone()));
        table.holds(path, ino);
        inode
    }

    /// The number `path` has, or would get, without registering it.
    pub fn peek_ino(&self, path: &str) -> Ino {
        let table = self.lock();
        table.find(path).unwrap_or_else(|| table.free_ino(path))
    }

    /// Refresh the attributes of a known inode.
    pub fn update(&self, ino: Ino, f: impl FnOnce(&mut Inode)) -> Option<Inode> {
        let mut table = self.lock();
        let inode = table.by_ino.get_mut(&ino)?;
        f(inode);
        Some(Inode::clone(inode))
    }

    /// The inode currently holding `path`, if any.
    pub fn find(&self, path: &str) -> Option<Ino> {
        self.lock().find(path)
    }

    /// What the inode holding `path` was last found to be, if the kernel
    /// holds one.
    pub fn kind_at(&self, path: &str) -> Option<Kind> {
        let table = self.lock();
        let ino = table.find(path)?;
        table.by_ino.get(&ino).map(|inode| inode.attr.kind)
    }

    /// After a rename: `from` (and everything below it) is now `to`. The
    /// inodes keep their numbers, which the kernel holds.
    pub fn rename(&self, from: &str, to: &str, new_parent: Ino) {
        let below = format!("{from}/");
        let mut table = self.lock();
        let table = &mut *table;
        // A target the rename replaces is gone, as if unlinked: the kernel
        // may still hold it open, but its name is the moved inode's now.
        if let Some(replaced) = table.find(to) {
            if let Some(inode) = table.by_ino.get_mut(&replaced) {
                if &*inode.path == to {
                    inode.unlinked = true;
                }
            }
        }
        let mut moved = Vec::new();
        for inode in table.by_ino.values_mut() {
            // An unlinked inode (open, removed) is not at any path: it does
            // not move with the directory it was in.
            if inode.unlinked {
                continue;
            }
            let new_path = if &*inode.path == from {
                inode.parent = new_parent;
                to.to_owned()
            } else if let Some(rest) = inode.path.strip_prefix(&below) {
                format!("{to}/{rest}")
            } else {
                continue;
            };
            let old = std::mem::replace(&mut inode.path, Arc::from(new_path));
            inode.valid_until = Instant::now();
            moved.push((old, inode.path.clone(), inode.ino));
        }
        for (old, _, ino) in &moved {
            table.let_go(old, *ino);
        }
        // The moved inodes take their new paths over from whatever held
        // them (a replaced target, which keeps its number until the kernel
        // forgets it).
        for (_, new, ino) in moved {
            table.holds(new, ino);
        }
    }

    /// `path` was removed: its inode, which the kernel may still hold for an
    /// open file, is no longer found by path and counts no link.
    pub fn unlinked(&self, path: &str) {
        let mut table = self.lock();
        if let Some(ino) = table.find(path) {
            table.let_go(path, ino);
            if let Some(inode) = table.by_ino.get_mut(&ino) {
                inode.unlinked = true;
            }
        }
    }

    /// The kernel dropped `n` references; forget the inode at zero.
    /// The kernel let go of `n` lookups of `ino`; whether that was the
    /// last (the kernel holds the inode no more, so no open of it is left).
    pub fn forget(&self, ino: Ino, n: u64) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let mut table = self.lock();
        let Some(inode) = table.by_ino.get_mut(&ino) else {
            return false;
        };
        inode.lookups = inode
            .lookups
            .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        if inode.lookups == 0 {
            let path = inode.path.clone();
            table.by_ino.remove(&ino);
            table.let_go(&path, ino);
            return true;
        }
        false
    }

    pub fn len(&self) -> usize {
        self.lock().by_ino.len()
    }

    /// Move the clock on: what the kernel asks about from now on is more
    /// recent than all before.
    pub fn tick(&self) {
        self.clock.fetch_add(1, Ordering::Relaxed);
    }

    /// Up to `count` files (not directories, not `busy`) the kernel holds
    /// and asked about least recently, as (parent, name), oldest first.
    ///
    /// Directories are left alone: a directory's dentry can be a working
    /// directory, which an invalidation would show as deleted, and a walk
    /// holds a thousand times fewer of them than files.
    pub fn least_recent_files(&self, count: usize, busy: &HashSet<Ino>) -> Vec<(Ino, String)> {
        let table = self.lock();
        let mut candidates: Vec<(u32, Ino)> = table
            .by_ino
            .values()
            .filter(|i| {
                i.ino != ROOT_INO
                    && i.lookups > 0
                    && !i.unlinked
                    && i.attr.kind != super::attr::Kind::Dir
                    && !busy.contains(&i.ino)
            })
            .map(|i| (i.touched, i.ino))
            .collect();
        if count < candidates.len() {
            candidates.select_nth_unstable(count);
            candidates.truncate(count);
        }
        candidates.sort_unstable();
        candidates
            .into_iter()
            .filter_map(|(_, ino)| table.by_ino.get(&ino))
            .map(|i| (i.parent, i.name().to_owned()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().by_ino.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::attr::Kind;
    use std::time::SystemTime;

    fn attr() -> Attr {
        Attr {
            kind: Kind::File,
            size: 1,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            perm: 0o644,
            uid: 0,
            gid: 0,
            atime: None,
            rdev: 0,
            xattrs: None,
        }
    }

    #[test]
    fn numbers_are_stable_and_forget_frees_memory() {
        let t = InodeTable::new(attr());
        let now = Instant::now();
        let a = t.remember(ROOT_INO, "a/b", attr(), None, now, true);
        let again = t.remember(ROOT_INO, "a/b", attr(), None, now, true);
        assert_eq!(a.ino, again.ino);
        assert_eq!(t.len(), 2);
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_some(), "one lookup left");
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_none());
        assert_eq!(t.len(), 1);
        let back = t.remember(ROOT_INO, "a/b", attr(), None, now, true);
        assert_eq!(back.ino, a.ino, "same path, same number after forget");
        assert_eq!(back.name(), "b");
    }

    #[test]
    fn collisions_get_another_number() {
        let t = InodeTable::new(attr());
        let now = Instant::now();
        let a = t.remember(ROOT_INO, "x", attr(), None, now, true);
        // Forge a collision: put another path where "y" would hash.
        let y_ino = hash_ino("y");
        t.lock().by_ino.insert(
            y_ino,
            Box::new(Inode {
                ino: y_ino,
                path: Arc::from("other"),
                ..a.clone()
            }),
        );
        let y = t.remember(ROOT_INO, "y", attr(), None, now, true);
        assert_ne!(y.ino, y_ino);
        assert_eq!(&*t.get(y.ino).unwrap().path, "y");
    }

    #[test]
    fn a_renamed_inode_is_found_under_its_new_name() {
        let t = InodeTable::new(attr());
        let now = Instant::now();
        let dir = t.remember(ROOT_INO, "d", attr(), None, now, true);
        let inner = t.remember(dir.ino, "d/f", attr(), None, now, true);
        let target = t.remember(ROOT_INO, "e", attr(), None, now, true);
        t.rename("d", "e", ROOT_INO);
        // The kernel keeps its numbers; a lookup of the new names (or
        // readdirplus) must give them, not new inodes.
        assert_eq!(
            t.remember(ROOT_INO, "e", attr(), None, now, true).ino,
            dir.ino
        );
        assert_eq!(t.find("e/f"), Some(inner.ino));
        assert_eq!(t.peek_ino("e/f"), inner.ino);
        assert_eq!(t.find("d"), None);
        // The replaced target is forgotten without taking the name along.
        t.forget(target.ino, 1);
        assert_eq!(t.find("e"), Some(dir.ino));
    }

    #[test]
    fn a_replaced_target_never_gets_its_name_back() {
        let t = InodeTable::new(attr());
        let now = Instant::now();
        let moving = t.remember(ROOT_INO, "a", attr(), None, now, true);
        let target = t.remember(ROOT_INO, "b", attr(), None, now, true);
        t.rename("a", "b", ROOT_INO);
        assert!(t.get(target.ino).expect("still held").unlinked);
        // Once the moved inode is forgotten, "b" is a new inode, not the
        // replaced one the kernel may still hold open.
        t.forget(moving.ino, 1);
        assert_eq!(t.find("b"), None);
        let again = t.remember(ROOT_INO, "b", attr(), None, now, true);
        assert_ne!(again.ino, target.ino);
        assert_ne!(again.ino, moving.ino);
    }

    #[test]
    fn a_new_file_under_an_unlinked_open_ones_name_is_another_inode() {
        let t = InodeTable::new(attr());
        let now = Instant::now();
        let open = t.remember(ROOT_INO, "f", attr(), None, now, true);
        t.unlinked("f");
        assert_eq!(t.find("f"), None);
        let new = t.remember(ROOT_INO, "f", attr(), None, now, true);
        assert_ne!(new.ino, open.ino);
        assert_eq!(t.find("f"), Some(new.ino));
        // The open one goes; the new one keeps the name.
        t.forget(open.ino, 1);
        assert_eq!(t.find("f"), Some(new.ino));
        t.forget(new.ino, 1);
        assert_eq!(t.find("f"), None);
        assert_eq!(t.len(), 1, "only the root is left");
    }

    #[test]
    fn the_least_recent_files_go_first_but_never_open_ones_or_directories() {
        let t = InodeTable::new(attr());
        let now = Instant::now();
        let dir_attr = Attr {
            kind: Kind::Dir,
            ..attr()
        };
        let dir = t.remember(ROOT_INO, "d", dir_attr, None, now, true);
        let old = t.remember(dir.ino, "d/old", attr(), None, now, true);
        let open = t.remember(dir.ino, "d/open", attr(), None, now, true);
        t.tick();
        t.remember(dir.ino, "d/middle", attr(), None, now, true);
        t.tick();
        t.remember(dir.ino, "d/new", attr(), None, now, true);
        // A getattr makes the oldest the newest.
        t.tick();
        t.get(old.ino);
        let busy = HashSet::from([open.ino]);
        assert_eq!(
            t.least_recent_files(2, &busy),
            vec![(dir.ino, "middle".to_owned()), (dir.ino, "new".to_owned())]
        );
        assert_eq!(
            t.least_recent_files(10, &busy).len(),
            3,
            "not the directory, not the open file"
        );
    }
}
