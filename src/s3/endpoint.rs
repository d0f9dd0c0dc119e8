//! Which server to talk to and how to address the bucket on it.
//!
//! Resolved once at start-up from the options: an explicit endpoint URL wins;
//! otherwise a Backblaze B2 region name (`us-west-004`) gives B2's S3 endpoint
//! and anything else an AWS regional endpoint. Buckets are addressed
//! path-style (`https://host/bucket/key`) when asked, when the host is an IP
//! address or `localhost`, or when the bucket name cannot be a DNS label;
//! virtual-hosted (`https://bucket.host/key`) otherwise.

use std::net::IpAddr;

use reqwest::Url;

/// How the bucket appears in request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    Path,
    VirtualHosted,
}

/// A resolved endpoint: the base URL, the signing region and the addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: Url,
    pub region: String,
    pub addressing: Addressing,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("invalid endpoint URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("endpoint URL {0:?} must use http or https")]
    BadScheme(String),
    #[error("invalid bucket name {0:?}: 3 to 63 characters of a-z, 0-9, '.', '-' and '_'")]
    BadBucket(String),
}

/// Is `region` shaped like a Backblaze B2 region (`us-west-004`)?
pub fn is_b2_region(region: &str) -> bool {
    let mut parts = region.split('-');
    let (Some(geo), Some(area), Some(num), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    geo.len() == 2
        && geo.bytes().all(|b| b.is_ascii_lowercase())
        && !area.is_empty()
        && area.bytes().all(|b| b.is_ascii_lowercase())
        && num.len() == 3
        && num.bytes().all(|b| b.is_ascii_digit())
}

/// The region a well-known endpoint host implies (`s3.us-west-004.backblazeb2.com`,
/// `s3.eu-west-1.amazonaws.com`), used when no region was given.
fn region_from_host(host: &str) -> Option<String> {
    let rest = host.strip_prefix("s3.")?;
    let region = rest
        .strip_suffix(".backblazeb2.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com"))?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

fn dns_compatible(bucket: &str) -> bool {
    bucket.len() >= 3
        && bucket.len() <= 63
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.'])
        && !bucket.contains("..")
}

/// Check a bucket name loosely enough for every S3-compatible store (some
/// allow `_` and capitals) but strictly enough that it can sit in a URL.
pub fn validate_bucket(bucket: &str) -> Result<(), EndpointError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(EndpointError::BadBucket(bucket.to_owned()))
    }
}

impl Endpoint {
    /// Resolve from an optional explicit URL and an optional region.
    pub fn resolve(
        url: Option<&str>,
        region: Option<&str>,
        bucket: &str,
        force_path_style: bool,
    ) -> Result<Self, EndpointError> {
        validate_bucket(bucket)?;
        let base = match url {
            Some(url) => parse_base(url)?,
            None => {
                let region = region.unwrap_or("us-east-1");
                let url = if is_b2_region(region) {
                    format!("https://s3.{region}.backblazeb2.com")
                } else {
                    format!("https://s3.{region}.amazonaws.com")
                };
                parse_base(&url)?
            }
        };
        let host = base.host_str().unwrap_or_default().to_owned();
        let region = region
            .map(str::to_owned)
            .or_else(|| region_from_host(&host))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let is_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        let is_local = host == "localhost" || host.ends_with(".localhost");
        // A dotted bucket name breaks the TLS wildcard certificate of
        // `*.host`, so HTTPS needs path-style for it, as the AWS SDKs do.
        let dotted_over_tls = bucket.contains('.') && base.scheme() == "https";
        let addressing = if force_path_style
            || is_ip
            || is_local
            || !dns_compatible(bucket)
            || dotted_over_tls
        {
            Addressing::Path
        } else {
            Addressing::VirtualHosted
        };
        Ok(Endpoint {
            base,
            region,
            addressing,
        })
    }

    /// Whether this is a Backblaze B2 endpoint, which refuses the
    /// `x-amz-checksum-*` headers.
    pub fn is_b2(&self) -> bool {
        self.base
            .host_str()
            .is_some_and(|h| h == "backblazeb2.com" || h.ends_with(".backblazeb2.com"))
    }

    pub fn is_https(&self) -> bool {
        self.base.scheme() == "https"
    }

    /// The endpoint as the user would recognise it, for messages.
    pub fn display_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `bucket` with an already-encoded key path and query string.
    pub(crate) fn url(&self, bucket: &str, encoded_key: &str, query: &str) -> String {
        let scheme = self.base.scheme();
        let host = self.base.host_str().unwrap_or_default();
        let port = self
            .base
            .port()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let base_path = self.base.path().trim_end_matches('/');
        let mut url = match self.addressing {
            Addressing::Path => {
                format!("{scheme}://{host}{port}{base_path}/{bucket}/{encoded_key}")
            }
            Addressing::VirtualHosted => {
                format!("{scheme}://{bucket}.{host}{port}{base_path}/{encoded_key}")
            }
        };
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }
}

fn parse_base(url: &str) -> Result<Url, EndpointError> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    };
    let parsed = Url::parse(&with_scheme).map_err(|e| EndpointError::BadUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EndpointError::BadScheme(url.to_owned()));
    }
    if parsed.host_str().is_none() {
        return Err(EndpointError::BadUrl {
            url: url.to_owned(),
            reason: "no host".into(),
        });
    }
    if parsed.query().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(EndpointError::BadUrl {
            url: url.to_owned(),
            reason: "an endpoint has no query string or user info".into(),
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b2_region_alone_gives_the_b2_endpoint() {
        let e = Endpoint::resolve(None, Some("us-west-004"), "photos", false).unwrap();
        assert_eq!(e.display_url(), "https://s3.us-west-004.backblazeb2.com");
        assert_eq!(e.region, "us-west-004");
        assert_eq!(e.addressing, Addressing::VirtualHosted);
        assert_eq!(
            e.url("photos", "a/b.txt", ""),
            "https://photos.s3.us-west-004.backblazeb2.com/a/b.txt"
        );
    }

    #[test]
    fn b2_endpoints_are_known_as_b2() {
        let b2 = Endpoint::resolve(None, Some("us-west-004"), "photos", false).unwrap();
        assert!(b2.is_b2());
        let aws = Endpoint::resolve(None, Some("eu-west-1"), "photos", false).unwrap();
        assert!(!aws.is_b2());
        let lookalike = Endpoint::resolve(
            Some("https://notbackblazeb2.com.example.org"),
            Some("x"),
            "photos",
            false,
        )
        .unwrap();
        assert!(!lookalike.is_b2());
    }

    #[test]
    fn aws_region_gives_the_aws_endpoint() {
        let e = Endpoint::resolve(None, Some("eu-west-1"), "photos", false).unwrap();
        assert_eq!(e.display_url(), "https://s3.eu-west-1.amazonaws.com");
        assert!(!is_b2_region("eu-west-1"));
        assert!(is_b2_region("eu-central-003"));
    }

    #[test]
    fn region_is_read_from_a_known_endpoint_host() {
        let e = Endpoint::resolve(
            Some("https://s3.eu-central-003.backblazeb2.com"),
            None,
            "b-1",
            false,
        )
        .unwrap();
        assert_eq!(e.region, "eu-central-003");
    }

    #[test]
    fn ip_and_localhost_endpoints_use_path_style() {
        let e = Endpoint::resolve(Some("http://127.0.0.1:9000"), None, "bkt", false).unwrap();
        assert_eq!(e.addressing, Addressing::Path);
        assert_eq!(
            e.url("bkt", "k%20x", "uploads="),
            "http://127.0.0.1:9000/bkt/k%20x?uploads="
        );
        let e = Endpoint::resolve(Some("http://localhost:9000/"), None, "bkt", false).unwrap();
        assert_eq!(e.addressing, Addressing::Path);
        let e = Endpoint::resolve(Some("minio.example.com"), None, "bkt", true).unwrap();
        assert_eq!(e.addressing, Addressing::Path);
        assert!(e.is_https());
    }

    #[test]
    fn non_dns_bucket_names_use_path_style() {
        let e =
            Endpoint::resolve(Some("https://s3.example.com"), None, "My_Bucket", false).unwrap();
        assert_eq!(e.addressing, Addressing::Path);
        let e =
            Endpoint::resolve(Some("https://s3.example.com"), None, "my.bucket", false).unwrap();
        assert_eq!(e.addressing, Addressing::Path);
    }

    #[test]
    fn bad_endpoints_and_buckets_are_refused() {
        assert!(matches!(
            Endpoint::resolve(Some("ftp://x"), None, "bkt", false),
            Err(EndpointError::BadScheme(_))
        ));
        assert!(Endpoint::resolve(Some("http://[bad"), None, "bkt", false).is_err());
        assert!(matches!(
            Endpoint::resolve(None, None, "a/b", false),
            Err(EndpointError::BadBucket(_))
        ));
    }
}
