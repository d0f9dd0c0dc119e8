//! File attributes: what `stat` shows for a key, from s3fs-compatible user
//! metadata when the object has it, else from the mount options and the
//! object's LastModified.
//!
//! s3fs stores `x-amz-meta-mode` (decimal `st_mode`, type bits included),
//! `x-amz-meta-uid`, `x-amz-meta-gid` and `x-amz-meta-mtime` (`sec` or
//! `sec.nsec`); reading the same headers lets a bucket move between the two
//! tools.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Objects this big are regular files whatever their metadata says: a
/// symlink's object holds its target, shorter than PATH_MAX, and a special
/// file's holds nothing. So a listing alone tells their kind.
pub const KIND_CERTAIN_SIZE: u64 = 4096;

/// What kind of file a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    /// The kind a full `st_mode` names, `None` for an unknown type.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this kind, which every stored mode carries.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDevice => libc::S_IFCHR,
            Kind::BlockDevice => libc::S_IFBLK,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Permission bits (0o7777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// An access time set explicitly (`touch -a`, `utimensat`, `cp -p`),
    /// kept in `x-amz-meta-atime` as s3fs does. Reads never change it (that
    /// would cost a request per read); without one, the mtime is shown.
    pub atime: Option<SystemTime>,
    /// Device number of a device node (`x-amz-meta-rdev`), else 0.
    pub rdev: u32,
    /// Extended attributes, when the metadata was read (a HEAD, or this
    /// mount's own write); `None` when unknown (a listing).
    pub xattrs: Option<std::sync::Arc<super::xattr::Xattrs>>,
}

impl Attr {
    /// The access time to show.
    pub fn atime(&self) -> SystemTime {
        self.atime.unwrap_or(self.mtime)
    }
}

/// The ownership and modes used where an object carries none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrDefaults {
    pub uid: u32,
    pub gid: u32,
    pub file_perm: u16,
    pub dir_perm: u16,
    /// When the mount started: the time shown for directories that exist
    /// only as a common prefix.
    pub mount_time: SystemTime,
}

/// Parse `sec` or `sec.nsec` (s3fs writes both).
fn parse_time(value: &str) -> Option<SystemTime> {
    let (secs, nanos) = match value.trim().split_once('.') {
        Some((s, n)) => {
            let digits: String = n.chars().take(9).collect();
            let scale = 10u32.pow(9 - digits.len() as u32);
            (s.parse::<i64>().ok()?, digits.parse::<u32>().ok()? * scale)
        }
        None => (value.trim().parse::<i64>().ok()?, 0),
    };
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

impl AttrDefaults {
    /// Attributes of an object of `size` bytes last modified at
    /// `last_modified`, with its user metadata when known (a HEAD), `None`
    /// when it came from a listing.
    pub fn object(
        &self,
        size: u64,
        last_modified: SystemTime,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Attr {
        let mut attr = Attr {
            kind: Kind::File,
            size,
            mtime: last_modified,
            ctime: last_modified,
            perm: self.file_perm,
            uid: self.uid,
            gid: self.gid,
            atime: None,
            rdev: 0,
            xattrs: None,
        };
        if let Some(meta) = metadata {
            self.apply_metadata(&mut attr, meta);
            attr.xattrs = Some(std::sync::Arc::new(super::xattr::of_metadata(meta)));
            if size >= KIND_CERTAIN_SIZE {
                // Too big for a symlink's target or a special file: a
                // regular file, as a listing alone shows it.
                attr.kind = Kind::File;
            }
        }
        attr
    }

    /// Attributes of a file object as a HEAD of it answered. A plain key
    /// whose metadata says "directory" (no trailing slash) is still shown
    /// as what it is: a file.
    pub fn of_head(&self, meta: &crate::s3::ObjectMeta) -> Attr {
        let mut attr = self.object(meta.size, meta.last_modified, Some(&meta.user_metadata));
        if attr.kind == Kind::Dir {
            attr.kind = Kind::File;
        }
        attr
    }

    /// Attributes of a directory; `marker` is the `dir/` object's time and
    /// metadata, when one exists.
    pub fn dir(&self, marker: Option<(SystemTime, Option<&BTreeMap<String, String>>)>) -> Attr {
        let time = marker.map(|(t, _)| t).unwrap_or(self.mount_time);
        let mut attr = Attr {
            kind: Kind::Dir,
            size: 0,
            mtime: time,
            ctime: time,
            perm: self.dir_perm,
            uid: self.uid,
            gid: self.gid,
            atime: None,
            rdev: 0,
            xattrs: None,
        };
        if let Some((_, Some(meta))) = marker {
            self.apply_metadata(&mut attr, meta);
            attr.kind = Kind::Dir;
        }
        attr
    }

    fn apply_metadata(&self, attr: &mut Attr, meta: &BTreeMap<String, String>) {
        if let Some(mode) = meta.get("mode").and_then(|m| m.trim().parse::<u32>().ok()) {
            if let Some(kind) = Kind::from_mode(mode) {
                attr.kind = kind;
            }
            attr.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = meta.get("uid").and_then(|v| v.trim().parse().ok()) {
            attr.uid = uid;
        }
        if let Some(gid) = meta.get("gid").and_then(|v| v.trim().parse().ok()) {
            attr.gid = gid;
        }
        if let Some(mtime) = meta.get("mtime").and_then(|v| parse_time(v)) {
            attr.mtime = mtime;
        }
        if let Some(ctime) = meta.get("ctime").and_then(|v| parse_time(v)) {
            attr.ctime = ctime;
        }
        if let Some(atime) = meta.get("atime").and_then(|v| parse_time(v)) {
            attr.atime = Some(atime);
        }
        if let Some(rdev) = meta.get("rdev").and_then(|v| v.trim().parse().ok()) {
            attr.rdev = rdev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> AttrDefaults {
        AttrDefaults {
            uid: 1000,
            gid: 100,
            file_perm: 0o644,
            dir_perm: 0o755,
            mount_time: UNIX_EPOCH + Duration::from_secs(5),
        }
    }

    #[test]
    fn s3fs_metadata_wins_over_defaults() {
        let meta: BTreeMap<String, String> = [
            ("mode", "33261"), // S_IFREG | 0755
            ("uid", "0"),
            ("gid", "0"),
            ("mtime", "1700000000.5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let a = defaults().object(10, UNIX_EPOCH, Some(&meta));
        assert_eq!((a.kind, a.perm, a.uid, a.gid), (Kind::File, 0o755, 0, 0));
        assert_eq!(
            a.mtime,
            UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000)
        );
    }

    #[test]
    fn symlink_mode_and_missing_metadata() {
        let meta: BTreeMap<String, String> = [("mode".to_owned(), "41471".to_owned())].into(); // S_IFLNK | 0777
        assert_eq!(
            defaults().object(3, UNIX_EPOCH, Some(&meta)).kind,
            Kind::Symlink
        );
        // No target is that long: a regular file, as its listing shows it
        // (the mode's permission bits still apply).
        let big = defaults().object(KIND_CERTAIN_SIZE, UNIX_EPOCH, Some(&meta));
        assert_eq!((big.kind, big.perm), (Kind::File, 0o777));
        let fifo: BTreeMap<String, String> =
            [("mode".to_owned(), (libc::S_IFIFO | 0o644).to_string())].into();
        assert_eq!(
            defaults()
                .object(KIND_CERTAIN_SIZE - 1, UNIX_EPOCH, Some(&fifo))
                .kind,
            Kind::Fifo
        );
        let plain = defaults().object(3, UNIX_EPOCH + Duration::from_secs(9), None);
        assert_eq!(
            (plain.kind, plain.perm, plain.uid),
            (Kind::File, 0o644, 1000)
        );
        assert_eq!(plain.mtime, UNIX_EPOCH + Duration::from_secs(9));
        let bad: BTreeMap<String, String> = [("mode".to_owned(), "garbage".to_owned())].into();
        assert_eq!(defaults().object(3, UNIX_EPOCH, Some(&bad)).perm, 0o644);
    }

    #[test]
    fn implicit_dirs_use_mount_time() {
        let d = defaults().dir(None);
        assert_eq!(
            (d.kind, d.perm, d.mtime),
            (Kind::Dir, 0o755, UNIX_EPOCH + Duration::from_secs(5))
        );
    }
}
