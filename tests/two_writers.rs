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

/// Issue 14's scenario through the kernel, on a bucket that keeps versions
/// (as every B2 bucket does): a 20 MiB object's first 8 MiB rewritten
/// through an open descriptor while another client replaces the object.
/// The close succeeds and the object is wholly this writer's file: the
/// unchanged 12 MiB are copies of the version it was opened on, never of
/// the other writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_racing_another_writer_is_wholly_one_writers() {
    let c = support::new_versioned_bucket("wracing").await;
    if !support::versioning_enabled(&c).await {
        return;
    }
    let original = test_data(20 * MIB, 1);
    let theirs = test_data(20 * MIB, 2);
    put(&c, "x", &original).await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "part_size=8MiB"]);
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
    put(&c, "x", &theirs).await;
    blocking(move || close_checked(f))
        .await
        .expect("the last closer's save succeeds");
    let (_, stored) = c
        .get_object_bytes("x", GetRequest::default())
        .await
        .expect("x");
    let mut expected = ours.to_vec();
    expected.extend_from_slice(&original[8 * MIB..]);
    // Whose each MiB is, to say what went wrong.
    let whose: Vec<&str> = (0..stored.len().div_ceil(MIB))
        .map(|i| {
            let r = i * MIB..((i + 1) * MIB).min(stored.len());
            let chunk = &stored[r.clone()];
            if r.end <= expected.len() && chunk == &expected[r.clone()] {
                "this writer's"
            } else if r.end <= theirs.len() && chunk == &theirs[r.clone()] {
                "the other writer's"
            } else {
                "neither's"
            }
        })
        .collect();
    assert!(
        stored.len() == expected.len() && sha256(&stored) == sha256(&expected),
        "x must be this writer's whole file; its MiBs are: {whose:?}"
    );
}
