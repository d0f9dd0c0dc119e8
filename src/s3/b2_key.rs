//! What a B2 application key may do, to explain a refusal.
//!
//! B2 keys can be limited to one bucket and a file-name prefix, and can
//! lack capabilities (`listFiles`, `readFiles`, `writeFiles`,
//! `deleteFiles`). Its S3 API answers a refused request with a generic
//! `403 AccessDenied: not entitled`; only the native
//! `b2_authorize_account` call lists a key's bucket, prefix and
//! capabilities (FACTS.md). So when the mount's check listing is refused on
//! a B2 endpoint, that call is made once, with the same key, and its answer
//! turns into one line that says what to do. Its authorization token is a
//! secret and is dropped unread.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// Where the native API lives; `--b2-api-url` overrides it (tests, and
/// B2-compatible gateways).
pub const B2_API_URL: &str = "https://api.backblazeb2.com";

/// A key's limits, as `b2_authorize_account` states them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// The buckets the key is limited to; empty: all of the account's.
    pub buckets: Vec<String>,
    pub capabilities: Vec<String>,
    /// The file-name prefix the key is limited to.
    pub name_prefix: Option<String>,
}

impl KeyLimits {
    /// Ask B2 what `key_id` may do. Errors say what failed, never the key.
    pub async fn fetch(api_url: &str, key_id: &str, secret: &str) -> Result<KeyLimits, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?;
        let auth = BASE64.encode(format!("{key_id}:{secret}"));
        let url = format!(
            "{}/b2api/v3/b2_authorize_account",
            api_url.trim_end_matches('/')
        );
        let resp = http
            .get(&url)
            .header("authorization", format!("Basic {auth}"))
            .send()
            .await
            .map_err(|e| format!("b2_authorize_account: {}", super::client::error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("b2_authorize_account answered HTTP {status}"));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("b2_authorize_account: {}", super::client::error_chain(&e)))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("b2_authorize_account: unreadable answer: {e}"))?;
        Ok(Self::from_answer(&body))
    }

    /// Read the `allowed` part of an answer, in v3's shape
    /// (`apiInfo.storageApi.allowed.buckets`) or v2's (`allowed.bucketName`).
    pub fn from_answer(body: &serde_json::Value) -> KeyLimits {
        let allowed = body
            .pointer("/apiInfo/storageApi/allowed")
            .or_else(|| body.get("allowed"))
            .cloned()
            .unwrap_or_default();
        let mut buckets: Vec<String> = allowed
            .get("buckets")
            .and_then(|b| b.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|b| b.get("name").and_then(|n| n.as_str()))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(name) = allowed.get("bucketName").and_then(|n| n.as_str()) {
            buckets.push(name.to_owned());
        }
        KeyLimits {
            buckets,
            capabilities: allowed
                .get("capabilities")
                .and_then(|c| c.as_array())
                .map(|list| {
                    list.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            name_prefix: allowed
                .get("namePrefix")
                .and_then(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        }
    }

    fn can(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// Why a mount of `bucket` at `prefix` ("" for the root, else ending in
    /// `/`) is refused, if these limits tell; `None` when they allow it.
    pub fn why_refused(&self, bucket: &str, prefix: &str) -> Option<String> {
        if !self.buckets.is_empty() && !self.buckets.iter().any(|b| b == bucket) {
            return Some(format!(
                "this B2 key is limited to bucket {}, not {bucket}",
                self.buckets.join(", ")
            ));
        }
        if let Some(limit) = &self.name_prefix {
            if !prefix.starts_with(limit.as_str()) {
                // A prefix of whole path segments can be mounted as is;
                // else the mount must go one level deeper than the limit.
                let folder = limit.trim_end_matches('/');
                let hint = if limit.ends_with('/') {
                    format!("mount {bucket}:/{folder} instead")
                } else {
                    format!("mount a folder of {bucket} whose path starts with {limit:?}")
                };
                return Some(format!(
                    "this B2 key is limited to files whose names start with {limit:?}: {hint}"
                ));
            }
        }
        if !self.can("listFiles") {
            return Some(
                "this B2 key lacks the listFiles capability, which a mount needs to show \
                 directories"
                    .to_owned(),
            );
        }
        if !self.can("readFiles") {
            return Some(
                "this B2 key lacks the readFiles capability, which a mount needs to read files"
                    .to_owned(),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(allowed: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "accountId": "a",
            "authorizationToken": "SECRET-TOKEN",
            "apiInfo": {"storageApi": {"allowed": allowed, "s3ApiUrl": "https://s3.us-west-004.backblazeb2.com"}}
        })
    }

    #[test]
    fn a_prefix_limit_names_the_folder_to_mount() {
        let limits = KeyLimits::from_answer(&v3(serde_json::json!({
            "buckets": [{"id": "b1", "name": "photos"}],
            "capabilities": ["listFiles", "readFiles", "writeFiles"],
            "namePrefix": "team/alice/"
        })));
        assert_eq!(limits.buckets, ["photos"]);
        assert_eq!(limits.name_prefix.as_deref(), Some("team/alice/"));
        let why = limits.why_refused("photos", "").expect("root refused");
        assert!(why.contains("\"team/alice/\""), "{why}");
        assert!(why.contains("photos:/team/alice"), "{why}");
        assert_eq!(limits.why_refused("photos", "team/alice/"), None);
        assert_eq!(limits.why_refused("photos", "team/alice/2026/"), None);
        let why = limits.why_refused("other", "team/alice/").expect("bucket");
        assert!(why.contains("limited to bucket photos"), "{why}");
    }

    #[test]
    fn missing_capabilities_are_named() {
        let limits = KeyLimits::from_answer(&serde_json::json!({
            "allowed": {"bucketName": "b", "capabilities": ["readFiles"], "namePrefix": null}
        }));
        let why = limits.why_refused("b", "").expect("no listFiles");
        assert!(why.contains("listFiles"), "{why}");
        assert!(!why.contains("SECRET"), "{why}");
    }
}
