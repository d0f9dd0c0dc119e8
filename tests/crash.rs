//! A daemon killed in the middle of a write (kill -9): the next mount
//! aborts the multipart upload it left and reports, with its key and path,
//! the staged data that never reached the bucket.
//!
//! This file holds one test on purpose: a test that spawns a process while
//! this one holds a file open would have the child inherit the descriptor,
//! and its close-on-exec is a close, which flushes (uploads) the file.

mod support;

use std::io::Write;
use std::time::Duration;

use support::mount::Mount;
use support::{blocking, new_bucket, server, test_data, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_leaves_no_upload_and_its_data_is_reported() {
    let c = new_bucket("crash").await;
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    let cache_arg = cache_dir.to_str().unwrap().to_owned();
    let first = Mount::start(c.bucket(), &server().endpoint, &["--cache-dir", &cache_arg]);
    let root = first.path.clone();
    // Two full parts stream out while the file stays open.
    let file = blocking(move || {
        let mut f = std::fs::File::create(root.join("big.bin")).unwrap();
        f.write_all(&test_data(17 * 1024 * 1024, 1)).unwrap();
        f
    })
    .await;
    let started = {
        let c = c.clone();
        let mut found = false;
        for _ in 0..200 {
            if !c.list_multipart_uploads("").await.unwrap().is_empty() {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found
    };
    assert!(started, "the write streams as a multipart upload");
    let pid = first.pid().unwrap();
    // SAFETY: kill of our own child process by its PID.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
    }));
    drop(file);
    drop(first); // detaches the dead mount

    let second = Mount::start(c.bucket(), &server().endpoint, &["--cache-dir", &cache_arg]);
    let uploads = c.list_multipart_uploads("").await.unwrap();
    assert!(
        uploads.is_empty(),
        "the dead mount's upload was aborted: {uploads:?}"
    );
    let log = second.log_text();
    assert!(
        log.contains("aborted an unfinished upload of big.bin"),
        "{log}"
    );
    assert!(log.contains("never reached the bucket"), "{log}");
    let kept = log
        .lines()
        .find(|l| l.contains("it is kept in"))
        .and_then(|l| l.split("it is kept in ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .expect("the path is in the log")
        .to_owned();
    assert_eq!(
        std::fs::metadata(&kept).unwrap().len(),
        17 * 1024 * 1024,
        "the staged data is kept whole"
    );
}
