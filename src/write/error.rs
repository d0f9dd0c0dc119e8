//! What can go wrong saving a file. The errno each one becomes is decided
//! in `fs::error`, the one errno table.

use std::path::PathBuf;

use crate::s3::S3Error;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store failed or refused a request (a base version that is gone
    /// is a 412 or 404 here).
    #[error(transparent)]
    Store(#[from] S3Error),
    /// The staging disk failed (full, over quota, or broken).
    #[error("{what} ({}): {source}", path.display())]
    Staging {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Beyond what one S3 object can be.
    #[error("{0}")]
    TooLarge(&'static str),
    /// An O_EXCL file's name was taken by another writer before its first
    /// save.
    #[error("{key} was created elsewhere meanwhile (O_EXCL)")]
    NameTaken { key: String },
    /// The mount is shutting down, or a task died.
    #[error("{0}")]
    Internal(String),
}

impl WriteError {
    /// The store no longer has the version the file's unchanged bytes
    /// come from (replaced or removed in a bucket that keeps no versions).
    pub fn is_base_gone(&self) -> bool {
        matches!(self, WriteError::Store(e) if e.is_precondition_failed() || e.is_not_found())
    }
}

pub type WriteResult<T> = Result<T, WriteError>;
