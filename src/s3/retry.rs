//! The one retry policy: how many attempts, how long between them.
//!
//! Which failures are worth retrying is decided by `S3Error::is_retryable`;
//! this module decides when. Delays grow exponentially with random jitter (so
//! that many clients throttled together do not come back together), capped,
//! and a server's `Retry-After` is honoured up to a bound.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};

/// Never wait longer than this for one `Retry-After`, whatever the server says.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests sent at most for one operation, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles from there.
    pub base_delay: Duration,
    /// Largest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// A fresh schedule for one operation.
    pub(crate) fn schedule(&self) -> RetrySchedule {
        let retries = self.max_attempts.saturating_sub(1) as usize;
        RetrySchedule {
            delays: Box::new(
                ExponentialBuilder::default()
                    .with_min_delay(self.base_delay)
                    .with_max_delay(self.max_delay)
                    .with_factor(2.0)
                    .with_jitter()
                    .with_max_times(retries)
                    .build(),
            ),
        }
    }
}

pub(crate) struct RetrySchedule {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
}

impl RetrySchedule {
    /// How long to wait before the next attempt, or `None` when the attempts
    /// are used up. A server-given `Retry-After` replaces the computed delay.
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let computed = self.delays.next()?;
        Some(match retry_after {
            Some(wait) => wait.min(MAX_RETRY_AFTER),
            None => computed,
        })
    }
}

/// Parse a `Retry-After` header: delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_bounded_and_grows() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let mut s = policy.schedule();
        let delays: Vec<_> = std::iter::from_fn(|| s.next_delay(None)).collect();
        assert_eq!(delays.len(), 3, "4 attempts means 3 waits");
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(2)));
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let mut s = RetryPolicy::default().schedule();
        assert_eq!(
            s.next_delay(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            s.next_delay(Some(Duration::from_secs(3600))),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
