//! Temporary credentials for tests, on loopback: one HTTP server that plays
//! every party that hands out expiring keys, in front of the moto server.
//!
//! - As the S3 endpoint it forwards to moto, but refuses a request signed
//!   with an issued key past its stated expiry (`400 ExpiredToken`, as AWS
//!   answers), since moto never expires keys. Every use of an issued key is
//!   recorded, so a test can check which keys were used and when.
//! - As STS (`AWS_ENDPOINT_URL_STS`): `AssumeRole` is forwarded to moto
//!   with the `Expiration` of its answer cut to the rig's lifetime;
//!   `AssumeRoleWithWebIdentity` (unsigned, which moto in signature-checking
//!   mode refuses) is answered here after checking the token, with keys
//!   moto issued for the role.
//! - As a container endpoint (`/container-credentials`, with the
//!   authorization token checked), as IMDSv2 (`/latest/api/token`, then
//!   `/latest/meta-data/iam/security-credentials/...`), as SSO's portal
//!   (`/federation/credentials`, `AWS_ENDPOINT_URL_SSO`) and as the endpoint
//!   a `credential_process` script fetches from (`/process-credentials`).
//!
//! All keys are real moto keys of the role `bucketfs-temporary` (see
//! `moto_server.py`), obtained with `AssumeRole`, so moto checks their
//! signatures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::server;

type Body = BoxBody<Bytes, std::io::Error>;

pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/bucketfs-temporary";
const ROLE_NAME: &str = "bucketfs-temporary";
pub const CONTAINER_TOKEN: &str = "container-authorization-token";
pub const WEB_IDENTITY_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.test-web-identity-token";
const IMDS_TOKEN: &str = "imds-session-token";
pub const SSO_TOKEN: &str = "sso-access-token-from-aws-sso-login";
pub const ROLE_NAME_FOR_SSO: &str = ROLE_NAME;

/// One key the rig handed out (or saw STS hand out).
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_key_id: String,
    pub issued: SystemTime,
    /// `None`: handed out already expired on purpose (IMDS static
    /// stability), so never refused.
    pub expiry: Option<SystemTime>,
    pub uses: u32,
    pub last_use: Option<SystemTime>,
    /// Which party handed it out ("container", "imds", "sts", ...).
    pub by: &'static str,
}

#[derive(Default)]
struct State {
    life: Duration,
    issued: Vec<Issued>,
    /// Requests refused because their key had expired.
    refused: u32,
    /// Until then the credential endpoints answer 500.
    failing_until: Option<SystemTime>,
    /// Hand IMDS keys out already expired (to test the SDK's extension).
    imds_expired: bool,
}

pub struct CredentialRig {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`: the S3 endpoint, STS endpoint, container,
    /// IMDS and process-credentials endpoint at once.
    pub url: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for CredentialRig {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Mints keys of the role from moto, signed with the test server's key.
struct Minter {
    provider: aws_config::sts::AssumeRoleProvider,
}

impl Minter {
    async fn new() -> Self {
        let s = server();
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&s.endpoint)
            .region(aws_types::region::Region::new(s.region.clone()))
            .credentials_provider(aws_credential_types::Credentials::new(
                &s.access_key_id,
                &s.secret_access_key,
                None,
                None,
                "test server",
            ))
            .load()
            .await;
        let provider = aws_config::sts::AssumeRoleProvider::builder(ROLE_ARN)
            .session_name("credential-rig")
            .configure(&conf)
            .build()
            .await;
        Minter { provider }
    }

    async fn mint(&self) -> aws_credential_types::Credentials {
        self.provider
            .provide_credentials()
            .await
            .expect("moto STS AssumeRole for the rig")
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn respond(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(full(body))
        .expect("response")
}

impl CredentialRig {
    /// Start the rig in front of the test server; keys live `life`.
    pub async fn start(life: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind rig");
        let addr = listener.local_addr().expect("rig addr");
        let state = Arc::new(Mutex::new(State {
            life,
            ..Default::default()
        }));
        let minter = Arc::new(Minter::new().await);
        let http = reqwest::Client::new();
        let upstream = server().endpoint.clone();
        let task_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = task_state.clone();
                let minter = minter.clone();
                let http = http.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(
                            req,
                            state.clone(),
                            minter.clone(),
                            http.clone(),
                            upstream.clone(),
                        )
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CredentialRig {
            addr,
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// The credential endpoints (not S3) answer 500 for `duration` from now.
    pub fn fail_endpoints_for(&self, duration: Duration) {
        self.state.lock().unwrap().failing_until = Some(SystemTime::now() + duration);
    }

    /// IMDS hands out keys that have already expired.
    pub fn imds_hands_out_expired_keys(&self) {
        self.state.lock().unwrap().imds_expired = true;
    }

    /// Every key issued so far expires now, before its stated expiry: the
    /// server revoked them, or the client's clock is behind.
    pub fn revoke_issued_keys(&self) {
        let now = SystemTime::now();
        for issued in &mut self.state.lock().unwrap().issued {
            issued.expiry = Some(now);
        }
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Requests refused because they were signed with an expired key.
    pub fn refused(&self) -> u32 {
        self.state.lock().unwrap().refused
    }
}

fn failing(state: &Mutex<State>) -> bool {
    state
        .lock()
        .unwrap()
        .failing_until
        .is_some_and(|t| SystemTime::now() < t)
}

/// Mint a key for `by`, record it, and return it with its stated expiry.
async fn issue(
    state: &Mutex<State>,
    minter: &Minter,
    by: &'static str,
    expired: bool,
) -> (aws_credential_types::Credentials, SystemTime) {
    let creds = minter.mint().await;
    let now = SystemTime::now();
    let life = state.lock().unwrap().life;
    let expiry = if expired {
        now - Duration::from_secs(60)
    } else {
        now + life
    };
    state.lock().unwrap().issued.push(Issued {
        access_key_id: creds.access_key_id().to_owned(),
        issued: now,
        expiry: (!expired).then_some(expiry),
        uses: 0,
        last_use: None,
        by,
    });
    (creds, expiry)
}

fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The access key id in a SigV4 `Authorization` header.
fn signing_key(req: &Request<Incoming>) -> Option<String> {
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    Some(cred.split('/').next()?.to_owned())
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    minter: Arc<Minter>,
    http: reqwest::Client,
    upstream: String,
) -> Result<Response<Body>, std::io::Error> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method.as_str(), path.as_str()) {
        ("GET", "/container-credentials") => {
            if failing(&state) {
                return Ok(respond(500, "down"));
            }
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if auth != Some(CONTAINER_TOKEN) {
                return Ok(respond(403, "bad authorization token"));
            }
            let (c, expiry) = issue(&state, &minter, "container", false).await;
            let body = serde_json::json!({
                "AccessKeyId": c.access_key_id(),
                "SecretAccessKey": c.secret_access_key(),
                "Token": c.session_token(),
                "Expiration": rfc3339(expiry),
            });
            return Ok(respond(200, body.to_string()));
        }
        ("GET", "/process-credentials") => {
            if failing(&state) {
                return Ok(respond(500, "down"));
            }
            let (c, expiry) = issue(&state, &minter, "process", false).await;
            let body = serde_json::json!({
                "Version": 1,
                "AccessKeyId": c.access_key_id(),
                "SecretAccessKey": c.secret_access_key(),
                "SessionToken": c.session_token(),
                "Expiration": rfc3339(expiry),
            });
            return Ok(respond(200, body.to_string()));
        }
        ("GET", "/federation/credentials") => {
            // SSO's GetRoleCredentials, with the token `aws sso login` cached.
            if failing(&state) {
                return Ok(respond(500, "down"));
            }
            let token = req
                .headers()
                .get("x-amz-sso_bearer_token")
                .and_then(|v| v.to_str().ok());
            let query = req.uri().query().unwrap_or_default();
            if token != Some(SSO_TOKEN) || !query.contains(&format!("role_name={ROLE_NAME}")) {
                return Ok(respond(401, "{\"message\":\"bad SSO token or role\"}"));
            }
            let (c, expiry) = issue(&state, &minter, "sso", false).await;
            let millis = expiry
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            let body = serde_json::json!({"roleCredentials": {
                "accessKeyId": c.access_key_id(),
                "secretAccessKey": c.secret_access_key(),
                "sessionToken": c.session_token(),
                "expiration": millis,
            }});
            return Ok(respond(200, body.to_string()));
        }
        ("PUT", "/latest/api/token") => {
            if failing(&state) {
                return Ok(respond(500, "down"));
            }
            if !req
                .headers()
                .contains_key("x-aws-ec2-metadata-token-ttl-seconds")
            {
                return Ok(respond(400, "missing ttl"));
            }
            return Ok(Response::builder()
                .status(200)
                .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
                .body(full(IMDS_TOKEN))
                .expect("response"));
        }
        ("GET", p) if p.starts_with("/latest/meta-data/iam/security-credentials/") => {
            if failing(&state) {
                return Ok(respond(500, "down"));
            }
            let token = req
                .headers()
                .get("x-aws-ec2-metadata-token")
                .and_then(|v| v.to_str().ok());
            if token != Some(IMDS_TOKEN) {
                return Ok(respond(401, "IMDSv2 token required"));
            }
            let role = p.trim_start_matches("/latest/meta-data/iam/security-credentials/");
            if role.is_empty() {
                return Ok(respond(200, ROLE_NAME));
            }
            if role != ROLE_NAME {
                return Ok(respond(404, "no such role"));
            }
            let expired = state.lock().unwrap().imds_expired;
            let (c, expiry) = issue(&state, &minter, "imds", expired).await;
            let body = serde_json::json!({
                "Code": "Success",
                "LastUpdated": rfc3339(SystemTime::now()),
                "Type": "AWS-HMAC",
                "AccessKeyId": c.access_key_id(),
                "SecretAccessKey": c.secret_access_key(),
                "Token": c.session_token(),
                "Expiration": rfc3339(expiry),
            });
            return Ok(respond(200, body.to_string()));
        }
        _ => {}
    }

    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let key = signing_key(&req);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();

    if method == hyper::Method::POST && path == "/" && is_form {
        let form = String::from_utf8_lossy(&body).into_owned();
        match form_value(&form, "Action").as_deref() {
            Some("AssumeRoleWithWebIdentity") => {
                if failing(&state) {
                    return Ok(respond(500, "down"));
                }
                if form_value(&form, "WebIdentityToken").as_deref() != Some(WEB_IDENTITY_TOKEN)
                    || form_value(&form, "RoleArn").as_deref() != Some(ROLE_ARN)
                {
                    return Ok(respond(
                        400,
                        "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
                         <Message>unexpected token or role (credential rig)</Message></Error>\
                         </ErrorResponse>",
                    ));
                }
                let session = form_value(&form, "RoleSessionName").unwrap_or_default();
                let (c, expiry) = issue(&state, &minter, "web identity", false).await;
                let body = format!(
                    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                     <AssumeRoleWithWebIdentityResult><Credentials>\
                     <AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
                     <SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>\
                     <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/{ROLE_NAME}/{session}</Arn>\
                     <AssumedRoleId>AROA000000000000000:{session}</AssumedRoleId></AssumedRoleUser>\
                     <SubjectFromWebIdentityToken>system:serviceaccount:test</SubjectFromWebIdentityToken>\
                     </AssumeRoleWithWebIdentityResult>\
                     <ResponseMetadata><RequestId>rig</RequestId></ResponseMetadata>\
                     </AssumeRoleWithWebIdentityResponse>",
                    c.access_key_id(),
                    c.secret_access_key(),
                    c.session_token().unwrap_or_default(),
                    rfc3339(expiry),
                );
                return Ok(respond(200, body));
            }
            Some("AssumeRole") => {
                if failing(&state) {
                    return Ok(respond(500, "down"));
                }
                let resp = forward(&http, &upstream, &parts, body).await?;
                let status = resp.status().as_u16();
                let text = resp
                    .text()
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                if status != 200 {
                    return Ok(respond(status, text));
                }
                let now = SystemTime::now();
                let life = state.lock().unwrap().life;
                let expiry = now + life;
                let akid = between(&text, "<AccessKeyId>", "</AccessKeyId>").unwrap_or_default();
                state.lock().unwrap().issued.push(Issued {
                    access_key_id: akid.to_owned(),
                    issued: now,
                    expiry: Some(expiry),
                    uses: 0,
                    last_use: None,
                    by: "sts",
                });
                let old = between(&text, "<Expiration>", "</Expiration>").unwrap_or_default();
                let text = text.replacen(
                    &format!("<Expiration>{old}</Expiration>"),
                    &format!("<Expiration>{}</Expiration>", rfc3339(expiry)),
                    1,
                );
                return Ok(respond(200, text));
            }
            _ => {}
        }
    }

    // S3: refuse keys past their stated expiry, record every use.
    if let Some(key) = key {
        let now = SystemTime::now();
        let mut st = state.lock().unwrap();
        if let Some(issued) = st.issued.iter_mut().find(|i| i.access_key_id == key) {
            if issued.expiry.is_some_and(|e| e <= now) {
                st.refused += 1;
                return Ok(respond(
                    400,
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ExpiredToken</Code>\
                     <Message>The provided token has expired. (credential rig)</Message></Error>",
                ));
            }
            issued.uses += 1;
            issued.last_use = Some(now);
        }
    }
    let resp = forward(&http, &upstream, &parts, body).await?;
    let mut out = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        out = out.header(name, value);
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(out.body(full(bytes)).expect("response"))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = start + text[start..].find(close)?;
    Some(&text[start..end])
}

async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<reqwest::Response, std::io::Error> {
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut request = http.request(parts.method.clone(), format!("{upstream}{path_and_query}"));
    for (name, value) in &parts.headers {
        if name != "content-length" && name != "transfer-encoding" {
            request = request.header(name, value);
        }
    }
    request
        .body(body)
        .send()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}
