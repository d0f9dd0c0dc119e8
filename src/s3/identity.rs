//! The keys requests are signed with, kept fresh.
//!
//! Static keys are used as they are. Temporary keys (STS, SSO, a container
//! endpoint, IMDS: see `temporary.rs`) are asked for again by a background
//! task well before they expire, so that no request is ever signed with
//! keys about to lapse: `refresh_at` leaves half their life, at most five
//! minutes, as margin. Each request attempt reads the current keys when it
//! is signed, so a retry after a refresh signs with the new ones, and a
//! request in flight across the refresh still carries keys that are valid.
//!
//! A refresh that fails is tried again with backoff (1 s doubling to 30 s)
//! and logged once; the old keys go on being used until they really expire,
//! and only then do requests fail, with `EKEYEXPIRED` (see `fs/error.rs`)
//! and one log line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::identity::Identity;
use parking_lot::RwLock;

use super::credentials::{Credentials, CredentialsError};

/// The longest margin left before an expiry.
const MAX_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Backoff between failed refreshes.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
const MIN_RETRY: Duration = Duration::from_millis(200);

/// One set of keys, as signing needs them.
pub(crate) struct Keys {
    pub(crate) identity: Identity,
    pub(crate) access_key_id: String,
    /// When the keys stop working; `None` for static keys.
    pub(crate) expiry: Option<SystemTime>,
    /// When they were obtained: with `expiry`, their lifetime.
    obtained: SystemTime,
}

impl Keys {
    fn from_static(credentials: &Credentials) -> Self {
        let creds = aws_credential_types::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key().to_owned(),
            credentials.session_token().map(str::to_owned),
            None,
            "bucketfs",
        );
        Keys {
            access_key_id: credentials.access_key_id.clone(),
            identity: creds.into(),
            expiry: None,
            obtained: SystemTime::now(),
        }
    }

    fn from_provided(creds: aws_credential_types::Credentials) -> Self {
        Keys {
            access_key_id: creds.access_key_id().to_owned(),
            expiry: creds.expiry(),
            obtained: SystemTime::now(),
            identity: creds.into(),
        }
    }

    fn expired_at(&self, now: SystemTime) -> Option<SystemTime> {
        self.expiry.filter(|expiry| *expiry <= now)
    }
}

/// When keys obtained at `obtained` and expiring at `expiry` are asked for
/// again: half their lifetime before expiry, at most `MAX_MARGIN` before.
/// An hour's keys are renewed after 55 minutes, a minute's after 30 s.
pub(crate) fn refresh_at(obtained: SystemTime, expiry: SystemTime) -> SystemTime {
    let lifetime = expiry.duration_since(obtained).unwrap_or_default();
    expiry - (lifetime / 2).min(MAX_MARGIN)
}

/// The keys of one client, shared by every request it signs. Cheap to clone.
#[derive(Clone)]
pub struct LiveCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    current: RwLock<Arc<Keys>>,
    /// Where the keys come from, for logs ("AWS profile \"ci\" (SSO)").
    source: String,
    /// Set once the "expired" line is logged, cleared by a refresh.
    expiry_logged: AtomicBool,
    /// The source of temporary keys, for a refresh the server asks for
    /// (`refresh_now`); `None` for static keys.
    provider: Option<SharedCredentialsProvider>,
    /// One such refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
}

impl From<Credentials> for LiveCredentials {
    fn from(credentials: Credentials) -> Self {
        LiveCredentials::fixed(&credentials)
    }
}

impl std::fmt::Debug for LiveCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.inner.current.read();
        f.debug_struct("LiveCredentials")
            .field("access_key_id", &keys.access_key_id)
            .field("expiry", &keys.expiry)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl LiveCredentials {
    /// Keys that never change.
    pub fn fixed(credentials: &Credentials) -> Self {
        Self::with_keys(
            Keys::from_static(credentials),
            credentials.source.clone(),
            None,
        )
    }

    fn with_keys(keys: Keys, source: String, provider: Option<SharedCredentialsProvider>) -> Self {
        LiveCredentials {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(keys)),
                source,
                expiry_logged: AtomicBool::new(false),
                provider,
                refreshing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Ask `provider` for keys now and keep them fresh from then on, from
    /// a task of the current Tokio runtime that ends with the last clone.
    pub async fn refreshing(
        provider: SharedCredentialsProvider,
        source: String,
    ) -> Result<Self, CredentialsError> {
        let first =
            provider
                .provide_credentials()
                .await
                .map_err(|e| CredentialsError::Temporary {
                    source_name: source.clone(),
                    reason: describe(&e),
                })?;
        let keys = Keys::from_provided(first);
        if let Some(expired) = keys.expired_at(SystemTime::now()) {
            return Err(CredentialsError::Expired {
                source_name: source,
                expired: humantime::format_rfc3339_seconds(expired).to_string(),
            });
        }
        let live = Self::with_keys(keys, source, Some(provider.clone()));
        if live.inner.current.read().expiry.is_some() {
            tokio::spawn(refresh_loop(Arc::downgrade(&live.inner), provider));
        }
        Ok(live)
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    pub fn access_key_id(&self) -> String {
        self.inner.current.read().access_key_id.clone()
    }

    /// The current key id and secret, for the one other API that needs
    /// them (B2's native `b2_authorize_account`, see `b2_key.rs`).
    pub(crate) fn key_pair(&self) -> Option<(String, String)> {
        let keys = self.inner.current.read().clone();
        let creds = keys.identity.data::<aws_credential_types::Credentials>()?;
        Some((
            creds.access_key_id().to_owned(),
            creds.secret_access_key().to_owned(),
        ))
    }

    /// The server called keys `signed_with` expired before their stated
    /// expiry (a clock behind, a session revoked): ask for new ones now.
    /// True if keys other than those are in hand afterwards, so that the
    /// request is worth sending again.
    pub(crate) async fn refresh_now(&self, signed_with: &str) -> bool {
        let Some(provider) = &self.inner.provider else {
            return false;
        };
        let _one_at_a_time = self.inner.refreshing.lock().await;
        if self.inner.current.read().access_key_id != signed_with {
            return true; // another request refreshed them meanwhile
        }
        match provider.provide_credentials().await {
            Ok(creds) if creds.access_key_id() != signed_with => {
                let keys = Keys::from_provided(creds);
                tracing::info!(
                    access_key_id = keys.access_key_id,
                    "the server called the credentials from {} expired: replaced them early",
                    self.inner.source
                );
                *self.inner.current.write() = Arc::new(keys);
                self.inner.expiry_logged.store(false, Ordering::Relaxed);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(
                    "the server called the credentials from {} expired, and new ones could not \
                     be had: {}",
                    self.inner.source,
                    describe(&e)
                );
                false
            }
        }
    }

    /// When the current keys expire, if they do.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.inner.current.read().expiry
    }

    /// The keys to sign a request with now; an error once they have
    /// expired and no refresh has replaced them.
    pub(crate) fn current(&self) -> Result<Arc<Keys>, CredentialsError> {
        let keys = self.inner.current.read().clone();
        match keys.expired_at(SystemTime::now()) {
            None => Ok(keys),
            Some(expired) => {
                let err = CredentialsError::Expired {
                    source_name: self.inner.source.clone(),
                    expired: humantime::format_rfc3339_seconds(expired).to_string(),
                };
                if !self.inner.expiry_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "{err}: requests fail with EKEYEXPIRED until a refresh succeeds"
                    );
                }
                Err(err)
            }
        }
    }
}

/// An SDK credentials error with its causes, which name files, URLs and
/// services but never a key (the SDK's own errors redact them).
fn describe(err: &dyn std::error::Error) -> String {
    super::client::error_chain(err)
}

async fn refresh_loop(inner: Weak<Inner>, provider: SharedCredentialsProvider) {
    let mut failures: u32 = 0;
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else { return };
            let keys = inner.current.read().clone();
            let Some(expiry) = keys.expiry else { return };
            let now = SystemTime::now();
            if failures == 0 {
                refresh_at(keys.obtained, expiry)
                    .duration_since(now)
                    .unwrap_or_default()
            } else {
                // Back off, but try at least twice more before the keys lapse.
                let backoff = (FIRST_RETRY * 2u32.saturating_pow(failures - 1)).min(MAX_RETRY);
                match expiry.duration_since(now) {
                    Ok(left) => backoff.min(left / 2).max(MIN_RETRY),
                    Err(_) => backoff,
                }
            }
        };
        tokio::time::sleep(wait).await;
        let Some(live) = inner.upgrade() else { return };
        let result = provider.provide_credentials().await;
        let old = live.current.read().clone();
        match result {
            Ok(creds) => {
                let keys = Keys::from_provided(creds);
                let now = SystemTime::now();
                // Keys no fresher than the old ones (a provider that fell
                // back on what it gave last) are no refresh: try again soon.
                let fresher = match (keys.expiry, old.expiry) {
                    (Some(new), Some(old)) => new > old && refresh_at(now, new) > now,
                    _ => true,
                };
                if !fresher {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            "{} gives no fresher credentials than those expiring at {}; \
                             asking again",
                            live.source,
                            old.expiry
                                .map(|e| humantime::format_rfc3339_seconds(e).to_string())
                                .unwrap_or_default()
                        );
                    }
                    continue;
                }
                tracing::info!(
                    access_key_id = keys.access_key_id,
                    "credentials from {} refreshed{}, valid until {}",
                    live.source,
                    if failures > 0 { " again" } else { "" },
                    keys.expiry
                        .map(|e| humantime::format_rfc3339_seconds(e).to_string())
                        .unwrap_or_else(|| "further notice".into())
                );
                failures = 0;
                *live.current.write() = Arc::new(keys);
                live.expiry_logged.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        "cannot refresh the credentials from {}: {}; the current ones are used \
                         until {} while retrying",
                        live.source,
                        describe(&e),
                        old.expiry
                            .map(|e| humantime::format_rfc3339_seconds(e).to_string())
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::future;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn refresh_leaves_half_the_life_up_to_five_minutes() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let minute = Duration::from_secs(60);
        assert_eq!(refresh_at(t0, t0 + minute), t0 + minute / 2);
        assert_eq!(refresh_at(t0, t0 + 60 * minute), t0 + 55 * minute);
        assert_eq!(refresh_at(t0, t0 + 6 * minute), t0 + 3 * minute);
        // Keys that arrive expired are due at once.
        assert_eq!(refresh_at(t0 + minute, t0), t0);
    }

    /// Hands out keys KEY1, KEY2, ... that live `life`, failing the calls
    /// whose number is in `fail`.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicU32,
        life: Duration,
        fail: Vec<u32>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let result = if self.fail.contains(&n) {
                Err(
                    aws_credential_types::provider::error::CredentialsError::provider_error(
                        "the endpoint is down",
                    ),
                )
            } else {
                Ok(aws_credential_types::Credentials::new(
                    format!("KEY{n}"),
                    "secret",
                    Some("token".into()),
                    Some(SystemTime::now() + self.life),
                    "test",
                ))
            };
            future::ProvideCredentials::ready(result)
        }
    }

    #[tokio::test]
    async fn keys_are_replaced_before_they_expire_and_kept_through_failures() {
        let provider = SharedCredentialsProvider::new(Counting {
            calls: AtomicU32::new(0),
            life: Duration::from_millis(1600),
            fail: vec![2],
        });
        let live = LiveCredentials::refreshing(provider, "test source".into())
            .await
            .unwrap();
        assert_eq!(live.access_key_id(), "KEY1");
        let mut seen = vec![];
        let deadline = SystemTime::now() + Duration::from_secs(6);
        while SystemTime::now() < deadline {
            // Never expired: the margin covers the failed second call.
            let keys = live.current().expect("keys stay valid");
            if seen.last() != Some(&keys.access_key_id) {
                seen.push(keys.access_key_id.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen[..3], ["KEY1", "KEY3", "KEY4"], "{seen:?}");
    }

    #[tokio::test]
    async fn keys_that_expire_without_a_refresh_fail_requests() {
        let provider = SharedCredentialsProvider::new(Counting {
            calls: AtomicU32::new(0),
            life: Duration::from_millis(400),
            fail: (2..100).collect(),
        });
        let live = LiveCredentials::refreshing(provider, "test source".into())
            .await
            .unwrap();
        assert!(live.current().is_ok());
        tokio::time::sleep(Duration::from_millis(600)).await;
        let msg = live.current().err().expect("expired").to_string();
        assert!(
            msg.contains("test source") && msg.contains("expired"),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn static_keys_never_expire() {
        let live = LiveCredentials::fixed(&Credentials::new("AKID", "s", None, "env"));
        assert!(live.current().is_ok());
        assert_eq!(live.expiry(), None);
        assert!(!format!("{live:?}").contains("\"s\""));
    }
}
