//! Keys with limits, as B2 application keys can have: a read-only key (no
//! `writeFiles`) and a key limited to a file-name prefix. moto enforces IAM
//! policies on object calls, which emulates both; a proxy refuses listings
//! outside the prefix (moto ignores policy conditions, FACTS.md) and plays
//! B2's native `b2_authorize_account`, which is where B2 says what a key
//! may do.

mod support;

use std::sync::Arc;

use support::mount::Mount;
use support::proxy::{Fault, FaultProxy};
use support::{blocking, put, server, write_closed};

fn key_env(key: &(String, String)) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), key.0.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), key.1.clone()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_reads_and_gets_a_clear_error_on_the_first_write() {
    let c = support::new_bucket("ro-key").await;
    put(&c, "a.txt", b"readable").await;
    let bucket = c.bucket().to_owned();
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketVersioning"],
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]
        }]
    });
    let key = blocking(move || support::iam_user("bucketfs-read-only", &policy)).await;
    let env = key_env(&key);
    let endpoint = server().endpoint.clone();
    let b = bucket.clone();
    // Its own cache directory: the refused write's data stays there.
    let cache = tempfile::tempdir().expect("cache dir");
    let cache_arg = cache.path().to_string_lossy().into_owned();
    let mount = blocking(move || {
        Mount::try_start_with_env(&b, &endpoint, &["--cache-dir", &cache_arg], &env)
    })
    .await
    .expect("a read-only key mounts");
    let dir = mount.path.clone();
    blocking(move || {
        assert_eq!(std::fs::read(dir.join("a.txt")).expect("read"), b"readable");
        let err = write_closed(&dir.join("new.txt"), b"refused").expect_err("no writeFiles");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        let err = std::fs::remove_file(dir.join("a.txt")).expect_err("no delete");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        // Reads go on.
        assert_eq!(std::fs::read(dir.join("a.txt")).expect("read"), b"readable");
    })
    .await;
    let log = mount.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refuses writes with these credentials"))
        .collect();
    assert_eq!(lines.len(), 1, "one line for all refused writes:\n{log}");
    assert!(
        lines[0].contains("writeFiles") && lines[0].contains("--read-only"),
        "{}",
        lines[0]
    );
    assert!(!log.contains(&key.1), "no secret in the log");
    // Nothing was stored.
    assert!(c.head_object("new.txt", None).await.is_err());
}

/// B2's native answer for a key limited to `prefix` of `bucket`.
fn b2_authorize_answer(bucket: &str, prefix: &str) -> Vec<u8> {
    serde_json::json!({
        "accountId": "acct",
        "authorizationToken": "4_never-shown-token",
        "apiInfo": {"storageApi": {
            "allowed": {
                "buckets": [{"id": "b2bucketid", "name": bucket}],
                "capabilities": ["listFiles", "readFiles", "writeFiles", "deleteFiles"],
                "namePrefix": prefix
            },
            "s3ApiUrl": "https://s3.us-west-004.backblazeb2.com"
        }}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_a_prefix_mounts_that_prefix_and_names_it_at_the_root() {
    const PREFIX: &str = "team/alice/";
    let c = support::new_bucket("prefix-key").await;
    put(&c, "team/alice/notes.txt", b"alice's").await;
    put(&c, "team/bob/secret.txt", b"bob's").await;
    let bucket = c.bucket().to_owned();
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": format!("arn:aws:s3:::{bucket}/{PREFIX}*")
            },
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": format!("arn:aws:s3:::{bucket}")
            }
        ]
    });
    let key = blocking(move || support::iam_user("bucketfs-prefix", &policy)).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let answer = b2_authorize_answer(&bucket, PREFIX);
    proxy.respond_with(Arc::new(move |method, path| {
        if path.starts_with("/b2api/v3/b2_authorize_account") {
            return Some(Fault::Raw {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
                body: answer.clone(),
            });
        }
        // B2 limits listings to the key's prefix too; moto cannot.
        let listing = method == "GET" && path.contains("list-type=2");
        let inside = path
            .split(['?', '&'])
            .any(|p| p.starts_with("prefix=team%2Falice%2F"));
        (listing && !inside).then_some(Fault::Status {
            status: 403,
            code: "AccessDenied",
            retry_after: None,
        })
    }));
    let env = key_env(&key);
    let url = proxy.url.clone();
    let b = bucket.clone();
    let extra: &'static [&'static str] = &[];
    let (env2, url2, b2) = (env.clone(), url.clone(), b.clone());
    let err = blocking(move || {
        Mount::try_start_with_env(&b2, &url2, &["--b2-api-url", &url2.clone()], &env2)
    })
    .await
    .err()
    .expect("the root is refused");
    assert!(
        err.contains("limited to files whose names start with \"team/alice/\""),
        "{err}"
    );
    assert!(
        err.contains(&format!("mount {bucket}:/team/alice")),
        "{err}"
    );
    assert!(
        !err.contains("never-shown-token") && !err.contains(&key.1),
        "{err}"
    );

    proxy.clear_seen();
    let source = format!("{b}:/team/alice");
    let mount = blocking(move || Mount::try_start_with_env(&source, &url, extra, &env))
        .await
        .expect("the prefix mounts");
    let dir = mount.path.clone();
    blocking(move || {
        assert_eq!(support::names(&dir), ["notes.txt"]);
        assert_eq!(
            std::fs::read(dir.join("notes.txt")).expect("read"),
            b"alice's"
        );
        write_closed(&dir.join("todo.txt"), b"inside the prefix").expect("write inside");
        std::fs::create_dir(dir.join("sub")).expect("mkdir inside");
        write_closed(&dir.join("sub/x"), b"deeper").expect("write deeper");
        assert_eq!(support::names(&dir), ["notes.txt", "sub", "todo.txt"]);
    })
    .await;
    let outside: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.fault.is_some())
        .map(|s| format!("{} {}", s.method, s.path_and_query))
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the prefix: {outside:?}"
    );
    let (_, body) = c
        .get_object_bytes("team/alice/sub/x", Default::default())
        .await
        .expect("stored under the prefix");
    assert_eq!(&body[..], b"deeper");
}
