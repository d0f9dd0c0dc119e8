//! The typed error every S3 operation returns.
//!
//! An `S3Error` says what failed (operation and key), why (the service's error
//! code and message, or the transport failure), and whether trying again could
//! help. The filesystem layer maps it to an errno in one place; this module
//! only classifies. Nothing here may carry a credential: messages come from
//! the server's error body or from the HTTP stack, neither of which sees the
//! secret key (requests are signed in headers, never in the URL).

use std::fmt;
use std::time::Duration;

/// What went wrong, independent of which operation it happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server answered with an error status (and usually an error body).
    Service {
        status: u16,
        /// S3 error code such as `NoSuchKey`, `SlowDown`; the HTTP reason when
        /// the body had none (HEAD responses never have a body).
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The request never got a complete answer: connect failure, reset,
    /// timeout, a body cut short.
    Transport { detail: String, timeout: bool },
    /// The server answered, but not in a form we understand (malformed XML,
    /// a missing header, an ETag that does not match what we sent).
    InvalidResponse { detail: String },
    /// The request could not be built (for example, a key that cannot be
    /// expressed in a request path).
    InvalidRequest { detail: String },
    /// Temporary credentials expired and no refresh replaced them, so the
    /// request was not sent.
    CredentialsExpired { detail: String },
}

/// An S3 operation that failed, after whatever retries the policy allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub operation: &'static str,
    pub key: Option<String>,
    /// Boxed so that `Result<_, S3Error>` stays small on the happy path.
    pub kind: Box<ErrorKind>,
    /// Requests sent for this operation, including the one that failed.
    pub attempts: u32,
    /// A server-provided `Retry-After`, when there was one.
    pub retry_after: Option<Duration>,
}

impl S3Error {
    pub(crate) fn new(operation: &'static str, key: Option<&str>, kind: ErrorKind) -> Self {
        S3Error {
            operation,
            key: key.map(str::to_owned),
            kind: Box::new(kind),
            attempts: 1,
            retry_after: None,
        }
    }

    pub(crate) fn invalid_response(
        operation: &'static str,
        key: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            operation,
            key,
            ErrorKind::InvalidResponse {
                detail: detail.into(),
            },
        )
    }

    pub(crate) fn invalid_request(
        operation: &'static str,
        key: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            operation,
            key,
            ErrorKind::InvalidRequest {
                detail: detail.into(),
            },
        )
    }

    /// HTTP status of a service error.
    pub fn status(&self) -> Option<u16> {
        match &*self.kind {
            ErrorKind::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// S3 error code of a service error (`NoSuchKey`, `AccessDenied`, ...).
    pub fn code(&self) -> Option<&str> {
        match &*self.kind {
            ErrorKind::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The key or bucket does not exist (404 of any kind).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// An `If-Match` / `If-None-Match` condition did not hold (412), or an
    /// `If-None-Match: *` create found the key already there.
    pub fn is_precondition_failed(&self) -> bool {
        self.status() == Some(412)
    }

    /// The credentials were refused: wrong key id, wrong secret, expired token.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self.code(),
            Some(
                "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken"
                    | "TokenRefreshRequired"
                    | "AuthorizationHeaderMalformed"
                    | "InvalidSecurity"
            )
        )
    }

    /// Access is denied for these (valid) credentials.
    pub fn is_access_denied(&self) -> bool {
        (self.code() == Some("AccessDenied")
            || (self.status() == Some(403) && !self.is_auth_failure()))
            && !self.is_cap_exceeded()
    }

    /// A refusal because a cap of the account is reached: B2's daily
    /// transaction and download caps answer `403` with a message saying
    /// the cap is exceeded. Not a missing permission (so a lookup does not
    /// take it for a missing name) and not worth retrying today.
    pub fn is_cap_exceeded(&self) -> bool {
        match &*self.kind {
            ErrorKind::Service {
                status: 403,
                code,
                message,
                ..
            } => {
                let text = format!("{code} {message}").to_ascii_lowercase();
                text.contains("cap") && text.contains("exceed")
            }
            _ => false,
        }
    }

    /// The server asks for fewer requests: `503 SlowDown`, `429`, or a
    /// throttling code. The whole mount slows down (`throttle.rs`).
    pub fn is_throttling(&self) -> bool {
        match &*self.kind {
            ErrorKind::Service { status, code, .. } => {
                matches!(status, 429 | 503)
                    || matches!(
                        code.as_str(),
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "TooManyRequests"
                            | "RequestLimitExceeded"
                    )
            }
            _ => false,
        }
    }

    /// Whether sending the same request again may succeed. This is the one
    /// place that decides which failures are transient: throttling, server
    /// errors, timeouts and broken connections are; every other 4xx is not.
    pub fn is_retryable(&self) -> bool {
        match &*self.kind {
            ErrorKind::Service { status, code, .. } => {
                matches!(status, 500 | 502 | 503 | 504 | 429)
                    || matches!(
                        code.as_str(),
                        "SlowDown"
                            | "RequestTimeout"
                            | "RequestTimeTooSkewed"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "Throttling"
                            | "ThrottlingException"
                            | "TooManyRequests"
                            | "RequestLimitExceeded"
                            // Two conditional writes raced (AWS): one of
                            // them won; asking again gets its answer.
                            | "ConditionalRequestConflict"
                            // The body arrived damaged: ours is intact,
                            // so sending it again is the cure.
                            | "BadDigest"
                            | "XAmzContentSHA256Mismatch"
                            // Garage's answer to a CRC32C mismatch (S3
                            // uses it for a malformed digest, which a
                            // retry cannot mend but does not harm).
                            | "InvalidDigest"
                    )
            }
            ErrorKind::Transport { .. } => true,
            // Waiting would not help the request: the background refresh
            // is already retrying, and the keys are past their expiry.
            ErrorKind::InvalidResponse { .. }
            | ErrorKind::InvalidRequest { .. }
            | ErrorKind::CredentialsExpired { .. } => false,
        }
    }

    /// One line for a person: what failed and what to do about it.
    pub fn user_message(&self) -> String {
        let hint = match self.code() {
            Some("InvalidAccessKeyId") => Some("the access key id is not known to the server"),
            Some("SignatureDoesNotMatch") => {
                Some("the secret key does not match the access key id")
            }
            Some("InvalidToken") => Some("the session token is not valid"),
            Some("ExpiredToken") | Some("TokenRefreshRequired") => {
                Some("the session token has expired")
            }
            Some("NoSuchBucket") => Some("the bucket does not exist"),
            Some("AccessDenied") => Some("these credentials are not allowed to do this"),
            _ => None,
        };
        let hint = hint.or(match &*self.kind {
            ErrorKind::Transport { .. } => Some("cannot reach the S3 endpoint"),
            _ => None,
        });
        match hint {
            Some(hint) => format!("{hint} ({self})"),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.operation)?;
        if let Some(key) = &self.key {
            write!(f, " {key:?}")?;
        }
        match &*self.kind {
            ErrorKind::Service {
                status,
                code,
                message,
                request_id,
            } => {
                write!(f, " failed: {code} (HTTP {status})")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                if let Some(id) = request_id {
                    write!(f, " [request id {id}]")?;
                }
            }
            ErrorKind::Transport { detail, .. } => write!(f, " failed: {detail}")?,
            ErrorKind::InvalidResponse { detail } => {
                write!(f, " failed: invalid response from server: {detail}")?
            }
            ErrorKind::InvalidRequest { detail } => write!(f, " failed: {detail}")?,
            ErrorKind::CredentialsExpired { detail } => write!(f, " not sent: {detail}")?,
        }
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

impl std::error::Error for S3Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> S3Error {
        S3Error::new(
            "GetObject",
            Some("k"),
            ErrorKind::Service {
                status,
                code: code.into(),
                message: String::new(),
                request_id: None,
            },
        )
    }

    #[test]
    fn throttling_and_server_errors_retry_other_4xx_do_not() {
        for (status, code) in [
            (503, "SlowDown"),
            (500, "InternalError"),
            (502, "BadGateway"),
            (504, "GatewayTimeout"),
            (429, "TooManyRequests"),
            (400, "RequestTimeout"),
            (400, "BadDigest"),
            (400, "XAmzContentSHA256Mismatch"),
            (400, "InvalidDigest"),
        ] {
            assert!(service(status, code).is_retryable(), "{status} {code}");
        }
        for (status, code) in [
            (403, "AccessDenied"),
            (403, "SignatureDoesNotMatch"),
            (404, "NoSuchKey"),
            (412, "PreconditionFailed"),
            (400, "InvalidArgument"),
        ] {
            assert!(!service(status, code).is_retryable(), "{status} {code}");
        }
    }

    #[test]
    fn auth_failures_are_told_apart_from_denials() {
        assert!(service(403, "SignatureDoesNotMatch").is_auth_failure());
        assert!(!service(403, "SignatureDoesNotMatch").is_access_denied());
        assert!(service(403, "AccessDenied").is_access_denied());
        assert!(service(403, "SignatureDoesNotMatch")
            .user_message()
            .contains("secret key does not match"));
    }
}
