//! One brake for the whole mount: when the server says it is overloaded
//! (`503 SlowDown`, `429`, a throttling code), every request waits, not only
//! the one it refused. Retrying that one request alone would leave the
//! others (64 HEADs of a listing, 4 parts of an upload, other files) going
//! at full rate into a server that asked for less; B2 answers 503 under
//! load, and a client that keeps its rate up only collects more of them.
//!
//! The brake is an instant before which no request is sent: each throttling
//! answer pushes it to at least its own retry delay (or `Retry-After`) from
//! now. Requests already in flight finish; new ones and retries wait.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    until: Mutex<Option<Instant>>,
}

impl Throttle {
    /// Wait while the brake is on.
    pub(crate) async fn wait(&self) {
        loop {
            let until = *self.until.lock();
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// The server asked to slow down: hold every request back for `delay`
    /// from now (or longer, if the brake already says so). Returns whether
    /// the brake was off, so that a burst of refusals is logged once.
    pub(crate) fn brake(&self, delay: Duration) -> bool {
        let now = Instant::now();
        let wanted = now + delay;
        let mut until = self.until.lock();
        let was_off = until.is_none_or(|t| t <= now);
        if until.is_none_or(|t| t < wanted) {
            *until = Some(wanted);
        }
        was_off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only lower bounds: a sleep never ends early, however busy the
    // machine, so these cannot be flaky.
    #[tokio::test]
    async fn every_request_waits_while_the_brake_is_on() {
        let throttle = Throttle::default();
        let start = Instant::now();
        assert!(throttle.brake(Duration::from_millis(300)));
        assert!(!throttle.brake(Duration::from_millis(100)), "already on");
        // A shorter brake does not shorten it.
        throttle.wait().await;
        assert!(start.elapsed() >= Duration::from_millis(300));
        // A request waiting sees the brake pushed further.
        let start = Instant::now();
        assert!(
            throttle.brake(Duration::from_millis(100)),
            "off again by now"
        );
        tokio::join!(throttle.wait(), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            throttle.brake(Duration::from_millis(400));
        });
        assert!(start.elapsed() >= Duration::from_millis(450));
    }
}
