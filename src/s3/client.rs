//! The S3 client: configuration, one request with signing, and the retry
//! loop every operation goes through. The operations themselves live in
//! `objects.rs`, `listing.rs`, `multipart.rs` and `bucket.rs`.
//!
//! An `S3Client` is bound to one bucket, is cheap to clone (an `Arc`), and is
//! safe to use from many tasks at once: the connection pool is shared.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use super::checksum::{BodyDigest, ChecksumChoice, UploadChecksum};
use super::encode::{encode_key, key_is_addressable, query_string};
use super::endpoint::Endpoint;
use super::error::{ErrorKind, S3Error};
use super::identity::LiveCredentials;
use super::pricing::PriceList;
use super::retry::{parse_retry_after, RetryPolicy};
use super::server_caps::ServerCaps;
use super::signing::{SignError, Signer};
use super::sse::ServerSideEncryption;
use super::throttle::Throttle;
use super::types::PutOptions;
use super::xml;

/// Prefix of user metadata headers.
pub(crate) const META_PREFIX: &str = "x-amz-meta-";

/// Error bodies larger than this are cut: we only need the code and message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Everything needed to build a client, validated by the caller.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: Endpoint,
    pub credentials: LiveCredentials,
    pub retry: RetryPolicy,
    /// Time allowed to open a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time a response may go without sending a byte before it is abandoned.
    pub read_timeout: Duration,
    /// Extra trusted CA certificates (PEM), on top of the system's.
    pub ca_bundle: Option<PathBuf>,
    pub sse: ServerSideEncryption,
    /// The digest uploads carry for the server to check; `None` chooses
    /// (see `checksum.rs`).
    pub upload_checksum: Option<UploadChecksum>,
    /// Whose prices decide between copying and uploading again; `None`:
    /// B2's on a B2 endpoint, else AWS's.
    pub price_list: Option<PriceList>,
}

impl S3Config {
    pub fn new(
        bucket: impl Into<String>,
        endpoint: Endpoint,
        credentials: impl Into<LiveCredentials>,
    ) -> Self {
        S3Config {
            bucket: bucket.into(),
            endpoint,
            credentials: credentials.into(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            ca_bundle: None,
            sse: ServerSideEncryption::BucketDefault,
            upload_checksum: None,
            price_list: None,
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("cannot read CA bundle {path}: {source}")]
    CaBundleUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA bundle {path} holds no usable PEM certificate: {reason}")]
    CaBundleInvalid { path: PathBuf, reason: String },
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
}

#[derive(Clone)]
pub struct S3Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    pub(crate) bucket: String,
    endpoint: Endpoint,
    signer: Signer,
    retry: RetryPolicy,
    pub(crate) sse: ServerSideEncryption,
    pub(crate) checksum: ChecksumChoice,
    /// What the server honours (conditional PUTs), learnt as we go.
    pub(crate) caps: ServerCaps,
    price_list: PriceList,
    /// Held on when the server asks to slow down: every request waits.
    throttle: Throttle,
    /// A cap refusal (B2's daily transaction or download caps) is logged
    /// once.
    cap_logged: std::sync::atomic::AtomicBool,
    /// So is the first write refused for lack of permission.
    write_refusal_logged: std::sync::atomic::AtomicBool,
}

/// The operations that need a key allowed to write (B2's `writeFiles`).
const WRITE_OPERATIONS: [&str; 8] = [
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "DeleteObject",
    "DeleteObjects",
];

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("bucket", &self.inner.bucket)
            .field("endpoint", &self.inner.endpoint.display_url())
            .finish_non_exhaustive()
    }
}

/// The header that carries (and, in answers, confirms) a body's CRC32C.
pub(crate) const CRC32C_HEADER: &str = "x-amz-checksum-crc32c";

/// One request as an operation describes it, before URL, signature and
/// retries are added.
pub(crate) struct Request<'a> {
    pub op: &'static str,
    pub method: Method,
    /// The object key; `None` addresses the bucket itself.
    pub key: Option<&'a str>,
    pub query: Vec<(&'static str, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body's SHA-256 (hex), signed as `x-amz-content-sha256`; without
    /// it the body is sent as `UNSIGNED-PAYLOAD`.
    pub payload_sha256: Option<String>,
}

impl<'a> Request<'a> {
    pub fn new(op: &'static str, method: Method, key: Option<&'a str>) -> Self {
        Request {
            op,
            method,
            key,
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            payload_sha256: None,
        }
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Result<Self, S3Error> {
        let value = HeaderValue::from_str(value).map_err(|_| {
            S3Error::invalid_request(
                self.op,
                self.key,
                format!("invalid value for header {name}"),
            )
        })?;
        self.headers.insert(HeaderName::from_static(name), value);
        Ok(self)
    }

    /// Add the headers that give a new object its content type and user
    /// metadata.
    pub fn put_options(mut self, options: &PutOptions) -> Result<Self, S3Error> {
        if let Some(ct) = &options.content_type {
            self = self.header("content-type", ct)?;
        }
        for (name, value) in &options.content_headers {
            self = self.header(name, value)?;
        }
        for (name, value) in &options.user_metadata {
            let header = format!("{META_PREFIX}{}", name.to_ascii_lowercase());
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                S3Error::invalid_request(
                    self.op,
                    self.key,
                    format!("invalid metadata name {name:?}"),
                )
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                S3Error::invalid_request(self.op, self.key, "metadata values must be visible ASCII")
            })?;
            self.headers.insert(name, value);
        }
        Ok(self)
    }

    /// Parse a response body of this request with one of `xml`'s parsers;
    /// a body that is not UTF-8 or not what the parser expects is an
    /// invalid response of this operation.
    pub fn parse<T>(
        &self,
        body: &[u8],
        parser: impl FnOnce(&str) -> Result<T, xml::XmlError>,
    ) -> Result<T, S3Error> {
        let text = std::str::from_utf8(body)
            .map_err(|_| S3Error::invalid_response(self.op, self.key, "body is not UTF-8"))?;
        parser(text).map_err(|e| S3Error::invalid_response(self.op, self.key, e.0))
    }

    /// Set the body and its `Content-MD5`, which the server checks.
    pub fn body_with_md5(self, body: Bytes) -> Self {
        let digest = BodyDigest::compute(UploadChecksum::Md5, &body);
        self.body_with_digest(body, &digest)
    }

    /// Set the body with the digest the caller already computed (and
    /// keeps, to check the ETag): a digest costs up to two CPU-seconds per
    /// GiB, too much to compute twice.
    pub fn body_with_digest(mut self, body: Bytes, digest: &BodyDigest) -> Self {
        if let Some(md5) = &digest.md5 {
            if let Ok(v) = HeaderValue::from_str(&BASE64.encode(md5)) {
                self.headers
                    .insert(HeaderName::from_static("content-md5"), v);
            }
        }
        if let Some(crc) = digest.crc32c_base64() {
            if let Ok(v) = HeaderValue::from_str(&crc) {
                self.headers
                    .insert(HeaderName::from_static(CRC32C_HEADER), v);
            }
        }
        self.payload_sha256 = digest.sha256_hex.clone();
        self.body = body;
        self
    }
}

/// What a successful attempt produced.
enum Outcome {
    /// The response, its body still unread (GetObject).
    Streaming(reqwest::Response),
    /// The whole body, read and checked for an embedded error.
    Read(StatusCode, HeaderMap, Bytes),
}

impl S3Client {
    pub fn new(config: S3Config) -> Result<Self, ClientBuildError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bucketfs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            // S3 redirects mean "wrong region/endpoint"; following one would
            // re-send a request signed for another host. Report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(50))
            .http1_only();
        if let Some(path) = &config.ca_bundle {
            let pem =
                std::fs::read(path).map_err(|source| ClientBuildError::CaBundleUnreadable {
                    path: path.clone(),
                    source,
                })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientBuildError::CaBundleInvalid {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?;
            if certs.is_empty() {
                return Err(ClientBuildError::CaBundleInvalid {
                    path: path.clone(),
                    reason: "no certificates found".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientBuildError::Http(error_chain(&e)))?;
        let signer = Signer::new(config.credentials, &config.endpoint.region);
        let checksum = ChecksumChoice::new(config.upload_checksum, config.endpoint.is_b2());
        let caps = ServerCaps::new(config.endpoint.is_b2());
        let price_list = config
            .price_list
            .unwrap_or_else(|| PriceList::for_endpoint(config.endpoint.is_b2()));
        Ok(S3Client {
            inner: Arc::new(Inner {
                http,
                bucket: config.bucket,
                endpoint: config.endpoint,
                signer,
                retry: config.retry,
                sse: config.sse,
                checksum,
                caps,
                price_list,
                throttle: Throttle::default(),
                cap_logged: std::sync::atomic::AtomicBool::new(false),
                write_refusal_logged: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The price list choices of how to copy follow.
    pub fn price_list(&self) -> PriceList {
        self.inner.price_list
    }

    /// What B2 says the key in use may do (`b2_key.rs`): asked only to
    /// explain a refusal, at most once per failed mount.
    pub async fn b2_key_limits(&self, api_url: &str) -> Result<super::b2_key::KeyLimits, String> {
        let (key_id, secret) = self
            .inner
            .signer
            .key_pair()
            .ok_or_else(|| "no key to ask about".to_owned())?;
        super::b2_key::KeyLimits::fetch(api_url, &key_id, &secret).await
    }

    pub(crate) fn sse(&self) -> &ServerSideEncryption {
        &self.inner.sse
    }

    /// The value of an `x-amz-copy-source` header for `key` in this bucket.
    pub(crate) fn copy_source_header(&self, key: &str, version_id: Option<&str>) -> String {
        let mut v = format!("/{}/{}", self.inner.bucket, encode_key(key));
        if let Some(version) = version_id {
            v.push_str("?versionId=");
            v.push_str(&super::encode::encode_query_value(version));
        }
        v
    }

    fn url(&self, req: &Request<'_>) -> Result<String, S3Error> {
        let key = req.key.unwrap_or("");
        if !key_is_addressable(key) {
            return Err(S3Error::invalid_request(
                req.op,
                req.key,
                "keys with '.' or '..' path segments cannot be addressed by S3 request paths",
            ));
        }
        Ok(self.inner.endpoint.url(
            &self.inner.bucket,
            &encode_key(key),
            &query_string(&req.query),
        ))
    }

    /// Send a request, retrying as the policy allows, and return the
    /// response with its body unread.
    pub(crate) async fn send_streaming(
        &self,
        req: &Request<'_>,
    ) -> Result<reqwest::Response, S3Error> {
        match self.run(req, false).await? {
            Outcome::Streaming(resp) => Ok(resp),
            Outcome::Read(..) => unreachable!("run(read_body = false) streams"),
        }
    }

    /// Send a request, retrying as the policy allows, and return the whole
    /// body. A 200 whose body is an `<Error>` document is an error (and
    /// retried if its code says so), as CopyObject and
    /// CompleteMultipartUpload can answer.
    pub(crate) async fn send(
        &self,
        req: &Request<'_>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), S3Error> {
        match self.run(req, true).await? {
            Outcome::Read(status, headers, body) => Ok((status, headers, body)),
            Outcome::Streaming(_) => unreachable!("run(read_body = true) reads"),
        }
    }

    async fn run(&self, req: &Request<'_>, read_body: bool) -> Result<Outcome, S3Error> {
        let url = self.url(req)?;
        let mut schedule = self.inner.retry.schedule();
        let mut attempt = 1;
        // Keys the server calls expired are replaced once per request.
        let mut refreshed_early = false;
        loop {
            self.inner.throttle.wait().await;
            let started = Instant::now();
            let signed_with = self.inner.signer.credentials().access_key_id();
            let result = self.attempt(req, &url, read_body).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok(outcome) => {
                    tracing::debug!(
                        op = req.op,
                        key = req.key,
                        attempt,
                        elapsed_ms,
                        "request ok"
                    );
                    return Ok(outcome);
                }
                Err(mut err) => {
                    err.attempts = attempt;
                    // Keys the server calls expired: AWS answers 400
                    // ExpiredToken, and a HEAD, which has no body, a bare
                    // 400. Replace them (or take those another request
                    // just got) and send this once more.
                    let expired_answer =
                        matches!(err.code(), Some("ExpiredToken" | "TokenRefreshRequired"))
                            || (req.method == Method::HEAD && err.status() == Some(400));
                    if expired_answer && !refreshed_early {
                        refreshed_early = true;
                        if self
                            .inner
                            .signer
                            .credentials()
                            .refresh_now(&signed_with)
                            .await
                        {
                            attempt += 1;
                            continue;
                        }
                    }
                    if err.is_retryable() {
                        if let Some(delay) = schedule.next_delay(err.retry_after) {
                            if err.is_throttling() {
                                if self.inner.throttle.brake(delay) {
                                    tracing::warn!(
                                        op = req.op,
                                        key = req.key,
                                        "{err}: the server asks to slow down; every request \
                                         of this mount waits {} ms",
                                        delay.as_millis()
                                    );
                                }
                            } else {
                                tracing::warn!(
                                    op = req.op,
                                    key = req.key,
                                    attempt,
                                    "{err}; retrying in {} ms",
                                    delay.as_millis()
                                );
                            }
                            tokio::time::sleep(delay).await;
                            attempt += 1;
                            continue;
                        }
                    }
                    if err.is_access_denied()
                        && WRITE_OPERATIONS.contains(&req.op)
                        && !self
                            .inner
                            .write_refusal_logged
                            .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::error!(
                            op = req.op,
                            "the server refuses writes with these credentials ({err}): a B2 \
                             key needs the writeFiles capability (and deleteFiles to remove \
                             versions), an AWS identity s3:PutObject and s3:DeleteObject. Writes \
                             fail with EACCES and reads go on; mount with --read-only to have \
                             writes refused up front"
                        );
                    }
                    if err.is_cap_exceeded()
                        && !self
                            .inner
                            .cap_logged
                            .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::error!(
                            op = req.op,
                            "the server refuses requests because a cap of the account is \
                             reached ({err}): they fail with EDQUOT until the cap is raised \
                             (B2: Caps & Alerts in the web console) or resets"
                        );
                    }
                    tracing::debug!(
                        op = req.op,
                        key = req.key,
                        attempt,
                        elapsed_ms,
                        "request failed: {err}"
                    );
                    return Err(err);
                }
            }
        }
    }

    async fn attempt(
        &self,
        req: &Request<'_>,
        url: &str,
        read_body: bool,
    ) -> Result<Outcome, S3Error> {
        let mut headers = req.headers.clone();
        self.inner
            .signer
            .sign(
                req.method.as_str(),
                url,
                &mut headers,
                req.payload_sha256.as_deref(),
            )
            .map_err(|e| match e {
                SignError::Expired(detail) => {
                    S3Error::new(req.op, req.key, ErrorKind::CredentialsExpired { detail })
                }
                SignError::Other(detail) => S3Error::invalid_request(req.op, req.key, detail),
            })?;
        let response = self
            .inner
            .http
            .request(req.method.clone(), url)
            .headers(headers)
            .body(req.body.clone())
            .send()
            .await
            .map_err(|e| transport_error(req, &e))?;
        let status = response.status();
        if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
            return Err(service_error(req, response).await);
        }
        if !read_body {
            return Ok(Outcome::Streaming(response));
        }
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(req, &e))?;
        if let Ok(text) = std::str::from_utf8(&body) {
            if xml::is_error_document(text) {
                let parsed = xml::parse_error_body(text).unwrap_or_default();
                return Err(S3Error::new(
                    req.op,
                    req.key,
                    ErrorKind::Service {
                        status: status.as_u16(),
                        code: parsed.code,
                        message: parsed.message,
                        request_id: parsed.request_id,
                    },
                ));
            }
        }
        Ok(Outcome::Read(status, headers, body))
    }
}

/// Describe a reqwest error by its whole cause chain ("error sending
/// request: connection refused"), which names no secret: signatures travel
/// in headers, never in the URL.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

pub(crate) fn transport_error(req: &Request<'_>, err: &reqwest::Error) -> S3Error {
    transport_error_for(req.op, req.key, err)
}

pub(crate) fn transport_error_for(
    op: &'static str,
    key: Option<&str>,
    err: &reqwest::Error,
) -> S3Error {
    S3Error::new(
        op,
        key,
        ErrorKind::Transport {
            detail: error_chain(err),
            timeout: err.is_timeout(),
        },
    )
}

/// Turn an error response into an `S3Error`, reading at most
/// `MAX_ERROR_BODY` bytes of its body.
async fn service_error(req: &Request<'_>, mut response: reqwest::Response) -> S3Error {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let header_request_id = response
        .headers()
        .get("x-amz-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    let text = String::from_utf8_lossy(&body);
    let parsed = xml::parse_error_body(&text);
    let (code, message, request_id) = match parsed {
        Some(e) => (e.code, e.message, e.request_id.or(header_request_id)),
        // HEAD responses have no body, and proxies answer in HTML: name the
        // status the way S3 would.
        None => (
            status_code_name(status, req.key.is_some()).to_owned(),
            String::new(),
            header_request_id,
        ),
    };
    let mut err = S3Error::new(
        req.op,
        req.key,
        ErrorKind::Service {
            status: status.as_u16(),
            code,
            message,
            request_id,
        },
    );
    err.retry_after = retry_after;
    err
}

fn status_code_name(status: StatusCode, has_key: bool) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        403 => "AccessDenied",
        404 if has_key => "NoSuchKey",
        404 => "NoSuchBucket",
        409 => "Conflict",
        412 => "PreconditionFailed",
        416 => "InvalidRange",
        429 => "TooManyRequests",
        500 => "InternalError",
        501 => "NotImplemented",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        301 | 307 => "PermanentRedirect",
        _ => "UnknownError",
    }
}
