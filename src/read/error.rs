//! What can go wrong reading an object. The errno each one becomes is
//! decided in `fs::error`, the one errno table.

use crate::s3::S3Error;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The store failed or refused a GET (an object replaced while open
    /// is a 412 here).
    #[error(transparent)]
    Store(#[from] S3Error),
    /// The object was removed from the bucket while open.
    #[error("{key} was removed from the bucket while open")]
    Removed { key: String },
    /// The object has fewer bytes than its size said, or the server sent
    /// something else than asked.
    #[error("{0}")]
    Malformed(String),
    /// The mount is shutting down, or a task died.
    #[error("{0}")]
    Internal(String),
}

pub type ReadResult<T> = Result<T, ReadError>;
