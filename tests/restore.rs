//! `bucketfs restore` against a versioned bucket: a subtree to an instant
//! (deleted files come back), one file to a version id through a mounted
//! path, and clear failures.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use bucketfs::s3::{GetRequest, PutOptions, S3Client};
use bytes::Bytes;
use support::mount::{bucketfs_bin, credential_env, Mount};
use support::{new_versioned_bucket, server, versioning_enabled};

fn restore(args: &[&str]) -> Output {
    Command::new(bucketfs_bin())
        .arg("restore")
        .args(args)
        .args(["--endpoint", &server().endpoint])
        .envs(credential_env())
        .output()
        .expect("run bucketfs restore")
}

async fn body(c: &S3Client, key: &str) -> Option<String> {
    match c.get_object_bytes(key, GetRequest::default()).await {
        Ok((_, b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtree_to_an_instant_and_a_file_to_a_version() {
    let c = new_versioned_bucket("restore").await;
    if !versioning_enabled(&c).await {
        return;
    }
    let put = |k: &'static str, v: &'static str| {
        let c = c.clone();
        async move {
            c.put_object(k, Bytes::from(v), &PutOptions::default())
                .await
                .unwrap()
        }
    };
    let with_mode = PutOptions {
        user_metadata: [("mode".to_owned(), "33216".to_owned())].into(), // S_IFREG | 0700
        ..Default::default()
    };
    c.put_object("docs/a.txt", Bytes::from_static(b"a1"), &with_mode)
        .await
        .unwrap();
    put("docs/sub/b.txt", "b1").await;
    put("other.txt", "o1").await;
    // Some servers keep whole seconds: leave one between the two states.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Half a second after the last of the first state's writes (on a busy
    // machine they may be far apart).
    let history = c.list_all_versions("").await.unwrap();
    let last = history
        .iter()
        .map(|v| v.last_modified)
        .max()
        .expect("the first state's versions");
    let instant = humantime::format_rfc3339_millis(last + Duration::from_millis(500)).to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a2 = put("docs/a.txt", "a2").await;
    c.delete_object("docs/sub/b.txt", None).await.unwrap();
    put("docs/new.txt", "n1").await;
    put("other.txt", "o2").await;

    let target = format!("{}:/docs", c.bucket());
    let out = restore(&[&target, "--at", &instant, "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        body(&c, "docs/a.txt").await.as_deref(),
        Some("a2"),
        "dry run changes nothing"
    );

    let out = restore(&[&target, "--at", &instant]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("restored 2 files"), "{stdout}");
    assert_eq!(body(&c, "docs/a.txt").await.as_deref(), Some("a1"));
    let meta = c.head_object("docs/a.txt", None).await.unwrap();
    assert_eq!(
        meta.user_metadata.get("mode").map(String::as_str),
        Some("33216"),
        "metadata comes back too"
    );
    assert_eq!(
        body(&c, "docs/sub/b.txt").await.as_deref(),
        Some("b1"),
        "deleted files come back"
    );
    assert_eq!(
        body(&c, "docs/new.txt").await.as_deref(),
        Some("n1"),
        "newer files are left alone"
    );
    assert_eq!(
        body(&c, "other.txt").await.as_deref(),
        Some("o2"),
        "outside the subtree"
    );

    // One file, by version id, through a mounted path.
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let path = mount.path.join("docs/a.txt");
    let version = a2.version_id.expect("versioned");
    let out = restore(&[path.to_str().unwrap(), "--version-id", &version]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(body(&c, "docs/a.txt").await.as_deref(), Some("a2"));
    drop(mount);

    // Failures name what failed and exit non-zero.
    let out = restore(&[
        &format!("{}:/docs/a.txt", c.bucket()),
        "--version-id",
        "no-such-version",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no version \"no-such-version\""));
    let out = restore(&[&format!("{}:/nothing/here", c.bucket()), "--at", &instant]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing has ever been stored"));
    let out = restore(&[&target, "--at", "last tuesday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid instant"));
}
