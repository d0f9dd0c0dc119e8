//! Two writers of one object, through the kernel: this mount saving a
//! file while another client replaces the object leaves one writer's whole
//! file, never a mix (issue 14's scenario).
//!
//! One test in this file on purpose: a process another test spawned (a
//! mount's daemon, a shell) would inherit the open descriptor, and its
//! close-on-exec is a flush, which would save the file before the other
//! writer's PUT instead of after it.

mod support;

use std::os::unix::fs::FileExt;

use bucketfs::s3::GetRequest;
use support::mount::Mount;
use support::{blocking, close_checked, put, server, sha256, test_data};

const MIB: usize = 1024 * 1024;

/// Issue 14's scenario through the kernel: a 20 MiB object's first 8 MiB
/// (one whole part) rewritten through an open descriptor while another
/// client replaces the object, so that the save's other parts are
/// server-side copies alone.
///
/// - On a bucket that keeps versions (as every B2 bucket does) the close
///   succeeds and the object is wholly this writer's file: the unchanged
///   12 MiB are copies of the version it was opened on.
/// - On one that keeps none, on a server that ignores
///   `x-amz-copy-source-if-match` (moto), the mount learns that it is
///   ignored, reads the unchanged parts with If-Match GETs instead, and the
///   close fails with ESTALE, leaving the other writer's whole object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_racing_another_writer_is_wholly_one_writers() {
    let versioned = support::new_versioned_bucket("wracing").await;
    if support::versioning_enabled(&versioned).await {
        let (closed, stored, expected, _, log) = race(&versioned).await;
        closed.expect("the last closer's save succeeds");
        assert_whole(&stored, &expected);
        assert!(log.contains("keeps every version"), "{log}");
    }
    let unversioned = support::new_bucket("wracing-nover").await;
    let (closed, stored, _, theirs, log) = race(&unversioned).await;
    let e = closed.expect_err("the version this save copies from is gone");
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
    assert_whole(&stored, &theirs);
    assert!(log.contains("keeps no versions"), "{log}");
    assert!(
        log.contains("ignores x-amz-copy-source-if-match"),
        "moto's way with the copy condition is learnt and said: {log}"
    );
}

/// Run the race on bucket `c`: the close's result, what `x` holds after
/// it, this writer's file, the other writer's, and the mount's log.
async fn race(
    c: &bucketfs::s3::S3Client,
) -> (std::io::Result<()>, Vec<u8>, Vec<u8>, Vec<u8>, String) {
    let original = test_data(20 * MIB, 1);
    let theirs = test_data(20 * MIB, 2);
    put(c, "x", &original).await;
    let mut mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "part_size=8MiB"]);
    let path = mount.path.join("x");
    let ours = test_data(8 * MIB, 3);
    let f = blocking({
        let ours = ours.clone();
        move || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            f.write_all_at(&ours, 0).unwrap();
            f
        }
    })
    .await;
    put(c, "x", &theirs).await;
    let closed = blocking(move || close_checked(f)).await;
    mount.unmount();
    let (_, stored) = c
        .get_object_bytes("x", GetRequest::default())
        .await
        .expect("x");
    let mut expected = ours.to_vec();
    expected.extend_from_slice(&original[8 * MIB..]);
    (
        closed,
        stored.to_vec(),
        expected,
        theirs.to_vec(),
        mount.log_text(),
    )
}

/// `stored` must be `expected` whole; else say whose each MiB is.
fn assert_whole(stored: &[u8], expected: &[u8]) {
    let whose: Vec<bool> = (0..stored.len().div_ceil(MIB))
        .map(|i| {
            let r = i * MIB..((i + 1) * MIB).min(stored.len());
            r.end <= expected.len() && stored[r.clone()] == expected[r]
        })
        .collect();
    assert!(
        stored.len() == expected.len() && sha256(stored) == sha256(expected),
        "x must be one writer's whole file; which of its MiBs are that writer's: {whose:?}"
    );
}
