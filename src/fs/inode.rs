//! The inode table: which inode number names which path, with its cached
//! attributes and the kernel's lookup count.
//!
//! Inode numbers are a hash of the path, so a path keeps its number for the
//! life of the mount even after the kernel forgets it and looks it up again,
//! while memory holds only the inodes the kernel currently knows. A hash
//! collision (two live paths, one number) moves the newcomer to the next
//! free number. A rename keeps the numbers the kernel holds, so the table
//! also indexes inodes by their current path: a renamed file must be found
//! under its new name, not given a second inode there.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Instant;

use super::attr::Attr;

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
    lookups: u64,
}

impl Inode {
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

pub struct InodeTable {
    inner: Mutex<Table>,
}

struct Table {
    by_ino: HashMap<Ino, Inode>,
    /// The inode each path names now.
    by_path: HashMap<Arc<str>, Ino>,
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
        };
        InodeTable {
            inner: Mutex::new(Table {
                by_path: HashMap::from([(root.path.clone(), ROOT_INO)]),
                by_ino: HashMap::from([(ROOT_INO, root)]),
            }),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Table> {
        self.inner.lock()
    }

    pub fn get(&self, ino: Ino) -> Option<Inode> {
        self.lock().by_ino.get(&ino).cloned()
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
        let mut table = self.lock();
        if let Some(ino) = table.by_path.get(path).copied() {
            if let Some(existing) = table.by_ino.get_mut(&ino) {
                existing.attr = attr;
                existing.valid_until = valid_until;
                if etag.is_some() {
                    existing.etag = etag;
                }
                existing.parent = parent;
                if lookup {
                    existing.lookups += 1;
                }
                return existing.clone();
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
            lookups: u64::from(lookup),
        };
        table.by_ino.insert(ino, inode.clone());
        table.by_path.insert(path, ino);
        inode
    }

    /// The number `path` has, or would get, without registering it.
    pub fn peek_ino(&self, path: &str) -> Ino {
        let table = self.lock();
        match table.by_path.get(path) {
            Some(ino) => *ino,
            None => table.free_ino(path),
        }
    }

    /// Refresh the attributes of a known inode.
    pub fn update(&self, ino: Ino, f: impl FnOnce(&mut Inode)) -> Option<Inode> {
        let mut table = self.lock();
        let inode = table.by_ino.get_mut(&ino)?;
        f(inode);
        Some(inode.clone())
    }

    /// The inode currently holding `path`, if any.
    pub fn find(&self, path: &str) -> Option<Ino> {
        self.lock().by_path.get(path).copied()
    }

    /// After a rename: `from` (and everything below it) is now `to`. The
    /// inodes keep their numbers, which the kernel holds.
    pub fn rename(&self, from: &str, to: &str, new_parent: Ino) {
        let below = format!("{from}/");
        let mut table = self.lock();
        let table = &mut *table;
        let mut moved = Vec::new();
        for inode in table.by_ino.values_mut() {
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
            if table.by_path.get(old) == Some(ino) {
                table.by_path.remove(old);
            }
        }
        // The moved inodes take their new paths over from whatever held
        // them (a replaced target, which keeps its number until the kernel
        // forgets it).
        for (_, new, ino) in moved {
            table.by_path.insert(new, ino);
        }
    }

    /// `path` was removed: its inode, which the kernel may still hold for an
    /// open file, is no longer found by path and counts no link.
    pub fn unlinked(&self, path: &str) {
        let mut table = self.lock();
        if let Some(ino) = table.by_path.remove(path) {
            if let Some(inode) = table.by_ino.get_mut(&ino) {
                inode.unlinked = true;
            }
        }
    }

    /// The kernel dropped `n` references; forget the inode at zero.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut table = self.lock();
        let Some(inode) = table.by_ino.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(n);
        if inode.lookups == 0 {
            let path = inode.path.clone();
            table.by_ino.remove(&ino);
            if table.by_path.get(&path) == Some(&ino) {
                table.by_path.remove(&path);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_ino.len()
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
            Inode {
                ino: y_ino,
                path: Arc::from("other"),
                ..a.clone()
            },
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
}
