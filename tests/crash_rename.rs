//! A daemon killed in the middle of a directory rename (kill -9): the old
//! tree is whole, and the next mount finishes the move.

mod support;

use std::time::Duration;

use bucketfs::s3::PutOptions;
use bytes::Bytes;
use futures::StreamExt;
use support::mount::Mount;
use support::{new_bucket, server, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_interrupted_by_a_crash_is_finished_by_the_next_mount() {
    let c = new_bucket("crashrename").await;
    let keys: Vec<String> = (0..1500)
        .map(|i| format!("tree/d{}/f{i:04}", i % 10))
        .collect();
    let options = PutOptions::default();
    let puts: Vec<_> = futures::stream::iter(&keys)
        .map(|k| c.put_object(k, Bytes::from(k.clone()), &options))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(puts.iter().all(|r| r.is_ok()));
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().join("cache").to_str().unwrap().to_owned();
    let first = Mount::start(c.bucket(), &server().endpoint, &["--cache-dir", &cache_arg]);
    let (from, to) = (first.path.join("tree"), first.path.join("forest"));
    let mover = std::thread::spawn(move || std::fs::rename(from, to));
    // Kill the daemon once the copy is under way.
    let mut copied = 0;
    for _ in 0..400 {
        copied = c.list_all("forest/", None).await.unwrap().objects.len();
        if copied > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(copied > 0, "the rename started copying");
    let pid = first.pid().unwrap();
    // SAFETY: kill of our own child process by its PID.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
    }));
    let _ = mover.join();
    drop(first);
    let left = c.list_all("tree/", None).await.unwrap().objects.len();
    let partial = c.list_all("forest/", None).await.unwrap().objects.len();
    assert_eq!(
        left, 1500,
        "copies come before deletes: the old tree is whole"
    );
    assert!(
        partial < 1500,
        "killed before the copy finished ({partial} copied)"
    );

    let second = Mount::start(c.bucket(), &server().endpoint, &["--cache-dir", &cache_arg]);
    assert!(c.list_all("tree/", None).await.unwrap().objects.is_empty());
    let moved = c.list_all("forest/", None).await.unwrap().objects;
    assert_eq!(moved.len(), 1500);
    let log = second.log_text();
    assert!(
        log.contains("finished the rename of tree/ to forest/"),
        "{log}"
    );
}
