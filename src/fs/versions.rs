//! The `.versions` view: a bucket's history as a read-only directory tree.
//!
//! - `.versions/<dir>/` mirrors the tree as it ever was: every directory and
//!   file name that has (or had) a version, deleted ones included.
//! - `.versions/<dir>/<file>/` holds one entry per version of the file,
//!   named `<time>~<versionId>` (a delete marker: `<time>~<versionId>~deleted`,
//!   zero bytes), so `ls` sorts them oldest to newest.
//! - `.versions/@<time>/` is the whole mounted tree as it was at an instant:
//!   for each key, the newest version not later than it, unless that is a
//!   delete marker.
//!
//! Everything here comes from ListObjectVersions (prefix, delimiter `/`,
//! every page), cached for `metadata_ttl` and dropped on any change made
//! through the mount. Reads go through the normal reader with `versionId`.
//! Nothing under `.versions` can be changed: EROFS.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::attr::Attr;
use super::error::{FsError, FsResult};
use super::inode::{child_path, Inode, ROOT_INO};
use super::names::{is_valid_name, NAME_MAX};
use super::Fs;
use crate::s3::listing::MarkerGuard;
use crate::s3::{ListVersionsRequest, ObjectVersion, VersionKind};

/// The name of the view at the mount root.
pub const VERSIONS_DIR: &str = ".versions";

/// Whether and how `.versions` appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VersionsMode {
    /// Reachable by name, not listed in the root (like ZFS's `.zfs`).
    Hidden,
    /// Listed in the root too.
    Visible,
    /// No versions view; a key named `.versions/...` shows as usual.
    Off,
}

/// What a path under `.versions` names.
#[derive(Debug, Clone)]
pub(crate) enum VNode {
    /// `.versions` (dir "") or `.versions/<dir>`: every name that ever was.
    History { dir: String },
    /// `.versions/<file>`: one entry per version.
    FileHistory { file: String },
    /// `.versions/@<time>[/<dir>]`: the tree at an instant.
    AtDir { at: SystemTime, dir: String },
    /// One version of a file (an entry of a FileHistory, or a file of an
    /// AtDir view).
    Version {
        file: String,
        version_id: String,
        etag: String,
        size: u64,
        time: SystemTime,
        deleted: bool,
    },
}

/// A ListObjectVersions of one directory level, all pages.
#[derive(Debug)]
pub(crate) struct VersionListing {
    /// Versions by key (newest first), keys directly in the directory.
    pub keys: BTreeMap<String, Vec<ObjectVersion>>,
    /// Names of subdirectories (common prefixes), without the slash.
    pub dirs: Vec<String>,
    pub fetched_at: Instant,
}

/// Whether a virtual path is under `.versions`.
pub(crate) fn is_virtual(path: &str) -> bool {
    path == VERSIONS_DIR || path.starts_with(".versions/")
}

/// Entry names of one file's versions (given newest first, as listed):
/// `<time>~<versionId>`, sortable oldest to newest, unique, at most 255
/// bytes. Versions that share a timestamp (servers that keep whole
/// seconds) get `<time>~<n>~<versionId>`, numbered oldest first, so `ls`
/// still sorts them in order.
pub(crate) fn version_names(versions: &[ObjectVersion]) -> Vec<String> {
    let times: Vec<String> = versions
        .iter()
        .map(|v| humantime::format_rfc3339_millis(v.last_modified).to_string())
        .collect();
    let mut names = Vec::with_capacity(versions.len());
    for (i, v) in versions.iter().enumerate() {
        let same: Vec<usize> = (0..versions.len())
            .filter(|j| times[*j] == times[i])
            .collect();
        let tie = if same.len() > 1 {
            // `same` is newest first; number from the oldest.
            let rank = same.len() - same.iter().position(|j| *j == i).unwrap_or(0);
            format!("{rank:04}~")
        } else {
            String::new()
        };
        names.push(entry_name(&times[i], &tie, v));
    }
    names
}

fn entry_name(time: &str, tie: &str, v: &ObjectVersion) -> String {
    let suffix = if v.kind == VersionKind::DeleteMarker {
        "~deleted"
    } else {
        ""
    };
    let name = format!("{time}~{tie}{}{suffix}", v.version_id);
    if name.len() <= NAME_MAX && !v.version_id.contains('/') {
        return name;
    }
    // A version id too long (or with a slash): keep a prefix and a hash
    // that keeps the name unique.
    let mut h = DefaultHasher::new();
    v.version_id.hash(&mut h);
    let safe: String = v
        .version_id
        .chars()
        .filter(|c| *c != '/')
        .take(120)
        .collect();
    format!("{time}~{tie}{safe}~{:016x}{suffix}", h.finish())
}

/// Parse the instant of an `@<time>` name: RFC 3339 in UTC, or a date
/// alone meaning its midnight UTC.
pub fn parse_instant(text: &str) -> Option<SystemTime> {
    let t = text.trim();
    if t.len() == 10 && t.as_bytes().get(4) == Some(&b'-') {
        return humantime::parse_rfc3339(&format!("{t}T00:00:00Z")).ok();
    }
    humantime::parse_rfc3339(t)
        .ok()
        .or_else(|| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
}

/// The newest version of a key not later than `at`, unless it is a delete
/// marker. `versions` are newest first.
pub fn version_at(versions: &[ObjectVersion], at: SystemTime) -> Option<&ObjectVersion> {
    versions
        .iter()
        .find(|v| v.last_modified <= at)
        .filter(|v| v.kind != VersionKind::DeleteMarker)
}

fn read_only() -> FsError {
    FsError::new(libc::EROFS, "the .versions view is read-only")
}

impl Fs {
    pub(crate) fn versions_enabled(&self) -> bool {
        self.config.versions != VersionsMode::Off
    }

    /// Refuse changes under `.versions`.
    pub(crate) fn refuse_virtual(&self, path: &str) -> FsResult<()> {
        if self.versions_enabled() && is_virtual(path) {
            Err(read_only())
        } else {
            Ok(())
        }
    }

    pub(crate) fn vnode(&self, path: &str) -> Option<VNode> {
        self.vnodes.lock().get(path).cloned()
    }

    fn remember_vnode(&self, path: &str, node: VNode) {
        self.vnodes.lock().put(path.to_owned(), node);
    }

    /// Drop cached version listings (after any change through the mount).
    pub(crate) fn invalidate_versions(&self) {
        self.version_listings.lock().clear();
    }

    /// One directory level of the bucket's history.
    async fn version_listing(&self, dir: &str) -> FsResult<Arc<VersionListing>> {
        let prefix = self.dir_prefix(dir);
        if let Some(cached) = self.version_listings.lock().get(&prefix) {
            if cached.fetched_at.elapsed() < self.config.metadata_ttl {
                return Ok(cached.clone());
            }
        }
        let mut request = ListVersionsRequest {
            prefix: prefix.clone(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        let mut keys: BTreeMap<String, Vec<ObjectVersion>> = BTreeMap::new();
        let mut dirs = Vec::new();
        let mut guard = MarkerGuard::default();
        loop {
            let page = self.store.list_object_versions(&request).await?;
            for v in page.versions {
                let Some(name) = v.key.strip_prefix(&prefix) else {
                    continue;
                };
                if !is_valid_name(name) {
                    continue;
                }
                keys.entry(name.to_owned()).or_default().push(v);
            }
            for p in page.common_prefixes {
                if let Some(name) = p.strip_prefix(&prefix).and_then(|r| r.strip_suffix('/')) {
                    if is_valid_name(name) {
                        dirs.push(name.to_owned());
                    }
                }
            }
            let (key, version_id) = (page.next_key_marker, page.next_version_id_marker);
            if !guard.next_versions_page(&mut request, key, version_id)? {
                break;
            }
        }
        for versions in keys.values_mut() {
            // Newest first; the sort is stable, so equal times keep the
            // server's order (newest first too).
            versions.sort_by_key(|v| std::cmp::Reverse(v.last_modified));
        }
        dirs.sort();
        dirs.dedup();
        let listing = Arc::new(VersionListing {
            keys,
            dirs,
            fetched_at: Instant::now(),
        });
        self.version_listings.lock().put(prefix, listing.clone());
        Ok(listing)
    }

    fn dir_attr(&self, time: Option<SystemTime>) -> Attr {
        let mut attr = self.config.attrs.dir(time.map(|t| (t, None)));
        attr.perm = 0o555;
        attr
    }

    /// Attributes of `.versions` itself.
    pub(crate) fn versions_root_attr(&self) -> Attr {
        self.dir_attr(None)
    }

    pub(crate) fn vnode_attr(&self, node: &VNode) -> Attr {
        match node {
            VNode::History { .. } | VNode::AtDir { .. } => self.dir_attr(None),
            VNode::FileHistory { .. } => self.dir_attr(None),
            VNode::Version {
                size,
                time,
                deleted,
                ..
            } => {
                let mut attr =
                    self.config
                        .attrs
                        .object(if *deleted { 0 } else { *size }, *time, None);
                attr.perm = 0o444;
                attr
            }
        }
    }

    /// What `name` is inside the virtual directory `parent`.
    async fn vchild(&self, parent: &VNode, name: &str) -> FsResult<Option<VNode>> {
        Ok(match parent {
            VNode::History { dir } => {
                if dir.is_empty() && name.starts_with('@') {
                    return match parse_instant(&name[1..]) {
                        Some(at) => Ok(Some(VNode::AtDir {
                            at,
                            dir: String::new(),
                        })),
                        None => {
                            tracing::info!(
                                "{VERSIONS_DIR}/{name}: not a time; use @YYYY-MM-DDTHH:MM:SSZ (RFC 3339, UTC) or @YYYY-MM-DD"
                            );
                            Ok(None)
                        }
                    };
                }
                let listing = self.version_listing(dir).await?;
                let path = child_path(dir, name);
                if listing.dirs.iter().any(|d| d == name) {
                    Some(VNode::History { dir: path })
                } else if listing.keys.contains_key(name) {
                    Some(VNode::FileHistory { file: path })
                } else {
                    None
                }
            }
            VNode::FileHistory { file } => {
                let (dir, base) = file.rsplit_once('/').unwrap_or(("", file));
                let listing = self.version_listing(dir).await?;
                listing.keys.get(base).and_then(|versions| {
                    version_names(versions)
                        .iter()
                        .position(|n| n == name)
                        .map(|i| version_node(file, &versions[i]))
                })
            }
            VNode::AtDir { at, dir } => {
                let listing = self.version_listing(dir).await?;
                let path = child_path(dir, name);
                if listing.dirs.iter().any(|d| d == name) {
                    Some(VNode::AtDir { at: *at, dir: path })
                } else {
                    listing
                        .keys
                        .get(name)
                        .and_then(|versions| version_at(versions, *at))
                        .map(|v| version_node(&path, v))
                }
            }
            VNode::Version { .. } => return Err(FsError::new(libc::ENOTDIR, "not a directory")),
        })
    }

    /// The vnode of a virtual directory inode, re-derived if forgotten.
    async fn vnode_of(&self, inode: &Inode) -> FsResult<VNode> {
        if let Some(node) = self.vnode(&inode.path) {
            return Ok(node);
        }
        if &*inode.path == VERSIONS_DIR {
            return Ok(VNode::History { dir: String::new() });
        }
        // Walk down from the root of the view.
        let rest = inode.path.strip_prefix(".versions/").unwrap_or("");
        let mut node = VNode::History { dir: String::new() };
        for name in rest.split('/') {
            node = self
                .vchild(&node, name)
                .await?
                .ok_or_else(FsError::not_found)?;
        }
        self.remember_vnode(&inode.path, node.clone());
        Ok(node)
    }

    /// lookup inside the view (or of `.versions` itself at the root).
    pub(crate) async fn versions_lookup(&self, parent: &Inode, name: &str) -> FsResult<Inode> {
        let path = child_path(&parent.path, name);
        let node = if parent.ino == ROOT_INO {
            VNode::History { dir: String::new() }
        } else {
            let parent_node = self.vnode_of(parent).await?;
            self.vchild(&parent_node, name)
                .await?
                .ok_or_else(FsError::not_found)?
        };
        let attr = self.vnode_attr(&node);
        self.remember_vnode(&path, node);
        Ok(self.inodes.remember(
            parent.ino,
            &path,
            attr,
            None,
            Instant::now() + self.config.metadata_ttl,
            true,
        ))
    }

    /// Entries of a virtual directory, with attributes.
    pub(crate) async fn versions_entries(&self, inode: &Inode) -> FsResult<Vec<(String, Attr)>> {
        let node = self.vnode_of(inode).await?;
        let mut out: Vec<(String, VNode)> = Vec::new();
        match &node {
            VNode::History { dir } => {
                let listing = self.version_listing(dir).await?;
                for name in &listing.dirs {
                    out.push((
                        name.clone(),
                        VNode::History {
                            dir: child_path(dir, name),
                        },
                    ));
                }
                for name in listing.keys.keys() {
                    if !listing.dirs.contains(name) {
                        out.push((
                            name.clone(),
                            VNode::FileHistory {
                                file: child_path(dir, name),
                            },
                        ));
                    }
                }
            }
            VNode::FileHistory { file } => {
                let (dir, base) = file.rsplit_once('/').unwrap_or(("", file));
                let listing = self.version_listing(dir).await?;
                if let Some(versions) = listing.keys.get(base) {
                    for (name, v) in version_names(versions).into_iter().zip(versions) {
                        out.push((name, version_node(file, v)));
                    }
                }
            }
            VNode::AtDir { at, dir } => {
                let listing = self.version_listing(dir).await?;
                for name in &listing.dirs {
                    out.push((
                        name.clone(),
                        VNode::AtDir {
                            at: *at,
                            dir: child_path(dir, name),
                        },
                    ));
                }
                for (name, versions) in &listing.keys {
                    if listing.dirs.contains(name) {
                        continue;
                    }
                    if let Some(v) = version_at(versions, *at) {
                        out.push((name.clone(), version_node(&child_path(dir, name), v)));
                    }
                }
            }
            VNode::Version { .. } => return Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out
            .into_iter()
            .map(|(name, node)| {
                let attr = self.vnode_attr(&node);
                self.remember_vnode(&child_path(&inode.path, &name), node);
                (name, attr)
            })
            .collect())
    }

    /// The version a virtual file reads.
    pub(crate) async fn versions_file(&self, inode: &Inode) -> FsResult<crate::read::ObjectToRead> {
        match self.vnode_of(inode).await? {
            VNode::Version {
                file,
                version_id,
                etag,
                size,
                deleted,
                ..
            } => Ok(crate::read::ObjectToRead {
                key: Arc::from(self.key(&file)),
                etag: Arc::from(etag),
                version_id: Some(version_id),
                size: if deleted { 0 } else { size },
            }),
            _ => Err(FsError::new(libc::EISDIR, "is a directory")),
        }
    }
}

fn version_node(file: &str, v: &ObjectVersion) -> VNode {
    let (size, etag, deleted) = match &v.kind {
        VersionKind::Object { size, etag } => (*size, etag.clone(), false),
        VersionKind::DeleteMarker => (0, String::new(), true),
    };
    VNode::Version {
        file: file.to_owned(),
        version_id: v.version_id.clone(),
        etag,
        size,
        time: v.last_modified,
        deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v(id: &str, secs: u64, deleted: bool) -> ObjectVersion {
        ObjectVersion {
            key: "k".into(),
            version_id: id.into(),
            is_latest: false,
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            kind: if deleted {
                VersionKind::DeleteMarker
            } else {
                VersionKind::Object {
                    size: 1,
                    etag: "e".into(),
                }
            },
        }
    }

    #[test]
    fn names_sort_by_time_and_fit() {
        // Newest first, as listed.
        let names = version_names(&[
            v("aaa", 1_700_000_001, true),
            v("zzz", 1_700_000_000, false),
        ]);
        assert_eq!(names[1], "2023-11-14T22:13:20.000Z~zzz");
        assert!(names[0].ends_with("~deleted") && names[1] < names[0]);
        let long = version_names(&[
            v(&"x".repeat(400), 1, false),
            v(&format!("{}y", "x".repeat(399)), 2, false),
        ]);
        assert!(long.iter().all(|n| n.len() <= NAME_MAX));
        assert_ne!(long[0], long[1]);
    }

    #[test]
    fn equal_times_still_sort_oldest_first() {
        // Three versions in one second, newest first: c, b, a.
        let names = version_names(&[v("c", 5, false), v("a", 5, false), v("b", 5, false)]);
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![names[2].clone(), names[1].clone(), names[0].clone()]
        );
        assert!(names[2].contains("~0001~b"), "{names:?}");
    }

    #[test]
    fn instants() {
        let day = parse_instant("2026-11-23").unwrap();
        assert_eq!(
            day,
            humantime::parse_rfc3339("2026-11-23T00:00:00Z").unwrap()
        );
        assert!(parse_instant("2026-11-23T10:00:00Z").is_some());
        assert!(parse_instant("2026-11-23T10:00:00.5Z").is_some());
        assert!(parse_instant("yesterday").is_none());
    }

    #[test]
    fn point_in_time_picks_the_newest_not_later_unless_deleted() {
        let history = vec![v("3", 30, true), v("2", 20, false), v("1", 10, false)];
        let at = |s| {
            version_at(&history, SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                .map(|v| v.version_id.clone())
        };
        assert_eq!(at(5), None);
        assert_eq!(at(10).as_deref(), Some("1"));
        assert_eq!(at(25).as_deref(), Some("2"));
        assert_eq!(at(35), None, "deleted by then");
    }
}
