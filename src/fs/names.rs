//! Which keys can be shown as files, and the once-per-key log of those that
//! cannot.
//!
//! A path segment must be a valid file name: not empty (as in `a//b`), not
//! `.` or `..`, at most 255 bytes, no NUL. A key that breaks this is hidden
//! and logged once; nothing else happens to it.

use parking_lot::Mutex;
use std::collections::HashSet;

/// Longest file name the kernel passes (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Longest S3 key, in bytes.
pub const KEY_MAX: usize = 1024;

pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains('/')
        && !name.contains('\0')
}

/// Remembers which odd keys were already reported, up to a bound so that a
/// bucket of millions of odd keys cannot grow memory without end.
pub struct OddKeyLog {
    seen: Mutex<HashSet<String>>,
}

const ODD_KEY_LOG_MAX: usize = 10_000;

impl Default for OddKeyLog {
    fn default() -> Self {
        OddKeyLog {
            seen: Mutex::new(HashSet::new()),
        }
    }
}

impl OddKeyLog {
    pub fn hidden(&self, key: &str, why: &str) {
        let mut seen = self.seen.lock();
        if seen.len() >= ODD_KEY_LOG_MAX || !seen.insert(key.to_owned()) {
            return;
        }
        tracing::warn!("hiding key {key:?}: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("a.txt"));
        assert!(is_valid_name("..."));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("."));
        assert!(!is_valid_name(".."));
        assert!(!is_valid_name(&"x".repeat(256)));
        assert!(is_valid_name(&"x".repeat(255)));
    }
}
