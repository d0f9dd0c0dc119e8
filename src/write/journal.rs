//! A record of this mount's unfinished multipart uploads, so that a mount
//! that dies (kill -9, power loss) leaves nothing unaccounted for: the next
//! mount aborts the uploads the dead one started and did not finish, and
//! reports the staged data it left.
//!
//! One file per mount, `uploads` in its staging directory: a line
//! `start <upload id> <key, percent-encoded>` when an upload begins and
//! `end <upload id>` when it is completed or aborted.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::s3::encode::encode_query_value;
use crate::s3::UploadId;

pub const JOURNAL_NAME: &str = "uploads";

#[derive(Debug)]
pub struct UploadJournal {
    file: Mutex<File>,
    path: PathBuf,
}

impl UploadJournal {
    /// Open the journal of a mount of `owner` (endpoint and bucket): only a
    /// later mount of the same owner acts on it, since the cache directory
    /// may be shared by mounts of different buckets.
    pub fn open(dir: &Path, owner: &str) -> std::io::Result<Self> {
        let path = dir.join(JOURNAL_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(format!("owner {}\n", encode_query_value(owner)).as_bytes())?;
        Ok(UploadJournal {
            file: Mutex::new(file),
            path,
        })
    }

    fn append(&self, line: &str) {
        let mut file = self.file.lock();
        // Best effort: a journal that cannot be written only costs the
        // automatic cleanup after a crash, never the upload itself.
        if let Err(e) = super::blocking::off_worker(|| file.write_all(line.as_bytes())) {
            tracing::warn!(
                "cannot write the upload journal {}: {e}",
                self.path.display()
            );
        }
    }

    pub fn started(&self, key: &str, upload: &UploadId) {
        self.append(&format!("start {} {}\n", upload.0, encode_query_value(key)));
    }

    pub fn ended(&self, upload: &UploadId) {
        self.append(&format!("end {}\n", upload.0));
    }

    /// A directory rename (every key below `from` moves below `to`) began.
    pub fn rename_started(&self, from: &str, to: &str) {
        self.append(&format!(
            "rename {} {}\n",
            encode_query_value(from),
            encode_query_value(to)
        ));
    }

    pub fn rename_ended(&self, from: &str, to: &str) {
        self.append(&format!(
            "renamed {} {}\n",
            encode_query_value(from),
            encode_query_value(to)
        ));
    }
}

/// Whose journal this is (see `UploadJournal::open`).
pub fn owner(journal: &Path) -> Option<String> {
    let text = std::fs::read_to_string(journal).ok()?;
    let first = text.lines().next()?;
    first.strip_prefix("owner ").map(decode)
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The directory renames a journal says began and never ended: (from, to)
/// key prefixes.
pub fn unfinished_renames(journal: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(journal) else {
        return Vec::new();
    };
    let mut open: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split(' ');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("rename"), Some(from), Some(to)) => open.push((decode(from), decode(to))),
            (Some("renamed"), Some(from), Some(to)) => {
                let done = (decode(from), decode(to));
                open.retain(|r| *r != done);
            }
            _ => {}
        }
    }
    open
}

/// The uploads a journal says were started and never ended: (key, id).
pub fn unfinished(journal: &Path) -> Vec<(String, UploadId)> {
    let Ok(text) = std::fs::read_to_string(journal) else {
        return Vec::new();
    };
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split(' ');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("start"), Some(id), Some(key)) => {
                let key = percent_encoding::percent_decode_str(key)
                    .decode_utf8_lossy()
                    .into_owned();
                open.insert(id.to_owned(), key);
            }
            (Some("end"), Some(id), _) => {
                open.remove(id);
            }
            _ => {}
        }
    }
    open.into_iter()
        .map(|(id, key)| (key, UploadId(id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_uploads_survive_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = UploadJournal::open(dir.path(), "http://host/bucket").unwrap();
        assert_eq!(
            owner(&dir.path().join(JOURNAL_NAME)).as_deref(),
            Some("http://host/bucket")
        );
        j.started("a b/c", &UploadId("u1".into()));
        j.started("d", &UploadId("u2".into()));
        j.ended(&UploadId("u1".into()));
        let left = unfinished(&dir.path().join(JOURNAL_NAME));
        assert_eq!(left, vec![("d".to_owned(), UploadId("u2".into()))]);
        assert!(unfinished(&dir.path().join("missing")).is_empty());
        j.rename_started("a/", "b c/");
        j.rename_started("x/", "y/");
        j.rename_ended("x/", "y/");
        let renames = unfinished_renames(&dir.path().join(JOURNAL_NAME));
        assert_eq!(renames, vec![("a/".to_owned(), "b c/".to_owned())]);
    }
}
