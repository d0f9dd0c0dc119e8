//! A fault-injecting HTTP proxy for tests: sits on 127.0.0.1 between the
//! client under test and the S3 server, forwards requests unchanged (the Host
//! header included, so signatures still verify), records every request, and
//! injects the faults a test queues: error statuses with or without
//! `Retry-After`, connections dropped before the response, bodies cut short,
//! latency on every request, an outage of N seconds. A test can also have
//! it answer some requests itself (`respond_with`), to serve listings no
//! real server would hold. It can terminate TLS with a certificate from a
//! CA made for the test.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, std::io::Error>;

/// Answers the proxy gives itself: called with the method and the path and
/// query of each request that has no fault queued; `Some(Fault::Raw ..)`
/// (or any fault) is used instead of forwarding.
pub type Responder = Arc<dyn Fn(&str, &str) -> Option<Fault> + Send + Sync>;

/// What to do to one request instead of (or while) forwarding it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and an S3 error body, without forwarding.
    Status {
        status: u16,
        code: &'static str,
        retry_after: Option<u32>,
    },
    /// Forward, then close the connection without sending the response.
    DropConnection,
    /// Close the connection without forwarding: the server is down.
    Unreachable,
    /// Answer with this status, headers and body, without forwarding.
    Raw {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Forward, send the headers and the first `n` body bytes, then reset.
    CutBodyAfter(usize),
    /// Flip one bit of the request body on its way, as a bad link or NIC
    /// would: the server's digest check must catch it.
    DamageBody,
}

impl Fault {
    pub fn slow_down() -> Self {
        Fault::Status {
            status: 503,
            code: "SlowDown",
            retry_after: None,
        }
    }

    pub fn internal_error() -> Self {
        Fault::Status {
            status: 500,
            code: "InternalError",
            retry_after: None,
        }
    }
}

struct Planned {
    method: Option<String>,
    fault: Fault,
    remaining: usize,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub header_names: Vec<String>,
    /// The digest the request asked the server to check its body against:
    /// "crc32c" (x-amz-checksum-crc32c), "md5" (Content-MD5), "sha256" (a
    /// signed x-amz-content-sha256) or none.
    pub digest: Option<&'static str>,
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct State {
    plan: VecDeque<Planned>,
    seen: Vec<Seen>,
    /// Every n-th request gets the next of these faults, in turn.
    every: Option<(usize, Vec<Fault>)>,
    counter: usize,
    /// Until then, every connection is dropped: the server is down.
    down_until: Option<std::time::Instant>,
    /// Added before every request is forwarded or answered.
    latency: std::time::Duration,
    responder: Option<Responder>,
    crc32c: Crc32cSupport,
    /// Refuse PutObjects carrying `If-None-Match` / `If-Match` with 501
    /// NotImplemented, as B2 does.
    refuse_conditional_put: bool,
}

/// What the "server" does with `x-amz-checksum-crc32c`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Crc32cSupport {
    /// Checks it and sends it back, as S3 does (moto does neither).
    #[default]
    Checked,
    /// Ignores it: stores the body unchecked, sends nothing back.
    Ignored,
    /// Refuses every request carrying a checksum header, as B2 does.
    Refused,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
pub struct TestTls {
    pub ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TestTls {
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "bucketfs test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let server_key = KeyPair::generate().expect("server key");
        let server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        let server_cert = server_params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .expect("server cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .expect("server TLS config");
        TestTls {
            ca_pem: ca_cert.pem(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }
}

impl FaultProxy {
    /// A plain-HTTP proxy to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Self {
        Self::start_inner(upstream, None).await
    }

    /// An HTTPS proxy to `upstream`, serving the certificate of `tls`.
    pub async fn start_tls(upstream: &str, tls: &TestTls) -> Self {
        Self::start_inner(upstream, Some(tls.acceptor.clone())).await
    }

    async fn start_inner(upstream: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let url = match tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://127.0.0.1:{}", addr.port()),
        };
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = upstream.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("proxy client");
        let task_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = task_state.clone();
                let upstream = upstream.clone();
                let http = http.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(req, state.clone(), upstream.clone(), http.clone())
                    });
                    match tls {
                        Some(acceptor) => {
                            if let Ok(tls_stream) = acceptor.accept(stream).await {
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls_stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        FaultProxy {
            addr,
            url,
            state,
            task,
        }
    }

    /// Apply `fault` to the next `times` requests (of `method`, if given).
    pub fn inject(&self, method: Option<&str>, fault: Fault, times: usize) {
        self.state.lock().unwrap().plan.push_back(Planned {
            method: method.map(str::to_owned),
            fault,
            remaining: times,
        });
    }

    /// From now on, every `n`-th request gets a fault, taking `faults` in
    /// turn: a steady, reproducible rate of failures.
    pub fn inject_every(&self, n: usize, faults: Vec<Fault>) {
        let mut state = self.state.lock().unwrap();
        state.every = Some((n.max(1), faults));
        state.counter = 0;
    }

    /// The server is unreachable for `duration` from now: every request
    /// has its connection dropped.
    pub fn down_for(&self, duration: std::time::Duration) {
        self.state.lock().unwrap().down_until = Some(std::time::Instant::now() + duration);
    }

    /// Delay every request by `latency` from now on: a distant server.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// Let `responder` answer the requests it wants to (see `Responder`).
    pub fn respond_with(&self, responder: Responder) {
        self.state.lock().unwrap().responder = Some(responder);
    }

    /// What the proxy does with CRC32C headers from now on.
    pub fn crc32c(&self, support: Crc32cSupport) {
        self.state.lock().unwrap().crc32c = support;
    }

    /// Answer PutObjects that carry `If-None-Match` or `If-Match` with
    /// `501 NotImplemented`, as B2 does (copies with
    /// `x-amz-copy-source-if-match` still go through, as on B2).
    pub fn refuse_conditional_put(&self, refuse: bool) {
        self.state.lock().unwrap().refuse_conditional_put = refuse;
    }

    /// Answer as B2 does where it differs from S3: conditional PUTs get
    /// 501, checksum headers 400, and one request in `every` is throttled
    /// (`503 SlowDown`) or has its connection dropped after the server
    /// applied it.
    pub fn b2_like(&self, every: usize) {
        self.refuse_conditional_put(true);
        self.crc32c(Crc32cSupport::Refused);
        self.inject_every(every, vec![Fault::slow_down(), Fault::DropConnection]);
    }

    /// How many requests got an injected fault.
    pub fn faults_seen(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }

    /// Drop every queued fault: the "server" recovers.
    pub fn clear_faults(&self) {
        let mut state = self.state.lock().unwrap();
        state.plan.clear();
        state.every = None;
    }

    /// Faults still queued and not yet used.
    pub fn pending_faults(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .plan
            .iter()
            .map(|p| p.remaining)
            .sum()
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn clear_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    /// Requests seen whose query string contains `needle` (for example
    /// `list-type=2` for ListObjectsV2).
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path_and_query.contains(needle))
            .count()
    }
}

fn take_fault(
    state: &Mutex<State>,
    method: &str,
    path_and_query: &str,
    header_names: Vec<String>,
    digest: Option<&'static str>,
) -> Option<Fault> {
    let mut state = state.lock().unwrap();
    let index = state
        .plan
        .iter()
        .position(|p| p.remaining > 0 && p.method.as_deref().is_none_or(|m| m == method));
    let mut fault = index.map(|i| {
        let planned = &mut state.plan[i];
        planned.remaining -= 1;
        let fault = planned.fault.clone();
        if planned.remaining == 0 {
            state.plan.remove(i);
        }
        fault
    });
    if fault.is_none()
        && state
            .down_until
            .is_some_and(|t| std::time::Instant::now() < t)
    {
        fault = Some(Fault::Unreachable);
    }
    if fault.is_none() {
        if let Some(responder) = &state.responder {
            fault = responder(method, path_and_query);
        }
    }
    if fault.is_none() {
        state.counter += 1;
        let counter = state.counter;
        if let Some((n, faults)) = &state.every {
            if counter % n == 0 && !faults.is_empty() {
                fault = Some(faults[(counter / n) % faults.len()].clone());
            }
        }
    }
    state.seen.push(Seen {
        method: method.to_owned(),
        path_and_query: path_and_query.to_owned(),
        header_names,
        digest,
        fault: fault.clone(),
    });
    fault
}

/// The body's SHA-256 as signed in `x-amz-content-sha256`, if it is one
/// (not `UNSIGNED-PAYLOAD` or a streaming marker).
fn signed_payload(headers: &hyper::HeaderMap) -> Option<String> {
    let value = headers.get("x-amz-content-sha256")?.to_str().ok()?;
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// S3's error code for a body that does not match the digest it came with.
fn digest_mismatch(headers: &hyper::HeaderMap, body: &[u8]) -> Option<&'static str> {
    use base64::Engine;
    use md5::Digest;
    if let Some(md5) = headers.get("content-md5").and_then(|v| v.to_str().ok()) {
        let actual = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
        if md5 != actual {
            return Some("BadDigest");
        }
    }
    if let Some(crc) = headers
        .get("x-amz-checksum-crc32c")
        .and_then(|v| v.to_str().ok())
    {
        let actual =
            base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(body).to_be_bytes());
        if crc != actual {
            return Some("BadDigest");
        }
    }
    if let Some(sha) = signed_payload(headers) {
        let actual: String = sha2::Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if sha != actual {
            return Some("XAmzContentSHA256Mismatch");
        }
    }
    None
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    upstream: String,
    http: reqwest::Client,
) -> Result<Response<Body>, std::io::Error> {
    let method = req.method().as_str().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let header_names = req
        .headers()
        .keys()
        .map(|n| n.as_str().to_owned())
        .collect();
    let digest = if req.headers().contains_key("x-amz-checksum-crc32c") {
        Some("crc32c")
    } else if req.headers().contains_key("content-md5") {
        Some("md5")
    } else if signed_payload(req.headers()).is_some() {
        Some("sha256")
    } else {
        None
    };
    let fault = take_fault(&state, &method, &path_and_query, header_names, digest);
    let (latency, crc32c, refuse_conditional_put) = {
        let state = state.lock().unwrap();
        (state.latency, state.crc32c, state.refuse_conditional_put)
    };
    let is_conditional_put = req.method() == hyper::Method::PUT
        && !req.headers().contains_key("x-amz-copy-source")
        && (req.headers().contains_key("if-none-match") || req.headers().contains_key("if-match"));
    if refuse_conditional_put && is_conditional_put {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented (test proxy, as B2)</Message></Error>";
        return Ok(Response::builder()
            .status(501)
            .body(full(body))
            .expect("response"));
    }
    let crc32c_sent = req
        .headers()
        .get("x-amz-checksum-crc32c")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if crc32c == Crc32cSupport::Refused
        && (crc32c_sent.is_some() || req.headers().contains_key("x-amz-checksum-algorithm"))
    {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidRequest</Code><Message>unsupported header 'x-amz-checksum-crc32c' (test proxy)</Message></Error>";
        return Ok(Response::builder()
            .status(400)
            .body(full(body))
            .expect("response"));
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(Fault::Status {
        status,
        code,
        retry_after,
    }) = &fault
    {
        let mut resp = Response::builder().status(*status);
        if let Some(secs) = retry_after {
            resp = resp.header("retry-after", secs.to_string());
        }
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>"
        );
        return Ok(resp.body(full(body)).expect("response"));
    }

    if let Some(Fault::Raw {
        status,
        headers,
        body,
    }) = &fault
    {
        let mut resp = Response::builder().status(*status);
        for (name, value) in headers {
            resp = resp.header(*name, value);
        }
        return Ok(resp.body(full(body.clone())).expect("response"));
    }
    if matches!(fault, Some(Fault::Unreachable)) {
        return Err(std::io::Error::other("injected: server unreachable"));
    }
    let (parts, body) = req.into_parts();
    let mut body = body
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();
    if matches!(fault, Some(Fault::DamageBody)) && !body.is_empty() {
        let mut damaged = body.to_vec();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x10;
        body = Bytes::from(damaged);
    }
    // Check the body's digests as S3 and B2 do (moto checks none), so a
    // damaged body is refused rather than stored.
    let mut checked = parts.headers.clone();
    if crc32c != Crc32cSupport::Checked {
        checked.remove("x-amz-checksum-crc32c");
    }
    if let Some(code) = digest_mismatch(&checked, &body) {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>the body does not match its digest (test proxy)</Message></Error>"
        );
        return Ok(Response::builder()
            .status(400)
            .body(full(body))
            .expect("response"));
    }
    // Like S3 and B2, refuse an empty part: moto accepts one, which would
    // hide a client that sends them.
    let is_part = parts.method == hyper::Method::PUT
        && path_and_query.contains("partNumber=")
        && !parts.headers.contains_key("x-amz-copy-source");
    if is_part && body.is_empty() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>EntityTooSmall</Code><Message>empty part (test proxy)</Message></Error>";
        return Ok(Response::builder()
            .status(400)
            .body(full(body))
            .expect("response"));
    }
    let mut forward = http.request(parts.method.clone(), format!("{upstream}{path_and_query}"));
    for (name, value) in &parts.headers {
        // The body is re-sent whole; its framing is reqwest's to set.
        if name != "content-length" && name != "transfer-encoding" {
            forward = forward.header(name, value);
        }
    }
    let upstream_resp = forward
        .body(body)
        .send()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;

    if matches!(fault, Some(Fault::DropConnection)) {
        // Returning an error makes hyper close the connection unanswered.
        return Err(std::io::Error::other("injected: connection dropped"));
    }
    let mut resp = Response::builder().status(upstream_resp.status().as_u16());
    for (name, value) in upstream_resp.headers() {
        resp = resp.header(name, value);
    }
    // S3 confirms the CRC32C it checked by sending it back.
    if let (Crc32cSupport::Checked, Some(crc), true) = (
        crc32c,
        &crc32c_sent,
        upstream_resp.status().is_success()
            && !upstream_resp
                .headers()
                .contains_key("x-amz-checksum-crc32c"),
    ) {
        resp = resp.header("x-amz-checksum-crc32c", crc.as_str());
    }
    let stream = upstream_resp
        .bytes_stream()
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    let body: Body = match fault {
        Some(Fault::CutBodyAfter(limit)) => {
            let mut sent = 0usize;
            let cut = stream
                .map(move |chunk| {
                    let chunk = chunk?;
                    if sent >= limit {
                        return Err(std::io::Error::other("injected: body cut"));
                    }
                    let take = chunk.len().min(limit - sent);
                    sent += take;
                    Ok(chunk.slice(..take))
                })
                .scan(false, |done, item| {
                    // Stop after the first error so hyper resets the stream.
                    if *done {
                        return futures::future::ready(None);
                    }
                    *done = item.is_err();
                    futures::future::ready(Some(item))
                });
            BodyExt::boxed(StreamBody::new(cut.map(|r| r.map(Frame::data))))
        }
        _ => BodyExt::boxed(StreamBody::new(stream.map(|r| r.map(Frame::data)))),
    };
    Ok(resp.body(body).expect("response"))
}
