//! Filesystem errors and the one table that maps S3 failures to errnos.
//!
//! Every error the kernel sees is built here, so "what errno does bucketfs
//! return when..." has one answer, with its reason beside it.

use std::fmt;

use crate::read::ReadError;
use crate::s3::{ErrorKind, S3Error};
use crate::write::WriteError;

/// An error for the kernel: an errno, and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    pub errno: i32,
    pub message: String,
}

impl FsError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(libc::ENOENT, "no such file or directory")
    }

    /// Whether the failure is worth a log line: an expected answer such as
    /// ENOENT from a lookup is not.
    pub fn is_noteworthy(&self) -> bool {
        !matches!(
            self.errno,
            libc::ENOENT
                | libc::ENODATA
                | libc::ENOTDIR
                | libc::EISDIR
                | libc::EEXIST
                | libc::ENOTEMPTY
                // Refused by design (security.* and ACL attributes that
                // cp -a and sed -i try to copy, copy_file_range): callers
                // fall back.
                | libc::EOPNOTSUPP
                // Expired keys: said once, as an error, by s3/identity.rs;
                // a line per refused request would bury it.
                | libc::EKEYEXPIRED
        )
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FsError {}

/// The errno for an S3 failure.
pub fn errno_for(err: &S3Error) -> i32 {
    // B2's transaction and download caps: a quota, not a permission.
    if err.is_cap_exceeded() {
        return libc::EDQUOT;
    }
    match &*err.kind {
        ErrorKind::Service { status, code, .. } => match (*status, code.as_str()) {
            // B2's storage cap (a 403) and S3's size limits.
            (_, "StorageLimitExceeded") | (_, "QuotaExceeded") => libc::EDQUOT,
            (_, "EntityTooLarge") => libc::EFBIG,
            // The object went away between listing and reading.
            (404, _) => libc::ENOENT,
            // The object changed under an open handle (If-Match failed):
            // the handle's view is stale, never mixed with the new object.
            (412, _) => libc::ESTALE,
            // A session token the server calls expired (a clock ahead of
            // ours, or keys revoked early).
            (_, "ExpiredToken") | (_, "TokenRefreshRequired") => libc::EKEYEXPIRED,
            // Credentials refused or access denied: a permission problem,
            // not an I/O fault.
            (403, _) | (_, "AccessDenied") => libc::EACCES,
            // The range asked for lies beyond the object (it shrank).
            (416, _) => libc::EIO,
            _ => libc::EIO,
        },
        // Retries were used up on timeouts or broken connections.
        ErrorKind::Transport { timeout: true, .. } => libc::ETIMEDOUT,
        ErrorKind::Transport { .. } => libc::EIO,
        ErrorKind::InvalidResponse { .. } => libc::EIO,
        // A key we cannot address (dot segments): treat as absent.
        ErrorKind::InvalidRequest { .. } => libc::EINVAL,
        // Temporary keys expired and could not be renewed: "Key has
        // expired" says it better than a permission error would.
        ErrorKind::CredentialsExpired { .. } => libc::EKEYEXPIRED,
    }
}

impl From<S3Error> for FsError {
    fn from(err: S3Error) -> Self {
        FsError::new(errno_for(&err), err.to_string())
    }
}

impl From<ReadError> for FsError {
    fn from(err: ReadError) -> Self {
        let errno = match &err {
            ReadError::Store(e) => errno_for(e),
            // Removed elsewhere while open here: ENOENT is no answer to a
            // read(2), a stale handle is.
            ReadError::Removed { .. } => libc::ESTALE,
            ReadError::Malformed(_) | ReadError::Internal(_) => libc::EIO,
        };
        FsError::new(errno, err.to_string())
    }
}

impl From<WriteError> for FsError {
    fn from(err: WriteError) -> Self {
        let errno = match &err {
            WriteError::Store(e) => errno_for(e),
            // The disk's own answer: ENOSPC and EDQUOT tell the writer
            // what to do about it.
            WriteError::Staging { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            WriteError::TooLarge(_) => libc::EFBIG,
            // What open(O_EXCL) would have said had it known.
            WriteError::NameTaken { .. } => libc::EEXIST,
            WriteError::Internal(_) => libc::EIO,
        };
        FsError::new(errno, err.to_string())
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> S3Error {
        S3Error {
            operation: "GetObject",
            key: None,
            kind: Box::new(ErrorKind::Service {
                status,
                code: code.into(),
                message: String::new(),
                request_id: None,
            }),
            attempts: 1,
            retry_after: None,
        }
    }

    #[test]
    fn table() {
        assert_eq!(errno_for(&service(404, "NoSuchKey")), libc::ENOENT);
        assert_eq!(errno_for(&service(412, "PreconditionFailed")), libc::ESTALE);
        assert_eq!(errno_for(&service(403, "AccessDenied")), libc::EACCES);
        assert_eq!(errno_for(&service(503, "SlowDown")), libc::EIO);
        assert_eq!(
            errno_for(&service(403, "StorageLimitExceeded")),
            libc::EDQUOT
        );
        let cap = S3Error::new(
            "GetObject",
            Some("k"),
            ErrorKind::Service {
                status: 403,
                code: "AccessDenied".into(),
                message: "Cannot download file, download bandwidth or transaction (Class B) \
                          cap exceeded."
                    .into(),
                request_id: None,
            },
        );
        assert_eq!(errno_for(&cap), libc::EDQUOT, "a cap is a quota");
        assert!(!cap.is_access_denied(), "not a missing name or permission");
        assert!(!cap.is_retryable());
    }
}
