//! The inode table: which inode number names which path, with its cached
//! attributes and the kernel's lookup count.
//!
//! Inode numbers are a hash of the path, so a path keeps its number for the
//! life of the mount even after the kernel forgets it and looks it up again,
//! while memory holds only the inodes the kernel currently knows. A hash
//! collision (two live paths, one number) moves the newcomer to the next
//! free number.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
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
    lookups: u64,
}

impl Inode {
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

pub struct InodeTable {
    inodes: Mutex<HashMap<Ino, Inode>>,
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
            // The root is never forgotten.
            lookups: 1,
        };
        InodeTable {
            inodes: Mutex::new(HashMap::from([(ROOT_INO, root)])),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ino, Inode>> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, ino: Ino) -> Option<Inode> {
        self.lock().get(&ino).cloned()
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
        let mut inodes = self.lock();
        let mut ino = hash_ino(path);
        loop {
            match inodes.get_mut(&ino) {
                Some(existing) if &*existing.path == path => {
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
                Some(_) => ino = ino.wrapping_add(1).max(2),
                None => break,
            }
        }
        let inode = Inode {
            ino,
            parent,
            path: Arc::from(path),
            attr,
            valid_until,
            etag,
            cached_etag: None,
            lookups: u64::from(lookup),
        };
        inodes.insert(ino, inode.clone());
        inode
    }

    /// The number `path` has, or would get, without registering it.
    pub fn peek_ino(&self, path: &str) -> Ino {
        let inodes = self.lock();
        let mut ino = hash_ino(path);
        while let Some(existing) = inodes.get(&ino) {
            if &*existing.path == path {
                break;
            }
            ino = ino.wrapping_add(1).max(2);
        }
        ino
    }

    /// Refresh the attributes of a known inode.
    pub fn update(&self, ino: Ino, f: impl FnOnce(&mut Inode)) -> Option<Inode> {
        let mut inodes = self.lock();
        let inode = inodes.get_mut(&ino)?;
        f(inode);
        Some(inode.clone())
    }

    /// The inode currently holding `path`, if any.
    pub fn find(&self, path: &str) -> Option<Ino> {
        self.lock()
            .values()
            .find(|i| &*i.path == path)
            .map(|i| i.ino)
    }

    /// After a rename: `from` (and everything below it) is now `to`. The
    /// inodes keep their numbers, which the kernel holds.
    pub fn rename(&self, from: &str, to: &str, new_parent: Ino) {
        let below = format!("{from}/");
        let mut inodes = self.lock();
        for inode in inodes.values_mut() {
            if &*inode.path == from {
                inode.path = Arc::from(to);
                inode.parent = new_parent;
                inode.valid_until = Instant::now();
            } else if let Some(rest) = inode.path.strip_prefix(&below) {
                inode.path = Arc::from(format!("{to}/{rest}"));
                inode.valid_until = Instant::now();
            }
        }
    }

    /// The kernel dropped `n` references; forget the inode at zero.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut inodes = self.lock();
        if let Some(inode) = inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
            if inode.lookups == 0 {
                inodes.remove(&ino);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
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
        t.lock().insert(
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
}
