//! A record of this mount's unfinished multipart uploads, so that a mount
//! that dies (kill -9, power loss) leaves nothing unaccounted for: the next
//! mount aborts the uploads the dead one started and did not finish, and
//! reports the staged data it left.
//!
//! One file per mount, `uploads` in its staging directory: a line
//! `start <upload id> <key, percent-encoded>` when an upload begins and
//! `end <upload id>` when it is completed or aborted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::s3::encode::encode_query_value;
use crate::s3::UploadId;

pub const JOURNAL_NAME: &str = "uploads";

#[derive(Debug)]
pub struct UploadJournal {
    file: Mutex<File>,
    path: PathBuf,
}

impl UploadJournal {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(JOURNAL_NAME);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Ok(UploadJournal {
            file: Mutex::new(file),
            path,
        })
    }

    fn append(&self, line: &str) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // Best effort: a journal that cannot be written only costs the
        // automatic cleanup after a crash, never the upload itself.
        if let Err(e) = file.write_all(line.as_bytes()) {
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
        let j = UploadJournal::open(dir.path()).unwrap();
        j.started("a b/c", &UploadId("u1".into()));
        j.started("d", &UploadId("u2".into()));
        j.ended(&UploadId("u1".into()));
        let left = unfinished(&dir.path().join(JOURNAL_NAME));
        assert_eq!(left, vec![("d".to_owned(), UploadId("u2".into()))]);
        assert!(unfinished(&dir.path().join("missing")).is_empty());
    }
}
