//! Temporary credentials through a real mount: keys from a container
//! endpoint, web identity (STS), an assumed-role profile chain,
//! `credential_process`, SSO and IMDSv2, each living a minute, refreshed before
//! they expire while files are written and read; a refresh that fails for a
//! while; keys that really expire; and IMDS keys that arrive expired (the
//! SDK's static stability). `support::credential_rig` plays every party
//! that hands out keys and refuses keys past their stated expiry, which
//! moto alone never does.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use support::credential_rig::{
    CredentialRig, Issued, CONTAINER_TOKEN, ROLE_ARN, ROLE_NAME_FOR_SSO, SSO_TOKEN,
    WEB_IDENTITY_TOKEN,
};
use support::mount::Mount;
use support::{blocking, server, test_data, write_closed};

/// How long each key lives: "about a minute", as the AWS sources can be
/// told to hand out at the least.
const LIFE: Duration = Duration::from_secs(60);
const EXPIRIES: u32 = 3;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write");
    path
}

/// Every check asks the bucket, so that requests never stop.
const STRICT: &[&str] = &["-o", "metadata_ttl=0,negative_ttl=0"];

/// Mount off the async workers: the rig answers on them while bucketfs
/// starts.
async fn mount_with(
    bucket: &str,
    url: &str,
    extra: &'static [&'static str],
    env: &[(String, String)],
) -> Result<Mount, String> {
    let (bucket, url, env) = (bucket.to_owned(), url.to_owned(), env.to_vec());
    blocking(move || Mount::try_start_with_env(&bucket, &url, extra, &env)).await
}

/// One source of temporary keys: the environment a mount gets, and a home
/// directory with whatever files the source needs.
struct Scenario {
    name: &'static str,
    rig: CredentialRig,
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Scenario {
    async fn new(name: &'static str) -> Self {
        let rig = CredentialRig::start(LIFE).await;
        let home = tempfile::tempdir().expect("home");
        let mut env = env(&[
            ("HOME", &home.path().to_string_lossy()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
        let h = home.path().to_owned();
        let url = rig.url.clone();
        let mut set = |k: &str, v: &str| {
            env.retain(|(name, _)| name != k);
            env.push((k.to_owned(), v.to_owned()));
        };
        match name {
            "container" => {
                let token = write_file(&h, "container-token", CONTAINER_TOKEN);
                set(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    &format!("{url}/container-credentials"),
                );
                set(
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    &token.to_string_lossy(),
                );
            }
            "web identity" => {
                let token = write_file(&h, "web-identity-token", WEB_IDENTITY_TOKEN);
                set("AWS_WEB_IDENTITY_TOKEN_FILE", &token.to_string_lossy());
                set("AWS_ROLE_ARN", ROLE_ARN);
                set("AWS_ROLE_SESSION_NAME", "bucketfs-test");
                set("AWS_ENDPOINT_URL_STS", &url);
            }
            "assumed role" => {
                let s = server();
                write_file(
                    &h,
                    ".aws/config",
                    &format!(
                        "[profile chain]\nrole_arn = {ROLE_ARN}\nsource_profile = base\n\
                         [profile base]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                        s.access_key_id, s.secret_access_key
                    ),
                );
                set("AWS_PROFILE", "chain");
                set("AWS_ENDPOINT_URL_STS", &url);
            }
            "credential_process" => {
                let script = write_file(
                    &h,
                    "fetch-credentials.py",
                    &format!(
                        "import urllib.request\n\
                         print(urllib.request.urlopen('{url}/process-credentials').read().decode())\n"
                    ),
                );
                let python = support::repo_root().join(".venv/bin/python");
                write_file(
                    &h,
                    ".aws/config",
                    &format!(
                        "[default]\ncredential_process = {} {}\n",
                        python.display(),
                        script.display()
                    ),
                );
            }
            "sso" => {
                // A legacy SSO profile and the token `aws sso login` left
                // in the cache, named by the SHA-1 of the start URL.
                let start_url = "https://bucketfs-test.awsapps.com/start";
                write_file(
                    &h,
                    ".aws/config",
                    &format!(
                        "[profile corp]\nsso_start_url = {start_url}\nsso_region = us-east-1\n\
                         sso_account_id = 123456789012\nsso_role_name = {ROLE_NAME_FOR_SSO}\n"
                    ),
                );
                let token_expiry = SystemTime::now() + Duration::from_secs(3600);
                write_file(
                    &h.join(".aws/sso/cache"),
                    &format!("{}.json", sha1_hex(start_url)),
                    &serde_json::json!({
                        "accessToken": SSO_TOKEN,
                        "expiresAt": humantime::format_rfc3339_seconds(token_expiry).to_string(),
                        "region": "us-east-1",
                        "startUrl": start_url,
                    })
                    .to_string(),
                );
                set("AWS_PROFILE", "corp");
                set("AWS_ENDPOINT_URL_SSO", &url);
            }
            "imds" => {
                set("AWS_EC2_METADATA_DISABLED", "false");
                set("AWS_EC2_METADATA_SERVICE_ENDPOINT", &format!("{url}/"));
            }
            other => panic!("no scenario {other}"),
        }
        Scenario {
            name,
            rig,
            home,
            env,
        }
    }

    async fn mount(&self, bucket: &str) -> Mount {
        mount_with(bucket, &self.rig.url, STRICT, &self.env)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// Keys this scenario's source handed out.
    fn issued(&self) -> Vec<Issued> {
        self.rig.issued()
    }
}

/// The SHA-1 of `text` in hex, as the AWS CLI names SSO cache files.
fn sha1_hex(text: &str) -> String {
    let out = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha1sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// Write a new file and read the previous one back every two seconds
/// until `until`; every operation must succeed. Returns the files written.
fn keep_busy(dir: &Path, name: &str, until: Instant) -> usize {
    let mut n = 0usize;
    while Instant::now() < until {
        let data = test_data(4096 + n, n as u64);
        write_closed(&dir.join(format!("f{n}")), &data)
            .unwrap_or_else(|e| panic!("{name}: writing f{n} failed: {e}"));
        if n > 0 {
            let back = std::fs::read(dir.join(format!("f{}", n - 1)))
                .unwrap_or_else(|e| panic!("{name}: reading f{} failed: {e}", n - 1));
            assert!(
                back[..] == test_data(4096 + n - 1, (n - 1) as u64)[..],
                "{name}: f{} reads back what was written",
                n - 1
            );
        }
        let listed = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{name}: listing failed: {e}"))
            .count();
        assert_eq!(listed, n + 1, "{name}: the listing shows every file");
        n += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    n
}

/// The rig refuses a request signed with `key` (any signature: the key's
/// expiry is checked first), so keys past their expiry cannot have been
/// used unnoticed.
async fn assert_refused(rig_url: &str, bucket: &str, key: &str) {
    let resp = reqwest::Client::new()
        .get(format!("{rig_url}/{bucket}?list-type=2"))
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={key}/20261205/us-east-1/s3/aws4_request, \
                 SignedHeaders=host, Signature=00"
            ),
        )
        .send()
        .await
        .expect("request to the rig");
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.text().await.unwrap_or_default();
    assert!(body.contains("ExpiredToken"), "{body}");
}

async fn refreshed_across_expiries(scenario: Scenario) {
    let name = scenario.name;
    let c = support::new_bucket(&format!("cred-{}", name.replace([' ', '_'], "-"))).await;
    let mount = scenario.mount(c.bucket()).await;
    let started = Instant::now();
    let until = started + LIFE * EXPIRIES + Duration::from_secs(5);
    let dir = mount.path.clone();
    let busy = blocking(move || keep_busy(&dir, name, until));
    let outage = async {
        if name == "container" {
            // The endpoint is down across the first refresh (due 30 s in):
            // it is tried again until it works, before the keys lapse.
            tokio::time::sleep(Duration::from_secs(25)).await;
            scenario.rig.fail_endpoints_for(Duration::from_secs(20));
        }
    };
    let (written, ()) = tokio::join!(busy, outage);
    let mut mount = mount;
    assert!(written > 20, "{name}: only {written} files written");

    let issued = scenario.issued();
    let used: Vec<&Issued> = issued.iter().filter(|i| i.uses > 0).collect();
    assert_eq!(
        scenario.rig.refused(),
        0,
        "{name}: no request used an expired key"
    );
    assert!(
        used.len() > EXPIRIES as usize,
        "{name}: keys were replaced at least at every expiry: {issued:#?}"
    );
    for key in &used {
        let (Some(expiry), Some(last)) = (key.expiry, key.last_use) else {
            continue;
        };
        assert!(last < expiry, "{name}: {key:?} used after its expiry");
    }
    // Every expired key used by the mount is refused now.
    let now = SystemTime::now();
    for key in used.iter().filter(|k| k.expiry.is_some_and(|e| e < now)) {
        assert_refused(&scenario.rig.url, c.bucket(), &key.access_key_id).await;
    }

    let log = mount.log_text();
    let expected_source = match name {
        "container" => "container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI)",
        "web identity" => "web identity (AWS_WEB_IDENTITY_TOKEN_FILE",
        "assumed role" => "AWS profile \"chain\" (assumed role)",
        "credential_process" => "AWS profile \"default\" (credential_process)",
        "imds" => "EC2 instance metadata (IMDSv2)",
        "sso" => "AWS profile \"corp\" (SSO)",
        _ => unreachable!(),
    };
    assert!(
        log.contains(&format!("using credentials from {expected_source}")),
        "{name}: the log names the source:\n{log}"
    );
    assert!(log.contains("refreshed, valid until"), "{name}:\n{log}");
    if name == "container" {
        assert_eq!(
            log.matches("cannot refresh the credentials").count(),
            1,
            "{name}: a failing refresh is logged once:\n{log}"
        );
    }
    assert!(
        !log.contains(&server().secret_access_key),
        "{name}: no secret in the log"
    );
    assert!(mount.unmount().success(), "{name}: clean unmount");

    // Everything written is in the bucket, whole.
    for n in 0..written {
        let (_, body) = c
            .get_object_bytes(&format!("f{n}"), Default::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: f{n} in the bucket: {e}"));
        assert!(
            body[..] == test_data(4096 + n, n as u64)[..],
            "{name}: f{n}"
        );
    }
    drop(scenario.home);
}

/// The Done-when test of issue 17: a mount on each source of temporary
/// keys keeps reading and writing across three expiries. The sources run at
/// once (three minutes in all, not fifteen).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn temporary_keys_from_every_source_are_refreshed_across_three_expiries() {
    let mut runs = Vec::new();
    for name in [
        "container",
        "web identity",
        "assumed role",
        "credential_process",
        "sso",
        "imds",
    ] {
        let scenario = Scenario::new(name).await;
        runs.push(tokio::spawn(refreshed_across_expiries(scenario)));
    }
    let mut failures = Vec::new();
    for run in runs {
        if let Err(e) = run.await {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// When the source stops answering, the mount goes on with the keys it has
/// until they really expire, then fails requests with EKEYEXPIRED (and one
/// log line), and works again once the source answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_cannot_be_refreshed_fail_only_once_expired() {
    let life = Duration::from_secs(20);
    let rig = CredentialRig::start(life).await;
    let home = tempfile::tempdir().expect("home");
    let token = write_file(home.path(), "token", CONTAINER_TOKEN);
    let env = env(&[
        ("HOME", &home.path().to_string_lossy()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("{}/container-credentials", rig.url),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            &token.to_string_lossy(),
        ),
    ]);
    let c = support::new_bucket("cred-expire").await;
    let mount = mount_with(c.bucket(), &rig.url, STRICT, &env)
        .await
        .expect("mount");
    let started = Instant::now();
    rig.fail_endpoints_for(Duration::from_secs(3600));
    let dir = mount.path.clone();
    blocking(move || {
        // Before the expiry: everything works, though refreshes fail.
        write_closed(&dir.join("before"), b"still valid").expect("write before expiry");
        while started.elapsed() < life + Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(200));
        }
        // After it: a clear error, no request sent with the old keys.
        let err = std::fs::metadata(dir.join("before")).expect_err("keys expired");
        assert_eq!(err.raw_os_error(), Some(libc::EKEYEXPIRED), "{err}");
    })
    .await;
    assert_eq!(rig.refused(), 0, "no request was sent with expired keys");
    let log = mount.log_text();
    assert_eq!(
        log.matches("cannot refresh the credentials").count(),
        1,
        "{log}"
    );
    assert!(log.contains("EKEYEXPIRED"), "{log}");
    // The source answers again: the mount recovers by itself.
    rig.fail_endpoints_for(Duration::ZERO);
    let dir = mount.path.clone();
    let recovered = blocking(move || {
        support::wait_until(Duration::from_secs(40), || {
            std::fs::read(dir.join("before")).is_ok_and(|b| b == b"still valid")
        })
    })
    .await;
    assert!(recovered, "reads work again once the source answers");
}

/// Keys the server calls expired before their stated expiry (revoked, or
/// a clock behind) are replaced at once, and the refused call is sent again
/// with the new ones: the caller sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_server_calls_expired_are_replaced_at_once() {
    let rig = CredentialRig::start(LIFE).await;
    let home = tempfile::tempdir().expect("home");
    let token = write_file(home.path(), "token", CONTAINER_TOKEN);
    let env = env(&[
        ("HOME", &home.path().to_string_lossy()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("{}/container-credentials", rig.url),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            &token.to_string_lossy(),
        ),
    ]);
    let c = support::new_bucket("cred-revoked").await;
    let mount = mount_with(c.bucket(), &rig.url, STRICT, &env)
        .await
        .expect("mount");
    let dir = mount.path.clone();
    blocking(move || write_closed(&dir.join("f1"), b"one").expect("write f1")).await;
    rig.revoke_issued_keys();
    let dir = mount.path.clone();
    blocking(move || {
        write_closed(&dir.join("f2"), b"two").expect("write f2 with new keys");
        assert_eq!(std::fs::read(dir.join("f1")).expect("read f1"), b"one");
    })
    .await;
    // Calls in flight with the old keys were refused, and sent again.
    assert!(rig.refused() >= 1, "the revoked keys were refused");
    assert_eq!(rig.issued().len(), 2, "one early refresh for all of them");
    let log = mount.log_text();
    assert!(log.contains("replaced them early"), "{log}");
}

/// IMDS keys that arrive already expired are used anyway, as AWS SDKs do
/// (static stability: an instance keeps working through an IMDS outage),
/// and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_keys_that_arrive_expired_are_extended_as_the_sdks_do() {
    let rig = CredentialRig::start(LIFE).await;
    rig.imds_hands_out_expired_keys();
    let home = tempfile::tempdir().expect("home");
    let env = env(&[
        ("HOME", &home.path().to_string_lossy()),
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &format!("{}/", rig.url),
        ),
    ]);
    let c = support::new_bucket("cred-imds-stale").await;
    let mount = mount_with(c.bucket(), &rig.url, &[], &env)
        .await
        .expect("mount");
    let dir = mount.path.clone();
    blocking(move || {
        write_closed(&dir.join("f"), b"through an IMDS outage").expect("write");
        assert_eq!(
            std::fs::read(dir.join("f")).expect("read"),
            b"through an IMDS outage"
        );
    })
    .await;
    let log = mount.log_text();
    assert!(
        log.contains("credential expiration extension"),
        "the SDK's extension is logged:\n{log}"
    );
    assert!(log.contains("EC2 instance metadata (IMDSv2)"), "{log}");
}

/// With nothing configured anywhere and no IMDS, the mount fails at once
/// with one line that says where it looked.
#[test]
fn no_credentials_anywhere_is_a_clear_error() {
    let home = tempfile::tempdir().expect("home");
    let env = env(&[
        ("HOME", &home.path().to_string_lossy()),
        // A closed port: no instance metadata service here.
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/"),
    ]);
    let started = Instant::now();
    let err = Mount::try_start_with_env("some-bucket", &server().endpoint, &[], &env)
        .err()
        .expect("no mount without credentials");
    assert!(err.contains("no credentials found"), "{err}");
    assert!(err.contains("instance metadata"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gives up on IMDS quickly"
    );
}
