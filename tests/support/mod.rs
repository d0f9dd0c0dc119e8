//! Test harness: a real S3 server on loopback, a fresh bucket per test, and
//! a fault-injecting proxy.
//!
//! The server is moto (`tests/support/moto_server.py`) in SigV4-verifying
//! mode, started once per test binary on a free 127.0.0.1 port. It holds our
//! end of a pipe on its standard input and exits when that closes, so it
//! dies with the test process however that ends; it is never looked up or
//! killed by name. If it cannot start, the test fails with the reason.
//!
//! To run the same suite against another S3 server, set
//! `BUCKETFS_TEST_ENDPOINT`, `BUCKETFS_TEST_ACCESS_KEY_ID`,
//! `BUCKETFS_TEST_SECRET_ACCESS_KEY` (and optionally `BUCKETFS_TEST_REGION`).

#![allow(dead_code)]

pub mod credential_rig;
pub mod mount;
pub mod proxy;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bucketfs::s3::{Credentials, Endpoint, RetryPolicy, S3Client, S3Config, VersioningStatus};

pub struct TestServer {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Keeps the server alive: when dropped (at process exit) it sees EOF.
    _lifeline: Option<Mutex<(Child, ChildStdin)>>,
}

static SERVER: OnceLock<TestServer> = OnceLock::new();
static BUCKET_SEQ: AtomicU32 = AtomicU32::new(0);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BUCKETFS_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    if !venv.exists() {
        panic!(
            "the test S3 server needs {} (moto); run scripts/bootstrap first",
            venv.display()
        );
    }
    venv
}

/// The shared test server, started on first use.
pub fn server() -> &'static TestServer {
    SERVER.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("BUCKETFS_TEST_ENDPOINT") {
            return TestServer {
                endpoint,
                region: std::env::var("BUCKETFS_TEST_REGION")
                    .unwrap_or_else(|_| "us-east-1".into()),
                access_key_id: std::env::var("BUCKETFS_TEST_ACCESS_KEY_ID")
                    .expect("BUCKETFS_TEST_ACCESS_KEY_ID must be set with BUCKETFS_TEST_ENDPOINT"),
                secret_access_key: std::env::var("BUCKETFS_TEST_SECRET_ACCESS_KEY").expect(
                    "BUCKETFS_TEST_SECRET_ACCESS_KEY must be set with BUCKETFS_TEST_ENDPOINT",
                ),
                _lifeline: None,
            };
        }
        start_moto()
    })
}

fn start_moto() -> TestServer {
    let log_dir = repo_root().join("target/test-logs");
    std::fs::create_dir_all(&log_dir).expect("create target/test-logs");
    let log_path = log_dir.join(format!("moto-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("create moto log");
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/support/moto_server.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the moto test server: {e}"));
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    // Read the READY line on a thread so that a server that hangs fails the
    // test after a bounded wait instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Drain anything else so the server never blocks on a full pipe.
        let _ = reader.read_to_end(&mut Vec::new());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != 4 || fields[0] != "READY" {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!(
            "the moto test server did not start; its log ({}):\n{log}",
            log_path.display()
        );
    }
    TestServer {
        endpoint: format!("http://127.0.0.1:{}", fields[1]),
        region: "us-east-1".into(),
        access_key_id: fields[2].to_owned(),
        secret_access_key: fields[3].to_owned(),
        _lifeline: Some(Mutex::new((child, stdin))),
    }
}

impl TestServer {
    pub fn credentials(&self) -> Credentials {
        Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            "test server",
        )
    }

    /// Client config for `bucket` on this server (or on `endpoint`, such as a
    /// proxy in front of it), with quick retries so fault tests stay short.
    pub fn config_via(&self, endpoint: &str, bucket: &str) -> S3Config {
        let endpoint = Endpoint::resolve(Some(endpoint), Some(&self.region), bucket, true)
            .expect("test endpoint resolves");
        let mut config = S3Config::new(bucket, endpoint, self.credentials());
        config.retry = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
        };
        config.read_timeout = Duration::from_secs(10);
        config
    }

    pub fn client(&self, bucket: &str) -> S3Client {
        S3Client::new(self.config_via(&self.endpoint, bucket)).expect("client builds")
    }
}

/// A bucket of its own for one test (unversioned: moto 5.2.5 lists common
/// prefixes of keys that have only delete markers left, which real S3 does
/// not, so tests that delete use plain buckets).
pub async fn new_bucket(test: &str) -> S3Client {
    let n = BUCKET_SEQ.fetch_add(1, Ordering::Relaxed);
    let name: String = format!("t{}-{n}-{test}", std::process::id())
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let client = server().client(&name);
    client.create_bucket().await.expect("create test bucket");
    client
}

/// A bucket with versioning turned on, where the server supports it.
pub async fn new_versioned_bucket(test: &str) -> S3Client {
    let client = new_bucket(test).await;
    let _ = client.put_bucket_versioning(true).await;
    client
}

/// Whether this bucket keeps versions; tests that need versioning skip
/// (saying so) only where the server reports it lacks it.
pub async fn versioning_enabled(client: &S3Client) -> bool {
    let enabled = matches!(
        client.get_bucket_versioning().await,
        Ok(VersioningStatus::Enabled)
    );
    if !enabled {
        eprintln!("SKIP: the test server does not support bucket versioning");
    }
    enabled
}

/// Poll `check` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Deterministic, incompressible test data.
pub fn test_data(len: usize, seed: u64) -> bytes::Bytes {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    bytes::Bytes::from(out)
}

/// Store `body` as `key` through the S3 API: one PUT, or a multipart upload
/// of 8 MiB parts for large bodies.
pub async fn upload(client: &S3Client, key: &str, body: bytes::Bytes) {
    use bucketfs::s3::PutOptions;
    const PART: usize = 8 * 1024 * 1024;
    if body.len() <= PART {
        client
            .put_object(key, body, &PutOptions::default())
            .await
            .expect("put");
        return;
    }
    let upload = client
        .create_multipart_upload(key, &PutOptions::default())
        .await
        .expect("create upload");
    let mut parts = Vec::new();
    for (i, start) in (0..body.len()).step_by(PART).enumerate() {
        let chunk = body.slice(start..(start + PART).min(body.len()));
        parts.push(
            client
                .upload_part(key, &upload, i as u32 + 1, chunk)
                .await
                .expect("part"),
        );
    }
    client
        .complete_multipart_upload(key, &upload, &parts)
        .await
        .expect("complete");
}

/// Run blocking file-system calls off the async workers (the proxy and the
/// client of a test share them).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// Store a small object through the S3 API (no metadata).
pub async fn put(client: &S3Client, key: &str, body: &[u8]) {
    client
        .put_object(
            key,
            bytes::Bytes::copy_from_slice(body),
            &bucketfs::s3::PutOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// Store many small objects through the S3 API, 32 at once.
pub async fn put_many(client: &S3Client, keys: &[String], body: &'static [u8]) {
    use futures::StreamExt;
    let options = bucketfs::s3::PutOptions::default();
    let results: Vec<_> = futures::stream::iter(keys)
        .map(|k| client.put_object(k, bytes::Bytes::from_static(body), &options))
        .buffer_unordered(32)
        .collect()
        .await;
    for result in results {
        result.unwrap_or_else(|e| panic!("a put of {} keys: {e}", keys.len()));
    }
}

/// The sorted names in a directory.
pub fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A process is gone once /proc has no live entry for it (a zombie waiting
/// for a reaper counts as gone: it runs nothing and holds no mount).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Close a file and report the close's own error (dropping a `File`
/// swallows it, and a failed upload at close must fail the test).
pub fn close_checked(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: fd was just taken from the File, and is closed once.
    match unsafe { libc::close(fd) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Create `path`, write `data` and close it, returning the first error of
/// the three (a failed close included, which `std::fs::write` hides).
pub fn write_closed(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    close_checked(f)
}

/// A new IAM user of the moto server with `policy` (a JSON policy
/// document) as its only permissions, and an access key for it: a key
/// limited as a B2 application key can be (read-only, or to a prefix).
/// Made with boto3 in moto's own virtualenv, signed with the test key.
pub fn iam_user(name: &str, policy: &serde_json::Value) -> (String, String) {
    let s = server();
    let script = r#"
import json, sys, boto3
endpoint, key, secret, name, policy = sys.argv[1:6]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id=key, aws_secret_access_key=secret)
iam.create_user(UserName=name)
iam.put_user_policy(UserName=name, PolicyName="limits", PolicyDocument=policy)
k = iam.create_access_key(UserName=name)["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .args([
            &s.endpoint,
            &s.access_key_id,
            &s.secret_access_key,
            name,
            &policy.to_string(),
        ])
        .output()
        .expect("run python for IAM");
    assert!(
        out.status.success(),
        "creating IAM user {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        _ => panic!("no key for IAM user {name}: {text}"),
    }
}
