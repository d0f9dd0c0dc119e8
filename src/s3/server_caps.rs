//! What the server honours, learnt as the mount goes.
//!
//! S3-compatible servers differ in the optional parts of the API. The one
//! that matters for correctness here is the conditional PutObject
//! (`If-None-Match: *`), which keeps an `O_EXCL` create from replacing a
//! file another client made meanwhile. AWS, MinIO and Garage honour it;
//! Backblaze B2 answers it with `501 NotImplemented` (still reported in
//! 2026), and some servers answer `400` naming the header. A B2 endpoint
//! starts from what B2 is known to do; any other server is asked, and the
//! first refusal moves the mount to checking for itself (a HEAD just
//! before the upload) for the rest of its life, logged once. No user's
//! call fails because a header was refused.
//!
//! The checksum headers are probed the same way in `checksum.rs`.

use std::sync::atomic::{AtomicU8, Ordering};

/// Whether the server honours a feature, as far as the mount knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Not tried yet: the next request that needs it carries it.
    Unknown = 0,
    /// The server answered a request that carried it.
    Yes = 1,
    /// The server refused it (or is known to): do without.
    No = 2,
}

impl Support {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Support::Yes,
            2 => Support::No,
            _ => Support::Unknown,
        }
    }
}

/// The server's optional features this mount depends on.
#[derive(Debug)]
pub(crate) struct ServerCaps {
    conditional_put: AtomicU8,
}

impl ServerCaps {
    /// `b2`: the endpoint is Backblaze B2, which refuses conditional PUTs.
    pub(crate) fn new(b2: bool) -> Self {
        let caps = ServerCaps {
            conditional_put: AtomicU8::new(Support::Unknown as u8),
        };
        if b2 {
            caps.conditional_put_refused("a Backblaze B2 endpoint");
        }
        caps
    }

    pub(crate) fn conditional_put(&self) -> Support {
        Support::from_u8(self.conditional_put.load(Ordering::Relaxed))
    }

    /// A conditional PUT was answered (success or 412): the header works.
    pub(crate) fn conditional_put_honoured(&self) {
        if self
            .conditional_put
            .compare_exchange(
                Support::Unknown as u8,
                Support::Yes as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            tracing::info!("the server honours conditional PUTs: O_EXCL creates use If-None-Match");
        }
    }

    /// The server refused the header. Returns whether this changed the
    /// mode (the first refusal is logged, the rest are not).
    pub(crate) fn conditional_put_refused(&self, why: &str) -> bool {
        let before = self
            .conditional_put
            .swap(Support::No as u8, Ordering::Relaxed);
        let changed = before != Support::No as u8;
        if changed {
            tracing::warn!(
                "conditional PUTs are not available ({why}): O_EXCL creates are checked by this \
                 mount (a HEAD before the first upload), which cannot stop another machine \
                 creating the same name in between"
            );
        }
        changed
    }
}

/// Whether an error answer to a request carrying `If-None-Match` or
/// `If-Match` is the server refusing the header, not the condition
/// failing: B2's `501 NotImplemented`, or a `400` naming a header.
pub(crate) fn refuses_condition_header(status: Option<u16>, code: Option<&str>) -> bool {
    match (status, code) {
        (Some(501), _) => true,
        (Some(400), Some(code)) => matches!(
            code,
            "NotImplemented" | "InvalidArgument" | "InvalidRequest" | "UnsupportedHeader"
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b2_starts_without_conditional_puts() {
        assert_eq!(ServerCaps::new(true).conditional_put(), Support::No);
        let other = ServerCaps::new(false);
        assert_eq!(other.conditional_put(), Support::Unknown);
        other.conditional_put_honoured();
        assert_eq!(other.conditional_put(), Support::Yes);
    }

    #[test]
    fn the_first_refusal_changes_the_mode_once() {
        let caps = ServerCaps::new(false);
        assert!(caps.conditional_put_refused("test"));
        assert!(!caps.conditional_put_refused("test"));
        // A late success does not undo a refusal.
        caps.conditional_put_honoured();
        assert_eq!(caps.conditional_put(), Support::No);
    }

    #[test]
    fn refusals_are_told_from_failed_conditions() {
        assert!(refuses_condition_header(Some(501), Some("NotImplemented")));
        assert!(refuses_condition_header(Some(400), Some("InvalidArgument")));
        assert!(!refuses_condition_header(
            Some(412),
            Some("PreconditionFailed")
        ));
        assert!(!refuses_condition_header(
            Some(409),
            Some("ConditionalRequestConflict")
        ));
        assert!(!refuses_condition_header(Some(503), Some("SlowDown")));
        assert!(!refuses_condition_header(None, None));
    }
}
