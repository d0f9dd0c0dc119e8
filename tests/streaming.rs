//! Rewriting an existing file from the start (O_TRUNC, as `cp` and `dd`
//! do) streams its parts while it is being written, as a new file does,
//! instead of uploading everything at close.
//!
//! One test in this file on purpose: a process another test spawned would
//! inherit the open descriptor, and its close-on-exec is a flush, which
//! would upload the file early and hide the difference.

mod support;

use std::io::Write;
use std::time::Duration;

use support::mount::Mount;
use support::proxy::FaultProxy;
use support::{blocking, new_bucket, server, sha256, test_data, wait_until};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_an_existing_file_streams_like_a_new_one() {
    let c = new_bucket("restream").await;
    support::upload(&c, "old.bin", test_data(20 * MIB, 1)).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "part_size=5MiB"]);
    let data = test_data(17 * MIB, 2);
    let root = mount.path.clone();
    let file = blocking({
        let data = data.clone();
        move || {
            // File::create opens with O_TRUNC.
            let mut f = std::fs::File::create(root.join("old.bin")).unwrap();
            f.write_all(&data).unwrap();
            f
        }
    })
    .await;
    let streamed = wait_until(Duration::from_secs(20), || {
        proxy.count("PUT", "partNumber=3") > 0
    });
    let parts_before_close = proxy.count("PUT", "partNumber=");
    blocking(move || drop(file)).await;
    assert!(
        streamed,
        "three whole parts went up while the file was still open (saw {parts_before_close})"
    );
    let (_, stored) = c
        .get_object_bytes("old.bin", Default::default())
        .await
        .unwrap();
    assert_eq!(sha256(&stored), sha256(&data), "the new content, exactly");
    assert_eq!(proxy.count("PUT", "partNumber=4"), 1, "the tail at close");
}
