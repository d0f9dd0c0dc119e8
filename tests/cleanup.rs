//! `bucketfs cleanup`: unfinished multipart uploads older than a bound are
//! aborted, younger ones and other prefixes are left alone.

mod support;

use support::{new_bucket, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_aborts_old_unfinished_uploads_and_leaves_young_ones() {
    use bucketfs::s3::PutOptions;
    let c = new_bucket("cleanup").await;
    c.create_multipart_upload("a/one.bin", &PutOptions::default())
        .await
        .unwrap();
    c.create_multipart_upload("a/two.bin", &PutOptions::default())
        .await
        .unwrap();
    c.create_multipart_upload("elsewhere.bin", &PutOptions::default())
        .await
        .unwrap();
    let run = |older_than: &str, extra: &[&str]| {
        std::process::Command::new(support::mount::bucketfs_bin())
            .arg("cleanup")
            .arg(format!("{}:/a", c.bucket()))
            .args(["--endpoint", &server().endpoint, "--older-than", older_than])
            .args(extra)
            .envs(support::mount::credential_env())
            .output()
            .unwrap()
    };
    // moto reports every upload as started in 2010, so age is tested at
    // both ends: nothing is that old, everything is older than a second.
    let out = run("100000d", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("0 unfinished uploads older than"),
        "{stdout}"
    );
    assert!(stdout.contains("2 younger left alone"), "{stdout}");
    let dry = run("1s", &["--dry-run"]);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would abort the upload of a/one.bin"));
    assert_eq!(c.list_multipart_uploads("").await.unwrap().len(), 3);
    let out = run("1s", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("2 unfinished uploads older than 1s aborted"),
        "{stdout}"
    );
    let left = c.list_multipart_uploads("").await.unwrap();
    assert_eq!(left.len(), 1, "only the prefix was cleaned");
    assert_eq!(left[0].key, "elsewhere.bin");
}
