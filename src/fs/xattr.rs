//! Extended attributes: `user.*` names, kept with the object in s3fs's
//! format, so that a bucket moves between the two tools (s3fs reads them
//! with `-o use_xattr`).
//!
//! The format is one user-metadata header, `x-amz-meta-xattr`: a JSON
//! object of name to base64 value, URL-encoded. Every attribute of a file
//! is in that one header, and all its user metadata must fit S3's 2 KiB
//! (the sum of the names and values; B2 allows 7,000 bytes, 2,048 with
//! encryption, and 10 headers): a change that would not fit is refused
//! with ENOSPC, as ext4 does when an inode's attribute space is full, and
//! nothing is dropped.
//!
//! Other namespaces are not kept: `security.*`, `trusted.*` and
//! `system.*` (ACLs) read as absent (ENODATA) and cannot be set
//! (EOPNOTSUPP), as on a local filesystem without support for them.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::attr::Kind;
use super::error::{FsError, FsResult};
use super::inode::Ino;
use super::Fs;
use crate::s3::{MetadataDirective, ObjectMeta, PutOptions};

/// The user-metadata name (after `x-amz-meta-`) s3fs keeps xattrs in.
pub const XATTR_META: &str = "xattr";

/// S3's bound on user metadata: names and values, in bytes.
pub const METADATA_MAX: usize = 2048;

/// Largest value the kernel passes (XATTR_SIZE_MAX).
const VALUE_MAX: usize = 64 * 1024;

/// What s3fs leaves unencoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A file's extended attributes, by full name (`user.x`).
pub type Xattrs = BTreeMap<String, Vec<u8>>;

/// The attributes stored in a header value; `None` if it is not in the
/// format (logged by the caller, never fatal).
pub fn decode(header: &str) -> Option<Xattrs> {
    let json = percent_decode_str(header).decode_utf8().ok()?;
    let map: BTreeMap<String, String> = serde_json::from_str(&json).ok()?;
    map.into_iter()
        .map(|(name, value)| {
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()
                .map(|v| (name, v))
        })
        .collect()
}

/// The header value for `xattrs` (none when there are none).
pub fn encode(xattrs: &Xattrs) -> Option<String> {
    if xattrs.is_empty() {
        return None;
    }
    let map: BTreeMap<&str, String> = xattrs
        .iter()
        .map(|(n, v)| {
            (
                n.as_str(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect();
    let json = serde_json::to_string(&map).ok()?;
    Some(utf8_percent_encode(&json, UNRESERVED).to_string())
}

/// The attributes in an object's user metadata.
pub fn of_metadata(metadata: &BTreeMap<String, String>) -> Xattrs {
    match metadata.get(XATTR_META) {
        None => Xattrs::new(),
        Some(header) => decode(header).unwrap_or_else(|| {
            tracing::warn!("an x-amz-meta-xattr header is not in s3fs's format; ignored");
            Xattrs::new()
        }),
    }
}

/// The size S3 counts for user metadata.
pub fn metadata_size(metadata: &BTreeMap<String, String>) -> usize {
    metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Put `xattrs` into `metadata`, if the result fits S3's bound.
fn store_in(metadata: &mut BTreeMap<String, String>, xattrs: &Xattrs) -> FsResult<()> {
    let mut next = metadata.clone();
    match encode(xattrs) {
        Some(v) => next.insert(XATTR_META.to_owned(), v),
        None => next.remove(XATTR_META),
    };
    if metadata_size(&next) > METADATA_MAX {
        return Err(FsError::new(
            libc::ENOSPC,
            "extended attributes do not fit the object's 2 KiB of metadata",
        ));
    }
    *metadata = next;
    Ok(())
}

fn is_user(name: &str) -> bool {
    name.strip_prefix("user.")
        .is_some_and(|rest| !rest.is_empty())
}

/// setxattr's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Create or replace.
    Any,
    /// XATTR_CREATE: EEXIST if it exists.
    Create,
    /// XATTR_REPLACE: ENODATA if it does not.
    Replace,
}

impl SetMode {
    pub fn from_flags(flags: i32) -> FsResult<SetMode> {
        match flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE) {
            0 => Ok(SetMode::Any),
            libc::XATTR_CREATE => Ok(SetMode::Create),
            libc::XATTR_REPLACE => Ok(SetMode::Replace),
            _ => Err(FsError::new(libc::EINVAL, "XATTR_CREATE and XATTR_REPLACE")),
        }
    }
}

impl Fs {
    /// The attributes of an inode, from its metadata (a HEAD if the
    /// attributes the mount has came from a listing).
    async fn xattrs_of(&self, ino: Ino) -> FsResult<Xattrs> {
        let inode = self.getattr(ino).await?;
        if let Some(dirty) = self.local_dirty(&inode.path) {
            return Ok(of_metadata(&dirty.lock().await.metadata));
        }
        if inode.attr.kind == Kind::Dir {
            return Ok(of_metadata(&self.dir_metadata(&inode).await?));
        }
        match &inode.attr.xattrs {
            Some(known) => Ok((**known).clone()),
            None => {
                let meta = self.store.head_object(&self.key(&inode.path), None).await?;
                Ok(of_metadata(&meta.user_metadata))
            }
        }
    }

    pub async fn getxattr(&self, ino: Ino, name: &str) -> FsResult<Vec<u8>> {
        if !is_user(name) {
            return Err(FsError::new(libc::ENODATA, "no such attribute"));
        }
        self.xattrs_of(ino)
            .await?
            .remove(name)
            .ok_or_else(|| FsError::new(libc::ENODATA, "no such attribute"))
    }

    /// The names, each followed by a NUL, as listxattr(2) returns them.
    pub async fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        for name in self.xattrs_of(ino).await?.keys() {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    pub async fn setxattr(
        &self,
        ino: Ino,
        name: &str,
        value: &[u8],
        mode: SetMode,
    ) -> FsResult<()> {
        if !is_user(name) {
            return Err(FsError::new(
                libc::EOPNOTSUPP,
                "only user.* extended attributes are kept",
            ));
        }
        if name.len() > 255 || value.len() > VALUE_MAX {
            return Err(FsError::new(
                libc::ERANGE,
                "attribute name or value too long",
            ));
        }
        self.change_xattrs(ino, |xattrs| {
            match (mode, xattrs.contains_key(name)) {
                (SetMode::Create, true) => {
                    return Err(FsError::new(libc::EEXIST, "attribute exists"))
                }
                (SetMode::Replace, false) => {
                    return Err(FsError::new(libc::ENODATA, "no such attribute"))
                }
                _ => {}
            }
            xattrs.insert(name.to_owned(), value.to_vec());
            Ok(())
        })
        .await
    }

    pub async fn removexattr(&self, ino: Ino, name: &str) -> FsResult<()> {
        if !is_user(name) {
            return Err(FsError::new(libc::ENODATA, "no such attribute"));
        }
        self.change_xattrs(ino, |xattrs| {
            xattrs
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| FsError::new(libc::ENODATA, "no such attribute"))
        })
        .await
    }

    /// Apply `change` to an inode's attributes and store them: in the
    /// pending upload of a file with local changes, in a directory's
    /// marker, or by copying the object onto itself with new metadata
    /// (pinned to the version HEADed, as chmod does).
    async fn change_xattrs(
        &self,
        ino: Ino,
        change: impl Fn(&mut Xattrs) -> FsResult<()>,
    ) -> FsResult<()> {
        self.writer()?;
        let inode = self.getattr(ino).await?;
        self.refuse_virtual(&inode.path)?;
        let apply = |metadata: &mut BTreeMap<String, String>| -> FsResult<()> {
            let mut xattrs = of_metadata(metadata);
            change(&mut xattrs)?;
            store_in(metadata, &xattrs)
        };
        if let Some(dirty_arc) = self.local_dirty(&inode.path) {
            let mut dirty = dirty_arc.lock().await;
            apply(&mut dirty.metadata)?;
            dirty.metadata_changed();
            dirty.needs_upload = true;
            self.publish(Some(ino), &inode.path, &dirty_arc, &dirty);
            if dirty.open_handles == 0 {
                self.save(Some(ino), &dirty_arc, &mut dirty).await?;
            }
        } else if inode.attr.kind == Kind::Dir {
            let key = format!("{}/", self.key(&inode.path));
            self.known.forget(&key);
            let mut metadata = self.dir_metadata(&inode).await?;
            apply(&mut metadata)?;
            let options = PutOptions {
                user_metadata: metadata,
                ..Default::default()
            };
            self.store.put_object(&key, Bytes::new(), &options).await?;
        } else {
            let key = self.key(&inode.path);
            self.known.forget(&key);
            // Refused changes (EEXIST, ENODATA, ENOSPC) are found before
            // anything is sent; the copy then applies the same change to
            // the version it copies.
            let head = self.store.head_object(&key, None).await?;
            apply(&mut head.user_metadata.clone())?;
            let restamp = |meta: &ObjectMeta| {
                let mut metadata = meta.user_metadata.clone();
                if apply(&mut metadata).is_err() {
                    metadata = meta.user_metadata.clone();
                }
                MetadataDirective::Replace(PutOptions {
                    content_type: meta.content_type.clone(),
                    user_metadata: metadata,
                    content_headers: meta.content_headers.clone(),
                    if_none_match_any: false,
                })
            };
            if self.copy_current(&key, &key, restamp).await?.is_none() {
                return Err(FsError::not_found());
            }
        }
        self.entry_changed(&inode.path, inode.attr.kind);
        self.inodes.update(ino, |i| i.valid_until = Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3fs_format_round_trips() {
        let xattrs = Xattrs::from([
            ("user.a".to_owned(), b"1".to_vec()),
            ("user.bin".to_owned(), vec![0, 255, 10]),
        ]);
        let header = encode(&xattrs).unwrap();
        assert!(header.is_ascii() && !header.contains('"'), "{header}");
        assert_eq!(decode(&header).unwrap(), xattrs);
        // What s3fs writes for user.foo=bar.
        assert_eq!(
            decode("%7B%22user.foo%22%3A%22YmFy%22%7D").unwrap(),
            Xattrs::from([("user.foo".to_owned(), b"bar".to_vec())])
        );
        assert_eq!(decode("not json"), None);
        assert_eq!(encode(&Xattrs::new()), None);
    }

    #[test]
    fn the_metadata_bound_is_kept() {
        let mut metadata = BTreeMap::from([("mode".to_owned(), "33188".to_owned())]);
        let big = Xattrs::from([("user.big".to_owned(), vec![b'x'; 1600])]);
        let e = store_in(&mut metadata, &big).unwrap_err();
        assert_eq!(e.errno, libc::ENOSPC);
        assert!(!metadata.contains_key(XATTR_META), "nothing half-stored");
        let small = Xattrs::from([("user.s".to_owned(), vec![b'x'; 100])]);
        store_in(&mut metadata, &small).unwrap();
        assert_eq!(of_metadata(&metadata), small);
    }
}
