//! A new file flushed while still empty still streams its parts as it is
//! written. A shell's `cmd > file` and GNU dd open the file, dup2 the
//! descriptor and close the first one: that close is a flush of the empty
//! file, which used to end streaming, so the whole file went up at close.
//! Its parts are kept in memory for their upload and written to the
//! staging file as they come: a reader sees every byte while it is open.
//!
//! One test in this file on purpose: a process another test spawned would
//! inherit the open descriptor, and its close-on-exec is a flush too.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::mount::Mount;
use support::proxy::FaultProxy;
use support::{blocking, new_bucket, server, sha256, test_data, wait_until};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_flushed_while_empty_streams_and_reads_back_while_open() {
    let c = new_bucket("flushstream").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "part_size=5MiB"]);
    let data = test_data(17 * MIB, 3);
    let path = mount.path.join("out.bin");
    let file = blocking({
        let (data, path) = (data.clone(), path.clone());
        move || {
            let mut f = std::fs::File::create(&path).unwrap();
            // What `> file` does: the first descriptor is closed (a flush)
            // and writing goes on through its duplicate.
            drop(f.try_clone().unwrap());
            // Whole blocks first, then odd-sized writes that are not
            // block-aligned.
            let (blocks, odd) = data.split_at(9 * MIB);
            for chunk in blocks.chunks(MIB) {
                f.write_all(chunk).unwrap();
            }
            for chunk in odd.chunks(100_003) {
                f.write_all(chunk).unwrap();
            }
            f
        }
    })
    .await;
    let streamed = wait_until(Duration::from_secs(20), || {
        proxy.count("PUT", "partNumber=3") > 0
    });
    let parts_before_close = proxy.count("PUT", "partNumber=");
    let read_back = blocking({
        let path = path.clone();
        move || {
            let mut all = Vec::new();
            std::fs::File::open(&path)
                .unwrap()
                .read_to_end(&mut all)
                .unwrap();
            all
        }
    })
    .await;
    blocking(move || drop(file)).await;
    assert!(
        streamed,
        "three whole parts went up while the file was still open (saw {parts_before_close})"
    );
    assert_eq!(
        sha256(&read_back),
        sha256(&data),
        "every byte readable while the file is open"
    );
    let (_, stored) = c
        .get_object_bytes("out.bin", Default::default())
        .await
        .unwrap();
    assert_eq!(sha256(&stored), sha256(&data), "the content, exactly");
    assert_eq!(proxy.count("PUT", "partNumber=4"), 1, "the tail at close");
}
